"""Through a real MTA: the private Postfix instance (scripts/postfix-up.sh) in every mode,
with the CLI and with the Python API; the delivered message is read back from Postfix's Maildir.

Postfix delivers one copy per recipient into one Maildir; each copy names its recipient in
``Delivered-To``. Run with SMTP_MAGIC_REQUIRE_POSTFIX=1 to fail (not skip) without Postfix.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import json
import logging
import os
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Postfix, TmpData

from smtp_magic import SmtpMagic, _shortcuts, send, send_many
from smtp_magic.models import SendRequest

pytestmark = pytest.mark.postfix

TO = ["ann@example.test", "ben@example.test"]
CC = ["cid@example.test"]
BCC = ["dee@example.test"]
ATTACHMENT = b"%PDF-1.4\n" + bytes(range(256)) * 8  # binary, not valid UTF-8

# mode -> (port name, security, log in?)
MODES = {
    "plain": ("smtp", "none", False),
    "starttls": ("smtp", "starttls", False),
    "submission-auth": ("submission", "starttls", True),
    "implicit-tls-auth": ("smtps", "tls", True),
}


def connection(postfix: Postfix, mode: str) -> dict[str, Any]:
    port_name, security, login = MODES[mode]
    conn: dict[str, Any] = {"target": postfix.host, "port": postfix.ports[port_name],
                            "security": security, "cafile": str(postfix.ca), "timeout": 20}
    if login:
        conn.update(username=postfix.user, password=postfix.password)
    return conn


def delivered(postfix: Postfix, message_id: str, count: int, timeout: float = 15
              ) -> dict[str, EmailMessage]:
    """The copies of one message in Postfix's Maildir, by Delivered-To; waits for ``count``."""
    header_parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    postfix.wait_for(message_id, timeout=timeout)  # fails with the maillog path if never
    deadline = time.monotonic() + timeout
    while True:
        copies: dict[str, EmailMessage] = {}
        for sub in ("new", "cur"):
            for path in (postfix.maildir / sub).glob("*"):
                data = path.read_bytes()
                head = header_parser.parsebytes(data)
                if head.get("Message-ID") == message_id:
                    msg = email.message_from_bytes(data, policy=email.policy.default)
                    assert isinstance(msg, EmailMessage)
                    copies[str(msg["Delivered-To"])] = msg
        if len(copies) >= count or time.monotonic() > deadline:
            return copies
        time.sleep(0.05)


def check_delivery(postfix: Postfix, message_id: str, subject: str, *, encrypted: bool,
                   authenticated: bool) -> None:
    everyone = TO + CC + BCC
    copies = delivered(postfix, message_id, len(everyone))
    assert sorted(copies) == sorted(everyone)  # every envelope recipient got it, once
    msg = copies[TO[0]]
    assert msg["Subject"] == subject
    assert [a.addr_spec for a in msg["To"].addresses] == TO
    assert [a.addr_spec for a in msg["Cc"].addresses] == CC
    assert msg["Bcc"] is None and BCC[0] not in str(msg["To"]) + str(msg["Cc"])
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "Report Q3 – Zürich.pdf"
    assert att.get_content_type() == "application/pdf"
    assert att.get_payload(decode=True) == ATTACHMENT
    body = msg.get_body(("plain",))
    assert body is not None and "Numbers are up" in body.get_content()
    received = str(msg["Received"])
    # Postfix records the protocol: ESMTP, ESMTPS (TLS), ESMTPSA (TLS + AUTH).
    proto = "ESMTPSA" if authenticated else ("ESMTPS" if encrypted else "ESMTP")
    assert f"with {proto} " in received, received


@pytest.fixture
def attachment(tmp_path: Path) -> Path:
    path = tmp_path / "Report Q3 – Zürich.pdf"
    path.write_bytes(ATTACHMENT)
    return path


@pytest.mark.parametrize("mode", MODES)
def test_python_api_through_postfix(postfix: Postfix, tmp_data: TmpData, attachment: Path,
                                    mode: str) -> None:
    subject = f"Via Postfix ({mode}, API) ✓"
    cfg = SmtpMagic().update({**connection(postfix, mode), "sender": "nb@example.test"})
    r = send(TO, subject, "<p>Numbers are up <b>12%</b>.</p>", cc=CC, bcc=BCC,
             attachments=[attachment], config=cfg)
    assert r.exitcode == 0, r
    _, security, login = MODES[mode]
    check_delivery(postfix, r.message_id or "", subject, encrypted=security != "none",
                   authenticated=login)


