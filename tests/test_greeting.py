"""Before the greeting or the TLS handshake nothing can have been delivered: exit 2, the likely
cause in one sentence, and fast where the protocol allows (issue 11).

Real servers: aiosmtpd in implicit-TLS and plain mode (conftest), a server that never greets
(tests/faults.py), and Postfix's smtps port when the private Postfix runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TmpData

from smtp_magic import SmtpMagic, check, send
from smtp_magic.errors import ConnectFailed
from smtp_magic.outbox import Outbox

BOB = "bob@example.test"


def settings(port: int, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "127.0.0.1", "port": port, "sender": "nb@example.test",
                               "timeout": 20, **extra})


def timed_send(config: SmtpMagic) -> tuple[Any, float]:
    started = time.monotonic()
    r = send(BOB, "Hello", "hi", config=config)
    return r, time.monotonic() - started


def kept(tmp_data: TmpData) -> list[str]:
    return [e.message_id for e in Outbox(tmp_data.outbox).entries()]


@pytest.mark.parametrize("security", ["starttls", "auto", "none"])
def test_plain_smtp_against_an_implicit_tls_port_fails_fast_with_the_fix(
        tls_server, client_ssl_env, tmp_data, security):
    r, took = timed_send(settings(tls_server.port, security=security))
    assert r.exitcode == 2, r
    assert r.message == (f"127.0.0.1:{tls_server.port} speaks implicit TLS and sends no plain "
                         "SMTP greeting: use security 'tls'; nothing was sent.")
    assert took < 5, f"took {took:.1f} s of a 20 s timeout"
    assert kept(tmp_data) == [r.message_id]  # nothing lost: --retry after fixing the setting
    assert tls_server.messages() == []


def test_implicit_tls_against_a_plain_smtp_port_says_so(smtp_server, client_ssl_env, tmp_data):
    r, took = timed_send(settings(smtp_server.port, security="tls"))
    assert r.exitcode == 2, r
    assert r.message.startswith(f"127.0.0.1:{smtp_server.port} speaks plain SMTP, not implicit "
                                "TLS (it greeted '220 "), r.message
    assert r.message.endswith(": use security 'starttls' (or 'auto')."), r.message
    assert took < 5
    assert smtp_server.messages() == []


def test_a_server_that_never_greets_is_exit_2_after_the_timeout(fault_server, tmp_data):
    server = fault_server(stall=30, stall_at="greeting")
    r, took = timed_send(settings(server.port, security="none", timeout=2.5))
    assert r.exitcode == 2, r
    assert r.message == (f"127.0.0.1:{server.port} sent no SMTP greeting within 2.5 s; "
                         "nothing was sent.")
    assert 2.3 < took < 4.5  # the whole timeout: a slow greeting is legal, silence is not TLS
    assert kept(tmp_data) == [r.message_id]
    assert server.accepted == 0


def test_check_reports_the_implicit_tls_port_the_same_way(tls_server, client_ssl_env):
    started = time.monotonic()
    with pytest.raises(ConnectFailed, match=r"speaks implicit TLS .*use security 'tls'") as exc:
        check(settings(tls_server.port, security="starttls"))
    assert exc.value.exitcode == 2
    assert time.monotonic() - started < 5


def test_the_cli_prints_exit_2_and_the_fix(tls_server, client_ssl_env, tmp_path: Path):
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": tls_server.port,
                                "security": "starttls", "timeout": 20}))
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"to": [BOB], "from": "nb@example.test", "subject": "Hi",
                               "body": "hello"}))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conn),
                           "--request", str(req)], capture_output=True, text=True, timeout=60, check=False,
                          env=os.environ)
    answer = json.loads(proc.stdout)
    assert proc.returncode == 2 == answer["exitcode"], proc
    assert "use security 'tls'" in answer["message"]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 10


@pytest.mark.postfix
def test_starttls_against_postfix_smtps_port(postfix, tmp_data):
    config = settings(postfix.smtps_port, security="starttls", cafile=str(postfix.ca))
    r, took = timed_send(config)
    assert r.exitcode == 2, r
    assert "speaks implicit TLS" in r.message and "use security 'tls'" in r.message
    assert took < 5


@pytest.mark.postfix
def test_implicit_tls_against_postfix_plain_port(postfix, tmp_data):
    config = settings(postfix.smtp_port, security="tls", cafile=str(postfix.ca))
    r, took = timed_send(config)
    assert r.exitcode == 2, r
    assert "speaks plain SMTP, not implicit TLS" in r.message, r.message
    assert took < 5
