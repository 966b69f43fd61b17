"""Named profiles: password-free sets of settings (work, personal, SES) in the user's config folder.

One JSON file, ``$XDG_CONFIG_HOME/smtp_magic/profiles.json`` (``~/.config/...`` by default;
``$SMTP_MAGIC_PROFILES`` names another file), maps each profile name to its settings, in the
same keys as a ``--file`` configuration::

    {
      "work": {"host": "smtp.office365.com", "port": 587, "security": "starttls",
               "username": "me@corp.example", "use_keyring": true, "rate": "30/min"},
      "ses":  {"host": "email-smtp.eu-west-1.amazonaws.com", "port": 587,
               "username": "AKIA...", "password_env": "SES_SMTP_PASSWORD", "rate": "14/s"}
    }

JSON rather than TOML because the standard library both reads and writes it on every supported
Python (tomllib only reads, and only from 3.11), and it is the format of ``--file`` already. A
profile never holds a password: it names where the password comes from (``password_env``,
``use_keyring``) and a file that contains one is refused. This module only reads and writes the
file; ``config.SmtpMagic`` decides what choosing a profile does to the settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._paths import private_dir, read_json, user_path
from .errors import ConfigError, did_you_mean

__all__ = ["check_name", "load", "names", "profiles_path", "save"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
_cache: dict[Path, tuple[tuple[int, ...], dict[str, dict[str, Any]]]] = {}


def profiles_path() -> Path:
    """``$SMTP_MAGIC_PROFILES``, else ``$XDG_CONFIG_HOME/smtp_magic/profiles.json``."""
    return user_path("SMTP_MAGIC_PROFILES", "config", "profiles.json")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not a usable profile name: use letters, digits and "
                          "- _ . @ + (e.g. 'work').")
    return name


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """Every profile in the file ({} when there is none), read again only when it changed."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"The profiles file {str(path)!r} cannot be read: {exc.strerror}.") from None
    key = (stat.st_mtime_ns, stat.st_size, stat.st_mode, stat.st_uid)  # chmod: check again
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    data = read_json(path, "The profiles file")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"The profiles file {str(path)!r} must map profile names to objects "
                          "of settings.")
    _cache[path] = (key, data)
    return data


def names(path: Path | None = None) -> list[str]:
    return sorted(_read(path or profiles_path()))


def load(name: str, path: Path | None = None) -> dict[str, Any]:
    """The settings saved as ``name`` (keys as written); an unknown name is a ConfigError
    naming the file and suggesting the closest saved profile."""
    path = path or profiles_path()
    profiles = _read(path)
    if name not in profiles:
        if not profiles:
            raise ConfigError(f"There is no profile {name!r}: none is saved yet (in {str(path)!r}); "
                              f"save the current settings with %smtp_config --profile {name} --save.")
        hint = did_you_mean(name, profiles)
        if hint == ".":
            hint = f"; the saved ones are {', '.join(sorted(profiles))}."
        raise ConfigError(f"There is no profile {name!r} in {str(path)!r}{hint}")
    values = dict(profiles[name])
    if "password" in values:
        raise ConfigError(f"The profile {name!r} in {str(path)!r} sets a password, which a "
                          "profile never holds; name its source with password_env or "
                          "use_keyring instead.")
    if "profile" in values:
        raise ConfigError(f"The profile {name!r} in {str(path)!r} sets 'profile'; a profile "
                          "cannot name another profile.")
    return values


def save(name: str, values: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write ``values`` as profile ``name`` (replacing it), atomically, readable by the user only."""
    check_name(name)
    path = path or profiles_path()
    for key, value in values.items():
        if key in ("password", "profile") or not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"The setting {key!r} cannot be saved in a profile.")
    profiles = dict(_read(path))
    profiles[name] = dict(values)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".profiles-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(profiles, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("saved profile %r in %s", name, path)
    return path
