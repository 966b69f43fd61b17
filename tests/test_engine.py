"""The engine (``Mailer``) over the in-memory transport: retries, pacing, the outbox, progress,
order and windows, without sockets; and once against a real SMTP server."""

from __future__ import annotations

import asyncio
import errno
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TmpData

from smtp_magic import Mailer, SmtpMagic, _attempts, _destinations, engine, pacing, profiles
from smtp_magic.delivery import Envelope, MemoryTransport, Outcome
from smtp_magic.errors import ConfigError, ExitCode, InDoubt, TemporaryFailure
from smtp_magic.models import SendRequest
from smtp_magic.outbox import Outbox, history
from smtp_magic.server import CaptureServer

CONFIG = {"host": "mail.example.test", "port": 587, "security": "none",
          "sender": "me@example.test", "timeout": 5}


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The retry pauses asked for (attempt numbers), none of them waited."""
    asked: list[int] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.0

    monkeypatch.setattr(_attempts, "backoff", backoff)  # where the attempts look it up
    return asked


def subjects(memory: MemoryTransport) -> list[str]:
    found = []
    for delivered in memory.messages:
        head = delivered.data.split(b"\r\n\r\n", 1)[0].decode()
        found += [line[9:] for line in head.split("\r\n") if line.startswith("Subject: ")]
    return found


def test_send_hands_the_transport_the_message_and_its_envelope(tmp_data: TmpData) -> None:
    memory = MemoryTransport()
    with Mailer(CONFIG, transport=memory) as mailer:
        response = mailer.send("bob@example.test", "Numbers", "<p>Hi</p>", cc="carol@example.test",
                               bcc="dave@example.test")
    assert response.ok and response.accepted == ("bob@example.test", "carol@example.test",
                                                 "dave@example.test")
    (delivered,) = memory.messages
    assert delivered.envelope.sender == "me@example.test"
    assert delivered.envelope.recipients == response.accepted
    assert delivered.envelope.message_id == response.message_id
    assert delivered.envelope.settings is not None and delivered.envelope.settings.host == "mail.example.test"
    assert b"Subject: Numbers" in delivered.data and b"dave@" not in delivered.data  # Bcc unseen
    assert memory.closed  # the context manager closed the transport
    assert Outbox(tmp_data.outbox).entries() == []


def test_send_many_keeps_request_order_and_reports_bad_requests_alone() -> None:
    memory = MemoryTransport()
    requests: list[Any] = [{"to": f"u{i}@example.test", "subject": f"M{i}", "body": "x"}
                           for i in range(5)]
    requests[2] = {"to": "not an address", "subject": "Bad"}
    responses = Mailer(CONFIG, transport=memory).send_many(requests)
    assert [r.exitcode for r in responses] == [0, 0, 1, 0, 0]
    assert subjects(memory) == ["M0", "M1", "M3", "M4"]
    assert [r.message_id for r in responses if r.ok] == [m.envelope.message_id for m in memory.messages]


def test_iter_send_many_yields_each_response_once_final_a_window_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_WINDOW", 3)
    memory = MemoryTransport()
    produced = 0

    def requests() -> Iterator[SendRequest]:
        nonlocal produced
        for i in range(10):
            produced += 1
            yield SendRequest(to=f"u{i}@example.test", subject=f"M{i}", body="x")

    seen: list[tuple[int, int]] = []  # (responses given, requests produced) at each response
    for response in Mailer(CONFIG, transport=memory).iter_send_many(requests()):
        assert response.ok
        seen.append((len(seen) + 1, produced))
    assert len(seen) == 10 and subjects(memory) == [f"M{i}" for i in range(10)]
    # The first responses came before the generator was read past their window.
    assert seen[0] == (1, 3) and seen[3] == (4, 6) and seen[-1] == (10, 10)
    assert history.records() == []  # sent by the stream: not kept in the send log


async def test_aiter_send_many_and_async_with() -> None:
    memory = MemoryTransport()
    async with Mailer(CONFIG, transport=memory) as mailer:
        got = [r.exitcode async for r in mailer.aiter_send_many(
            {"to": f"u{i}@example.test", "subject": f"A{i}"} for i in range(4))]
        one = await mailer.send_async("x@example.test", "One")
        many = await mailer.send_many_async([{"to": "y@example.test", "subject": "Two"}])
    assert got == [0] * 4 and one.ok and many[0].ok
    assert subjects(memory) == ["A0", "A1", "A2", "A3", "One", "Two"] and memory.closed


def test_a_deferred_recipient_is_tried_again_alone(no_backoff: list[int]) -> None:
    memory = MemoryTransport(refuse={"later@example.test": (450, "4.2.1 mailbox busy")})
    calls: list[tuple[str, ...]] = []

    def busy_once(envelope: Envelope) -> None:
        calls.append(envelope.recipients)
        if len(calls) == 2:
            memory.refuse.clear()

    memory.fail = busy_once
    response = Mailer(CONFIG, transport=memory).send(["now@example.test", "later@example.test"], "S")
    assert response.ok and set(response.accepted) == {"now@example.test", "later@example.test"}
    assert calls == [("now@example.test", "later@example.test"), ("later@example.test",)]
    assert no_backoff == [1]


def test_a_recipient_deferred_every_time_leaves_the_message_partly_sent(
        no_backoff: list[int], tmp_data: TmpData) -> None:
    memory = MemoryTransport(refuse={"later@example.test": (451, "4.3.0 try again")})
    config = {**CONFIG, "attempts": 3}
    response = Mailer(config, transport=memory).send(["now@example.test", "later@example.test"], "S")
    assert response.exitcode == ExitCode.PARTIAL and response.state == "partly sent"
    assert response.accepted == ("now@example.test",) and list(response.refused) == ["later@example.test"]
    assert no_backoff == [1, 2] and len(memory.messages) == 1  # sent once, to the one who took it
    (kept,) = Outbox(tmp_data.outbox).entries()
    assert kept.status == "partly sent" and kept.recipients == ("later@example.test",)


def test_a_temporary_failure_is_retried_with_backoff(no_backoff: list[int]) -> None:
    failures = iter([TemporaryFailure("421 busy", code=421, reply="421 4.3.2 busy")] * 2)

    def flaky(envelope: Envelope) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure

    memory = MemoryTransport(fail=flaky)
    response = Mailer(CONFIG, transport=memory).send("bob@example.test", "Flaky")
    assert response.ok and len(memory.messages) == 1 and no_backoff == [1, 2]

    always = MemoryTransport(fail=lambda e: (_ for _ in ()).throw(TemporaryFailure("busy", code=421)))
    no_backoff.clear()
    failed = Mailer({**CONFIG, "attempts": 2}, transport=always).send("bob@example.test", "Down")
    assert failed.exitcode == ExitCode.TEMPORARY and "still failing after 2 attempts" in failed.message
    assert no_backoff == [1]


@pytest.mark.parametrize("how", ["a throttling reply", "Throttled"])
def test_throttling_slows_the_pacer_without_spending_attempts(how: str, no_backoff: list[int]) -> None:
    said = "454 4.7.0 Throttling failure: Maximum sending rate exceeded"
    tries = 0

    def throttled_once(envelope: Envelope) -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            cls = TemporaryFailure if how == "a throttling reply" else pacing.Throttled
            raise cls("slow down", code=454, reply=said)

    memory = MemoryTransport(fail=throttled_once)
    mailer = Mailer({**CONFIG, "attempts": 1}, transport=memory)
    response = mailer.send("bob@example.test", "Paced")
    assert response.ok and tries == 2 and no_backoff == []  # not one of its attempts
    (pacer,) = mailer._pacers.values()
    assert pacer.interval > 0  # slower from now on


def test_in_doubt_is_never_retried_and_stays_in_the_outbox(no_backoff: list[int],
                                                           tmp_data: TmpData) -> None:
    calls = 0

    class Lost(MemoryTransport):
        async def deliver(self, envelope: Envelope, data: Any) -> Outcome | None:
            nonlocal calls
            calls += 1
            envelope.sending()  # the end of the data went out, and no answer came
            raise InDoubt("the connection dropped after the data")

    mailer = Mailer(CONFIG, transport=Lost())
    response = mailer.send("bob@example.test", "Maybe")
    assert response.exitcode == ExitCode.TIMEOUT and response.state == "in doubt"
    assert calls == 1 and no_backoff == []
    (kept,) = Outbox(tmp_data.outbox).entries()
    assert kept.status == "in doubt"
    assert mailer.retry_outbox() == []  # not without asking
    memory = MemoryTransport()
    again = Mailer(CONFIG, transport=memory).retry_outbox(in_doubt=True)
    assert [r.ok for r in again] == [True] and again[0].message_id == response.message_id
    assert memory.messages[0].envelope.message_id == response.message_id
    assert Outbox(tmp_data.outbox).entries() == []


def test_an_outbox_that_cannot_mark_the_send_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's "being sent" mark is written through ``envelope.sending()``; when the disk
    refuses it, the message does not go out: exit 8."""

    def disk_full(fd: int, line: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    journal = importlib.import_module("smtp_magic.outbox")  # smtp_magic.outbox is a function
    monkeypatch.setattr(journal, "_append", disk_full)
    memory = MemoryTransport()
    response = Mailer(CONFIG, transport=memory).send("bob@example.test", "Full")
    assert response.exitcode == ExitCode.OUTBOX and "No space left" in response.message
    assert memory.messages == []


def test_progress_takes_three_or_four_arguments() -> None:
    three: list[tuple[int, int, int]] = []
    four: list[tuple[int, int, bool, float | None]] = []
    requests = [{"to": f"u{i}@example.test", "subject": str(i)} for i in range(3)]
    mailer = Mailer({**CONFIG, "rate": "1000/s"}, transport=MemoryTransport())
    mailer.send_many(requests, progress=lambda done, total, r: three.append((done, total, r.exitcode)))
    mailer.send_many(requests, progress=lambda done, total, r, finish: four.append(
        (done, total, r is None, finish)))
    assert three == [(1, 3, 0), (2, 3, 0), (3, 3, 0)]
    assert [(d, t, first) for d, t, first, _ in four] == [(0, 3, True), (1, 3, False),
                                                           (2, 3, False), (3, 3, False)]
    assert all(isinstance(finish, float) for *_, finish in four)


def test_a_blocking_send_from_a_progress_callback_does_not_wait_for_itself() -> None:
    memory = MemoryTransport()
    mailer = Mailer(CONFIG, transport=memory)
    inner = []

    def progress(done: int, total: int, response: Any) -> None:
        if done == 1:
            inner.append(mailer.send("boss@example.test", "started"))

    responses = mailer.send_many([{"to": "a@example.test", "subject": "row"}] * 3,
                                 progress=progress)
    assert [r.exitcode for r in responses] == [0, 0, 0] and [r.exitcode for r in inner] == [0]
    assert sorted(subjects(memory)) == ["row", "row", "row", "started"]


async def test_a_blocking_call_inside_a_running_loop_runs_on_the_worker_loop() -> None:
    memory = MemoryTransport()
    with Mailer(CONFIG, transport=memory) as mailer:
        assert mailer.send("a@example.test", "From a cell").ok
        assert mailer.send("a@example.test", "Again").ok
    assert subjects(memory) == ["From a cell", "Again"] and memory.closed


def test_a_mailer_with_a_profile_sends_with_its_settings(tmp_data: TmpData) -> None:
    profiles.save("work", {"host": "smtp.work.test", "port": 2525, "sender": "me@work.test",
                           "security": "none"})
    memory = MemoryTransport()
    response = Mailer(transport=memory, profile="work").send("boss@work.test", "Report")
    assert response.ok
    settings = memory.messages[0].envelope.settings
    assert settings is not None and (settings.host, settings.port, settings.profile) == (
        "smtp.work.test", 2525, "work")
    assert memory.messages[0].envelope.sender == "me@work.test"


def test_a_transport_that_hangs_runs_into_the_timeout(tmp_data: TmpData) -> None:
    class Silent(MemoryTransport):
        async def deliver(self, envelope: Envelope, data: Any) -> Outcome | None:
            await asyncio.sleep(30)
            return None

    response = Mailer({**CONFIG, "timeout": 0.2}, transport=Silent()).send("a@example.test", "Slow")
    assert response.exitcode == ExitCode.TEMPORARY
    assert "did not accept the message within 0.2 s" in response.message
    (kept,) = Outbox(tmp_data.outbox).entries()
    assert kept.status == "failed"


def test_an_unknown_transport_setting_is_one_sentence() -> None:
    class Settings:
        transport = "pigeon"

    with pytest.raises(ConfigError, match=r"^Unknown transport 'pigeon': .*\.$"):
        _destinations.transport_kind(Settings())  # type: ignore[arg-type]


def test_a_mailer_over_smtp_keeps_its_connection_between_calls(smtp_server: CaptureServer) -> None:
    config = SmtpMagic().update({"host": "127.0.0.1", "port": smtp_server.port, "connections": 1,
                                 "security": "none", "sender": "me@example.test"})
    with Mailer(config) as mailer:
        first = mailer.send("bob@example.test", "First", "<p>one</p>")
        rest = list(mailer.iter_send_many(
            {"to": f"u{i}@example.test", "subject": f"Row {i}", "body": f"<b>{i}</b>"}
            for i in range(3)))
        sessions = [s for lane in mailer._transport.smtp._lanes.values() for s in lane.idle]
    assert first.ok and all(r.ok for r in rest)
    assert len(sessions) == 1  # one connection served both calls
    got = {m.subject: m for m in smtp_server.wait_for(4)}
    assert sorted(got) == ["First", "Row 0", "Row 1", "Row 2"]
    assert got["First"].message["Message-ID"] == first.message_id
    assert got["Row 2"].message["To"] == "u2@example.test"
    assert "<b>2</b>" in got["Row 2"].message.get_body(("html",)).get_content()


def test_a_mailer_follows_its_caller_to_a_new_event_loop(smtp_server: CaptureServer) -> None:
    """Connections belong to one event loop: used from another (asyncio.run twice, then plain
    code), the Mailer leaves the old ones and opens new ones, and every send arrives."""
    mailer = Mailer({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                     "sender": "me@example.test"})
    assert asyncio.run(mailer.send_async("a@example.test", "One")).ok
    assert asyncio.run(mailer.send_async("b@example.test", "Two")).ok  # the first loop is closed
    assert mailer.send("c@example.test", "Three").ok  # plain code: a loop of the Mailer's own
    assert mailer.send_many([{"to": "d@example.test", "subject": "Four"}])[0].ok
    mailer.close()
    assert sorted(m.subject for m in smtp_server.wait_for(4)) == ["Four", "One", "Three", "Two"]


def test_close_after_the_callers_loop_is_gone_still_closes_the_transport() -> None:
    memory = MemoryTransport()
    mailer = Mailer(CONFIG, transport=memory)
    assert asyncio.run(mailer.send_async("a@example.test", "Inside asyncio.run")).ok
    mailer.close()  # that loop is closed by now
    assert memory.closed and subjects(memory) == ["Inside asyncio.run"]


async def test_a_task_deadline_times_out_on_time_message_after_message():
    """A worker's deadlines share one timer (``_attempts._deadline``): each still ends its own
    block at its own time, a later one is not cut short by an earlier one's time, and a
    cancellation from outside stays a cancellation."""
    loop = asyncio.get_running_loop()

    async def block(seconds: float, work: float) -> str:
        deadline = _attempts._deadline(None)
        try:
            async with deadline:
                deadline.reschedule(loop.time() + seconds)  # armed late, as the transport does
                await asyncio.sleep(work)
        except TimeoutError:
            assert deadline.expired()
            return "timed out"
        assert not deadline.expired()
        return "done"

    assert await block(0.2, 0) == "done"  # its timer stays armed, for 0.2 s from now
    assert await block(0.5, 0.35) == "done"  # past the first deadline: not cut short
    started = loop.time()
    assert await block(0.2, 5) == "timed out"
    assert 0.15 <= loop.time() - started < 2
    assert await block(0.05, 0.2) == "timed out"  # sooner than the timer armed before it
    assert await block(0.3, 0.01) == "done"
    task = asyncio.create_task(block(5, 5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task



def test_our_own_name_is_looked_up_while_the_batch_is_kept_not_after(
        smtp_server: CaptureServer, tmp_data: TmpData, monkeypatch: pytest.MonkeyPatch) -> None:
    """The EHLO name (socket.getfqdn, which may wait for DNS) is asked for as soon as a batch
    has messages to keep, so the first connection does not wait for it; a batch of requests
    that are all refused asks nothing."""
    from smtp_magic import transport

    asked: list[str] = []
    monkeypatch.setattr(transport, "_fqdn", None)
    monkeypatch.setattr(transport.socket, "getfqdn", lambda: asked.append("asked") or "me.example")
    config = {"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
              "sender": "a@example.org"}
    with Mailer(config) as mailer:
        refused = mailer.prepare([{"to": "not an address", "subject": "x", "body": "y"}])
        assert [job.response.exitcode for job in refused.jobs if job.response] == [1]
        assert transport._fqdn is None
        prepared = mailer.prepare([{"to": "b@example.org", "subject": "x", "body": "y"}])
        assert transport._fqdn is not None and smtp_server.messages() == []  # only kept
        (response,) = mailer._call(lambda _: prepared.deliver())
    assert response.ok, response
    assert asked == ["asked"]
    assert smtp_server.wait_for(1)[0].subject == "x"
