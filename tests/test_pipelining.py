"""The transport's own DATA path: pipelined commands (RFC 2920), dot-stuffing, streamed payloads."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from smtp_magic import _shortcuts, api, transport
from smtp_magic.config import SmtpMagic
from smtp_magic.delivery import Envelope
from smtp_magic.errors import ExitCode, Rejected
from smtp_magic.models import SendRequest


def reference(data: bytes) -> bytes:
    """What smtplib and aiosmtplib write after DATA (RFC 5321 §4.5.2): CRLF line ends, a
    leading dot doubled, the message ended by a line break and ``.``."""
    data = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


@pytest.mark.parametrize("data", [
    b"", b".", b"a", b"a\r\n", b"a\n.b\r\n.c", b".\r\n.\r\n", b"x\r", b"x\ry\r\n", b"\n\n.\n",
    b"line\r\n..two\r\n.\r\nend",
])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_data_chunks_match_aiosmtplib_for_any_chunking(data: bytes, size: int):
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert b"".join(transport.data_chunks(chunks)) == reference(data)


@dataclass
class Recorder:
    """A raw SMTP server that replies byte by byte, to split pipelined replies across reads."""

    pipelining: bool = True
    commands: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # commands found in one read
    # Per message: the next MAIL had already arrived when its final "." was read.
    ahead: list[bool] = field(default_factory=list)
    connections: int = 0
    chatty: bool = False  # a line nobody asked for after each message's reply
    drops_ahead: bool = False  # hangs up, unanswered, on a "." with the next envelope behind it

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(text: bytes) -> None:
            for i in range(len(text)):
                writer.write(text[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)

        self.connections += 1
        await reply(b"220 test ESMTP\r\n")
        accepted = 0
        while line := await reader.readline():
            self.commands.append(line)
            self.batches.append(len(reader._buffer.split(b"\r\n")))
            verb = line[:4].upper()
            if verb == b"EHLO":
                ext = b"250-PIPELINING\r\n" if self.pipelining else b""
                await reply(b"250-test\r\n" + ext + b"250 SIZE 100000000\r\n")
            elif verb == b"MAIL":
                accepted = 0
                await reply(b"550 no such sender\r\n" if b"bad-sender" in line else b"250 ok\r\n")
            elif verb == b"RCPT":
                if b"refused" in line:
                    await reply(b"550 5.1.1 no such user\r\n")
                elif b"later" in line:
                    await reply(b"451 4.3.0 try again later\r\n")
                else:
                    accepted += 1
                    await reply(b"250 ok\r\n")
            elif verb == b"DATA":
                if not accepted:
                    await reply(b"554 no valid recipients\r\n")
                    continue
                await reply(b"354 go ahead\r\n")
                lines = []
                while (data_line := await reader.readline()) not in (b".\r\n", b""):
                    lines.append(data_line)
                message = b"".join(lines) + b".\r\n"
                self.ahead.append(b"MAIL" in reader._buffer)
                if self.drops_ahead and self.ahead[-1]:  # as Dovecot 2.3's submission does
                    break
                if b"refuse-data" in message:
                    await reply(b"554 5.7.1 content refused\r\n")
                    continue
                self.messages.append(message)
                if self.chatty:  # in the same segment, so that the client has it at once
                    writer.write(b"250 queued\r\n250 and another thing\r\n")
                    await writer.drain()
                    continue
                await reply(b"250 queued\r\n")
                if b"hang-up" in message:
                    break
            elif verb == b"RSET":
                await reply(b"250 reset\r\n")
            elif verb == b"QUIT":
                await reply(b"221 bye\r\n")
                break
            else:
                await reply(b"502 what?\r\n")
        writer.close()


async def _session(recorder: Recorder) -> tuple[transport.Session, asyncio.AbstractServer]:
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpMagic(host="127.0.0.1", port=port, security="none", timeout=10).snapshot()
    return transport.Session(settings, None), server


async def _transport(recorder: Recorder, connections: int = 4
                     ) -> tuple[transport.SmtpTransport, asyncio.AbstractServer]:
    """The SMTP transport, as the engine uses it, to the ``recorder``."""
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpMagic(host="127.0.0.1", port=port, security="none", timeout=10,
                         connections=connections).snapshot()
    return transport.SmtpTransport(settings), server


def Env(sender: str, recipients: tuple[str, ...]) -> Envelope:
    return Envelope(sender, recipients)


@dataclass
class Chunked:
    parts: list[bytes]

    @property
    def size(self) -> int:
        return sum(map(len, self.parts))

    def chunks(self) -> Iterator[bytes]:
        return iter(self.parts)


@pytest.fixture(params=["shortcut", "public"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both transaction paths: the pipelining Channel and aiosmtplib's public ``sendmail``."""
    if request.param == "public":
        monkeypatch.setenv(_shortcuts.ENV, "1")
    elif not _shortcuts.allowed("pipelining"):
        pytest.skip(f"pipelining shortcut off: {_shortcuts.status()['pipelining']}")
    return str(request.param)


