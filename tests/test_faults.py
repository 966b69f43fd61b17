"""Fault injection: real aiosmtpd servers that misbehave the way real ones do (tests/faults.py).

Each test asserts the exit code, the message, and what arrived at the server.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import TmpData
from faults import FaultServer

from smtp_magic import Response, SmtpMagic, retry_outbox, send
from smtp_magic.outbox import Outbox

SENDER = "nb@example.test"
BOB, CAROL = "bob@example.test", "carol@example.test"
FaultFactory = Callable[..., FaultServer]


def settings(server: Any, **extra: Any) -> SmtpMagic:
    port = server if isinstance(server, int) else server.port
    values = {"host": "127.0.0.1", "port": port, "sender": SENDER, "security": "none",
              "timeout": 10, **extra}
    return SmtpMagic().update(values)


def one_sentence(r: Response) -> str:
    assert r.message and "\n" not in r.message and r.message.endswith("."), r.message
    assert r.message[0].isupper() or r.message[0].isdigit(), r.message
    return r.message


def kept(tmp_data: TmpData) -> list[str]:
    return [e.message_id for e in Outbox(tmp_data.outbox).entries()]


# -- 421 at the greeting, 451 at MAIL / RCPT / DATA: retried, then exit 7 -------------------------
TRANSIENT = {
    "greeting-421": {"greeting": (421, "4.3.2 Service not available, closing channel")},
    "greeting-drop": {"drop_at_greeting": True},
    "mail-451": {"mail_reply": (451, "4.3.0 Mail server temporarily rejected message")},
    "rcpt-451": {"rcpt_reply": (451, "4.7.1 Greylisted, please try again later")},
    "data-451": {"data_reply": (451, "4.3.0 Local error in processing")},
}


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_fault_persisting_is_exit_7_and_kept(fault_server: FaultFactory,
                                                       tmp_data: TmpData, fault: dict[str, Any]
                                                       ) -> None:
    server = fault_server(**fault)
    r = send(BOB, "Transient", "hello", config=settings(server))
    assert r.exitcode == 7, r
    msg = one_sentence(r)
    assert "3 attempts" in msg and "outbox" in msg
    code = next((str(v[0]) for v in fault.values() if isinstance(v, tuple)), None)
    if code:
        assert code in msg
    assert server.connections >= 1
    assert max(server.connections, server.transactions) == 3  # 3 attempts in all, no more
    assert server.count() == 0
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert (entry.message_id, entry.status, entry.exitcode) == (r.message_id, "failed", 7)


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_fault_once_is_retried_and_delivered_once(fault_server: FaultFactory,
                                                            tmp_data: TmpData,
                                                            fault: dict[str, Any]) -> None:
    server = fault_server(times=1, **fault)
    r = send([BOB, CAROL], "Retried", "hello", config=settings(server))
    assert r.exitcode == 0, r
    (got,) = server.wait_for(1)
    assert got.message_id == r.message_id
    assert sorted(got.rcpt_to) == [BOB, CAROL]
    assert server.accepted == 1
    assert kept(tmp_data) == []


def test_421_at_mail_closes_and_retries(fault_server: FaultFactory, tmp_data: TmpData) -> None:
    server = fault_server(mail_reply=(421, "4.7.0 Too many errors, closing"), times=2)
    r = send(BOB, "421", "hello", config=settings(server))
    assert r.exitcode == 0, r
    assert server.transactions == 3 and server.accepted == 1


# -- 452 too many recipients: split and continue ----------------------------------------------
def test_452_too_many_recipients_split_and_continue(fault_server: FaultFactory,
                                                    tmp_data: TmpData) -> None:
    server = fault_server(max_rcpts=3)
    to = [f"user{i:02d}@example.test" for i in range(10)]
    cc = ["cc1@example.test", "cc2@example.test"]
    bcc = ["hidden@example.test"]
    r = send(to, "Many recipients", "hello", cc=cc, bcc=bcc, config=settings(server))
    assert r.exitcode == 0, r
    assert r.refused == {}
    messages = server.messages()
    assert len(messages) == 5  # 13 recipients, at most 3 per transaction
    assert all(len(m.rcpt_to) <= 3 for m in messages)
    delivered = Counter(rcpt for m in messages for rcpt in m.rcpt_to)
    assert delivered == Counter(to + cc + bcc)  # every recipient exactly once
    assert {m.message_id for m in messages} == {r.message_id}
    assert kept(tmp_data) == []


# -- permanent refusals: 552, 554, partial ----------------------------------------------------
def test_552_size_exceeded_reply(fault_server: FaultFactory, tmp_data: TmpData) -> None:
    server = fault_server(data_reply=(552, "5.3.4 Message size exceeds fixed maximum"))
    r = send(BOB, "Big", "hello", config=settings(server))
    assert r.exitcode == 4, r
    msg = one_sentence(r)
    assert "too large" in msg and "552" in msg
    assert server.transactions == 1 and server.count() == 0


def test_552_from_a_real_size_limit(fault_server: FaultFactory, tmp_data: TmpData) -> None:
    # aiosmtpd's own limit: it advertises SIZE and answers 552 when the data is larger.
    server = fault_server(data_size_limit=20_000)
    r = send(BOB, "Too big for this server", "hello",
             attachments=[("data.bin", b"\x00" * 50_000)], config=settings(server))
    assert r.exitcode == 4, r
    msg = one_sentence(r)
    assert "too large" in msg or "552" in msg
    assert server.count() == 0


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ({"data_reply": (554, "5.7.1 Message rejected: spam")}, "refused the message"),
        ({"mail_reply": (554, "5.7.1 Sender blocked")}, "refused the sender"),
        ({"mail_reply": (550, "5.7.1 Relaying denied")}, "refused the sender"),
    ],
    ids=["554-data", "554-mail", "550-mail"],
)
def test_permanent_refusal_is_exit_4_not_retried(fault_server: FaultFactory, tmp_data: TmpData,
                                                 fault: dict[str, Any], needle: str) -> None:
    server = fault_server(**fault)
    r = send(BOB, "Refused", "hello", config=settings(server))
    assert r.exitcode == 4, r
    msg = one_sentence(r)
    assert needle in msg and "5.7.1" in msg
    assert server.transactions == 1 and server.count() == 0


def test_554_at_greeting_is_exit_2(fault_server: FaultFactory, tmp_data: TmpData) -> None:
    server = fault_server(greeting=(554, "5.3.2 No SMTP service here"))
    r = send(BOB, "No service", "hello", config=settings(server))
    assert r.exitcode == 2, r
    assert "554" in one_sentence(r)
    assert server.connections == 1  # permanent: not retried
    assert server.count() == 0


def test_partial_refusals_permanent_and_temporary(fault_server: FaultFactory,
                                                  tmp_data: TmpData) -> None:
    dave = "dave@example.test"
    server = fault_server(refuse_rcpt={CAROL: (550, "5.1.1 No such user"),
                                       dave: (450, "4.2.1 Mailbox busy")})
    r = send([BOB, CAROL, dave], "Partly", "hello", config=settings(server))
    assert r.exitcode == 5, r
    msg = one_sentence(r)
    assert CAROL in msg and dave in msg
    assert r.refused[CAROL] == (550, "5.1.1 No such user")
    assert r.refused[dave][0] == 450
    assert r.accepted == (BOB,)
    # Retrying dave must not send Bob a second copy.
    (got,) = server.messages()
    assert got.rcpt_to == (BOB,) and got.message_id == r.message_id
    assert server.transactions == 3  # one full transaction, then dave alone twice


# -- a connection dropped after DATA's payload: in doubt, never resent without asking ----------------
def test_drop_after_data_is_in_doubt_kept_and_resent_only_on_request(
    fault_server: FaultFactory, tmp_data: TmpData
) -> None:
    dropping = fault_server(drop_after_data=True, times=1)
    r = send([BOB, CAROL], "Dropped", "hello", config=settings(dropping))
    assert r.exitcode == 6, r
    assert r.state == "in doubt" and r.result.startswith("in doubt")
    assert "may or may not have been delivered" in one_sentence(r)
    assert "--retry --in-doubt" in r.message
    assert dropping.transactions == 1  # the data went out once: no automatic resend
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert (entry.message_id, entry.status) == (r.message_id, "in doubt")
    assert entry.recipients == (BOB, CAROL)

    assert retry_outbox() == []  # --retry skips it
    assert dropping.transactions == 1
    (again,) = retry_outbox(in_doubt=True)  # to where it was going, not localhost:25
    assert again.exitcode == 0, again
    assert again.message_id == r.message_id
    (got,) = dropping.wait_for(1)
    assert got.message_id == r.message_id
    assert sorted(got.rcpt_to) == [BOB, CAROL]
    assert kept(tmp_data) == []
    assert retry_outbox(in_doubt=True) == []  # nothing left: not sent twice


# -- a server that stalls: the execution timeout bounds the whole send ------------------------------
@pytest.mark.parametrize(
    ("fault", "exitcode"),
    # Unknown (6) only when the data went out and no final reply came back; a stall before the
    # greeting delivered nothing (2), and so did retried 4xx replies (7).
    [({"stall": 5, "stall_at": "greeting"}, 2), ({"stall": 5, "stall_at": "data"}, 6),
     ({"data_reply": (451, "4.3.0 Later")}, 7), ({"greeting": (421, "4.3.2 Busy")}, 7)],
    ids=["stall-greeting", "stall-data", "451-retries", "421-retries"],
)
def test_timeout_bounds_the_whole_send_including_retries(fault_server: FaultFactory,
                                                         tmp_data: TmpData, fault: dict[str, Any],
                                                         exitcode: int) -> None:
    server = fault_server(**fault)
    # Three attempts with backoff (≈0.25 s + 0.75 s) would take longer than this.
    started = time.monotonic()
    r = send(BOB, "Bounded", "hello", config=settings(server, timeout=0.6, attempts=3))
    took = time.monotonic() - started
    assert r.exitcode == exitcode, r
    assert ("may or may not" in r.message) == (exitcode == 6)
    msg = one_sentence(r)
    assert "0.6 s" in msg
    assert took < 1.5
    assert kept(tmp_data) == [r.message_id]
    time.sleep(0.1)
    assert server.count() == 0
