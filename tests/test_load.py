"""Load with faults: 1000 personalised messages through send_many against a flaky server.

The server defers about 10 % of transactions with 451 and hangs up after DATA on about 1 %.
Correctness is asserted (every message delivered exactly once, none lost, outbox empty);
the figures are printed (run with ``-s`` to see them), timing is not asserted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from conftest import TmpData
from faults import FaultServer

from smtp_magic import SmtpMagic, retry_outbox, send_many
from smtp_magic.outbox import Outbox

N = 1000


def test_1000_personalised_messages_with_451s_and_drops(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData
) -> None:
    server = fault_server(transient_ratio=0.10, drop_ratio=0.01, seed=7)
    # 6 attempts: a message deferred 6 times in a row (p ≈ 0.11**6) is not expected in 1000.
    config = SmtpMagic().update({
        "host": "127.0.0.1", "port": server.port, "security": "none",
        "sender": "reports@example.test", "attempts": 6, "connections": 8, "timeout": 60,
    })
    people = [(f"user{i:04d}@example.test", f"Person {i}") for i in range(N)]
    requests = [
        {"to": f"{name} <{addr}>", "subject": f"Your report #{i}",
         "body": f"<p>Hello {name}, your number is <b>{i * 7}</b>.</p>"}
        for i, (addr, name) in enumerate(people)
    ]
    seen: list[int] = []
    started = time.monotonic()
    responses = send_many(requests, config=config, progress=lambda done, total, r: seen.append(done))
    took = time.monotonic() - started

    # A hang-up after a message's final "." leaves it in doubt (this server stored nothing, but
    # a real one may have): never resent by itself, only on request.
    failed = [r for r in responses if r.exitcode != 0]
    assert all(r.state == "in doubt" for r in failed), failed[:3]
    assert failed, "no connection was dropped after the data"
    assert server.count() == N - len(failed)
    assert {e.message_id for e in Outbox(tmp_data.outbox).entries()} == {r.message_id for r in failed}
    assert retry_outbox(config=config) == []  # --retry skips them
    for _ in range(5):
        if not retry_outbox(config=config, in_doubt=True):
            break
    assert len(responses) == N and seen[-1] == N
    ids = [r.message_id for r in responses]
    assert len(set(ids)) == N

    messages = server.wait_for(N, timeout=10)
    delivered = Counter(m.message_id for m in messages)
    assert len(messages) == N
    assert delivered == Counter(ids)  # every message exactly once: no loss, no duplicate
    by_id = {m.message_id: m for m in messages}
    for i, r in enumerate(responses[:: N // 50]):  # personalisation went to the right person
        j = i * (N // 50)
        got = by_id[r.message_id]
        assert got.rcpt_to == (people[j][0],)
        assert got.subject == f"Your report #{j}"
        html = got.message.get_body(("html",))
        assert html is not None and f"Hello {people[j][1]}" in html.get_content()
    assert Outbox(tmp_data.outbox).entries() == []

    retries = server.transactions - N
    print(f"\nload: {N} messages in {took:.2f} s = {N / took:.0f} messages/s; "
          f"{server.transactions} transactions ({retries} retried: 451s and drops), "
          f"{server.connections} connections (max {server.max_active} at once)")
    assert retries > 0  # the faults really happened
    assert server.max_active <= 8