@pytest.mark.parametrize("mode", MODES)
def test_cli_through_postfix(postfix: Postfix, tmp_data: TmpData, attachment: Path,
                             tmp_path: Path, mode: str) -> None:
    subject = f"Via Postfix ({mode}, CLI) ✓"
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps(connection(postfix, mode)))
    req = tmp_path / "req.json"
    req.write_text(json.dumps({
        "action": "send", "from": "nb@example.test", "to": TO, "cc": CC, "bcc": BCC,
        "subject": subject, "body": "Numbers are up 12%.", "content-type": "text/plain",
        "attachments": [str(attachment)],
    }))
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conn),
                           "--request", str(req)], check=False, capture_output=True, text=True, timeout=60,
                          env=os.environ)
    answer = json.loads(proc.stdout)
    assert proc.returncode == answer["exitcode"] == 0, answer
    _, security, login = MODES[mode]
    check_delivery(postfix, answer["message_id"], subject, encrypted=security != "none",
                   authenticated=login)


@pytest.mark.parametrize("mode", ["plain", "implicit-tls-auth"])
def test_bulk_over_one_connection_through_postfix(postfix: Postfix, tmp_data: TmpData,
                                                  mode: str, caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    """Twelve distinct messages over one connection: each envelope but the first rides on the
    previous message's end of data (RFC 2920 §3.1), which this Postfix, strict about pipelining
    (reject_unauth_pipelining, scripts/postfix-up.sh), accepts; each message arrives once,
    whole, for its own recipient."""
    cfg = SmtpMagic().update({**connection(postfix, mode), "sender": "nb@example.test",
                              "connections": 1})
    requests = [SendRequest(to=(f"u{i}@example.test",), subject=f"Bulk {mode} {i}",
                            body=f"Line one of {i}.\n.leading dot\nLast line of {i}.",
                            content_type="text/plain") for i in range(12)]
    with caplog.at_level(logging.DEBUG, logger="smtp_magic.conversation"):
        responses = send_many(requests, config=cfg)
    assert [r.exitcode for r in responses] == [0] * 12, responses
    if _shortcuts.allowed("pipelining"):  # the conversation: the data, then the next MAIL
        lines = [r.getMessage() for r in caplog.records]
        after_data = [lines[i + 2] for i, line in enumerate(lines) if "(message: " in line]
        assert sum("MAIL FROM:" in line for line in after_data) == 11, after_data
    for i, r in enumerate(responses):
        (copy,) = delivered(postfix, r.message_id or "", 1).values()
        assert str(copy["Delivered-To"]) == f"u{i}@example.test"
        assert copy["Subject"] == f"Bulk {mode} {i}"
        assert copy.get_content() == f"Line one of {i}.\n.leading dot\nLast line of {i}.\n"


# -- what Postfix refuses ---------------------------------------------------------------------------
def test_postfix_bad_password_is_exit_3(postfix: Postfix, tmp_data: TmpData) -> None:
    cfg = SmtpMagic().update({**connection(postfix, "submission-auth"), "password": "nope",
                              "sender": "nb@example.test"})
    r = send(TO, "Bad password", "x", config=cfg)
    assert r.exitcode == 3, r
    assert "refused the login" in r.message and "nope" not in r.to_json()


def test_postfix_plaintext_login_refused_by_the_client(postfix: Postfix, tmp_data: TmpData
                                                       ) -> None:
    # security none with a password: smtp_magic refuses before Postfix could see it.
    cfg = SmtpMagic().update({**connection(postfix, "plain"), "username": postfix.user,
                              "password": postfix.password, "sender": "nb@example.test"})
    r = send(TO, "Plaintext", "x", config=cfg)
    assert r.exitcode == 3, r
    assert "unencrypted" in r.message


def test_postfix_submission_without_login_is_refused(postfix: Postfix, tmp_data: TmpData
                                                     ) -> None:
    conn = {**connection(postfix, "submission-auth"), "sender": "nb@example.test"}
    conn.pop("username"), conn.pop("password")
    r = send(TO, "No login", "x", config=SmtpMagic().update(conn))
    assert r.exitcode == 4, r  # Postfix refuses every recipient (permit_sasl_authenticated)
    assert set(r.refused) == set(TO)


def test_postfix_certificate_not_trusted_is_exit_2(postfix: Postfix, tmp_data: TmpData,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    conn = {**connection(postfix, "implicit-tls-auth"), "sender": "nb@example.test"}
    conn.pop("cafile")
    r = send(TO, "Untrusted", "x", config=SmtpMagic().update(conn))
    assert r.exitcode == 2, r
    assert "certificate" in r.message
