"""A password goes only to the server it was given for; after --local, what the user gives wins.

Two real AUTH servers (STARTTLS, login required) with the same login and different passwords:
A is 127.0.0.1, B is "localhost" on another port. B records every login attempt: it must never
see one made with A's password, however the settings move from A to B (an API config, %smtp_config,
the form, a profile, a CLI request).
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestingShell, run_cell
from test_cli_seed import run_cli

import smtp_magic
from smtp_magic import SmtpMagic, config
from smtp_magic.errors import SmtpMagicError
from smtp_magic.server import CaptureServer, local_server
from smtp_magic.widgets import compose

PW_A = "pw-a-" + secrets.token_hex(8)
PW_B = "pw-b-" + secrets.token_hex(8)
USER = "me"


@pytest.fixture
def servers(tmp_path: Path, server_tls: ssl.SSLContext, client_ssl_env: Path
            ) -> Iterator[tuple[CaptureServer, CaptureServer]]:
    with CaptureServer(tmp_path / "a", tls="starttls", ssl_context=server_tls,
                       users={USER: PW_A}, require_auth=True) as a, \
         CaptureServer(tmp_path / "b", tls="starttls", ssl_context=server_tls,
                       users={USER: PW_B}, require_auth=True) as b:
        yield a, b


def given_for_a(a: CaptureServer) -> str:
    return f"The password was given for {USER} at 127.0.0.1:{a.port}, so it is not sent to"


def assert_withheld(response: Any, a: CaptureServer, b: CaptureServer, where: str) -> None:
    assert response.exitcode == 3, response
    assert response.message.startswith(given_for_a(a)) and where in response.message
    assert "give the password again" in response.message and PW_A not in response.message
    assert b.logins == [] and b.count() == 0  # B never saw a login, let alone A's password


@pytest.fixture
def typed_for_a(ip: TestingShell, servers: tuple[CaptureServer, CaptureServer],
                monkeypatch: pytest.MonkeyPatch) -> tuple[CaptureServer, CaptureServer]:
    """%smtp_config pointed at A, A's password typed at the prompt."""
    a, _ = servers
    monkeypatch.setattr("getpass.getpass", lambda prompt="": PW_A)
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {a.port} --username {USER} "
                      "--password-prompt --from me@example.test")
    return servers


def test_api_config_for_another_server_does_not_get_the_password(
        typed_for_a: tuple[CaptureServer, CaptureServer]) -> None:
    a, b = typed_for_a
    assert smtp_magic.send("boss@example.test", "To A", "hi").exitcode == 0
    assert a.logins == [("PLAIN", USER, True)] or a.logins == [("LOGIN", USER, True)]

    # The case: another target in one call's config.
    r = smtp_magic.send("boss@example.test", "To B", "hi",
                        config={"target": "localhost", "port": b.port})
    assert_withheld(r, a, b, f"{USER} at localhost:{b.port}")
    # Only the port, or only the username, differ: another origin too.
    r = smtp_magic.send("boss@example.test", "To B", "hi", config={"port": b.port})
    assert_withheld(r, a, b, f"{USER} at 127.0.0.1:{b.port}")
    r = smtp_magic.send("boss@example.test", "To A as bob", "hi", config={"username": "bob"})
    assert r.exitcode == 3 and "bob at 127.0.0.1" in r.message and len(a.logins) == 1
    # A request of the connector's format, and send_many's per-request override, alike.
    r = smtp_magic.connector({"target": "localhost", "port": b.port}).set("to", "x@example.test") \
        .set("subject", "s").set("body", "b").sync()
    assert_withheld(r, a, b, f"localhost:{b.port}")
    (r,) = smtp_magic.send_many([{"to": "x@example.test", "subject": "s", "body": "b",
                                  "port": b.port}])
    assert_withheld(r, a, b, f"127.0.0.1:{b.port}")
    # Given again for B, it is B's: B logs in with its own password.
    r = smtp_magic.send("boss@example.test", "To B", "hi",
                        config={"target": "localhost", "port": b.port, "password": PW_B})
    assert r.exitcode == 0, r.message
    assert b.logins in ([("PLAIN", USER, True)], [("LOGIN", USER, True)])
    # And the session's own settings still hold A's password, for A.
    assert smtp_magic.send("boss@example.test", "To A again", "hi").exitcode == 0