@pytest.mark.parametrize("offered", [True, False])
async def test_messages_over_one_connection_with_partial_refusals(offered: bool, wire: str):
    pipelining = offered and wire == "shortcut"  # aiosmtplib's sendmail never pipelines
    recorder = Recorder(pipelining=offered)
    smtp, server = await _transport(recorder)
    body = b"Subject: x\r\n\r\n.leading dot\r\nline\n"
    try:
        assert await smtp.deliver(Env("a@x.test", ("b@x.test",)), body) is None  # all accepted
        partly = await smtp.deliver(Env("a@x.test", ("c@x.test", "refused@x.test")), body)
        assert partly is not None and partly.accepted == ["c@x.test"]
        assert list(partly.refused) == ["refused@x.test"] and partly.refused["refused@x.test"][0] == 550
        nobody = await smtp.deliver(Env("a@x.test", ("refused@x.test",)), body)
        assert nobody is not None and nobody.accepted == [] and list(nobody.refused) == ["refused@x.test"]
        with pytest.raises(Rejected):
            await smtp.deliver(Env("bad-sender@x.test", ("d@x.test",)), body)
        streamed = Chunked([b"Subject: big\r\n\r\n", b"abc\r", b"\n.def\r\n" * 3, b"end"])
        assert await smtp.deliver(Env("a@x.test", ("e@x.test",)), streamed) is None
    finally:
        await smtp.aclose()
        server.close()
    # This server wrongly answers 354 after a refused sender: a pipelining client then ends
    # the DATA with an empty message (RFC 2920 §3.1); one that waits never gets that far.
    empty = [b".\r\n"] if pipelining else []
    assert recorder.messages == [reference(body)] * 2 + empty + [reference(b"".join(streamed.parts))]
    # One connection throughout; pipelined: MAIL, RCPT and DATA arrive together.
    assert sum(c.startswith(b"EHLO") for c in recorder.commands) == 1
    mail_batches = [n for c, n in zip(recorder.commands, recorder.batches) if c.startswith(b"MAIL")]
    assert all(n > 1 for n in mail_batches) if pipelining else all(n == 1 for n in mail_batches)
    assert any(re.match(rb"MAIL FROM:<a@x.test> SIZE=\d+", c, re.IGNORECASE) for c in recorder.commands)


async def test_trace_sees_every_command_and_reply_but_not_the_message(monkeypatch):
    if not _shortcuts.allowed("pipelining"):
        pytest.skip("the trace hook is the pipelining channel's (aiosmtplib's sendmail has none)")
    recorder = Recorder()
    session, server = await _session(recorder)
    lines: list[tuple[str, str]] = []
    session.trace = lambda direction, line: lines.append((direction, line))
    try:
        await session.transaction(Env("a@x.test", ("b@x.test",)), b"Subject: x\r\n\r\nsecret body\r\n")
    finally:
        await session.close()
        server.close()
    assert lines[:3] == [("C", "MAIL FROM:<a@x.test> SIZE=27"), ("C", "RCPT TO:<b@x.test>"),
                         ("C", "DATA")]
    assert ("S", "354 go ahead") in lines and ("C", "<message: 27 bytes>") in lines
    assert lines[-2:] == [("C", "QUIT"), ("S", "221 bye")]
    assert not any("secret" in line for _, line in lines)


