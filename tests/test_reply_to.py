"""Reply-To (setting, request key, --reply-to) and custom headers (request key ``headers``),
checked like every header, on the fast composer and on the email package's path, as they
arrive at a real SMTP server."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TestingShell, run_cell

import smtp_magic
from smtp_magic.api import build_message
from smtp_magic.server import CaptureServer

SENDER = "reports@example.test"


def plain(server: CaptureServer, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "security": "none", "sender": SENDER,
            **extra}


@pytest.fixture(params=["fast", "email-package"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "email-package":
        monkeypatch.setenv("SMTP_MAGIC_NO_SHORTCUTS", "1")
    else:
        monkeypatch.delenv("SMTP_MAGIC_NO_SHORTCUTS", raising=False)
    return str(request.param)


def test_reply_to_and_custom_headers_arrive(smtp_server: CaptureServer, path: str) -> None:
    response = smtp_magic.send(
        "boss@example.test", "Numbers", "<p>Up</p>", config=plain(smtp_server),
        reply_to="Help Desk <help@example.test>",
        headers={"X-Report": "weekly", "X-Ticket": "Ünïcode 42"})
    assert response.exitcode == 0, response.message
    (got,) = smtp_server.messages()
    assert str(got.message["Reply-To"]) == "Help Desk <help@example.test>"
    assert str(got.message["X-Report"]) == "weekly"
    assert str(got.message["X-Ticket"]) == "Ünïcode 42"
    raw = got.path.read_bytes()
    assert raw.count(b"\nReply-To:") == 1


def test_the_setting_is_the_default_and_the_request_key_wins(smtp_server: CaptureServer,
                                                             path: str) -> None:
    config = plain(smtp_server, reply_to="team@example.test, lead@example.test")
    first = smtp_magic.send("boss@example.test", "default", "x", config=config)
    second = smtp_magic.send_many([{"to": "boss@example.test", "subject": "own", "body": "x",
                                    "reply_to": "me@example.test"}], config=config)[0]
    assert first.exitcode == 0 and second.exitcode == 0, (first.message, second.message)
    by_subject = {m.subject: m for m in smtp_server.messages()}
    assert str(by_subject["default"].message["Reply-To"]) == "team@example.test, lead@example.test"
    assert str(by_subject["own"].message["Reply-To"]) == "me@example.test"


@pytest.mark.parametrize(("request_extra", "message"), [
    ({"headers": {"From": "ceo@example.test"}},
     "From cannot be set in 'headers': give 'from' (--from) or the sender setting."),
    ({"headers": {"message-id": "<x@y>"}},
     "message-id cannot be set in 'headers': it is made for each message."),
    ({"headers": {"Bcc": "spy@example.test"}},
     ("Bcc cannot be set in 'headers': give 'bcc' (Bcc recipients are never written in the "
      "headers).")),
    ({"headers": {"DKIM-Signature": "v=1; fake"}},
     ("DKIM-Signature cannot be set in 'headers': the dkim_domain, dkim_selector and dkim_key "
      "settings sign the message.")),
    ({"headers": {"X-Note": "a\r\nBcc: spy@example.test"}},
     "The header X-Note contains a line break, which is not allowed in a header."),
    ({"headers": {"X-Note": "bell\x07"}},
     "The header X-Note contains the control character U+0007, which is not allowed in a header."),
    ({"headers": {"X Note": "x"}},
     ("'X Note' in 'headers' is not a header name (printable ASCII letters, digits and signs, no "
      "spaces or ':').")),
    ({"headers": {"X-Count": 3}}, "The value of header X-Count in 'headers' must be text, not int."),
    ({"headers": {"Reply-To": "a@example.test"}, "reply_to": "b@example.test"},
     "Reply-To is given twice, by reply_to and in 'headers': give it once."),
    ({"reply_to": "not an address"}, "reply_to"),
    ({"reply_to": "a@example.test\r\nBcc: spy@example.test"}, "line break"),
    ({"headers": ["X-Note"]}, "'headers' must map header names (text) to values"),
])
def test_bad_headers_are_exit_1_before_connecting(
        smtp_server: CaptureServer, path: str, request_extra: dict[str, Any], message: str) -> None:
    request = {"to": "boss@example.test", "subject": "s", "body": "x", **request_extra}
    (response,) = smtp_magic.send_many([request], config=plain(smtp_server))
    assert response.exitcode == 1
    assert message in response.message, response.message
    assert smtp_server.messages() == []


def test_reply_to_is_signed_by_default(tmp_path: Any) -> None:
    from test_dkim import make_key

    key = make_key(tmp_path, "rsa", "genrsa", "-traditional", "1024")
    composed = build_message(
        {"to": "boss@example.test", "subject": "s", "body": "x", "reply_to": "help@example.test"},
        config={"sender": "news@example.test", "dkim_domain": "example.test",
                "dkim_selector": "s1", "dkim_key": str(key.path)})
    head = composed.as_bytes().split(b"\r\n\r\n", 1)[0].decode()
    signature = head.split("DKIM-Signature:", 1)[1].split("\r\n", 1)[0] + head
    assert "reply-to" in signature.lower().split("h=", 1)[1].split(";", 1)[0]


def test_smtp_send_reply_to_option(ip: TestingShell, to_server: CaptureServer) -> None:
    out = run_cell(ip, "%%smtp_send --to boss@example.test --subject Hi --reply-to help@example.test"
                       "\nprint('hello')")
    assert "Sent" in out.stdout or not out.stderr, (out.stdout, out.stderr)
    (got,) = to_server.messages()
    assert str(got.message["Reply-To"]) == "help@example.test"


def test_each_row_gets_its_own_reply_to(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["people"] = [{"to": "a@example.test", "desk": "desk-a@example.test"},
                            {"to": "b@example.test", "desk": "desk-b@example.test"}]
    ip.run_cell("%%smtp_send --sync --each people --to {to} --subject Hi --reply-to {desk}\nhello")
    got = {m.rcpt_to[0]: str(m.message["Reply-To"]) for m in to_server.wait_for(2)}
    assert got == {"a@example.test": "desk-a@example.test", "b@example.test": "desk-b@example.test"}
