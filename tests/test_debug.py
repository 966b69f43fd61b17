"""Observability: a logger per module, and the debug setting showing the SMTP conversation with
every credential redacted (API, CLI, magics)."""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestingShell, TmpData
from faults import PASSWORD, USER

import smtp_magic
from smtp_magic import SmtpMagic, send
from smtp_magic.conversation import REDACTED, Conversation, debug_output
from smtp_magic.server import CaptureServer

SENDER = "alice@example.test"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SECRET_FORMS = [PASSWORD, b64(PASSWORD), b64(f"\0{USER}\0{PASSWORD}"),
                b64(f"{USER}\0{USER}\0{PASSWORD}"), b64(f"{USER}\0{PASSWORD}")]


def assert_no_secret(text: str) -> None:
    for form in SECRET_FORMS:
        assert form not in text, f"{form!r} leaked:\n{text}"


def auth_settings(server: CaptureServer, ca_file: Path, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "127.0.0.1", "port": server.port, "username": USER,
                               "password": PASSWORD, "cafile": str(ca_file), "sender": SENDER,
                               "timeout": 10, **extra})


class LoginOnlyServer(CaptureServer):
    """Offers AUTH LOGIN only, so the password travels as its own SASL line."""

    def _smtp_kwargs(self) -> dict[str, Any]:
        return {**super()._smtp_kwargs(), "auth_exclude_mechanism": ["PLAIN"]}


@pytest.fixture
def login_server(tmp_path: Path, server_tls: Any) -> Iterator[CaptureServer]:
    with LoginOnlyServer(tmp_path / "login", tls="starttls", ssl_context=server_tls,
                         users={USER: PASSWORD}, require_auth=True) as server:
        yield server


# -- the conversation of a real send, on standard error ------------------------------------------

