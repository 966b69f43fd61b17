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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ._paths import private_dir, read_json, user_path
from .errors import ConfigError, did_you_mean

__all__ = ["ProfileChoice", "check_name", "load", "names", "profiles_path", "save"]

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
    import tempfile  # (with shutil, bz2 and lzma: 3 ms that every first send would pay)

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


class ProfileChoice:
    """What choosing a profile does to the settings, and what saving one writes.

    The settings keep one as ``settings.profiles`` and call it; what belongs to the settings
    themselves (the names a profile holds, reading the keys of a file, the presets of an OAuth2
    provider, the stand-in for a password given for another account) is handed in.
    """

    def __init__(self, settings: Any, *, names: Iterable[str],
                 normalize: Callable[..., dict[str, Any]],
                 presets: Mapping[str, Mapping[str, Any]],
                 withheld: Callable[[], Any], secret: type) -> None:
        self.settings = settings
        self.names = tuple(names)
        self.normalize = normalize
        self.presets = presets
        self.withheld = withheld
        self.secret = secret

    def _default(self, name: str) -> Any:
        return type(self.settings).class_traits()[name].default()

    def values(self, name: str, *, previous: str | None = None) -> dict[str, Any]:
        """What choosing profile ``name`` sets: its saved values, the defaults of the profile
        settings it leaves out (a profile is a whole account), and no password unless the
        profile stays the same (a password typed for one account never goes to another)."""
        source = f"profile {name!r} in {str(profiles_path())!r}"
        saved = self.normalize(load(name), source=source)
        defaults = {n: self._default(n) for n in self.names}
        values: dict[str, Any] = {**defaults, **saved, "profile": name}
        # What a provider implies (auth, and host/port/security for microsoft and google)
        # holds in a hand-written profile too, unless the profile says otherwise.
        if "auth" not in saved and any(saved.get(k) for k in (
                "oauth2_provider", "oauth2_token_command", "oauth2_token_provider")):
            values["auth"] = "oauth2"
        provider = str(saved.get("oauth2_provider") or "").strip().lower()
        for key, value in self.presets.get(provider, {}).items():
            if key not in saved:
                values[key] = value
        if name != previous and self.settings.password:  # withheld: a send says to give it again
            values["password"] = self.withheld()
        return values

    def saved(self) -> dict[str, Any]:
        """The profile settings that differ from their defaults: what ``--save`` writes."""
        out = {}
        for name in self.names:
            value = getattr(self.settings, name)
            if value != self._default(name) and not isinstance(value, self.secret):
                out[name] = value
        return out

    def config_over_profile(self, cfg: Any, settings: Iterable[str]) -> None:
        """The other ``c.SmtpMagic`` values of an IPython config win over the ``profile`` it
        names (applied first): they are set again once the profile is in."""
        section = cfg.get(type(self.settings).__name__) if hasattr(cfg, "get") else None
        if isinstance(section, Mapping) and section.get("profile"):
            known = set(settings)
            others = {k: v for k, v in section.items() if k != "profile" and k in known
                      and isinstance(v, (str, int, float, bool, type(None)))}
            if others:
                self.settings.update(others, source="the IPython configuration",
                                     apply_profile=False)
