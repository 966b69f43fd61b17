"""A misbehaving SMTP server for tests: the capture server plus scripted failures and counters."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiosmtpd.smtp import SMTP

from smtp_magic.server import CaptureHandler, CaptureServer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PASSWORD", "USER", "FaultServer", "Faults", "refused_port"]

Reply = tuple[int, str]
USER, PASSWORD = "alice", "s3cret-pw"  # the login of the AUTH test servers in conftest.py


@dataclass(frozen=True)
class Faults:
    """What to get wrong. ``times=N`` limits the scripted failures (greeting, mail/rcpt/data
    replies, stalls, drops) to the first N connections or transactions; None means always."""

    refuse_rcpt: Mapping[str, Reply] = field(default_factory=dict)
    greeting: Reply | None = None
    mail_reply: Reply | None = None
    rcpt_reply: Reply | None = None
    data_reply: Reply | None = None
    times: int | None = None
    max_rcpts: int | None = None
    stall: float = 0.0
    stall_at: Literal["greeting", "data"] = "data"
    drop_after_data: bool = False
    drop_at_greeting: bool = False
    no_starttls: bool = False
    transient_ratio: float = 0.0
    drop_ratio: float = 0.0
    seed: int = 0

    def hit(self, n: int) -> bool:
        """Whether the n-th (1-based) connection or transaction is one that fails."""
        return self.times is None or n <= self.times


def _reply(reply: Reply) -> str:
    return f"{reply[0]} {reply[1]}"


class FaultHandler(CaptureHandler):
    """The capture handler with scripted replies; counts transactions and accepted messages."""

    def __init__(self, server: FaultServer, **kwargs: Any):
        super().__init__(server.maildir, offer_starttls=not server.faults.no_starttls, **kwargs)
        self.server = server
        self.faults = server.faults

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        srv, f = self.server, self.faults
        srv.transactions += 1
        # Tag the envelope: later replies of this transaction look up its number and its draw.
        envelope.fault_seq = srv.transactions
        envelope.fault_draw = srv.rng.random() if f.transient_ratio or f.drop_ratio else 1.0
        if f.mail_reply and f.hit(envelope.fault_seq):
            return _reply(f.mail_reply)
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        f = self.faults
        refusal = f.refuse_rcpt.get(address) or f.refuse_rcpt.get(address.lower())
        if refusal:
            return _reply(refusal)
        if f.rcpt_reply and f.hit(envelope.fault_seq):
            return _reply(f.rcpt_reply)
        if f.max_rcpts is not None and len(envelope.rcpt_tos) >= f.max_rcpts:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        f, seq, draw = self.faults, envelope.fault_seq, envelope.fault_draw
        if f.stall and f.stall_at == "data" and f.hit(seq):
            await asyncio.sleep(f.stall)  # a client that gives up meanwhile cancels this: not stored
        if (f.drop_after_data and f.hit(seq)) or draw < f.drop_ratio:
            server.drop_next_reply = True  # FaultSMTP.push closes instead of answering
            return "250 dropped"
        if f.data_reply and f.hit(seq):
            return _reply(f.data_reply)
        if draw < f.drop_ratio + f.transient_ratio:
            return "451 4.3.0 Temporary failure, please try again"
        reply = await super().handle_DATA(server, session, envelope)
        self.server.accepted += 1
        return reply


class FaultSMTP(SMTP):
    """aiosmtpd's SMTP with greeting faults and a way to hang up instead of replying."""

    def __init__(self, handler: FaultHandler, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.fault_server = handler.server
        self.drop_next_reply = False

    async def push(self, status: Any) -> None:
        if self.drop_next_reply:
            self.drop_next_reply = False
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)

    async def _handle_client(self) -> None:
        srv, f = self.fault_server, self.fault_server.faults
        if not srv.armed:  # aiosmtpd's own probe connection while the server starts
            await super()._handle_client()
            return
        srv.connections += 1
        srv.active += 1
        srv.max_active = max(srv.max_active, srv.active)
        n = srv.connections
        try:
            if f.drop_at_greeting and f.hit(n):
                assert self.transport is not None
                self.transport.close()
                return
            if f.greeting and f.hit(n):
                await self.push(_reply(f.greeting))
                assert self.transport is not None
                self.transport.close()
                return
            if f.stall and f.stall_at == "greeting" and f.hit(n):
                await asyncio.sleep(f.stall)
            await super()._handle_client()
        except asyncio.CancelledError:
            # The client hung up during a stall: aiosmtpd's own cleanup has not run yet.
            if self.transport is not None:
                self.transport.close()
            raise
        finally:
            srv.active -= 1


class FaultServer(CaptureServer):
    """A capture server that misbehaves as told (see :class:`Faults`) and counts what happens.

    Counters, reset at start: ``connections``, ``active``/``max_active`` (concurrent
    connections), ``transactions`` (MAIL commands) and ``accepted`` (messages stored).
    Everything it accepts is stored like the capture server does, so tests can assert on it.
    """

    def __init__(self, maildir: Any = None, *, refuse_rcpt: Mapping[str, Reply] | None = None,
                 greeting: Reply | None = None, mail_reply: Reply | None = None,
                 rcpt_reply: Reply | None = None, data_reply: Reply | None = None,
                 times: int | None = None, max_rcpts: int | None = None, stall: float = 0.0,
                 stall_at: Literal["greeting", "data"] = "data", drop_after_data: bool = False,
                 drop_at_greeting: bool = False, no_starttls: bool = False,
                 transient_ratio: float = 0.0, drop_ratio: float = 0.0, seed: int = 0,
                 **server_kwargs: Any):
        super().__init__(maildir, **server_kwargs)
        self.faults = Faults(
            refuse_rcpt=dict(refuse_rcpt or {}), greeting=greeting, mail_reply=mail_reply,
            rcpt_reply=rcpt_reply, data_reply=data_reply, times=times, max_rcpts=max_rcpts,
            stall=stall, stall_at=stall_at, drop_after_data=drop_after_data,
            drop_at_greeting=drop_at_greeting, no_starttls=no_starttls,
            transient_ratio=transient_ratio, drop_ratio=drop_ratio, seed=seed,
        )
        self.armed = False
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.connections = self.active = self.max_active = 0
        self.transactions = self.accepted = 0
        self.rng = random.Random(self.faults.seed)

    def _make_handler(self) -> FaultHandler:
        return FaultHandler(self, offer_auth=bool(self.users), require_auth=self.require_auth)

    def _smtp_factory(self) -> Callable[[], Any]:
        handler, kwargs = self._make_handler(), self._smtp_kwargs()
        return lambda: FaultSMTP(handler, **kwargs)

    def start(self) -> Self:
        self.armed = False
        super().start()
        self._reset_counters()
        self.armed = True
        return self

    def __repr__(self) -> str:
        active = {k: v for k, v in vars(self.faults).items() if v and k != "seed"}
        return f"<FaultServer {self.url} {active} connections={self.connections}>"


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where connecting is refused: bound but not listening, so nobody else can take it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
