"""The seed's own example through the CLI, and the CLI's JSON answer for every exit code."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import TmpData
from faults import FaultServer

from smtp_magic.outbox import Outbox

# The seed's connector configuration, exactly as documented (its "post" is a typo for "port").
SEED_CONFIG = {
    "target": "smtp.gmail.com",
    "username": "example@gmail.com",
    "password": "example123",
    "post": 25,
    "attachment_size": 0.5,
}
# The seed's request (its Ruby example as the JSON request the CLI takes).
SEED_REQUEST = {
    "action": "send",
    "from": "email_test@gmail.com",
    "username": "email_test@gmail.com",
    "password": "example123",
    "to": ["suzan_bones@gmail.com", "kelly_90@gmail.com"],
    "subject": "Testing Flint's SMTP Connector",
    "body": "Hi, this is a test mail",
    "cc": ["richard_133@gmail.com", "caroline_9090@gmail.com"],
    "bcc": ["henry_clark@gmail.com", "allen_jones@gmail.com"],
    "attachments": ["Sample.txt", "Example.doc"],
    "content-type": "text/plain",
    "port": 465,
}
USERS = {"example@gmail.com": "example123", "email_test@gmail.com": "example123"}
# An OLE2 header, as a real .doc starts, plus bytes that are not valid UTF-8.
DOC_BYTES = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(range(256)) * 4
TXT_BYTES = "Sample attachment, line 1\nZeile 2: Grüße\n".encode()


def run_cli(*args: str, cwd: Path, timeout: float = 30) -> tuple[int, dict[str, Any], str]:
    """``python -m smtp_magic ARGS`` -> (exit status, the JSON it printed, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", *args], check=False, cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    try:
        answer = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the CLI did not print JSON (exit {proc.returncode}):\n{proc.stdout}"
                    f"\n{proc.stderr}")
    assert isinstance(answer, dict)
    assert answer["exitcode"] == proc.returncode
    assert set(answer) >= {"exitcode", "message", "result", "message_id", "refused"}
    if proc.returncode:
        msg = answer["message"]
        assert msg and "\n" not in msg and msg.endswith((".", "?")), msg
    return proc.returncode, answer, proc.stderr


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    """A working directory holding the seed's two attachments under their bare names."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "Sample.txt").write_bytes(TXT_BYTES)
    (work / "Example.doc").write_bytes(DOC_BYTES)
    return work


def test_seed_example_through_the_cli(fault_server: Callable[..., FaultServer],
                                      tmp_data: TmpData, client_ssl_env: Path,
                                      seed_dir: Path) -> None:
    # Submission style: STARTTLS required before AUTH, and AUTH required before MAIL.
    server = fault_server(tls="starttls", users=USERS, require_auth=True)
    config = {**SEED_CONFIG, "target": "localhost"}
    config["port"] = config.pop("post")
    request = {**SEED_REQUEST, "port": server.port}
    rc, answer, _ = run_cli("send", "--config", str(write(seed_dir / "conn.json", config)),
                            "--request", str(write(seed_dir / "req.json", request)), cwd=seed_dir)
    assert rc == 0, answer
    assert answer["result"] == "sent" and answer["message"] == ""
    assert "example123" not in json.dumps(answer)

    (got,) = server.wait_for(1)
    envelope = set(request["to"] + request["cc"] + request["bcc"])
    assert set(got.rcpt_to) == envelope
    assert got.mail_from == "email_test@gmail.com"
    msg = got.message
    assert msg["Message-ID"] == answer["message_id"]
    assert msg["Subject"] == "Testing Flint's SMTP Connector"
    assert msg["From"].addresses[0].addr_spec == "email_test@gmail.com"
    assert [a.addr_spec for a in msg["To"].addresses] == request["to"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == request["cc"]
    assert msg["Bcc"] is None
    # Bcc nowhere in the message the recipients get (the capture server's X- envelope lines
    # are its own trace, not part of the message).
    for name in ("X-Peer", "X-MailFrom", "X-RcptTo"):
        del msg[name]
    delivered = msg.as_bytes(policy=email.policy.SMTP)
    for hidden in request["bcc"]:
        assert hidden.encode() not in delivered

    body = msg.get_body(("plain", "html"))
    assert body is not None and body.get_content_type() == "text/plain"
    assert body.get_content().strip() == "Hi, this is a test mail"
    assert msg.get_body(("html",)) is None
    atts = {part.get_filename(): part for part in msg.iter_attachments()}
    assert list(atts) == ["Sample.txt", "Example.doc"]
    assert atts["Sample.txt"].get_content_type() == "text/plain"
    assert atts["Sample.txt"].get_payload(decode=True) == TXT_BYTES
    assert atts["Example.doc"].get_content_type() == "application/msword"
    assert atts["Example.doc"].get_payload(decode=True) == DOC_BYTES


def test_seed_config_as_written_is_exit_1_suggesting_port(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData, seed_dir: Path
) -> None:
    server = fault_server()
    config = {**SEED_CONFIG, "target": "127.0.0.1"}  # "post" left as the seed spells it
    request = {**SEED_REQUEST, "port": server.port}
    rc, answer, _ = run_cli("send", "--config", str(write(seed_dir / "conn.json", config)),
                            "--request", str(write(seed_dir / "req.json", request)), cwd=seed_dir)
    assert rc == 1
    assert "'post'" in answer["message"] and "'port'" in answer["message"]
    assert answer["result"] == "not sent: invalid request"
    assert "example123" not in json.dumps(answer)
    assert server.connections == 0


# -- the CLI answers in JSON for every exit code -------------------------------------------------
def _conn(port: int, **extra: Any) -> dict[str, Any]:
    return {"target": "127.0.0.1", "port": port, "from": "nb@example.test", "security": "none",
            **extra}


REQUEST = {"to": ["bob@example.test", "carol@example.test"], "subject": "CLI",
           "body": "<p>Hello</p>"}


@pytest.mark.parametrize(
    ("code", "server_kw", "conn_kw", "request_kw", "args"),
    [
        (0, {}, {}, {}, ()),
        (1, {}, {}, {"to": "not-an-address"}, ()),
        (1, {}, {}, {"tp": "typo@example.test"}, ()),
        (1, {}, {}, {"attachments": ["missing.pdf"]}, ()),
        (2, {"no_starttls": True}, {"security": "starttls"}, {}, ()),
        (3, {"users": {"u": "p"}, "require_auth": True}, {"username": "u", "password": "p"}, {},
         ()),
        (4, {"data_reply": (554, "5.7.1 No thanks")}, {}, {}, ()),
        (5, {"refuse_rcpt": {"carol@example.test": (550, "5.1.1 Unknown")}}, {}, {}, ()),
        (6, {"stall": 5}, {}, {}, ("--timeout", "0.5")),
        (7, {"data_reply": (451, "4.3.0 Later")}, {}, {}, ()),
    ],
    ids=["0-sent", "1-bad-address", "1-unknown-parameter", "1-missing-attachment",
         "2-no-starttls", "3-plaintext-auth", "4-rejected", "5-partial", "6-timeout",
         "7-temporary"],
)
def test_cli_prints_json_for_every_exit_code(
    fault_server: Callable[..., FaultServer], tmp_data: TmpData, tmp_path: Path, code: int,
    server_kw: dict[str, Any], conn_kw: dict[str, Any], request_kw: dict[str, Any],
    args: tuple[str, ...],
) -> None:
    server = fault_server(**server_kw)
    request = {**REQUEST, **request_kw}
    conn = write(tmp_path / "conn.json", _conn(server.port, **conn_kw))
    req = write(tmp_path / "req.json", request)
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), *args,
                            cwd=tmp_path)
    assert rc == code, answer
    delivered = server.count()
    if code == 0:
        assert delivered == 1 and server.messages()[0].message_id == answer["message_id"]
    elif code == 5:
        assert delivered == 1 and server.messages()[0].rcpt_to == ("bob@example.test",)
        assert answer["refused"] == {"carol@example.test": [550, "5.1.1 Unknown"]}
    else:
        assert delivered == 0
    if code == 1:
        assert server.connections == 0
    if code in (6, 7):
        kept = [e.message_id for e in Outbox(tmp_data.outbox).entries()]
        assert kept == [answer["message_id"]]


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda d: ["send", "--config", str(d / "conn.json")], "--request"),
        (lambda d: ["send", "--config", str(d / "nope.json"), "--request", str(d / "req.json")],
         "does not exist"),
        (lambda d: ["send", "--config", str(d / "conn.json"), "--request", str(d / "bad.json")],
         "not valid JSON"),
        (lambda d: ["send", "--config", str(d / "conn.json"), "--request", str(d / "list.json")],
         "JSON object"),
        (lambda d: ["send", "--config", str(d / "conn.json"), "--request", str(d / "req.json"),
                    "--timeout", "soon"], "--timeout"),
        (lambda d: ["send", "--config", str(d / "conn.json"), "--request", str(d / "req.json"),
                    "--timeout", "-1"], "timeout"),
        (lambda d: ["sned"], "COMMAND"),
    ],
    ids=["missing-option", "missing-config", "bad-json", "not-an-object", "bad-timeout",
         "negative-timeout", "unknown-command"],
)
def test_cli_usage_and_file_errors_are_json_exit_1(
    tmp_data: TmpData, tmp_path: Path, refused_port: int, make_args: Callable[[Path], list[str]],
    needle: str,
) -> None:
    write(tmp_path / "conn.json", _conn(refused_port))
    write(tmp_path / "req.json", REQUEST)
    write(tmp_path / "list.json", [REQUEST])
    (tmp_path / "bad.json").write_text("{'to': nope", encoding="utf-8")
    rc, answer, _ = run_cli(*make_args(tmp_path), cwd=tmp_path)
    assert rc == 1, answer
    assert needle in answer["message"]


def test_cli_implicit_tls_with_cafile_setting(tls_server: Any, tmp_data: TmpData,
                                              tmp_path: Path, ca: trustme.CA,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    conn = write(tmp_path / "conn.json", _conn(tls_server.port, security="tls",
                                               cafile=str(ca_pem)))
    req = write(tmp_path / "req.json", REQUEST)
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), cwd=tmp_path)
    assert rc == 0, answer
    (got,) = tls_server.wait_for(1)
    assert got.message_id == answer["message_id"]
