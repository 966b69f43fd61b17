"""Where smtp_magic keeps its files: the XDG base directories, each overridable by a variable."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["user_path"]

log = logging.getLogger(__name__)

_BASES = {"data": ("XDG_DATA_HOME", ".local/share"), "config": ("XDG_CONFIG_HOME", ".config")}


def user_path(override: str, base: str, name: str) -> Path:
    """``$<override>`` if set, else ``$XDG_DATA_HOME/smtp_magic/<name>`` (``base="data"``,
    default ``~/.local/share``) or ``$XDG_CONFIG_HOME/smtp_magic/<name>`` (``"config"``,
    default ``~/.config``). Read at each call, so a changed environment counts."""
    explicit = os.environ.get(override)
    if explicit:
        return Path(explicit).expanduser()
    variable, default = _BASES[base]
    home = os.environ.get(variable) or os.path.join("~", default)
    return Path(home).expanduser() / "smtp_magic" / name
