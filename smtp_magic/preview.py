"""Show a composed message as its recipient will see it (headers, HTML body, attachments)."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import getaddresses

from . import _theme
from ._views import message_frame, size_text
from .mime import Composed

__all__ = ["preview_html", "preview_notes", "preview_notes_html", "preview_text"]

log = logging.getLogger(__name__)


def _body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    return msg.get_body(("html",)), msg.get_body(("plain",))  # type: ignore[return-value]


def _comparable(address: str) -> str:
    """An address as the envelope has it (IDNA domain), lower-cased, for comparisons."""
    local, _, domain = address.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local}@{domain}".lower()


def _attachments(msg: EmailMessage) -> list[tuple[str, str, int]]:
    return [
        (part.get_filename() or "(unnamed)", part.get_content_type(),
         len(part.get_payload(decode=True) or b""))
        for part in msg.iter_attachments()
    ]


def preview_html(composed: Composed) -> str:
    """An HTML block for a notebook: the headers, the body, then the attachments."""
    msg = composed.message
    rows = [(name, str(msg[name])) for name in ("From", "To", "Cc", "Subject") if msg[name]]
    shown = {_comparable(addr) for _, addr in getaddresses([v for k, v in rows if k in ("To", "Cc")])}
    bcc = [r for r in composed.recipients if _comparable(r) not in shown]
    if bcc:
        rows.append(("Bcc", ", ".join(bcc) + " (envelope only)"))
    head = "".join(
        f"<tr><th style='text-align:right;padding-right:8px'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows
    )
    body_html = message_frame(msg)
    files = "".join(
        f"<li>{html.escape(name)} ({html.escape(ctype)}, {size_text(size)})</li>"
        for name, ctype, size in _attachments(msg)
    )
    files_html = f"<div><b>Attachments</b><ul>{files}</ul></div>" if files else ""
    return (
        "<div class='smtp-magic-preview'><div><b>Preview, nothing was sent</b></div>"
        f"<table>{head}</table>{body_html}{files_html}</div>"
    )


def preview_text(composed: Composed) -> str:
    """The same, as text for a terminal."""
    msg = composed.message
    lines = [f"{name}: {msg[name]}" for name in ("From", "To", "Cc", "Subject") if msg[name]]
    _, text_part = _body_parts(msg)
    lines += ["", text_part.get_content() if text_part is not None else ""]
    lines += [f"[attachment] {n} ({t}, {size_text(s)})" for n, t, s in _attachments(msg)]
    return "\n".join(lines)


def preview_notes(removed: Sequence[str], warnings: Sequence[str]) -> list[str]:
    """What a sender should know besides the message: what sanitising removed from it, and
    objects that were sent in a simpler form (their repr failed)."""
    return (([f"Removed before sending: {'; '.join(removed)}."] if removed else [])
            + [f"Note: {w}." for w in warnings])


def preview_notes_html(removed: Sequence[str], warnings: Sequence[str]) -> str:
    return "".join(_theme.line("warn", note, tag="div", icon="")
                   for note in preview_notes(removed, warnings))