async def test_the_next_envelope_goes_out_with_the_end_of_the_data(wire: str, tmp_path):
    """In a bulk send the next message's MAIL, RCPT and DATA ride on the previous message's
    final "." (RFC 2920 §3.1). Every outcome stays the message's own: a refused message, a
    refused or deferred recipient, and a hang-up right after a message, with the next envelope
    already sent, cost the following messages nothing (the last goes on a new connection)."""
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    plan = [  # (recipients, body, exit code)
        (("a@x.test",), "one", ExitCode.SENT),
        (("a@x.test",), "refuse-data", ExitCode.REJECTED),
        (("a@x.test",), "two", ExitCode.SENT),
        (("refused@x.test",), "nobody", ExitCode.REJECTED),
        (("a@x.test",), "three", ExitCode.SENT),
        (("later@x.test", "b@x.test"), "deferred", ExitCode.PARTIAL),
        (("a@x.test",), "four", ExitCode.SENT),
        (("a@x.test",), "hang-up", ExitCode.SENT),
        (("a@x.test",), "five", ExitCode.SENT),
        (("a@x.test",), "six", ExitCode.SENT),
    ]
    requests = [SendRequest(to=to, subject=f"Message {i}", body=body, content_type="text/plain")
                for i, (to, body, _) in enumerate(plan)]
    config = {"host": "127.0.0.1", "port": port, "security": "none", "connections": 1,
              "sender": "s@x.test", "outbox_dir": str(tmp_path / "outbox")}
    try:
        responses = await api.send_many_async(requests, config=config)
    finally:
        server.close()
    assert [r.exitcode for r in responses] == [code for _, _, code in plan], responses
    bodies = [re.search(rb"\r\n\r\n(.*?)\r\n", m, re.DOTALL).group(1) for m in recorder.messages]
    assert bodies == [b"one", b"two", b"three", b"deferred", b"four", b"hang-up", b"five", b"six"]
    assert recorder.connections == 2  # the hang-up; nothing else needed a new connection
    ehlo = [c for c in recorder.commands if c.startswith(b"EHLO")]  # as smtplib would say it
    assert ehlo == [f"EHLO {socket.getfqdn()}\r\n".encode()] * 2
    if wire == "shortcut":
        # After each message's data: was the next envelope there already? Not after the last,
        # nor after one with a deferred recipient (it may need a second transaction first).
        assert recorder.ahead == [True, True, True, True, False, True, True, True, False]
    else:
        assert not any(recorder.ahead)


async def test_a_server_that_drops_an_envelope_sent_ahead_gets_none_again(wire: str, tmp_path):
    """A server that hangs up, without its final reply, on a message whose end carried the next
    envelope: that message is in doubt (exit 6), and the rest go out one envelope at a time, on
    this connection and every later one to that server."""
    recorder = Recorder(drops_ahead=True)
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    requests = [SendRequest(to="a@x.test", subject=f"Message {i}", body=f"body {i}",
                            content_type="text/plain") for i in range(4)]
    config = {"host": "127.0.0.1", "port": port, "security": "none", "connections": 1,
              "sender": "s@x.test", "outbox_dir": str(tmp_path / "outbox")}
    try:
        responses = await api.send_many_async(requests, config=config)
        again = await api.send_many_async(requests[:2], config=config)
    finally:
        server.close()
        transport._no_ahead.discard(("127.0.0.1", port))
    if wire == "shortcut":
        assert [r.exitcode for r in responses] == [ExitCode.TIMEOUT] + [ExitCode.SENT] * 3
        assert "may or may not have been delivered" in responses[0].message
        assert recorder.ahead == [True] + [False] * 5  # never again, later sends included
    else:  # aiosmtplib's sendmail sends nothing ahead
        assert [r.exitcode for r in responses + again] == [ExitCode.SENT] * 6
        assert not any(recorder.ahead)