def test_smtp_config_to_another_server_says_so_and_sends_nothing(
        ip: TestingShell, typed_for_a: tuple[CaptureServer, CaptureServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = typed_for_a
    moved = run_cell(ip, f"%smtp_config --host localhost --port {b.port}")
    assert given_for_a(a) in moved.stdout and "--password-prompt" in moved.stdout
    table = run_cell(ip, "%smtp_config").outputs[0].data["text/plain"]
    assert f"given for {USER} at 127.0.0.1:{a.port}" in table and PW_A not in table
    with pytest.raises(SmtpMagicError) as info:
        ip.run_cell_magic("smtp_send", "--to boss@example.test --subject B --sync", "hi")
    assert info.value.exitcode == 3 and str(info.value).startswith(given_for_a(a))
    assert b.logins == [] and b.count() == 0
    # Back to A: the password was dropped, not kept aside; A is not tried without it either.
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {a.port}")
    r = smtp_magic.send("boss@example.test", "A", "hi")
    assert r.exitcode == 3 and a.logins == []
    # Given again (here for B), sending works.
    monkeypatch.setattr("getpass.getpass", lambda prompt="": PW_B)
    ip.run_line_magic("smtp_config", f"--host localhost --port {b.port} --password-prompt")
    ip.run_cell_magic("smtp_send", "--to boss@example.test --subject B --sync", "hi")
    assert [ok for _, _, ok in b.logins] == [True] and b.count() == 1


def test_the_form_withholds_the_password_when_its_port_changes(
        servers: tuple[CaptureServer, CaptureServer]) -> None:
    a, b = servers
    settings = SmtpMagic().update({"host": "127.0.0.1", "port": a.port, "username": USER,
                                   "sender": "me@example.test", "timeout": 10})
    form = compose(settings=settings, namespace={})
    try:
        form.password.value = PW_A  # typed into the settings panel, then Enter
        assert form.password.value == "" and "Password set" in form.password_hint.value
        assert smtp_magic.send("x@example.test", "A", "hi", config=settings).exitcode == 0
        form.port.value = b.port
        assert (settings.host, settings.port) == ("127.0.0.1", b.port)
        assert f"given for {USER} at 127.0.0.1:{a.port}" in form.password_hint.value
        r = smtp_magic.send("x@example.test", "B", "hi", config=settings)
        assert_withheld(r, a, b, f"127.0.0.1:{b.port}")
        form.host.value = "localhost"
        form.password.value = PW_B
        assert smtp_magic.send("x@example.test", "B", "hi", config=settings).exitcode == 0
        assert [ok for _, _, ok in b.logins] == [True]
    finally:
        form.close()


def test_a_profile_of_another_server_does_not_get_a_typed_password(
        ip: TestingShell, servers: tuple[CaptureServer, CaptureServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = servers
    ip.run_line_magic("smtp_config", f"--host localhost --port {b.port} --username {USER} "
                      "--from me@example.test --profile b --save")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": PW_A)
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {a.port} --password-prompt")
    r = smtp_magic.send("x@example.test", "B", "hi", profile="b")
    assert_withheld(r, a, b, f"localhost:{b.port}")
    moved = run_cell(ip, "%smtp_config --profile b")
    assert given_for_a(a) in moved.stdout
    assert smtp_magic.send("x@example.test", "B", "hi").exitcode == 3 and b.logins == []


def test_cli_request_for_another_port_gets_exit_3(
        servers: tuple[CaptureServer, CaptureServer], tmp_path: Path) -> None:
    a, b = servers
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": a.port, "username": USER,
                                "password": PW_A}))
    conn.chmod(0o600)
    request = {"to": "x@example.test", "from": "me@example.test", "subject": "s", "body": "b"}
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request))
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), cwd=tmp_path)
    assert rc == 0, answer
    req.write_text(json.dumps({**request, "port": b.port}))
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), cwd=tmp_path)
    assert rc == 3 and answer["message"].startswith(given_for_a(a)), answer
    assert b.logins == []


