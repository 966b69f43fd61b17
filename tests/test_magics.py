"""The magics in an in-process IPython shell (errors raised, no history) against real SMTP servers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NOTEBOOK_SENDER, run_cell, shown_text
from IPython.core.error import UsageError
from waits import until

from smtp_magic import _kernel, config
from smtp_magic.errors import ConnectFailed, SmtpMagicError
from smtp_magic.magics import (
    expand_words,
    load_ipython_extension,
    split_words,
    unload_ipython_extension,
)
from smtp_magic.outbox import Outbox, history
from smtp_magic.server import CaptureServer, local_server

if TYPE_CHECKING:
    from conftest import TestingShell, TmpData

pd = pytest.importorskip("pandas")

SENDER = NOTEBOOK_SENDER


@pytest.fixture
def frame(ip: TestingShell) -> Any:
    df = pd.DataFrame({"name": ["Ann", "Bob", "Cy"],
                       "email": ["ann@example.test", "bob@example.test", "cy@example.test"],
                       "amount": [1.5, 20.25, 300.0]})
    ip.user_ns["df"] = df
    return df


def usage_error(ip: TestingShell, source: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        ip.run_cell(source)
    assert type(info.value) is UsageError  # IPython shows only a subclass's traceback
    return info.value


# -- loading -------------------------------------------------------------------------------------

def test_loading_imports_nothing_heavy_and_twice_is_harmless() -> None:
    code = """
import sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "smtp_magic")
heavy = [m for m in ("pandas", "matplotlib", "ipywidgets", "aiosmtplib", "jinja2", "aiosmtpd")
         if m in sys.modules]
assert not heavy, heavy
import smtp_magic, smtp_magic.magics as m
m.load_ipython_extension(ip)
assert [type(c).__name__ for c in ip.configurables].count("SmtpMagic") == 1
assert "smtp_send" in ip.magics_manager.magics["cell"]
ip.run_line_magic("unload_ext", "smtp_magic")
assert "smtp_send" not in ip.magics_manager.magics["cell"]
assert "smtp_config" not in ip.magics_manager.magics["line"]
ip.run_line_magic("load_ext", "smtp_magic")
assert "smtp_outbox" in ip.magics_manager.magics["line"]
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_settings_registered_for_config_magic(ip: TestingShell) -> None:
    settings = config.current()
    assert settings in ip.configurables
    ip.run_line_magic("config", "SmtpMagic.port = 587")
    assert settings.port == 587
    load_ipython_extension(ip)  # twice: the same settings, registered once, nothing re-applied
    assert config.current() is settings and settings.port == 587
    assert sum(c is settings for c in ip.configurables) == 1


# -- settings ------------------------------------------------------------------------------------

def test_sources_in_order(shell: TestingShell, tmp_data: TmpData, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    shell.config.SmtpMagic.host = "from-config.example"
    shell.config.SmtpMagic.port = 2500
    shell.config.SmtpMagic.timeout = 12.0
    monkeypatch.setenv("SMTP_PORT", "2600")
    monkeypatch.setattr(config, "_current", None)
    load_ipython_extension(shell)
    try:
        settings = config.current()
        # defaults < IPython config < environment
        assert (settings.host, settings.port, settings.timeout) == ("from-config.example", 2600, 12.0)
        shell.run_line_magic("config", "SmtpMagic.timeout = 7")
        assert settings.timeout == 7
        path = tmp_path / "conn.json"
        path.write_text(json.dumps({"target": "from-file.example", "port": 2700, "username": "u"}))
        shell.user_ns["conn_file"] = str(path)
        shell.run_cell("%smtp_config --file {conn_file} --port 2800")  # the file < options
        assert (settings.host, settings.port, settings.username) == ("from-file.example", 2800, "u")
    finally:
        unload_ipython_extension(shell)
        shell.config.pop("SmtpMagic", None)
        shell.user_ns.pop("conn_file", None)


def test_file_with_unknown_key_suggests_the_right_one(ip: TestingShell, tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"target": "smtp.example.org", "post": 587}))
    error = usage_error(ip, f"%smtp_config --file '{path}'")
    assert "'post'" in str(error) and "'port'" in str(error)
    assert config.current().host == "localhost"  # all or nothing


