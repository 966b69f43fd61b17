"""One test (at least) per exit code of SPEC §8, each against a real aiosmtpd server.

Every test asserts the exit code, a one-sentence message, and what arrived at the server (or that
nothing did; for exit 1, that no connection was even opened).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, USER, TmpData
from faults import FaultServer

from smtp_magic import Response, SmtpMagic, send, transport
from smtp_magic.outbox import Outbox
from smtp_magic.server import CaptureServer

SENDER = "nb@example.test"
BOB, CAROL = "bob@example.test", "carol@example.test"


def settings(server: Any, **extra: Any) -> SmtpMagic:
    """Fresh settings for ``server`` (a server object or a port), independent of the environment."""
    port = server if isinstance(server, int) else server.port
    values = {"host": "127.0.0.1", "port": port, "sender": SENDER, "timeout": 10, **extra}
    return SmtpMagic().update(values)


def assert_sentence(response: Response) -> None:
    """``message`` is one readable sentence: one line, capitalised, ending with a full stop (or a question)."""
    msg = response.message
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    assert msg[0].isupper() or msg[0].isdigit(), msg
    assert msg.endswith((".", "?")), msg
    assert len(msg) < 400, msg
    # No second sentence started after the first full stop (server replies may contain dots).
    assert not re.search(r"\.\s+[A-Z][a-z]+ [a-z]+ ", msg.split(":", 1)[0]), msg


def ok(response: Response) -> None:
    assert response.exitcode == 0, response
    assert response.message == ""
    assert response.result == "sent"
    assert response.message_id


def arrived(server: CaptureServer, response: Response, rcpts: tuple[str, ...] = (BOB,)) -> None:
    """Exactly one message arrived, the one sent, for exactly these envelope recipients."""
    (got,) = server.wait_for(1)
    assert got.message_id == response.message_id
    assert got.mail_from == SENDER
    assert set(got.rcpt_to) == set(rcpts)


def outbox_ids(tmp_data: TmpData) -> list[str]:
    return [e.message_id for e in Outbox(tmp_data.outbox).entries()]


# -- 0: accepted for every recipient -----------------------------------------------------------
def test_0_plain(smtp_server: CaptureServer, tmp_data: TmpData) -> None:
    r = send([BOB, CAROL], "Plain", "hello", config=settings(smtp_server, security="none"))
    ok(r)
    arrived(smtp_server, r, (BOB, CAROL))
    assert r.accepted == (BOB, CAROL)
    assert outbox_ids(tmp_data) == []


# Each way of reaching a server: (server fixture, settings, how the client trusts the test CA).
DELIVERY_MODES = {
    "starttls-ssl-cert-file": ("starttls_server", {"security": "starttls"}, "env"),
    "starttls-cafile": ("starttls_server", {"security": "starttls"}, "cafile"),
    # auth_server refuses MAIL before STARTTLS (530), so a delivery proves the upgrade happened.
    "auto-upgrades-to-starttls": ("auth_server", {"security": "auto", "username": USER,
                                                  "password": PASSWORD}, "env"),
    "implicit-tls": ("tls_server", {"security": "tls"}, "env"),
    "auth-over-starttls": ("auth_server", {"security": "starttls", "username": USER,
                                           "password": PASSWORD}, "env"),
    "auth-over-implicit-tls": ("tls_auth_server", {"security": "tls", "username": USER,
                                                   "password": PASSWORD}, "env"),
    "plaintext-auth-opted-in": ("plain_auth_server", {"security": "none", "username": USER,
                                                      "password": PASSWORD,
                                                      "allow_plaintext_auth": True}, None),
}


@pytest.mark.parametrize(("fixture", "extra", "trust"), DELIVERY_MODES.values(),
                         ids=DELIVERY_MODES.keys())
def test_0_every_way_of_reaching_a_server(request: pytest.FixtureRequest, tmp_data: TmpData,
                                          ca_file: Path, monkeypatch: pytest.MonkeyPatch,
                                          fixture: str, extra: dict[str, Any],
                                          trust: str | None) -> None:
    server: CaptureServer = request.getfixturevalue(fixture)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    if trust == "env":  # the way a user trusts a private CA for every program
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    elif trust == "cafile":
        extra = {**extra, "cafile": str(ca_file)}
    r = send(BOB, fixture, "hello", config=settings(server, **extra))
    ok(r)
    arrived(server, r)


def test_0_after_one_451_retried_and_delivered_once(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData
) -> None:
    server = fault_server(data_reply=(451, "4.3.0 Try again later"), times=1)
    r = send(BOB, "Deferred once", "hello", config=settings(server, security="none"))
    ok(r)
    arrived(server, r)
    assert server.transactions == 2  # the 451 and the retry
    assert server.accepted == 1
    assert outbox_ids(tmp_data) == []


# -- 1: invalid request or configuration; no connection opened -----------------------------------
@pytest.mark.parametrize(
    ("kwargs", "cfg", "needle"),
    [
        ({"to": "not an address"}, {}, "not a valid email address"),
        ({"to": "bob@example.test\r\nBcc: eve@example.test"}, {}, "line break"),
        ({"subject": "hi\nBcc: eve@example.test"}, {}, "line break"),
        ({"to": []}, {}, "no recipient"),
        ({"attachments": [("big.bin", b"x" * 600_000)]}, {"attachment_size": 0.5}, "limit"),
        ({"attachments": ["/nonexistent/file.doc"]}, {}, "does not exist"),
        ({"sender": None}, {"sender": None}, "No sender"),
    ],
    ids=["bad-address", "crlf-in-to", "crlf-in-subject", "no-recipient", "too-large",
         "missing-file", "no-sender"],
)
def test_1_invalid_request_opens_no_connection(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData, kwargs: dict[str, Any],
    cfg: dict[str, Any], needle: str,
) -> None:
    server = fault_server()
    call = {"to": BOB, "subject": "Invalid", "body": "hello", **kwargs}
    r = send(config=settings(server, security="none", **cfg), **call)
    assert r.exitcode == 1, r
    assert_sentence(r)
    assert needle in r.message
    assert server.connections == 0
    assert server.count() == 0
    assert outbox_ids(tmp_data) == []


def test_1_unknown_config_key_suggests_the_right_one(fault_server: Callable[..., FaultServer],
                                                     tmp_data: TmpData) -> None:
    server = fault_server()
    r = send(BOB, "Typo", "hello", config={"target": "127.0.0.1", "post": server.port})
    assert r.exitcode == 1
    assert_sentence(r)
    assert "'post'" in r.message and "'port'" in r.message
    assert server.connections == 0


# -- 2: could not connect --------------------------------------------------------------------
def test_2_refused_port(refused_port: int, tmp_data: TmpData) -> None:
    r = send(BOB, "Nobody listens", "hello", config=settings(refused_port, security="none"))
    assert r.exitcode == 2, r
    assert_sentence(r)
    assert "refused" in r.message


def test_2_our_own_name_never_found_is_a_connection_that_never_came(
        smtp_server: CaptureServer, tmp_data: TmpData, monkeypatch: pytest.MonkeyPatch) -> None:
    """The EHLO name (socket.getfqdn) can wait on a broken DNS past the timeout: nothing was
    sent, so exit 2, not 6 ("may have been delivered")."""
    answer = threading.Event()  # the DNS answers when the test says so (at the latest in 10 s)
    monkeypatch.setattr(transport, "_fqdn", None)  # looked up afresh, slowly
    monkeypatch.setattr(transport.socket, "getfqdn", lambda: (answer.wait(10), "late.example")[1])
    r = send(BOB, "Who am I", "hello", config=settings(smtp_server, security="none", timeout=1))
    assert r.exitcode == 2, r
    assert_sentence(r)
    assert "own name" in r.message and "nothing was sent" in r.message
    assert smtp_server.messages() == []
    # The look-up goes on, for the next send (the first one gave up waiting, it did not stop it).
    answer.set()
    again = send(BOB, "Who am I", "hello", config=settings(smtp_server, security="none"))
    ok(again)
    arrived(smtp_server, again)


def test_2_starttls_required_but_not_offered_sends_nothing_in_plaintext(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData
) -> None:
    server = fault_server(no_starttls=True)
    cfg = settings(server, security="starttls", username=USER, password=PASSWORD)
    r = send(BOB, "No downgrade", "secret body", config=cfg)
    assert r.exitcode == 2, r
    assert_sentence(r)
    assert "STARTTLS" in r.message
    assert server.connections == 1
    assert server.transactions == 0  # no MAIL FROM, let alone DATA, on the plaintext connection
    assert server.count() == 0


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_2_untrusted_certificate(request: pytest.FixtureRequest, tmp_data: TmpData,
                                 client_ssl_env: Path, mode: str) -> None:
    # The client trusts the test CA, but this server's certificate comes from another one.
    server: CaptureServer = request.getfixturevalue(
        "untrusted_tls_server" if mode == "tls" else "untrusted_starttls_server")
    r = send(BOB, "Untrusted", "hello", config=settings(server, security=mode))
    assert r.exitcode == 2, r
    assert_sentence(r)
    assert "certificate" in r.message and "verified" in r.message
    assert server.count() == 0


def test_2_tls_handshake_with_a_plaintext_server(smtp_server: CaptureServer, tmp_data: TmpData
                                                 ) -> None:
    r = send(BOB, "Handshake", "hello", config=settings(smtp_server, security="tls", timeout=3))
    assert r.exitcode == 2, r
    assert_sentence(r)
    assert smtp_server.count() == 0


# -- 3: authentication ----------------------------------------------------------------------
def test_3_bad_password(auth_server: CaptureServer, tmp_data: TmpData, client_ssl_env: Path
                        ) -> None:
    cfg = settings(auth_server, security="starttls", username=USER, password="wrong-pw-123")
    r = send(BOB, "Bad password", "hello", config=cfg)
    assert r.exitcode == 3, r
    assert_sentence(r)
    assert "refused the login" in r.message
    assert "wrong-pw-123" not in r.to_json()
    assert auth_server.count() == 0


def test_3_plaintext_auth_refused_by_default(fault_server: Callable[..., FaultServer],
                                             tmp_data: TmpData) -> None:
    server = fault_server(users={USER: PASSWORD}, require_auth=True)
    cfg = settings(server, security="auto", username=USER, password=PASSWORD)
    r = send(BOB, "No plaintext AUTH", "hello", config=cfg)
    assert r.exitcode == 3, r
    assert_sentence(r)
    assert "allow_plaintext_auth" in r.message
    assert server.transactions == 0 and server.count() == 0


# -- 4: every recipient refused -------------------------------------------------------------
def test_4_all_recipients_refused(fault_server: Callable[..., FaultServer], tmp_data: TmpData
                                  ) -> None:
    server = fault_server(refuse_rcpt={BOB: (550, "5.1.1 No such user"),
                                       CAROL: (553, "5.1.3 Bad mailbox")})
    r = send([BOB, CAROL], "Nobody", "hello", config=settings(server, security="none"))
    assert r.exitcode == 4, r
    assert_sentence(r)
    assert set(r.refused) == {BOB, CAROL}
    assert r.refused[BOB][0] == 550 and r.refused[CAROL][0] == 553
    assert server.count() == 0
    assert server.transactions == 1  # permanent: not retried


def test_4_message_refused_554(fault_server: Callable[..., FaultServer], tmp_data: TmpData
                               ) -> None:
    server = fault_server(data_reply=(554, "5.7.1 Message rejected as spam"))
    r = send(BOB, "Spam?", "hello", config=settings(server, security="none"))
    assert r.exitcode == 4, r
    assert_sentence(r)
    assert "554" in r.message
    assert server.transactions == 1  # permanent: not retried
    assert server.count() == 0


# -- 5: partly refused ----------------------------------------------------------------------
def test_5_partial(fault_server: Callable[..., FaultServer], tmp_data: TmpData) -> None:
    server = fault_server(refuse_rcpt={CAROL: (550, "5.1.1 No such user")})
    r = send([BOB, CAROL], "Partly", "hello", config=settings(server, security="none"))
    assert r.exitcode == 5, r
    assert_sentence(r)
    assert r.refused == {CAROL: (550, "5.1.1 No such user")}
    assert r.accepted == (BOB,)
    assert CAROL in r.message
    arrived(server, r, (BOB,))


# -- 6: timed out ---------------------------------------------------------------------------
def test_6_stall_times_out_and_is_kept(fault_server: Callable[..., FaultServer],
                                       tmp_data: TmpData) -> None:
    server = fault_server(stall=5)
    r = send(BOB, "Stalled", "hello", config=settings(server, security="none", timeout=0.5))
    assert r.exitcode == 6, r
    assert_sentence(r)
    assert r.elapsed < 2
    assert "0.5 s" in r.message and "outbox" in r.message
    assert outbox_ids(tmp_data) == [r.message_id]
    assert server.count() == 0


# -- 7: temporary failure after retries -----------------------------------------------------
def test_7_persistent_451_kept_in_outbox(fault_server: Callable[..., FaultServer],
                                         tmp_data: TmpData) -> None:
    server = fault_server(data_reply=(451, "4.3.0 Try again later"))
    r = send(BOB, "Deferred", "hello", config=settings(server, security="none"))
    assert r.exitcode == 7, r
    assert_sentence(r)
    assert "451" in r.message and "outbox" in r.message
    assert server.transactions == 3  # the default: 3 attempts in all
    assert server.count() == 0
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert entry.message_id == r.message_id
    assert entry.status == "failed" and entry.exitcode == 7
    assert entry.recipients == (BOB,)
