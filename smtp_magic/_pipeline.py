"""SMTP mail transactions on asyncio's public Protocol API: pipelined commands (RFC 2920) and a
streamed DATA payload with flow control, over a connection aiosmtplib has opened and secured.

A ``Channel`` is the protocol of the connection's transport once ``_shortcuts.take_transport``
has handed it over (``transport.set_protocol``). It writes commands and payload, reads any
number of (multi-line) replies, and never touches aiosmtplib's internals. ``trace`` is the one
place to observe the conversation (commands and replies; the payload only as its size).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiosmtplib import (
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
)

__all__ = ["Channel", "parse_reply"]

log = logging.getLogger(__name__)  # the conversation itself is logged through ``trace``

_MAX_REPLIES_BYTES = 1 << 16  # a few hundred pipelined replies at most; more is a broken server
_READ_SIZE = 1 << 16

Trace = Callable[[str, str], None]


def parse_reply(buffer: bytearray) -> tuple[int, str] | None:
    """Take one complete (possibly multi-line) reply off the front of ``buffer``."""
    found = _reply_at(buffer, 0)
    if found is None:
        return None
    del buffer[:found[2]]
    return found[0], found[1]


def _reply_at(buffer: bytearray, offset: int) -> tuple[int, str, int] | None:
    """The complete (possibly multi-line) reply at ``offset`` in ``buffer`` and the offset
    after it, or None; the buffer is left as it is (the caller cuts what it has read once)."""
    end = buffer.find(b"\n", offset)
    if end == -1:
        return None
    line = buffer[offset:end + 1]
    if line[3:4] != b"-":  # the common case: a one-line reply
        try:
            code = int(line[:3])
        except ValueError:
            raise ValueError(f"malformed SMTP reply line {bytes(line[:80])!r}") from None
        return code, line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"), end + 1
    lines = []
    while True:
        try:
            code = int(line[:3])
        except ValueError:
            raise ValueError(f"malformed SMTP reply line {bytes(line[:80])!r}") from None
        lines.append(line[4:].strip(b" \t\r\n"))
        offset = end + 1
        if line[3:4] != b"-":
            return code, b"\n".join(lines).decode("utf-8", "surrogateescape"), offset
        end = buffer.find(b"\n", offset)
        if end == -1:
            return None
        line = buffer[offset:end + 1]


# ``SMTPResponse`` is a NamedTuple in every supported aiosmtplib: a reply is made with
# ``tuple.__new__``, as its generated ``__new__`` does, without a Python call per reply.
_PLAIN_RESPONSE = issubclass(SMTPResponse, tuple) and SMTPResponse._fields == ("code", "message")


class _Read:
    """Replies owed for one write, in the order the server sends them."""

    __slots__ = ("future", "replies", "wanted")

    def __init__(self, future: asyncio.Future[list[SMTPResponse]], wanted: int) -> None:
        self.future, self.wanted = future, wanted
        self.replies: list[SMTPResponse] = []


class Channel(asyncio.BufferedProtocol):
    """The SMTP conversation after login: write commands (and a payload), read their replies.

    Replies are paired with writes first in, first out, so a write may carry the commands of
    the next transaction after a message's content (RFC 2920 §3.1: the content may be the first
    "command" of a group): ``exchange(..., then=envelope)`` sends the next MAIL, RCPT... and
    DATA in the same write as the end of the data, and the next transaction collects their
    replies with ``prefetched(envelope)``.

    Raises aiosmtplib's exception types, so the transport handles this path and aiosmtplib's
    own ``sendmail`` alike.
    """

    def __init__(self, transport: asyncio.WriteTransport, trace: Trace | None = None) -> None:
        self.transport = transport
        self.trace = trace
        self._event_loop = asyncio.get_running_loop()
        # Replies are read into one buffer (BufferedProtocol): a plain Protocol gets a new
        # bytes object per read, allocated at the transport's 256 KiB read size and shrunk.
        self._incoming = memoryview(bytearray(_READ_SIZE))
        self._inbox = bytearray()
        self._reads: deque[_Read] = deque()
        self._ahead: tuple[object, _Read] | None = None  # an envelope sent ahead, not yet claimed
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._lost = False
        # The read timeout: one timer per connection, moved lazily (see ``_replies``).
        self._deadline: float | None = None  # when the reply awaited now is late, if any
        self._watch: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when ``_watch`` fires (its when(), without a call)

    @classmethod
    def take(cls, transport: Any, trace: Trace | None = None) -> Channel:
        """Make this protocol the one that receives ``transport``'s events from now on."""
        channel = cls(transport, trace)
        transport.set_protocol(channel)
        try:  # paused before the hand-over (never seen: aiosmtplib has just read a reply)?
            paused = transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
        except (AttributeError, NotImplementedError):  # Python 3.10's SSL transport
            paused = False
        if paused:
            channel.pause_writing()  # then wait for resume_writing before writing more
        return channel

    @property
    def is_open(self) -> bool:
        return not self._lost and not self.transport.is_closing()

    @property
    def ahead(self) -> bool:
        """An envelope went out ahead and the server may be waiting for its message."""
        return self._ahead is not None

    # -- asyncio.BufferedProtocol callbacks ---------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._incoming

    def buffer_updated(self, nbytes: int) -> None:
        if not self._reads:
            return  # unsolicited (between transactions): never paired with a later command
        inbox, reads, offset = self._inbox, self._reads, 0
        inbox += self._incoming[:nbytes]
        try:
            while reads:
                read = reads[0]
                found = _reply_at(inbox, offset)
                if found is None:
                    break
                code, text, offset = found
                read.replies.append(tuple.__new__(SMTPResponse, (code, text)) if _PLAIN_RESPONSE
                                    else SMTPResponse(code, text))
                if self.trace is not None:
                    self.trace("S", f"{code} {text}")
                if len(read.replies) >= read.wanted:
                    reads.popleft()
                    if not read.future.done():
                        read.future.set_result(read.replies)
        except ValueError as exc:
            self._fail(SMTPResponseException(-1, str(exc)))
            return
        finally:
            if offset:
                del inbox[:offset]  # the replies read, at once
        if len(inbox) > _MAX_REPLIES_BYTES:
            self._fail(SMTPResponseException(-1, "Response too long"))

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        error = SMTPServerDisconnected("Connection lost")
        if exc is not None:
            error.__cause__ = exc
        self._fail(error)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._event_loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- the conversation ------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Every reply still owed fails with ``exc``: the stream cannot be trusted after it."""
        reads, self._reads = self._reads, deque()
        for read in reads:
            if not read.future.done():
                read.future.set_exception(exc)
                read.future.exception()  # retrieved even if nobody awaits it (an envelope ahead)

    def _expect(self, wanted: int) -> _Read:
        if not self._reads:  # (called before the write) what is left over was never asked for
            self._inbox.clear()
        read = _Read(self._event_loop.create_future(), wanted)
        self._reads.append(read)
        return read

    def _trace_commands(self, commands: bytes) -> None:
        if self.trace is not None:
            for line in commands.decode("utf-8", "replace").splitlines():
                self.trace("C", line)

    async def exchange(
        self, commands: bytes, replies: int, timeout: float | None,
        payload: Iterable[bytes] = (), size: int = 0, then: bytes = b"", then_replies: int = 0,
        ending: Callable[[], None] | None = None, then_key: object = None,
    ) -> list[SMTPResponse]:
        """Write ``commands`` (CRLF-ended lines) and then ``payload``; read ``replies`` replies.

        ``then`` (the next transaction's envelope, ``then_replies`` replies) goes out in the
        same write as the payload's end; its replies wait for ``prefetched``, which recognises
        it by ``then_key`` (what it was made of; ``then`` itself if None). ``ending()`` is
        called just before that last write (it may raise to keep the end from going out).
        """
        if self._lost or self.transport.is_closing():  # (``is_open``, without a property call)
            raise SMTPServerDisconnected("Connection lost")
        if self._ahead is not None:
            raise RuntimeError("an envelope sent ahead must be claimed first")
        if self.trace is not None:
            self._trace_commands(commands)
            if size:
                self.trace("C", f"<message: {size} bytes>")
        read = self._expect(replies)
        write = self.transport.write
        pending = commands
        for chunk in payload:
            if pending:  # held back one chunk, so that the last one can carry ``then``
                write(pending)
                if self._writable is not None:  # flow control: keep at most a chunk buffered
                    await self._writable
                if self._lost:
                    raise SMTPServerDisconnected("Connection lost")
            pending = chunk
        if ending is not None:
            ending()
        if then:
            if self.trace is not None:
                self._trace_commands(then)
            self._ahead = (then if then_key is None else then_key, self._expect(then_replies))
            pending += then
        if pending:
            write(pending)
        return await self._replies(read, timeout)

    async def prefetched(self, envelope: object, timeout: float | None) -> list[SMTPResponse] | None:
        """The replies to ``envelope`` (its ``then_key``, else its bytes) if it went out ahead
        (``exchange(..., then=...)``); None when it did not. Another envelope ahead is a bug in
        the caller."""
        if self._ahead is None:
            return None
        sent, read = self._ahead
        if sent != envelope:
            raise RuntimeError("the envelope sent ahead belongs to another message")
        self._ahead = None
        if read.future.done():  # (most often: they came with the reply to the data before)
            return read.future.result()
        return await self._replies(read, timeout)

    async def _replies(self, read: _Read, timeout: float | None) -> list[SMTPResponse]:
        future = read.future
        if future.done():
            return future.result()
        if timeout is None:
            return await future
        if self._deadline is not None:  # another wait already watched (not seen): its own timer
            return await self._replies_timed(future, timeout)
        # A timer per wait costs a heap push and a cancelled entry per message; instead one
        # timer stays armed and, when it fires early (the deadline moved on), re-arms itself.
        deadline = self._deadline = self._event_loop.time() + timeout
        watch = self._watch
        if watch is None or self._armed > deadline:
            if watch is not None:
                watch.cancel()
            self._watch = self._event_loop.call_at(deadline, self._check_deadline)
            self._armed = deadline
        try:
            return await future
        finally:
            self._deadline = None

    def _check_deadline(self) -> None:
        """The read timer fired: the awaited reply is late, or the deadline moved on since."""
        fired, self._watch = self._watch, None
        deadline = self._deadline
        if deadline is None:
            return  # nothing awaited now: the next wait arms the timer again
        if fired is not None and deadline > fired.when():
            self._watch = self._event_loop.call_at(deadline, self._check_deadline)
            self._armed = deadline
            return
        self._fail(SMTPReadTimeoutError("Timed out waiting for server response"))

    async def _replies_timed(self, future: asyncio.Future[list[SMTPResponse]],
                             timeout: float) -> list[SMTPResponse]:
        timer = self._event_loop.call_later(
            timeout, self._fail, SMTPReadTimeoutError("Timed out waiting for server response"))
        try:
            return await future
        finally:
            timer.cancel()

    async def quit(self) -> None:
        """QUIT and close; errors are of no interest at this point. In the middle of a
        transaction (an envelope sent ahead, or replies still owed after a cancelled send) the
        connection is just closed: QUIT could be taken for message content, and nothing is
        delivered without the end of the data."""
        try:
            if self.is_open and self._ahead is None and not self._reads:
                await asyncio.wait_for(self.exchange(b"QUIT\r\n", 1, 2), 2)
        except (SMTPResponseException, SMTPServerDisconnected, SMTPReadTimeoutError, OSError,
                asyncio.TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if not self.transport.is_closing():
            self.transport.close()