async def test_an_envelope_sent_ahead_for_a_message_that_does_not_come_is_dropped(wire: str):
    """A message waiting for the connection has its envelope sent ahead with the end of the
    data before it; if it is then cancelled (its caller gave up) and another comes instead, the
    connection (where the server waits for the promised message's data) is dropped and the
    other one goes on a new connection: nothing is sent in its place."""
    recorder = Recorder()
    smtp, server = await _transport(recorder, connections=1)
    first, second = b"Subject: 1\r\n\r\nfirst\r\n", b"Subject: 2\r\n\r\nsecond\r\n"
    planned = b"Subject: 0\r\n\r\nplanned\r\n"
    try:
        envelope = Env("a@x.test", ("b@x.test",))
        sending = asyncio.ensure_future(smtp.deliver(envelope, first))
        await asyncio.sleep(0)  # the first has the connection; the next one waits for it
        waiting = asyncio.ensure_future(smtp.deliver(Env("a@x.test", ("planned@x.test",)), planned))
        envelope.on_sending = waiting.cancel  # its caller gives up as the first's end goes out
        await sending
        await asyncio.gather(waiting, return_exceptions=True)
        assert waiting.cancelled()
        await smtp.deliver(Env("a@x.test", ("c@x.test",)), second)
    finally:
        await smtp.aclose()
        server.close()
    assert recorder.messages == [reference(first), reference(second)]
    if wire == "shortcut":  # the promised envelope came with the first message's end
        assert recorder.ahead == [True, False] and recorder.connections == 2
    else:  # aiosmtplib's sendmail sends nothing ahead
        assert recorder.ahead == [False, False] and recorder.connections == 1


async def test_a_reply_nobody_asked_for_between_transactions_is_dropped():
    """(The pipelining channel's own reading; aiosmtplib's sendmail would take such a line
    for the next reply.)"""
    if not _shortcuts.allowed("pipelining"):
        pytest.skip(f"pipelining shortcut off: {_shortcuts.status()['pipelining']}")
    recorder = Recorder(chatty=True)
    smtp, server = await _transport(recorder)
    body = b"Subject: x\r\n\r\nhello\r\n"
    try:
        for rcpt in ("b@x.test", "c@x.test", "d@x.test"):
            assert await smtp.deliver(Env("a@x.test", (rcpt,)), body) is None
    finally:
        await smtp.aclose()
        server.close()
    assert recorder.messages == [reference(body)] * 3 and recorder.connections == 1


async def test_the_read_timeout_counts_from_each_wait_and_still_fires():
    """The channel keeps one read timer per connection and moves it lazily: a reply later than
    an earlier wait's deadline (but within its own) is still taken, and a reply that never
    comes fails the wait after its own timeout, not before."""
    from aiosmtplib import SMTPReadTimeoutError

    from smtp_magic._pipeline import Channel

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.startswith(b"SLOW"):
                await asyncio.sleep(float(line.split()[1]))
            if not line.startswith(b"HANG"):
                writer.write(b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    channel = Channel.take(writer.transport)
    loop = asyncio.get_running_loop()
    try:
        assert [r.code for r in await channel.exchange(b"FAST\r\n", 1, 0.5)] == [250]
        await asyncio.sleep(0.3)  # the first wait's deadline passes during the next wait
        assert [r.code for r in await channel.exchange(b"SLOW 0.4\r\n", 1, 0.6)] == [250]
        started = loop.time()
        with pytest.raises(SMTPReadTimeoutError):
            await channel.exchange(b"HANG\r\n", 1, 0.3)
        assert loop.time() - started >= 0.25
    finally:
        channel.close()
        server.close()
