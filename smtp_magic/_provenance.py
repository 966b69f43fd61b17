"""Helpers the settings own: where each value came from, what ``--local`` replaced, and which
server the password was given for."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Container, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

# Where a setting's value came from, as %smtp_config's table shows it.
DEFAULT = "default"
IPYTHON_CONFIG = "IPython config"
MAGIC = "%smtp_config"
LOCAL = "%smtp_config --local"
ASSIGNED = "Python or the form"  # settings.port = 587, or the form's settings panel
QUIET = object()  # copying a whole state: no provenance bookkeeping


class Provenance:
    """Where each setting's current value came from (the "from" column of ``%smtp_config``).

    A change made inside ``setting_from(source)`` comes from ``source``; any other change
    (``settings.port = 587``, the form's fields) from ASSIGNED; inside ``setting_from(QUIET)``
    (copying a whole state) nothing is recorded.
    """

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.active: Any = None  # the source of the values being set now

    def get(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)

    def record(self, name: str, source: str) -> None:
        self.sources[name] = source

    @contextlib.contextmanager
    def setting_from(self, source: Any) -> Iterator[None]:
        saved, self.active = self.active, source
        try:
            yield
        finally:
            self.active = saved

    def changed(self, name: str) -> Any:
        """Record the change of ``name`` under way; returns its source (QUIET: not recorded)."""
        source = self.active
        if source is not QUIET:
            self.sources[name] = source or ASSIGNED
        return source

    def mark_config(self, section: Iterable[str] | None, settings: Container[str]) -> None:
        """The ``settings`` named in an IPython config section come from the IPython config."""
        for name in section or ():
            if name in settings:
                self.sources[name] = IPYTHON_CONFIG

    def copy_from(self, other: Provenance) -> None:
        self.sources = dict(other.sources)


def loopback(host: str) -> bool:
    """True for this machine's names: ``localhost`` and 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or \
            host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalSwitch:
    """What ``--local`` replaced, per setting (value, source). The capture server's no-TLS,
    no-login settings last only while the settings point at it: ``leave`` gives back what they
    replaced, except what the user set since or gives with the change."""

    def __init__(self) -> None:
        self.before: dict[str, tuple[Any, str]] = {}
        self.left: dict[str, tuple[Any, str]] = {}  # given back: (--local's value, source)

    def __bool__(self) -> bool:
        """True while something --local set is still to be given back."""
        return bool(self.before)

    def enter(self, settings: Any, host: str, port: int, *, sender: str) -> None:
        """Point ``settings`` at the capture server at ``host:port``: no TLS, no login (auth
        none), and ``sender`` as a stand-in when neither a sender nor an address username is
        set; a test message never goes to the real Sent folder either. What these settings were
        is kept (a second --local keeps what the user had before the first)."""
        local: dict[str, Any] = {"host": host, "port": port, "security": "none", "password": None,
                                 "password_env": None, "use_keyring": False, "auth": "none"}
        if settings.save_sent:
            local["save_sent"] = None
        if not settings.sender and "@" not in (settings.username or ""):
            local["sender"] = sender
        for name in local:
            if name not in self.before or settings.source(name) != LOCAL:
                self.before[name] = (getattr(settings, name), settings.source(name))
        provenance: Provenance = settings.provenance
        with provenance.setting_from(LOCAL), settings._given(local):
            for name, value in local.items():
                setattr(settings, name, value)
                provenance.record(name, LOCAL)

    def leave(self, settings: Any, given: Iterable[str] = ()) -> None:
        """Give back what --local replaced, except what was set since or is ``given`` now. The
        stand-in sender stays while the host is still this machine and the username is no
        address to send from."""
        saved, self.before = self.before, {}
        given = set(given)
        provenance: Provenance = settings.provenance
        for name, (value, source) in saved.items():
            if name in given or provenance.get(name) != LOCAL:
                continue
            if name == "sender" and loopback(settings.host) and "@" not in (
                    settings.username or ""):
                self.before[name] = (value, source)  # given back when the host leaves
                continue
            self.left[name] = (getattr(settings, name), source)
            with provenance.setting_from(QUIET):
                setattr(settings, name, value)
            provenance.record(name, source)

    def given_back(self, settings: Any) -> list[str]:
        """The settings that leaving gave back a different value (and that kept it since)."""
        return [name for name, (local, source) in self.left.items()
                if settings.provenance.get(name) == source and getattr(settings, name) != local]


Origin = tuple[str, int, "str | None", "str | None"]  # host, port, username, other IMAP host


class LoginBinding:
    """Where the password (or password_env) was given for: the SMTP host, port and username,
    and the IMAP host of save_sent when it is another (the same password signs in there).

    A password goes only there: ``moved`` says when the settings now point elsewhere, for the
    settings to withhold it. ``open``: which of the first three the password's source left
    unset (an environment without SMTP_PORT, say); each is fixed by its first change instead.
    """

    def __init__(self) -> None:
        self.bound: Origin | None = None  # None: not bound yet
        self.open: frozenset[int] = frozenset()

    def bind(self, origin: Origin, open_: Iterable[int] = ()) -> None:
        self.bound, self.open = origin, frozenset(open_)

    def forget(self) -> None:
        self.bound, self.open = None, frozenset()

    def copy_from(self, other: LoginBinding) -> None:
        self.bound, self.open = other.bound, other.open

    def moved(self, current: Origin) -> Origin | None:
        """Where the password was given for, when a login now would go to ``current``, another
        server or login; None when it is the same one (binding what was not bound yet)."""
        if self.bound is None:  # e.g. set with c.SmtpMagic: for the server set with it
            self.bind(current)
            return None
        bound = self.bound
        changed = {i for i in self.open if bound[i] != current[i]}
        if changed:  # left open by the source: fixed by its first change
            self.open -= changed
            bound = self.bound = (
                current[0] if 0 in changed else bound[0], current[1] if 1 in changed else bound[1],
                current[2] if 2 in changed else bound[2], bound[3])
        if bound == current:
            return None
        if bound[:3] == current[:3] and current[3] is None:  # IMAP back to the SMTP host
            self.bound = current
            return None
        return bound