def test_options_set_settings_and_expand(ip: TestingShell) -> None:
    ip.user_ns["port"] = 2525
    ip.run_cell("%smtp_config --host smtp.example.org --port {port} --security starttls "
                "--timeout 9 --attachment-size 5 --from 'Reports <r@example.org>' --send-mode sync")
    s = config.current()
    assert (s.host, s.port, s.security, s.timeout, s.attachment_size, s.send_mode) == (
        "smtp.example.org", 2525, "starttls", 9.0, 5.0, "sync")
    assert s.sender == "Reports <r@example.org>"


def test_table_masks_the_password(ip: TestingShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setattr(config, "_current", None)
    load_ipython_extension(ip)
    shown = run_cell(ip, "%smtp_config")
    (output,) = shown.outputs
    html, text = output.data["text/html"], output.data["text/plain"]
    assert "<table" in html and "SmtpMagic settings" in html and "password" in text
    for rendered in (html, text):
        assert "hunter2-secret" not in rendered and "********" in rendered
    listed = run_cell(ip, "%config SmtpMagic")
    assert "SmtpMagic.password" in listed.stdout and "hunter2-secret" not in listed.stdout


def test_password_sources(ip: TestingShell, monkeypatch: pytest.MonkeyPatch,
                          memory_keyring: dict[tuple[str, str], str]) -> None:
    s = config.current()
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "typed-pw")
    ip.run_cell("%smtp_config --username alice --password-prompt")
    assert s.password is not None and s.password.reveal() == "typed-pw"
    ip.run_cell("%smtp_config --password-env MY_SMTP_PW")
    assert s.password_env == "MY_SMTP_PW" and s.password is None  # the new source replaces
    ip.run_cell("%smtp_config --keyring --password-prompt")
    assert s.use_keyring and s.password is None and s.password_env is None
    assert memory_keyring == {("smtp-magic", "alice@localhost"): "typed-pw"}
    error = usage_error(ip, "%smtp_config --password-env X --keyring")
    assert "cannot be combined" in str(error)
    error = usage_error(ip, "%smtp_config --local --port 2525")
    assert "leave out --host and --port" in str(error)


@pytest.mark.parametrize("line", [
    "%smtp_config --port abc",
    "%smtp_config --bogus",
    "%smtp_config --security sometimes",
    "%smtp_config --timeout -1",
    "%smtp_outbox --now",
    "%%smtp_send --subject 'no recipient'\nbody",
    "%%smtp_send --to bob@example.test\nno subject",
    "%%smtp_send --to 'not an address' --subject hi\nbody",
    "%%smtp_send --to bob@example.test --subject 'unbalanced\nbody",
    "%%smtp_send --to bob@example.test --subject hi --attach missing.txt\nbody",
    "%%smtp_send --to bob@example.test --subject hi\n{{ undefined_name }}",
    "%%smtp_send --to bob@example.test --subject hi --each nothing_here\nbody",
])
def test_input_errors_are_plain_usage_errors(ip: TestingShell, to_server: CaptureServer,
                                             line: str) -> None:
    error = usage_error(ip, line)
    assert str(error).strip()
    assert to_server.count() == 0 and not history.records()


def test_usage_error_shows_the_usage(ip: TestingShell) -> None:
    error = usage_error(ip, "%%smtp_send --subject hi\nbody")
    assert "--to" in str(error) and "Usage: %%smtp_send" in str(error)


def test_expansion_word_by_word(ip: TestingShell) -> None:
    ns = {"addr": "ann@example.test", "team": ["a@x.test", "b@x.test"], "n": 3}
    words = split_words("--to {addr} --cc {team} --subject \"Up $5M in {n} days\" --from '$addr'"
                        " --bcc $addr --body 'n={n}'")
    assert expand_words(words, ns) == [
        "--to", "ann@example.test", "--cc", "a@x.test", "b@x.test",
        "--subject", "Up $5M in 3 days", "--from", "$addr", "--bcc", "ann@example.test",
        "--body", "n=3"]
    assert expand_words(split_words('--subject "{nope} and {{braces}} cost $$5"'), ns) == [
        "--subject", "{nope} and {braces} cost $5"]


