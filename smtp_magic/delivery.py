"""What a transport is: ``async deliver(envelope, data)``, and the in-memory one for tests.

The engine composes a message, keeps it in the outbox, paces it and retries it; a transport only
moves its bytes to where they go, once per call. The SMTP transport (``transport.SmtpTransport``)
is the default; Microsoft Graph is another; ``MemoryTransport`` keeps what it is given.

A transport's ``deliver``:

- returns ``None`` when every recipient accepted the message, or an ``Outcome`` naming the
  recipients refused, each with its reply code (4xx: the engine tries those recipients again;
  5xx: refused for good);
- calls ``envelope.sending()`` just before the last byte of the message goes out (when the
  message may be delivered from then on) and ``envelope.answered()`` when the other end then
  answered, whatever it said; if ``sending()`` raises, the message must not go out;
- raises an ``errors.SmtpMagicError`` for a failure of the whole message: ``TemporaryFailure``
  (tried again after a pause), ``pacing.Throttled`` (sent again at a slower pace), ``InDoubt``
  (the data went out and no answer came: never sent again unasked), anything else (final).

A transport that queues messages before working on them (waiting for a free connection) says
so with a true ``queues`` attribute and calls ``envelope.started()`` when it begins on one: the
engine's execution timeout then counts from there, not from the call. When a send is cancelled
(that timeout) before its data went out, a transport may leave in ``envelope.stalled`` the error
that says what it was waiting for (the server's greeting, the login...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .config import ConnectionSettings

__all__ = ["Data", "Delivered", "Envelope", "MemoryTransport", "Outcome", "Payload", "Transport", "chunks_of"]

log = logging.getLogger(__name__)


class Payload(Protocol):
    """A message too large to hold in memory: its size and its bytes, a chunk at a time."""

    size: int

    def chunks(self) -> Iterator[bytes]: ...


Data = bytes | Payload


def chunks_of(data: Data | Iterable[bytes]) -> Iterator[bytes]:
    """The message's bytes, a chunk at a time, whatever form ``data`` has."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif hasattr(data, "chunks"):
        yield from data.chunks()
    else:
        yield from data


@dataclass(eq=False)
class Envelope:
    """Who a message is from and to, where it goes, and the journal's two hooks."""

    sender: str
    recipients: tuple[str, ...]
    size: int = 0  # bytes of data
    smtputf8: bool = False  # internationalised addresses: the server must offer SMTPUTF8
    message_id: str | None = None
    # Where the message goes: None means the transport's own settings.
    settings: ConnectionSettings | None = None
    on_sending: Callable[[], None] | None = field(default=None, repr=False)
    on_answered: Callable[[], None] | None = field(default=None, repr=False)
    on_started: Callable[[], None] | None = field(default=None, repr=False)
    # What a cancelled transport was waiting for, if it knows (see the module's docstring).
    stalled: Exception | None = field(default=None, repr=False)

    def started(self) -> None:
        """A queueing transport has begun working on this message."""
        if self.on_started is not None:
            self.on_started()

    def sending(self) -> None:
        """The last byte is about to go out (may raise: then it must not)."""
        if self.on_sending is not None:
            self.on_sending()

    def answered(self) -> None:
        """The other end answered after ``sending()``: the message is no longer in doubt."""
        if self.on_answered is not None:
            self.on_answered()


@dataclass
class Outcome:
    """What the recipients of one message said: accepted, or refused with (code, reply)."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Anything with ``async deliver(envelope, data)`` (see the module's docstring)."""

    async def deliver(self, envelope: Envelope, data: Data | Iterable[bytes]) -> Outcome | None: ...


@dataclass
class Delivered:
    """A message a ``MemoryTransport`` accepted: its envelope and its exact bytes."""

    envelope: Envelope
    data: bytes


class MemoryTransport:
    """Keeps every message it is given, in order, in ``messages``; for tests and dry runs.

    ``refuse`` maps recipients to the ``(code, reply)`` they answer (4xx or 5xx); every other
    recipient accepts. ``fail`` is called with each envelope before anything is kept and may
    raise any error a real transport raises (or return normally to let the message through).
    """

    def __init__(self, *, refuse: dict[str, tuple[int, str]] | None = None,
                 fail: Callable[[Envelope], None] | None = None) -> None:
        self.messages: list[Delivered] = []
        self.refuse = dict(refuse or {})
        self.fail = fail
        self.closed = False

    def __repr__(self) -> str:
        return f"MemoryTransport({len(self.messages)} messages)"

    async def deliver(self, envelope: Envelope, data: Data | Iterable[bytes]) -> Outcome | None:
        if self.fail is not None:
            self.fail(envelope)
        raw = b"".join(chunks_of(data))
        refused = {r: self.refuse[r] for r in envelope.recipients if r in self.refuse}
        accepted = [r for r in envelope.recipients if r not in refused]
        if accepted:  # no data goes out when every recipient was refused
            envelope.sending()
            self.messages.append(Delivered(envelope, raw))
            envelope.answered()
        return Outcome(accepted, refused) if refused else None

    async def aclose(self) -> None:
        self.closed = True