def test_debug_shows_the_conversation_with_auth_plain_redacted(
        auth_server: CaptureServer, ca_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    r = send("bob@example.test", "Debugging", "<p>hello</p>",
             config=auth_settings(auth_server, ca_file, debug=True))
    assert r.ok, r
    out, err = capfd.readouterr()
    lines = err.splitlines()
    # The whole exchange, in order, as a user of smtplib's set_debuglevel would expect.
    expected = ["< 220 ", "> EHLO ", "< 250-", "> STARTTLS", "< 220 ", "* TLS established",
                "> EHLO ", "> AUTH PLAIN " + REDACTED, "< 235 ", "> MAIL FROM:<alice@example.test>",
                "< 250 ", "> RCPT TO:<bob@example.test>", "> DATA", "< 354 ", "> (message: ",
                "< 250 ", "> QUIT", "< 221 "]
    at = 0
    for fragment in expected:
        at = next((i for i in range(at, len(lines)) if fragment in lines[i]), -1)
        assert at >= 0, f"{fragment!r} missing (in order) from:\n{err}"
    assert all(line.startswith("#") for line in lines), err
    assert_no_secret(out + err)
    assert auth_server.wait_for(1)[0].subject == "Debugging"


def test_debug_redacts_every_line_of_auth_login(
        login_server: CaptureServer, ca_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    r = send("bob@example.test", "Login", "hi", config=auth_settings(login_server, ca_file,
                                                                       debug=True))
    assert r.ok, r
    err = capfd.readouterr().err
    assert "> AUTH LOGIN " + REDACTED in err
    assert f"> {REDACTED}" in err  # the password's own line
    assert "< 334 " in err and "< 235 " in err
    assert_no_secret(err)


def test_a_refused_login_is_shown_without_the_password(
        auth_server: CaptureServer, ca_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = auth_settings(auth_server, ca_file, debug=True).update({"password": "wrong-pw-1"})
    r = send("bob@example.test", "Bad", "hi", config=settings)
    assert r.exitcode == 3, r
    err = capfd.readouterr().err
    assert "< 535 " in err and "wrong-pw-1" not in err and b64("wrong-pw-1") not in err
    assert b64(f"\0{USER}\0wrong-pw-1") not in err


def test_without_debug_nothing_is_printed(auth_server: CaptureServer, ca_file: Path,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    assert send("bob@example.test", "Quiet", "hi", config=auth_settings(auth_server, ca_file)).ok
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- logging ------------------------------------------------------------------------------------

def test_the_conversation_is_a_debug_log_record(auth_server: CaptureServer, ca_file: Path,
                                                caplog: pytest.LogCaptureFixture,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.DEBUG, logger="smtp_magic"):
        assert send("bob@example.test", "Logged", "hi",
                    config=auth_settings(auth_server, ca_file)).ok
    records = [r for r in caplog.records if r.name == "smtp_magic.conversation"]
    text = "\n".join(r.getMessage() for r in records)
    assert "> AUTH PLAIN " + REDACTED in text and "> MAIL FROM:<alice@example.test>" in text
    assert {r.levelno for r in records} == {logging.DEBUG, logging.INFO}
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))
    assert capfd.readouterr().err == ""  # debug is off: logging alone decides what is shown


def test_every_module_has_its_own_logger_and_the_library_adds_no_handler() -> None:
    names = [f"smtp_magic.{m.name}" for m in pkgutil.iter_modules(smtp_magic.__path__)
             if m.name != "__main__"]
    for name in names:
        module = importlib.import_module(name)
        logger = getattr(module, "log", None)
        assert isinstance(logger, logging.Logger) and logger.name == name, name
        assert logger.handlers == [], name
    assert logging.getLogger("smtp_magic").handlers == []


def test_secrets_are_scrubbed_even_outside_auth() -> None:
    seen: list[str] = []
    with debug_output(seen.append):
        conv = Conversation("h:1", debug=True, secrets=[PASSWORD], username=USER)
    conv.reply(535, f"bad credentials {b64(PASSWORD)} for {PASSWORD}")
    conv.command(b"AUTH", b"XOAUTH2", b64(f"user={USER}\x01auth=Bearer tok\x01\x01").encode())
    conv.reply(334, "eyJzdGF0dXMiOiI0MDEifQ==")
    conv.command(b"")
    conv.reply(535, "no")
    conv.command(b"NOOP")
    text = "\n".join(seen)
    assert_no_secret(text)
    assert "> AUTH XOAUTH2 " + REDACTED in text and "(empty line)" in text
    assert seen[-1].endswith("> NOOP")  # after the final reply, commands show again


# -- command line: --debug on standard error, JSON on standard output --------------------------

def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smtp_magic", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_send_and_check_debug(auth_server: CaptureServer, ca_file: Path,
                                  tmp_path: Path, tmp_data: TmpData) -> None:
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": auth_server.port,
                                "username": USER, "password": PASSWORD,
                                "cafile": str(ca_file)}))
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"to": "bob@example.test", "from": SENDER, "subject": "CLI debug",
                               "body": "hi"}))
    proc = run_cli("send", "--config", str(conn), "--request", str(req), "--debug", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] == "sent"  # stdout stays pure JSON
    assert "> AUTH PLAIN " + REDACTED in proc.stderr and "< 250 " in proc.stderr
    assert_no_secret(proc.stdout + proc.stderr)

    proc = run_cli("check", "--config", str(conn), "--debug", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Login: succeeded" in proc.stdout and "< 235 " in proc.stderr
    assert "MAIL FROM" not in proc.stderr  # check sends nothing
    assert_no_secret(proc.stdout + proc.stderr)

    proc = run_cli("outbox", "--retry", "--config", str(conn), "--debug", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


def test_cli_outbox_retry_debug(fault_server: Any, tmp_path: Path, tmp_data: TmpData) -> None:
    server = fault_server(data_reply=(451, "4.3.0 Later"), times=3)
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": server.port,
                                "security": "none", "timeout": 5}))
    r = send("bob@example.test", "Kept", "hi", sender=SENDER, config=str(conn))
    assert r.exitcode == 7, r
    proc = run_cli("outbox", "--retry", "--config", str(conn), "--debug", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [x["exitcode"] for x in json.loads(proc.stdout)] == [0]
    assert "> RCPT TO:<bob@example.test>" in proc.stderr and "< 250 " in proc.stderr


# -- the magics -----------------------------------------------------------------------------------

def test_smtp_config_debug_then_a_sync_send_shows_it_on_stderr(
        ip: TestingShell, smtp_server: CaptureServer, capfd: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                                     "--security none --from nb@example.test --debug")
    assert smtp_magic.current().debug is True
    ip.run_cell_magic("smtp_send", "--to bob@example.test --subject Magic --sync", "hello")
    err = capfd.readouterr().err
    assert "> MAIL FROM:<nb@example.test>" in err and "< 250 " in err
    ip.run_line_magic("smtp_config", "--no-debug")
    ip.run_cell_magic("smtp_send", "--to bob@example.test --subject Quiet --sync", "hello")
    assert "MAIL FROM" not in capfd.readouterr().err
    assert smtp_server.count() == 2


def test_check_in_a_magic_with_debug(ip: TestingShell, auth_server: CaptureServer,
                                     ca_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    os.environ["SMTP_MAGIC_TEST_PW"] = PASSWORD
    try:
        ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {auth_server.port} "
                          f"--username {USER} --password-env SMTP_MAGIC_TEST_PW "
                          f"--cafile {ca_file} --debug --check")
    finally:
        del os.environ["SMTP_MAGIC_TEST_PW"]
    out, err = capfd.readouterr()
    assert "Login: succeeded" in out and "> AUTH PLAIN " + REDACTED in err
    assert_no_secret(out + err)


def test_oauth2_sign_in_is_redacted_with_its_token(tmp_path: Path, server_tls: Any,
                                                   ca_file: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    token = "ya29.tok-" + "Zq8" * 20
    with CaptureServer(tmp_path / "oauth", tls="starttls", ssl_context=server_tls,
                       token_validator=lambda user, value: value == token,
                       require_auth=True) as server:
        settings = SmtpMagic().update({"host": "127.0.0.1", "port": server.port,
                                       "username": SENDER, "cafile": str(ca_file),
                                       "sender": SENDER, "debug": True, "timeout": 10})
        settings.oauth2_token_provider = lambda: token
        settings.update({"auth": "oauth2"})
        r = send("bob@example.test", "OAuth debug", "hi", config=settings)
        assert r.ok, r
        err = capfd.readouterr().err
    assert "> AUTH XOAUTH2 " + REDACTED in err and "< 235 " in err
    for form in (token, base64.b64encode(token.encode()).decode(),
                 base64.b64encode(f"user={SENDER}\x01auth=Bearer {token}\x01\x01".encode()).decode()):
        assert form not in err
