"""A username with no password source is not a silent send without logging in: exit 1 before
connecting, with the fix; ``auth = none`` (and ``--local``) send without logging in on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TestingShell, run_cell
from faults import PASSWORD, USER, FaultServer

import smtp_magic
from smtp_magic import config
from smtp_magic.errors import InvalidRequest
from smtp_magic.server import CaptureServer, local_server

FaultFactory = Callable[..., FaultServer]


def values(server: Any, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 10, **extra}


def test_a_username_without_a_password_is_exit_1_before_connecting(
        fault_server: FaultFactory) -> None:
    server = fault_server()
    r = smtp_magic.send("bob@example.test", "x", "hi",
                        config=values(server, username="me@example.test"))
    assert r.exitcode == 1, r
    assert r.message == (
        "The username 'me@example.test' has no password: give one (--password-prompt, "
        "--password-env VAR, --keyring, or SMTP_PASSWORD), or set auth to 'none' (--auth none) "
        "to send without logging in.")
    assert server.connections == 0 and server.accepted == 0


def test_auth_none_sends_without_logging_in_with_the_username_as_sender(
        fault_server: FaultFactory) -> None:
    server = fault_server()
    r = smtp_magic.send("bob@example.test", "no login", "hi",
                        config=values(server, username="me@example.test", auth="none"))
    assert r.exitcode == 0, r.message
    (got,) = server.wait_for(1)
    assert got.mail_from == "me@example.test"


def test_auth_none_never_logs_in_even_with_a_password(auth_server: CaptureServer,
                                                      client_ssl_env: Path) -> None:
    """The choice is the user's: a server that requires a login then refuses the sender."""
    r = smtp_magic.send("bob@example.test", "x", "hi", config={
        "host": "127.0.0.1", "port": auth_server.port, "security": "starttls",
        "username": USER, "password": PASSWORD, "sender": "a@example.test", "auth": "none"})
    assert r.exitcode == 3 and "requires a login" in r.message, r.message
    assert auth_server.count() == 0


def test_a_username_from_the_environment_without_a_password(
        fault_server: FaultFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = fault_server()
    monkeypatch.setenv("SMTP_USERNAME", "env-user@example.test")
    r = smtp_magic.send("bob@example.test", "x", "hi", config=values(server))
    assert r.exitcode == 1 and "'env-user@example.test' has no password" in r.message
    assert server.connections == 0


def test_the_cli_says_the_same_in_json(fault_server: FaultFactory, tmp_path: Path) -> None:
    server = fault_server()
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": server.port, "security": "none",
                                "username": "me@example.test"}))
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"to": "bob@example.test", "subject": "x", "body": "y"}))
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conn),
                           "--request", str(req)], capture_output=True, text=True,
                          env=os.environ, timeout=60, check=False)
    answer = json.loads(proc.stdout)
    assert proc.returncode == answer["exitcode"] == 1 and "--auth none" in answer["message"]
    assert server.connections == 0
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": server.port, "security": "none",
                                "username": "me@example.test", "auth": "none"}))
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conn),
                           "--request", str(req)], capture_output=True, text=True,
                          env=os.environ, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout
    assert server.wait_for(1)[0].mail_from == "me@example.test"


def test_the_magic_shows_the_fix_and_takes_auth_none(ip: TestingShell,
                                                     fault_server: FaultFactory) -> None:
    server = fault_server()
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {server.port} --security none "
                      "--username me@example.test")
    with pytest.raises(InvalidRequest, match="--auth none"):
        ip.run_cell("%%smtp_send --to bob@example.test --subject x --sync\nhi")
    assert server.connections == 0
    ip.run_line_magic("smtp_config", "--auth none")
    ip.run_cell("%%smtp_send --to bob@example.test --subject 'no login' --sync\nhi")
    assert server.wait_for(1)[0].mail_from == "me@example.test"


def test_local_is_no_login_on_purpose_and_leaving_it_asks_again(ip: TestingShell) -> None:
    try:
        ip.run_line_magic("smtp_config", "--username me@example.test")
        run_cell(ip, "%smtp_config --local")
        assert config.current().auth == "none"
        ip.run_cell("%%smtp_send --to bob@example.test --subject 'local' --sync\nhi")
        assert local_server().wait_for(1)[0].mail_from == "me@example.test"
        run_cell(ip, "%smtp_config --host smtp.example.test --port 587")
        assert config.current().auth == "password"  # a real server: log in, or say how
    finally:
        local_server().stop()


def test_the_form_says_a_username_needs_a_password_or_auth_none() -> None:
    from smtp_magic.widgets import compose

    settings = config.SmtpMagic()
    form = compose(settings=settings, namespace={})
    assert "mail is sent without logging in" in form.password_hint.value
    settings.username = "me@example.test"  # the hint follows the settings by itself
    assert "No password for this username" in form.password_hint.value
    settings.auth = "none"
    assert "mail is sent without logging in" in form.password_hint.value
    form.close()
