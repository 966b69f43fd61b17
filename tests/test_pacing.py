"""Provider rate limits: the rate setting paces bulk sends, throttling replies slow the pace."""

from __future__ import annotations

import itertools
import statistics
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


def arrivals(server: CaptureServer, n: int) -> list[float]:
    return sorted(m.received for m in server.wait_for(n, timeout=30))


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


# -- a merge at a configured rate, measured at a real server -------------------------------------

def test_a_merge_keeps_the_configured_pace(smtp_server: CaptureServer) -> None:
    n = 8
    begun = time.time()
    unpaced = send_many(requests(n), config=settings(smtp_server))
    assert all(r.ok for r in unpaced)
    fast = arrivals(smtp_server, n)
    smtp_server.clear()

    seen: list[tuple[int, float | None, float]] = []

    def progress(done: int, total: int, response: Any, finish_at: float | None) -> None:
        seen.append((done, finish_at, time.time()))

    begun = time.time()
    paced = send_many(requests(n), config=settings(smtp_server, rate="600/min"),
                      progress=progress)
    assert all(r.ok for r in paced), paced
    times = arrivals(smtp_server, n)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"unpaced span {fast[-1] - fast[0]:.3f} s; paced span {times[-1] - times[0]:.3f} s, gaps {[round(g, 3) for g in gaps]}")
    # 600/min is one message every 0.1 s, over 4 connections, with no burst at the start.
    assert times[-1] - times[0] >= (n - 1) * 0.1 - 0.03
    assert statistics.median(gaps) == pytest.approx(0.1, abs=0.03)
    assert min(gaps) > 0.05
    assert fast[-1] - fast[0] < (times[-1] - times[0]) / 2  # the pace is the rate, not the server
    assert all(r.elapsed < 1 for r in paced)  # waiting for the pace is not counted as sending

    # The expected finish time is known before the first message and turns out right.
    first_done, first_eta, _ = seen[0]
    assert first_done == 0 and first_eta is not None
    finished = seen[-1][2]
    print(f"expected finish {first_eta - begun:.3f} s after the start, finished after {finished - begun:.3f} s")
    assert first_eta == pytest.approx(finished, abs=0.35)
    assert [d for d, _, _ in seen] == list(range(n + 1))


def test_a_three_argument_progress_still_works(smtp_server: CaptureServer) -> None:
    calls: list[int] = []
    out = send_many(requests(3), config=settings(smtp_server, rate="50/s"),
                    progress=lambda done, total, r: calls.append(done))
    assert all(r.ok for r in out) and calls == [1, 2, 3]


def test_each_in_a_magic_keeps_the_rate(ip: TestingShell, smtp_server: CaptureServer
                                             ) -> None:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                      "--security none --from nb@example.test --rate 20/s")
    ip.user_ns["people"] = [{"to": f"p{i}@example.test", "n": i} for i in range(5)]
    ip.run_cell_magic("smtp_send", "--each people --to {to} --subject 'Row {n}' --sync", "{{ n }}")
    times = arrivals(smtp_server, 5)
    assert times[-1] - times[0] >= 4 * 0.05 - 0.02


# -- throttling ----------------------------------------------------------------------------------

def test_throttling_slows_the_pace_and_everything_arrives(fault_server: FaultFactory,
                                                          tmp_data: TmpData) -> None:
    server = fault_server(data_reply=SES_THROTTLE, times=3)
    n = 8
    # attempts=1: no retries at all, so delivery can only come from slowing down.
    out = send_many(requests(n), config=settings(server, rate="20/s", attempts=1))
    assert [r.exitcode for r in out] == [0] * n, [r.message for r in out if not r.ok]
    assert server.transactions == n + 3 and server.accepted == n
    assert Outbox(tmp_data.outbox).entries() == []
    times = arrivals(server, n)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print("gaps after throttling", [round(g, 3) for g in gaps])
    # 20/s is 0.05 s apart; after the throttling replies the pace is at least halved.
    assert statistics.median(gaps) >= 0.09


def test_an_ordinary_451_still_spends_the_retries(fault_server: FaultFactory,
                                                  tmp_data: TmpData) -> None:
    server = fault_server(data_reply=(451, "4.3.0 Try again later"))
    r = send("bob@example.test", "Deferred", "hi",
             config=settings(server, rate="50/s", attempts=2))
    assert r.exitcode == 7 and server.transactions == 2


def test_a_server_that_never_stops_throttling_ends_in_the_outbox(
        fault_server: FaultFactory, tmp_data: TmpData) -> None:
    server = fault_server(data_reply=SES_THROTTLE)
    started = time.monotonic()
    r = send("bob@example.test", "Throttled", "hi", config=settings(server, rate="50/s"))
    took = time.monotonic() - started
    assert r.exitcode == 7, r
    assert "throttling" in r.message and "outbox" in r.message and "454" in r.message
    assert server.transactions == MAX_THROTTLED + 1 and server.accepted == 0
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert entry.message_id == r.message_id and entry.exitcode == 7
    assert took < 10, took


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
