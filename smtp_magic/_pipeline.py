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

Trace = Callable[[str, str], None]


def parse_reply(buffer: bytearray) -> tuple[int, str] | None:
    """Take one complete (possibly multi-line) reply off the front of ``buffer``."""
    offset, code, lines = 0, -1, []
    while True:
        end = buffer.find(b"\n", offset)
        if end == -1:
            return None
        line = bytes(buffer[offset:end + 1])
        offset = end + 1
        try:
            code = int(line[:3])
        except ValueError:
            raise ValueError(f"malformed SMTP reply line {line[:80]!r}") from None
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return code, b"\n".join(lines).decode("utf-8", "surrogateescape")


class Channel(asyncio.Protocol):
    """The SMTP conversation after login: write commands (and a payload), read their replies.

    Raises aiosmtplib's exception types, so the transport handles this path and aiosmtplib's
    own ``sendmail`` alike.
    """

    def __init__(self, transport: asyncio.WriteTransport, trace: Trace | None = None) -> None:
        self.transport = transport
        self.trace = trace
        self._event_loop = asyncio.get_running_loop()
        self._inbox = bytearray()
        self._replies: list[SMTPResponse] = []
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._lost = False

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

    # -- asyncio.Protocol callbacks ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._wanted:
            return  # unsolicited (between transactions): never paired with a later command
        self._inbox.extend(data)
        try:
            while len(self._replies) < self._wanted:
                reply = parse_reply(self._inbox)
                if reply is None:
                    break
                self._replies.append(SMTPResponse(*reply))
                if self.trace is not None:
                    self.trace("S", f"{reply[0]} {reply[1]}")
        except ValueError as exc:
            self._fail(SMTPResponseException(-1, str(exc)))
            return
        if len(self._inbox) > _MAX_REPLIES_BYTES:
            self._fail(SMTPResponseException(-1, "Response too long"))
        elif len(self._replies) >= self._wanted:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
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

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
            self._waiter.exception()  # retrieved even if nobody awaits it

    async def exchange(
        self, commands: bytes, replies: int, timeout: float | None,
        payload: Iterable[bytes] = (), size: int = 0,
    ) -> list[SMTPResponse]:
        """Write ``commands`` (CRLF-ended lines) and then ``payload``; read ``replies`` replies."""
        if not self.is_open:
            raise SMTPServerDisconnected("Connection lost")
        waiter = self._event_loop.create_future()
        self._inbox, self._replies = bytearray(), []
        self._waiter, self._wanted = waiter, replies
        if self.trace is not None:
            for line in commands.decode("utf-8", "replace").splitlines():
                self.trace("C", line)
            if size:
                self.trace("C", f"<message: {size} bytes>")
        timer = None
        try:
            if commands:
                self.transport.write(commands)
            for chunk in payload:
                if self._lost:
                    raise SMTPServerDisconnected("Connection lost")
                self.transport.write(chunk)
                if self._writable is not None:  # flow control: keep at most a chunk buffered
                    await self._writable
            if not waiter.done():
                if timeout is not None:
                    timer = self._event_loop.call_later(
                        timeout, self._fail,
                        SMTPReadTimeoutError("Timed out waiting for server response"),
                    )
                await waiter
            else:
                waiter.result()
            return self._replies
        finally:
            if timer is not None:
                timer.cancel()
            self._wanted, self._waiter = 0, None

    async def quit(self) -> None:
        """QUIT and close; errors are of no interest at this point."""
        try:
            if self.is_open:
                await asyncio.wait_for(self.exchange(b"QUIT\r\n", 1, 2), 2)
        except (SMTPResponseException, SMTPServerDisconnected, SMTPReadTimeoutError, OSError,
                asyncio.TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
