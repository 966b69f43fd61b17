"""send_many streams its requests: a window at a time, connections kept across windows, one
Response per request in order, the outbox guarantee per window."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from smtp_magic import SmtpMagic, send_many
from smtp_magic.models import SendRequest
from smtp_magic.outbox import Outbox, history

engine = importlib.import_module("smtp_magic.engine")  # the window size
destinations = importlib.import_module("smtp_magic._destinations")  # the password look-up


def config(server, **extra):
    return SmtpMagic().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                               "sender": "nb@example.test", "connections": 1, **extra})


def test_a_generator_is_consumed_a_window_at_a_time_over_one_connection(fault_server,
                                                                        monkeypatch, tmp_data):
    monkeypatch.setattr(engine, "_WINDOW", 4)
    server = fault_server()
    seen_when_produced: list[int] = []

    def requests() -> Iterator[SendRequest | dict]:
        for i in range(11):
            seen_when_produced.append(server.accepted)
            if i == 6:  # a bad request in the middle window: exit 1 for it alone
                yield {"to": "not an address", "subject": "Bad", "body": "x"}
            else:
                yield SendRequest(to=f"user{i}@example.test", subject=f"Message {i}",
                                  body=f"<p>Hello {i}</p>")

    progress: list[tuple[int, int]] = []
    responses = send_many(requests(), config=config(server),
                          progress=lambda done, total, r: progress.append((done, total)))
    assert [r.exitcode for r in responses] == [0] * 6 + [1] + [0] * 4
    # Window k was produced only after window k-1 had been delivered.
    assert seen_when_produced[:4] == [0] * 4
    assert seen_when_produced[4:8] == [4] * 4
    assert seen_when_produced[8:] == [7] * 3
    assert server.connections == 1  # the connection outlived each window
    got = {m.message["Subject"]: m.message["Message-ID"] for m in server.messages()}
    for i, r in enumerate(responses):
        if i != 6:
            assert got[f"Message {i}"] == r.message_id
    assert progress == [(n, 0) for n in range(1, 12)]  # a generator has no length: total 0
    assert Outbox(tmp_data.outbox).entries() == []  # every journal settled and removed
    assert len(history.records()) == 11


def test_a_list_reports_its_total_and_failures_stay_in_the_outbox(fault_server, monkeypatch,
                                                                  tmp_data):
    monkeypatch.setattr(engine, "_WINDOW", 2)
    server = fault_server(refuse_rcpt={"user3@example.test": (550, "5.1.1 No such user")})
    requests = [SendRequest(to=f"user{i}@example.test", subject=f"M{i}", body="hi")
                for i in range(5)]
    totals = []
    responses = send_many(requests, config=config(server),
                          progress=lambda done, total, r: totals.append(total))
    assert [r.exitcode for r in responses] == [0, 0, 0, 4, 0]
    assert set(totals) == {5}
    kept = [e.message_id for e in Outbox(tmp_data.outbox).entries()]
    assert kept == [responses[3].message_id]


def test_the_password_is_resolved_once_for_all_windows(fault_server, monkeypatch):
    monkeypatch.setattr(engine, "_WINDOW", 2)
    calls = []
    real = destinations.resolve_password

    def counting(settings):
        calls.append(settings)
        return real(settings)

    monkeypatch.setattr(destinations, "resolve_password", counting)
    server = fault_server()
    responses = send_many((SendRequest(to="a@example.test", subject=str(i), body="x")
                           for i in range(7)), config=config(server))
    assert all(r.ok for r in responses)
    assert len(calls) == 1


@pytest.mark.parametrize("count", [0, 1])
def test_tiny_inputs(count, fault_server):
    server = fault_server()
    responses = send_many(iter([SendRequest(to="a@example.test", subject="s", body="x")] * count),
                          config=config(server))
    assert len(responses) == count and all(r.ok for r in responses)
