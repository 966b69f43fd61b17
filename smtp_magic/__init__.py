"""Send email from Jupyter: magics, a compose form and a Python API on aiosmtplib."""

from __future__ import annotations

from typing import Any

from .api import (
    Connector,
    SendHandle,
    check,
    check_async,
    check_deliverability,
    connector,
    outbox,
    retry_outbox,
    retry_outbox_async,
    send,
    send_async,
    send_many,
    send_many_async,
    send_notebook,
    send_notebook_async,
)
from .config import SmtpMagic, current
from .errors import SmtpMagicError
from .models import Attachment, Response, SendRequest

__version__ = "0.1.0"

__all__ = [
    "Attachment",
    "Connector",
    "Mailer",
    "Response",
    "SendHandle",
    "SendRequest",
    "SmtpMagic",
    "SmtpMagicError",
    "check",
    "check_async",
    "check_deliverability",
    "compose",
    "connector",
    "current",
    "load_ipython_extension",
    "outbox",
    "retry_outbox",
    "retry_outbox_async",
    "send",
    "send_async",
    "send_many",
    "send_many_async",
    "send_notebook",
    "send_notebook_async",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    if name == "Mailer":  # the engine, imported when first asked for
        from .engine import Mailer

        return Mailer
    raise AttributeError(f"module 'smtp_magic' has no attribute {name!r}")


def compose(**prefill: Any) -> Any:
    """Display-ready compose form (an ipywidgets Box) bound to the current settings."""
    from .widgets import compose as _compose

    return _compose(**prefill)


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext smtp_magic``: register the settings and the magics (imports stay light)."""
    from .magics import load_ipython_extension as _load

    _load(ip)


def unload_ipython_extension(ip: Any) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ip)