def test_a_hash_word_starts_a_comment_as_in_a_shell() -> None:
    assert split_words("--local   # the capture server, don't worry") == [("--local", True)]
    assert split_words("--subject '#1 report' --to a@x.test #note") == [
        ("--subject", True), ("#1 report", False), ("--to", True), ("a@x.test", True)]
    assert split_words("--subject issue#5") == [("--subject", True), ("issue#5", True)]


# -- sending -------------------------------------------------------------------------------------

def test_template_with_a_dataframe(ip: TestingShell, to_server: CaptureServer, frame: Any) -> None:
    ip.user_ns["who"] = "<Team & Co>"
    shown = run_cell(ip, '%%smtp_send --to boss@example.test --subject "Revenue up $5M"\n'
                    "<p>Hello {{ who }}</p>\n{{ df }}")
    assert "sent in" in shown_text(shown)
    (msg,) = to_server.wait_for(1)
    assert msg.subject == "Revenue up $5M"
    html = msg.message.get_body(("html",)).get_content()
    assert "<table" in html and "20.25" in html and "&lt;Team &amp; Co&gt;" in html
    assert "<style" not in html
    text = msg.message.get_body(("plain",)).get_content()
    assert "<" not in text.replace("<Team & Co>", "")
    assert any("Bob" in ln and "bob@example.test" in ln and "20.25" in ln for ln in text.splitlines())
    assert ip.user_ns["smtp_last"].result().ok