def test_cli_with_the_password_in_the_environment(
        servers: tuple[CaptureServer, CaptureServer], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cron job: SMTP_HOST, SMTP_USERNAME and SMTP_PASSWORD exported, the port in the file."""
    a, b = servers
    for name, value in (("SMTP_HOST", "127.0.0.1"), ("SMTP_USERNAME", USER), ("SMTP_PASSWORD", PW_A)):
        monkeypatch.setenv(name, value)
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"port": a.port, "from": "me@example.test"}))
    req = tmp_path / "req.json"
    request = {"to": "x@example.test", "subject": "s", "body": "b"}
    req.write_text(json.dumps(request))
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), cwd=tmp_path)
    assert rc == 0, answer
    req.write_text(json.dumps({**request, "port": b.port}))
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request", str(req), cwd=tmp_path)
    assert rc == 3 and answer["message"].startswith(given_for_a(a)) and b.logins == [], answer


def test_environment_password_belongs_to_its_server() -> None:
    env = {"SMTP_HOST": "smtp.a.example", "SMTP_USERNAME": USER, "SMTP_PASSWORD": PW_A}
    s = SmtpMagic().load_env(env)
    assert s.snapshot().password.reveal() == PW_A
    assert isinstance(s.snapshot({"target": "smtp.b.example"}).password, config.Withheld)
    # No SMTP_PORT: the first port chosen (a cron job's --config file, say) gets it, no other.
    assert s.snapshot({"port": 587}).password.reveal() == PW_A
    s.update({"port": 587}, source="file conn.json")
    assert s.snapshot().password.reveal() == PW_A
    assert isinstance(s.snapshot({"port": 2525}).password, config.Withheld)
    # Without SMTP_HOST the environment names no server: the first one chosen gets it.
    s = SmtpMagic().load_env({"SMTP_USERNAME": USER, "SMTP_PASSWORD": PW_A})
    s.update({"rate": "3/s"}, source="%smtp_config")  # not a server: still unbound
    s.update({"host": "smtp.a.example"}, source="%smtp_config")
    s.update({"port": 587}, source="%smtp_config")  # in two steps: each was left open
    assert s.password.reveal() == PW_A
    assert isinstance(s.snapshot({"target": "smtp.b.example"}).password, config.Withheld)
    s.update({"host": "smtp.b.example"}, source="%smtp_config")
    assert not s.password and s.password.given_for == f"{USER} at smtp.a.example:587"


def test_a_password_put_aside_by_local_comes_back_only_for_its_server() -> None:
    s = SmtpMagic().update({"host": "smtp.a.example", "port": 587, "username": USER,
                            "password": PW_A})
    s.use_local("127.0.0.1", 40025)
    back = s.copy().update({"host": "smtp.a.example"}, source="%smtp_config")
    assert back.password.reveal() == PW_A and back.port == 587
    elsewhere = s.copy().update({"host": "smtp.c.example"}, source="%smtp_config")
    assert not elsewhere.password and elsewhere.password.given_for == f"{USER} at smtp.a.example:587"
    assert "password" not in elsewhere.left_local()  # not back: withheld
    # A keyring or password_env named for the new server is used instead, as asked.
    keyed = s.copy().update({"host": "smtp.c.example", "use_keyring": True}, source="x")
    assert config.withheld_password(keyed.snapshot()) is None


# -- after --local, what the user gives wins -------------------------------------------------------

def test_explicit_host_after_local_wins_and_the_notice_lists_only_what_came_back(
        ip: TestingShell, smtp_server: CaptureServer) -> None:
    try:
        ip.run_line_magic("smtp_config", "--host smtp.previous.example --port 587 --security "
                          "starttls --username someone")
        run_cell(ip, "%smtp_config --local")
        left = run_cell(ip, f"%smtp_config --port {smtp_server.port}")  # the host not given
        s = config.current()
        assert (s.host, s.port, s.security) == ("smtp.previous.example", smtp_server.port, "starttls")
        assert ("what --local had set is back: host smtp.previous.example, security starttls, "
                "auth password, sender (not set).") in left.stdout, left.stdout
        assert f"port {smtp_server.port}" not in left.stdout  # given, so not "back"

        run_cell(ip, "%smtp_config --local")
        assert config.current().host == "127.0.0.1" and config.current().port != smtp_server.port
        left = run_cell(ip, f"%smtp_config --host 127.0.0.1 --port {smtp_server.port} "
                        "--security none --auth none")
        s = config.current()
        assert (s.host, s.port, s.security) == ("127.0.0.1", smtp_server.port, "none")
        # Nothing came back that the user did not give: no notice at all. The stand-in sender
        # stays: still this machine, and "someone" is no address to send from.
        assert "what --local had set is back" not in left.stdout, left.stdout
        assert s.sender == config.LOCAL_SENDER
        ip.run_cell_magic("smtp_send", "--to bob@example.test --subject Explicit --sync", "hi")
        assert [m.subject for m in smtp_server.wait_for(1)] == ["Explicit"]
    finally:
        local_server().stop()


def test_the_form_s_port_keeps_its_host_and_sender_after_local(
        smtp_server: CaptureServer) -> None:
    settings = SmtpMagic().update({"host": "smtp.previous.example", "port": 587,
                                   "security": "starttls"})
    settings.use_local("127.0.0.1", 40025)
    form = compose(settings=settings, namespace={})
    try:
        assert form.host.value == "127.0.0.1" and "notebook@localhost.test" in form.sender.placeholder
        form.port.value = smtp_server.port  # only the port, as a user types it
        assert (settings.host, settings.port) == ("127.0.0.1", smtp_server.port)
        assert form.host.value == "127.0.0.1"
        assert settings.sender == config.LOCAL_SENDER
        assert "notebook@localhost.test" in form.sender.placeholder
        form.to.value = "bob@example.test"
        form.subject.value = "From the form"
        form.body.value = "hi"
        settings.security = "none"  # the plain test server
        form.send_button.click()
        (got,) = smtp_server.wait_for(1)
        assert got.subject == "From the form" and got.mail_from == config.LOCAL_SENDER
        # A new host in the form brings back the port from before --local, and no stand-in
        # sender goes to a real server.
        settings.use_local("127.0.0.1", 40025)
        form.host.value = "smtp.other.example"
        assert (settings.host, settings.port, settings.sender) == (
            "smtp.other.example", smtp_server.port, None)
    finally:
        form.close()
