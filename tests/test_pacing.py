"""Provider rate limits: the rate setting paces bulk sends, throttling replies slow the pace."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import TestingShell, TmpData
from faults import FaultServer

from smtp_magic import SmtpMagic, send, send_many
from smtp_magic.errors import ConfigError
from smtp_magic.outbox import Outbox
from smtp_magic.pacing import MAX_THROTTLED, Pacer, is_throttle, parse_rate
from smtp_magic.server import CaptureServer

FaultFactory = Callable[..., FaultServer]
SES_THROTTLE = (454, "4.7.0 Throttling failure: Maximum sending rate exceeded.")


def settings(server: CaptureServer, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                               "sender": "merge@example.test", "timeout": 10, **extra})


def requests(n: int) -> list[dict[str, Any]]:
    return [{"to": f"user{i}@example.test", "subject": f"Row {i}", "body": f"hello {i}"}
            for i in range(n)]


# -- the setting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, per_second", [
    ("30/min", 0.5), ("14/s", 14.0), ("14 / sec", 14.0), ("1000/hour", 1000 / 3600),
    ("2000/day", 2000 / 86400), ("2.5/minutes", 2.5 / 60), ("10 per s", 10.0)])
def test_rates_people_write(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)
    assert SmtpMagic().update({"rate": text}).rate == " ".join(text.split())


@pytest.mark.parametrize("bad", ["fast", "30", "30/fortnight", "0/s", "-3/s", "/s"])
def test_a_bad_rate_is_one_sentence_naming_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        SmtpMagic().update({"rate": bad})
    message = str(info.value)
    assert "'rate'" in message and "30/min" in message and message.endswith(".")
    assert "\n" not in message


def test_rate_from_a_json_file_and_unset(tmp_path: Any) -> None:
    path = tmp_path / "conn.json"
    path.write_text('{"target": "smtp.example.test", "rate": "30/min"}')
    s = SmtpMagic().load_file(path)
    assert s.rate == "30/min" and s.snapshot().rate == "30/min"
    assert s.update({"rate": ""}).rate is None


def test_throttle_wording() -> None:
    assert is_throttle(*SES_THROTTLE)
    assert is_throttle(421, "4.7.0 Too many messages, slow down")
    assert is_throttle(451, "4.7.500 Server busy. MessageRateLimitExceeded")
    assert not is_throttle(451, "4.3.0 Try again later")  # an ordinary temporary failure
    assert not is_throttle(452, "4.5.3 Too many recipients")  # handled by splitting
    assert not is_throttle(554, "5.2.0 rate limit")  # permanent: nothing to slow down for


# -- a merge at a configured rate, at a real server --------------------------------------------
# These assert what the pacer decided (each message's start time, on its own clock) and what
# arrived, in order and in number; never how far apart arrivals were on the wall clock, which a
# busy machine stretches or squeezes (timings belong to benchmarks/). The only wall-clock
# checks are lower bounds, which slowness cannot break.

@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """(start time, interval) the pacer gave each message, in the order it gave them."""
    given: list[tuple[float, float]] = []
    wait = Pacer.wait

    async def recording(self: Pacer, *, retry: bool = False) -> None:
        if self.interval > 0:  # the same instant as wait's own reading: nothing awaits between
            given.append((max(self._clock(), self._next), self.interval))
        await wait(self, retry=retry)

    monkeypatch.setattr(Pacer, "wait", recording)
    return given


def assert_paced(given: list[tuple[float, float]], n: int, interval: float) -> None:
    assert len(given) == n
    for (a, step), (b, _) in itertools.pairwise(given):
        assert step >= interval - 1e-9 and b - a >= step - 1e-9, given
    assert given[-1][0] - given[0][0] >= (n - 1) * interval - 1e-9


def subjects(server: CaptureServer, n: int) -> list[str]:
    return sorted((m.subject for m in server.wait_for(n, timeout=30)),
                  key=lambda s: int(s.split()[-1]))


def test_a_merge_keeps_the_configured_pace(smtp_server: CaptureServer,
                                           starts: list[tuple[float, float]]) -> None:
    n = 8
    unpaced = send_many(requests(n), config=settings(smtp_server))
    assert all(r.ok for r in unpaced) and starts == []  # no rate: nobody waits
    smtp_server.clear()

    seen: list[tuple[int, float | None, float]] = []

    def progress(done: int, total: int, response: Any, finish_at: float | None) -> None:
        seen.append((done, finish_at, time.time()))

    begun = time.monotonic()
    paced = send_many(requests(n), config=settings(smtp_server, rate="600/min"),
                      progress=progress)
    took = time.monotonic() - begun
    assert all(r.ok for r in paced), paced
    # 600/min is one message every 0.1 s, over 4 connections, with no burst at the start.
    assert_paced(starts, n, 0.1)
    assert took >= (n - 1) * 0.1
    assert subjects(smtp_server, n) == [f"Row {i}" for i in range(n)]
    assert [r.accepted for r in paced] == [(f"user{i}@example.test",) for i in range(n)]
    # The expected finish time is known before the first message; progress comes in order.
    assert [d for d, _, _ in seen] == list(range(n + 1))
    first_done, first_eta, when = seen[0]
    assert first_done == 0 and first_eta is not None and first_eta >= when + (n - 2) * 0.1


def test_waiting_for_the_pace_is_not_counted_as_sending(
        smtp_server: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    wait = Pacer.wait

    async def long_wait(self: Pacer, *, retry: bool = False) -> None:
        await wait(self, retry=retry)
        await asyncio.sleep(2.0)  # a pace far slower than any loopback send

    monkeypatch.setattr(Pacer, "wait", long_wait)
    out = send_many(requests(2), config=settings(smtp_server, rate="50/s"))
    assert all(r.ok for r in out)
    assert all(r.elapsed < 2.0 for r in out), [r.elapsed for r in out]


def test_a_three_argument_progress_still_works(smtp_server: CaptureServer) -> None:
    calls: list[int] = []
    out = send_many(requests(3), config=settings(smtp_server, rate="50/s"),
                    progress=lambda done, total, r: calls.append(done))
    assert all(r.ok for r in out) and calls == [1, 2, 3]


def test_each_in_a_magic_keeps_the_rate(ip: TestingShell, smtp_server: CaptureServer,
                                        starts: list[tuple[float, float]]) -> None:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                      "--security none --from nb@example.test --rate 20/s")
    ip.user_ns["people"] = [{"to": f"p{i}@example.test", "n": i} for i in range(5)]
    ip.run_cell_magic("smtp_send", "--each people --to {to} --subject 'Row {n}' --sync", "{{ n }}")
    assert subjects(smtp_server, 5) == [f"Row {i}" for i in range(5)]
    assert_paced(starts, 5, 0.05)


# -- throttling ----------------------------------------------------------------------------------

def test_throttling_slows_the_pace_and_everything_arrives(
        fault_server: FaultFactory, tmp_data: TmpData, starts: list[tuple[float, float]]
) -> None:
    server = fault_server(data_reply=SES_THROTTLE, times=3)
    n = 8
    # attempts=1: no retries at all, so delivery can only come from slowing down.
    out = send_many(requests(n), config=settings(server, rate="20/s", attempts=1))
    assert [r.exitcode for r in out] == [0] * n, [r.message for r in out if not r.ok]
    assert server.transactions == n + 3 and server.accepted == n
    assert Outbox(tmp_data.outbox).entries() == []
    assert len(server.wait_for(n, timeout=30)) == n
    # 20/s is 0.05 s apart; after the throttling replies the pace is at least halved, and the
    # messages that follow start at least that far apart.
    intervals = [step for _, step in starts]
    assert intervals[0] == pytest.approx(0.05) and max(intervals) >= 0.1
    slowed = intervals.index(max(intervals))
    for (a, step), (b, _) in itertools.pairwise(starts[slowed:]):
        assert b - a >= step - 1e-9


def test_an_ordinary_451_still_spends_the_retries(fault_server: FaultFactory,
                                                  tmp_data: TmpData) -> None:
    server = fault_server(data_reply=(451, "4.3.0 Try again later"))
    r = send("bob@example.test", "Deferred", "hi",
             config=settings(server, rate="50/s", attempts=2))
    assert r.exitcode == 7 and server.transactions == 2


def test_a_server_that_never_stops_throttling_ends_in_the_outbox(
        fault_server: FaultFactory, tmp_data: TmpData, starts: list[tuple[float, float]]
) -> None:
    server = fault_server(data_reply=SES_THROTTLE)
    started = time.monotonic()
    r = send("bob@example.test", "Throttled", "hi", config=settings(server, rate="50/s"))
    took = time.monotonic() - started
    assert r.exitcode == 7, r
    assert "throttling" in r.message and "outbox" in r.message and "454" in r.message
    assert server.transactions == MAX_THROTTLED + 1 and server.accepted == 0
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert entry.message_id == r.message_id and entry.exitcode == 7
    # Given up after MAX_THROTTLED slow-downs, each waited for once (counts, not seconds); the
    # bound on the time only catches a send that would never end.
    assert len(starts) == MAX_THROTTLED + 1
    assert [step for _, step in starts] == sorted(step for _, step in starts)
    assert took < 60, took


def test_pacer_estimates_and_recovers() -> None:
    now = [100.0]
    pacer = Pacer(10.0, total=10, clock=lambda: now[0])
    assert pacer.finish_in() == pytest.approx(0.9)
    pacer.throttled("454 slow down")
    assert pacer.interval == pytest.approx(0.2)
    pacer.throttled("454 slow down")  # heard by a second worker at the same moment: once only
    assert pacer.interval == pytest.approx(0.2)
    for _ in range(20):
        pacer.succeeded()
    assert pacer.interval == pytest.approx(0.16)
    unpaced = Pacer(None, total=3, clock=lambda: now[0])
    assert unpaced.finish_in() is None
    unpaced.throttled("421 too many connections")
    assert unpaced.interval == 0.5
