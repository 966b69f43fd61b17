"""Where each message goes: the transport of its settings (the ``transport`` setting: SMTP over
one pool of connections, or Microsoft Graph), and the passwords those destinations need,
resolved once per settings."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

from .config import ConnectionSettings, choices
from .credentials import resolve_password
from .delivery import Envelope, Outcome
from .errors import ConfigError, SmtpMagicError

log = logging.getLogger(__name__)


class Passwords:
    """Passwords resolved once per settings (a prompt or a keyring look-up is not repeated)."""

    def __init__(self) -> None:
        self._found: dict[ConnectionSettings, str | None | SmtpMagicError] = {}

    def __call__(self, settings: ConnectionSettings) -> str | None:
        if settings not in self._found:
            try:
                self._found[settings] = resolve_password(settings)
            except SmtpMagicError as exc:
                self._found[settings] = exc
        found = self._found[settings]
        if isinstance(found, SmtpMagicError):
            raise found
        return found


def transport_kind(settings: ConnectionSettings) -> str:
    """The ``transport`` of ``settings``, one of the values its setting declares."""
    kind = getattr(settings, "transport", "smtp") or "smtp"
    known = choices("transport")
    if kind not in known:
        raise ConfigError(f"Unknown transport {kind!r}: the transport setting is one of "
                          f"{', '.join(map(repr, known))}.")
    return str(kind)


def check_destination(settings: ConnectionSettings) -> str:
    """The transport of ``settings`` (see ``transport_kind``); exit 1 (ConfigError) for a
    destination no message could ever reach: an unknown transport, or Graph without the
    sign-in it needs."""
    kind = transport_kind(settings)
    if kind == "graph":  # Graph, imported only by those who send through it
        importlib.import_module(f"{__package__}.graph").check_settings(settings)
    return kind


def expect(settings: ConnectionSettings) -> None:
    """Messages to ``settings`` are on their way (written to the outbox next): start what
    takes time and sends nothing, so that the first of them does not wait for it. For SMTP,
    the local host name EHLO gives, looked up once per process in a thread (it may wait for
    DNS: about 2 ms here, otherwise spent idle before the first connection)."""
    if transport_kind(settings) == "smtp":
        from .transport import look_up_local_hostname

        look_up_local_hostname()


def message_check(settings: ConnectionSettings) -> Callable[[Any], None] | None:
    """What every message to ``settings`` must pass before it is kept in the outbox, given its
    ``mime.Composed`` (raises InvalidRequest, exit 1), or None: Microsoft Graph takes no
    message over 4 MB once encoded, so one could only fail again when retried."""
    if transport_kind(settings) != "graph":
        return None
    graph = importlib.import_module(f"{__package__}.graph")
    return lambda composed: graph.check_message(*composed.measure(), composed.recipients)


class Destinations:
    """The default transport: each message goes by its settings' ``transport`` (SMTP, or
    Microsoft Graph), the SMTP ones over one pool of connections."""

    queues = True

    def __init__(self, passwords: Callable[[ConnectionSettings], str | None]) -> None:
        from .transport import SmtpTransport

        self.smtp = SmtpTransport(password=passwords)
        self.others: dict[ConnectionSettings, Any] = {}

    def route(self, settings: ConnectionSettings) -> Any:
        """The transport that takes messages to ``settings``."""
        if transport_kind(settings) == "smtp":
            return self.smtp
        found = self.others.get(settings)
        if found is None:
            # Microsoft Graph, imported only by those who send through it.
            graph = importlib.import_module(f"{__package__}.graph")
            found = self.others[settings] = graph.GraphTransport(settings)
        return found

    async def deliver(self, envelope: Envelope, data: Any) -> Outcome | None:
        assert envelope.settings is not None
        transport = self.route(envelope.settings)
        if not getattr(transport, "queues", False):
            envelope.started()
        result: Outcome | None = await transport.deliver(envelope, data)
        return result

    def abandon(self) -> None:
        """Drop the SMTP connections at once: the loop they belong to is gone."""
        self.smtp.abandon()

    async def aclose(self) -> None:
        transports = [self.smtp, *self.others.values()]
        self.others.clear()
        await asyncio.gather(*(aclose_transport(t) for t in transports), return_exceptions=True)


async def aclose_transport(transport: Any) -> None:
    close = getattr(transport, "aclose", None)
    if close is not None:
        await close()