def test_plain_text_and_markdown(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["who"] = "<Ann>"
    ip.run_cell("%%smtp_send --to a@example.test --subject plain --content-type text/plain\n"
                "Hi {{ who }}")
    ip.run_cell("%%smtp_send --to a@example.test --subject md --content-type text/markdown\n"
                "# Title\n\n*hi* {{ who }}")
    by_subject = {m.subject: m.message for m in to_server.wait_for(2)}
    assert by_subject["plain"].get_content_type() == "text/plain"
    assert by_subject["plain"].get_content().strip() == "Hi <Ann>"
    md = by_subject["md"].get_body(("html",)).get_content()
    assert "<h1" in md and "<em>hi</em>" in md and "&lt;Ann&gt;" in md


def test_attach_dataframe_parses_back_equal(ip: TestingShell, to_server: CaptureServer,
                                            frame: Any, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "b.txt").write_text("B")
    ip.user_ns["notes"] = "plain words"
    ip.user_ns["folder"] = str(tmp_path)
    ip.run_cell("%%smtp_send --to boss@example.test --subject files "
                "--attach df:numbers.csv notes:notes.txt {folder}/*.txt\nSee attached.")
    (msg,) = to_server.wait_for(1)
    parts = {p.get_filename(): p for p in msg.message.iter_attachments()}
    assert sorted(parts) == ["a.txt", "b.txt", "notes.txt", "numbers.csv"]
    back = pd.read_csv(io.BytesIO(parts["numbers.csv"].get_payload(decode=True)))
    pd.testing.assert_frame_equal(back, frame)
    assert parts["notes.txt"].get_content() == "plain words"


def test_preview_sends_nothing(ip: TestingShell, to_server: CaptureServer, frame: Any) -> None:
    shown = run_cell(ip, "%%smtp_send --to boss@example.test --subject Draft --preview --attach df\n"
                    "{{ df }}")
    (output,) = shown.outputs
    assert "nothing was sent" in output.data["text/html"] and "Draft" in output.data["text/html"]
    assert "df.csv" in output.data["text/html"]
    assert to_server.count() == 0 and not history.records()


def test_sync_failure_raises_the_send_error(ip: TestingShell, refused_port: int) -> None:
    config.current().update({"host": "127.0.0.1", "port": refused_port, "security": "none",
                             "sender": SENDER, "attempts": 1})
    with pytest.raises(SmtpMagicError) as info:
        ip.run_cell("%%smtp_send --to bob@example.test --subject x --sync\nbody")
    assert isinstance(info.value, ConnectFailed) and type(info.value) is not UsageError
    assert info.value._render_traceback_() and "Could not connect" in str(info.value)
    assert [r.status for r in history.records()] == ["failed"]
    assert len(Outbox().entries()) == 1  # kept on disk for a retry


def test_each_row_gets_its_own_message(ip: TestingShell, to_server: CaptureServer, frame: Any
                                       ) -> None:
    ip.user_ns["email"] = "notebook-variable@example.test"  # a column of the same name wins
    ip.user_ns["name"] = "Not a row"
    shown = run_cell(ip, '%%smtp_send --each df --to {email} --subject "Hello {name}" --cc $email\n'
                    "<p>Dear {{ name }}, you owe {{ amount }}.</p>")
    assert "sent 3 messages" in shown_text(shown)
    messages = to_server.wait_for(3)
    got = sorted((m.rcpt_to, m.subject) for m in messages)
    assert got == [(("ann@example.test",), "Hello Ann"), (("bob@example.test",), "Hello Bob"),
                   (("cy@example.test",), "Hello Cy")]
    bodies = {m.subject: m.message.get_body(("html",)).get_content() for m in messages}
    assert "Dear Bob, you owe 20.25." in bodies["Hello Bob"]
    assert len(ip.user_ns["smtp_last"].result()) == 3


def test_each_over_a_list_of_dicts(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["people"] = [{"to": "a@example.test", "n": 1}, {"to": "b@example.test", "n": 2}]
    ip.run_cell("%%smtp_send --each people --to {to} --subject 'Number' --content-type text/plain\n"
                "n={{ n }}")
    assert sorted(m.message.get_content().strip() for m in to_server.wait_for(2)) == ["n=1", "n=2"]


def test_capture_sends_the_outputs_in_order(ip: TestingShell, to_server: CaptureServer,
                                           frame: Any) -> None:
    shown = run_cell(ip, "%%smtp_send --to boss@example.test --subject Captured --capture\n"
                    "print('first line')\n"
                    "from IPython.display import display, HTML\n"
                    "display(HTML('<b>bold middle</b>'))\n"
                    "print('last line')\n"
                    "df")
    assert "first line" in shown.stdout  # shown as usual too
    (msg,) = to_server.wait_for(1)
    html = msg.message.get_body(("html",)).get_content()
    positions = [html.index(s) for s in ("first line", "bold middle", "last line", "20.25")]
    assert positions == sorted(positions)


def test_capture_error_sends_nothing(ip: TestingShell, to_server: CaptureServer) -> None:
    with pytest.raises(ZeroDivisionError):
        ip.run_cell("%%smtp_send --to boss@example.test --subject Broken --capture\n1/0")
    assert to_server.count() == 0


# -- asynchronous sends and the outbox -------------------------------------------------------------

def test_async_send_and_outbox_wait(ip: TestingShell, to_server: CaptureServer) -> None:
    config.current().send_mode = "async"
    ip.run_cell("%%smtp_send --to bob@example.test --subject later\nbody")
    job = ip.user_ns["smtp_last"]
    shown = run_cell(ip, "%smtp_outbox --wait")
    assert job.done() and job.result().ok
    (table,) = [o for o in shown.outputs if "Outbox" in o.data["text/plain"]]
    assert "sent" in table.data["text/plain"] and "later" in table.data["text/html"]
    assert to_server.count() == 1


def test_outbox_wait_raises_retry_delivers_clear_forgets(
    ip: TestingShell, smtp_server: CaptureServer, refused_port: int
) -> None:
    s = config.current()
    s.update({"host": "127.0.0.1", "port": refused_port, "security": "none", "sender": SENDER,
              "attempts": 1, "send_mode": "async"})
    ip.run_cell("%%smtp_send --to bob@example.test --subject again\nbody")
    with pytest.raises(ConnectFailed):
        ip.run_cell("%smtp_outbox --wait")
    assert [e.subject for e in Outbox().entries()] == ["again"]
    s.port = smtp_server.port
    shown = run_cell(ip, "%smtp_outbox --retry")
    assert smtp_server.wait_for(1)[0].subject == "again"
    assert not Outbox().entries() and "sent" in shown.outputs[0].data["text/plain"]
    run_cell(ip, "%smtp_outbox --wait")  # the retry succeeded: nothing counts as failed any more
    s.port = refused_port
    with pytest.raises(ConnectFailed):
        ip.run_cell("%%smtp_send --to bob@example.test --subject lost --sync\nbody")
    shown = run_cell(ip, "%smtp_outbox --clear")
    assert "Cleared 1 undelivered" in shown.stdout
    assert not history.records() and not Outbox().entries()


def test_earlier_sessions_undelivered_are_listed(ip: TestingShell, tmp_data: TmpData) -> None:
    Outbox().add(b"Subject: old\r\n\r\nbody\r\n", sender=SENDER, recipients=("x@example.test",),
                 message_id="<old@example.test>", subject="old")
    shown = run_cell(ip, "%smtp_outbox")
    assert "earlier session" in shown.outputs[0].data["text/plain"]


def test_outbox_and_inbox_wait_a_little_for_sends_in_flight(
    ip: TestingShell, fault_server: Any, tmp_data: TmpData
) -> None:
    """Run All: the cells after an asynchronous send show how it went, not 'pending'."""
    server = fault_server(stall=0.6)  # every DATA takes 0.6 s
    config.current().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                             "sender": SENDER, "send_mode": "async"})
    ip.run_cell("%%smtp_send --to bob@example.test --subject 'in flight'\nbody")
    started = time.monotonic()
    shown = run_cell(ip, "%smtp_outbox")
    assert 0.3 < time.monotonic() - started < 8
    (table,) = [o.data["text/plain"] for o in shown.outputs if "Outbox" in o.data["text/plain"]]
    assert "1 sent" in table and "pending" not in table, table
    ip.run_cell("%%smtp_send --to bob@example.test --subject 'second'\nbody")
    started = time.monotonic()
    run_cell(ip, "%smtp_inbox")
    assert 0.3 < time.monotonic() - started < 8 and server.count() == 2


def test_outbox_waits_no_longer_than_its_bound(
    ip: TestingShell, fault_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fault_server(stall=3.0)
    config.current().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                             "sender": SENDER, "send_mode": "async", "timeout": 10})
    monkeypatch.setattr("smtp_magic.magics.SETTLE_SECONDS", 0.5)
    ip.run_cell("%%smtp_send --to bob@example.test --subject slow\nbody")
    started = time.monotonic()
    shown = run_cell(ip, "%smtp_outbox")
    assert time.monotonic() - started < 2.5
    assert "1 send(s) still in flight; %smtp_outbox --wait waits" in shown.stdout
    (table,) = [o.data["text/plain"] for o in shown.outputs if "Outbox" in o.data["text/plain"]]
    assert "1 pending" in table
    run_cell(ip, "%smtp_outbox --wait")


def test_outbox_limit_shows_the_newest(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["people"] = [{"to": f"p{i}@example.test", "n": i} for i in range(5)]
    ip.run_cell("%%smtp_send --sync --each people --to {to} --subject 'Row {n}'\n{{ n }}")
    text = run_cell(ip, "%smtp_outbox --limit 2").outputs[0].data["text/plain"]
    assert "Row 3" in text and "Row 4" in text and "Row 2" not in text
    assert "5 sent; the newest 2 of 5 below (%smtp_outbox --limit 5 shows all)" in text
    html = run_cell(ip, "%smtp_outbox").outputs[0].data["text/html"]  # default 20: all five
    assert all(f"Row {i}" in html for i in range(5)) and "the newest" not in html
    assert "<caption" in html and "Outbox (" in html


# -- check, local server, inbox ------------------------------------------------------------------

def test_check_reports_and_fails_in_one_line(ip: TestingShell, to_server: CaptureServer,
                                             refused_port: int) -> None:
    shown = run_cell(ip, "%smtp_config --check")
    assert f"Connected to 127.0.0.1:{to_server.port}" in shown.stdout and "Extensions" in shown.stdout
    with pytest.raises(ConnectFailed) as info:
        ip.run_cell(f"%smtp_config --port {refused_port} --check")
    assert len(info.value._render_traceback_()) == 1


def test_local_server_and_inbox(ip: TestingShell) -> None:
    try:
        shown = run_cell(ip, "%smtp_config --local")
        s = config.current()
        assert s.security == "none" and s.sender and "capture server" in shown.stdout
        ip.run_cell("%%smtp_send --to bob@example.test --subject 'In the inbox'\n<p>Hello inbox</p>")
        inbox = run_cell(ip, "%smtp_inbox --limit 5")
        html = inbox.outputs[0].data["text/html"]
        assert "In the inbox" in html and "<details>" in html and "Hello inbox" in html
    finally:
        local_server().stop()  # the process-wide server: the next user gets a fresh one


def test_compose_form_gets_the_options(ip: TestingShell, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("smtp_magic.widgets.compose", lambda **kw: calls.append(kw) or "FORM")
    ip.user_ns["boss"] = "boss@example.test"
    shown = run_cell(ip, "%smtp_compose --to {boss} a@example.test --subject 'Q3 numbers' --attach df")
    (kwargs,) = calls
    assert kwargs["to"] == ["boss@example.test", "a@example.test"]
    assert kwargs["subject"] == "Q3 numbers" and kwargs["attachments"] == ["df"]
    assert kwargs["namespace"] is ip.user_ns and "FORM" in shown_text(shown)


# -- headless detection across kernel APIs ----------------------------------------------------------

class FakeKernel:
    def __init__(self, parent: dict[str, Any] | None, allow_stdin: bool = True,
                 channel_arg: bool = True) -> None:
        self.parent, self._allow_stdin, self.channel_arg = parent, allow_stdin, channel_arg

    def get_parent(self, *args: Any) -> Any:
        if args and not self.channel_arg:
            raise TypeError("get_parent() takes 1 positional argument")
        return self.parent


@pytest.mark.parametrize(("kernel", "headless"), [
    (None, None),  # a terminal: no kernel
    (FakeKernel({"content": {"allow_stdin": True}}), False),  # JupyterLab, VS Code
    (FakeKernel({"content": {"allow_stdin": False}}), True),  # papermill, nbval, nbconvert
    (FakeKernel({"content": {"allow_stdin": False}}, channel_arg=False), True),
    (FakeKernel({"content": {"comm_id": "x"}}, allow_stdin=False), True),  # a widget callback
    (FakeKernel({}, allow_stdin=True), False),
])
def test_headless_detection(kernel: Any, headless: bool | None) -> None:
    shell = type("Shell", (), {"kernel": kernel})() if kernel is not None else object()
    assert _kernel.is_headless(shell) is headless
    settings = config.SmtpMagic()
    assert _kernel.should_block(shell, settings) is (headless is not False)
    settings.send_mode = "async"
    assert _kernel.should_block(shell, settings) is False
    assert _kernel.should_block(shell, settings, forced=True) is True
    settings.send_mode = "sync"
    assert _kernel.should_block(shell, settings) is True


# -- trust: --local does not leak, failures are honest ----------------------------------------------

def test_local_then_a_real_server_uses_tls_and_the_username(
    ip: TestingShell, tmp_path: Path, server_tls: Any, client_ssl_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's sequence: --local, then another host. The server below takes mail only over
    STARTTLS with a login, so a plaintext session (security left at none) cannot deliver."""
    monkeypatch.setenv("TRUST_PW", "pw-starttls-only")
    with CaptureServer(tmp_path / "real", tls="starttls", ssl_context=server_tls,
                       users={"u@example.org": "pw-starttls-only"}, require_auth=True) as real:
        try:
            run_cell(ip, "%smtp_config --local")
            ip.run_cell("%%smtp_send --to bob@example.test --subject 'To the capture server'\nhi")
            left = run_cell(ip, f"%smtp_config --host 127.0.0.1 --port {real.port} "
                           "--username u@example.org --password-env TRUST_PW")
            assert ("what --local had set is back: security auto, auth password, sender (not set)."
                    in left.stdout)
            s = config.current()
            assert s.security == "auto" and s.sender is None
            ip.run_cell("%%smtp_send --to bob@example.test --subject 'To the real one' --sync\nhi")
            (got,) = real.wait_for(1)
            assert got.mail_from == "u@example.org" and got.message["From"] == "u@example.org"
            shown = run_cell(ip, "%smtp_config")
            table = shown.outputs[0].data["text/plain"]
            rows = {line.split()[0]: line for line in table.splitlines()[2:]}
            assert rows["host"].endswith("%smtp_config") and rows["security"].endswith("default")
            assert rows["sender"].endswith("default") and "--local" not in table
        finally:
            local_server().stop()


def test_no_keyring_backend_is_a_one_line_fix(ip: TestingShell, no_keyring: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("asked for nothing"))
    for line in ("%smtp_config --keyring",
                 "%smtp_config --username u@example.test --keyring --password-prompt"):
        error = usage_error(ip, line)
        assert str(error).startswith("No system keyring is available")
        assert "--password-env" in str(error) and "\n" not in str(error)
    s = config.current()
    assert not s.use_keyring and s.username is None  # nothing changed


def test_no_keyring_backend_fails_a_send_with_exit_1_before_connecting(
    ip: TestingShell, no_keyring: None, fault_server: Any
) -> None:
    server = fault_server()
    # Set without the magic's check, as an ipython_config.py copied from a desktop would.
    config.current().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                             "username": "u@example.test", "use_keyring": True})
    with pytest.raises(SmtpMagicError) as info:
        ip.run_cell("%%smtp_send --to bob@example.test --subject Hi --sync\nhello")
    assert info.value.exitcode == 1 and "No system keyring" in str(info.value)
    assert len(info.value._render_traceback_()) == 1
    assert server.connections == 0
    assert [(r.status, r.response.exitcode) for r in history.records()] == [("failed", 1)]
    assert not Outbox().entries()  # nothing to retry: nothing was ever sent
    config.current().send_mode = "async"
    ip.run_cell("%%smtp_send --to bob@example.test --subject Again\nhello")
    with pytest.raises(SmtpMagicError) as info:
        ip.run_cell("%smtp_outbox --wait")
    assert "No system keyring" in str(info.value) and len(info.value._render_traceback_()) == 1
    assert server.connections == 0


def test_outbox_wait_waits_for_a_form_send_and_fails_when_it_failed(
    ip: TestingShell, fault_server: Any
) -> None:
    from smtp_magic.widgets import compose

    slow = fault_server(stall=1.0)
    config.current().update({"host": "127.0.0.1", "port": slow.port, "security": "none",
                             "sender": SENDER, "timeout": 10})
    form = compose(namespace={})
    try:
        form.to.value, form.subject.value, form.body.value = "bob@example.test", "From the form", "hi"
        form.send_button.click()
        assert form.sending
        shown = run_cell(ip, "%smtp_outbox --wait")
        assert slow.count() == 1  # waited for the 1 s server
        assert "sent" in shown_text(shown) and "From the form" in shown_text(shown)
        # The form settles on the worker thread, just after the send log.
        until(lambda: not form.sending, lambda: form.status.value)

        refusing = fault_server(rcpt_reply=(550, "5.1.1 no such user"))
        config.current().port = refusing.port
        form.send_button.click()
        with pytest.raises(SmtpMagicError) as info:
            ip.run_cell("%smtp_outbox --wait")
        assert info.value.exitcode == 4 and "no such user" in str(info.value)
    finally:
        form.close()
