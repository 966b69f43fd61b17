"""A copy in Sent (save_sent): IMAP APPEND at a real Dovecot, after sending through its
submission service. The copy holds the bytes the SMTP side received (DKIM-Signature included,
no Bcc), flagged \\Seen; password and OAuth2 (XOAUTH2) sign-in; a copy that fails leaves the
send at exit 0 with the reason; plaintext credentials are refused before anything is sent."""

from __future__ import annotations

import imaplib
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
from conftest import PASSWORD, USER, Dovecot, _dovecot_unavailable
from faults import FaultServer
from test_dkim import make_key

import smtp_magic
from smtp_magic import SmtpMagic
from smtp_magic.conversation import debug_output
from smtp_magic.errors import ExitCode
from smtp_magic.server import CaptureServer

FOLDER = "Sent"
def imap_ready(dv: Dovecot) -> Dovecot:
    if not dv.imap_port:  # skipped, or a failure with SMTP_MAGIC_REQUIRE_DOVECOT=1 (CI)
        _dovecot_unavailable("its IMAP service is not installed (dovecot-imapd).")
    return dv


def settings(dv: Dovecot, **extra: Any) -> dict[str, Any]:
    """Submission with a password (STARTTLS), the copy over IMAP STARTTLS, same account."""
    return {"host": dv.host, "port": dv.submission_port, "security": "starttls",
            "cafile": str(dv.ca), "username": dv.user, "password": dv.password,
            "sender": dv.user, "timeout": 20, "save_sent": FOLDER, "imap_host": dv.host,
            "imap_port": dv.imap_port, "imap_security": "starttls", **extra}


def relayed(dv: Dovecot, message_id: str) -> bytes:
    """The bytes Dovecot's submission service received, as the relay got them: without the
    relay's envelope lines and the Received header Dovecot puts on top."""
    for _ in range(200):
        for got in dv.relay.messages():
            if got.message["Message-ID"] == message_id:
                raw = got.path.read_bytes().replace(b"\r\n", b"\n")
                raw = re.sub(rb"\A(X-(Peer|MailFrom|RcptTo): .*\n([ \t].*\n)*)+", b"", raw)
                return re.sub(rb"\AReceived: .*\n([ \t].*\n)*", b"", raw, count=1)
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never reached the relay; see {dv.log}")


def stored(dv: Dovecot, message_id: str, user: str | None = None, password: str | None = None
           ) -> tuple[bytes, bytes]:
    """(flags, bytes) of the message in the user's Sent folder, read back over IMAP."""
    context = ssl.create_default_context(cafile=str(dv.ca))
    with imaplib.IMAP4_SSL(dv.host, dv.imaps_port, ssl_context=context, timeout=20) as box:
        box.login(user or dv.user, password or dv.password)
        assert box.select(f'"{FOLDER}"', readonly=True)[0] == "OK"
        _, found = box.search(None, "HEADER", "Message-ID", message_id)
        numbers = found[0].split()
        assert len(numbers) == 1, (message_id, numbers)
        _, data = box.fetch(numbers[0], "(FLAGS BODY.PEEK[])")
        head, raw = data[0]  # type: ignore[misc]
        return head, raw


def test_the_copy_in_sent_is_the_bytes_sent_signed_without_bcc_and_seen(
        dovecot: Dovecot, tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    key = make_key(tmp_path, "rsa", "genrsa", "-traditional", "1024")
    values = settings(dv, dkim_domain="example.test", dkim_selector="s1", dkim_key=str(key.path))
    response = smtp_magic.send("boss@example.test", "Weekly numbers", "<p>Up 4%</p>",
                               bcc=["hidden@example.test"], config=values)
    assert response.exitcode == 0, response.message
    assert response.message == ""  # nothing to say: sent, and the copy was made
    flags, copy = stored(dv, response.message_id)
    assert b"\\Seen" in flags
    assert relayed(dv, response.message_id) == copy.replace(b"\r\n", b"\n")
    assert copy.startswith(b"DKIM-Signature:")
    assert dkim.verify(copy, dnsfunc=key.dns())
    assert b"hidden@example.test" not in copy and b"\nBcc:" not in copy
    got = [m for m in dv.relay.messages() if m.message["Message-ID"] == response.message_id]
    assert "hidden@example.test" in got[0].rcpt_to  # Bcc was sent, only not in the headers


def test_oauth2_signs_in_with_xoauth2_over_implicit_tls(dovecot: Dovecot) -> None:
    dv = imap_ready(dovecot)
    token = dv.token(size=2048)
    values = settings(dv, auth="oauth2", oauth2_token_provider=lambda: token, password=None,
                      imap_port=dv.imaps_port, imap_security="tls")
    before = len(dv.log.read_text())
    lines: list[str] = []
    with debug_output(lines.append):
        response = smtp_magic.send("boss@example.test", "oauth copy", "hello",
                                   config={**values, "debug": True})
    assert response.exitcode == 0, response.message
    assert response.message == ""
    at = next(i for i, line in enumerate(lines) if "AUTHENTICATE XOAUTH2" in line)
    assert lines[at + 1].rstrip().endswith("< +") and lines[at + 2].endswith("> ********"), lines[at:at + 4]
    assert not any(token[-40:] in line or token[:40] in line for line in lines)
    flags, copy = stored(dv, response.message_id)
    assert b"\\Seen" in flags and b"Subject: oauth copy" in copy
    log = dv.log.read_text()[before:]
    assert re.search(r"imap-login: Info: Login: user=<testuser@example.test>, method=XOAUTH2", log), log


def test_a_merge_uses_one_imap_connection_and_debug_hides_the_login(dovecot: Dovecot) -> None:
    dv = imap_ready(dovecot)
    before = dv.log.read_text().count("imap-login: Info: Login:")
    lines: list[str] = []
    with debug_output(lines.append):
        responses = smtp_magic.send_many(
            [{"to": f"r{i}@example.test", "subject": f"merge {i}", "body": "hi"} for i in range(3)],
            config={**settings(dv), "debug": True})
    assert [r.exitcode for r in responses] == [0, 0, 0], "\n".join(lines)
    for r in responses:
        assert b"\\Seen" in stored(dv, r.message_id)[0]
    # three copies, one IMAP login (the read-backs above are three more)
    assert dv.log.read_text().count("imap-login: Info: Login:") == before + 1 + 3
    imap_lines = [line for line in lines if "LOGIN" in line or "APPEND" in line]
    assert any("LOGIN ********" in line for line in imap_lines), lines
    assert sum(re.search(r"> \S+ APPEND ", line) is not None for line in imap_lines) == 3, lines
    assert any("(message:" in line for line in lines)
    assert not any(dv.password in line for line in lines)


def test_a_closed_imap_port_leaves_the_send_at_exit_0_with_the_reason(
        dovecot: Dovecot, refused_port: int) -> None:
    dv = imap_ready(dovecot)
    response = smtp_magic.send("boss@example.test", "no copy", "hello",
                               config=settings(dv, imap_port=refused_port))
    assert response.exitcode == 0 and response.ok
    assert response.message == (f"Sent, but the copy to the folder 'Sent' failed: IMAP "
                                f"127.0.0.1:{refused_port} refused the connection.")
    relayed(dv, response.message_id)  # it did go out


def test_a_refused_imap_login_is_a_reason_not_a_failure(
        dovecot: Dovecot, auth_server: Any, ca_file: Path, tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    # SMTP at a capture server that takes alice's password, which Dovecot's IMAP does not know.
    both = tmp_path / "both.pem"
    both.write_bytes(ca_file.read_bytes() + dv.ca.read_bytes())
    values = {"host": auth_server.host, "port": auth_server.port, "security": "starttls",
              "username": USER, "password": PASSWORD, "sender": "alice@example.test",
              "cafile": str(both), "save_sent": FOLDER, "imap_host": dv.host,
              "imap_port": dv.imaps_port, "imap_security": "tls", "timeout": 20}
    response = smtp_magic.send("boss@example.test", "bad imap password", "x", config=values)
    assert response.exitcode == 0
    assert response.message.startswith(
        f"Sent, but the copy to the folder 'Sent' failed: IMAP 127.0.0.1:{dv.imaps_port} refused "
        f"the login for '{USER}': [AUTHENTICATIONFAILED]"), response.message
    assert response.message.count(".") == 1 + response.message.count("127.0.0.1") * 3
    assert PASSWORD not in response.message
    assert [m.subject for m in auth_server.messages()] == ["bad imap password"]


def test_plaintext_imap_login_is_refused_before_sending(dovecot: Dovecot) -> None:
    dv = imap_ready(dovecot)
    count = len(dv.relay.messages())
    response = smtp_magic.send("boss@example.test", "plain", "x",
                               config=settings(dv, imap_security="none"))
    assert response.exitcode == 1
    assert response.message == (
        f"Signing in to IMAP 127.0.0.1:{dv.imap_port} would send the password unencrypted "
        "(imap_security 'none'): set imap_security to 'tls' or 'starttls', or set "
        "allow_plaintext_auth; nothing was sent.")
    assert len(dv.relay.messages()) == count
    # allowed: Dovecot takes a plaintext login from loopback
    response = smtp_magic.send("boss@example.test", "plain allowed", "x", config=settings(
        dv, imap_security="none", allow_plaintext_auth=True))
    assert response.exitcode == 0 and response.message == "", response.message
    assert b"\\Seen" in stored(dv, response.message_id)[0]
    relayed(dv, response.message_id)  # relayed alone: the refused one was not on its way
    assert len(dv.relay.messages()) == count + 1


@pytest.mark.parametrize(("extra", "words"), [
    ({"imap_host": None}, "save_sent is 'Sent' but imap_host is not set"),
    ({"save_sent": "Sent\r\nA1 DELETE INBOX"}, "save_sent folder name contains a line break"),
])
def test_unusable_sent_settings_are_exit_1_before_connecting(
        refused_port: int, extra: dict[str, Any], words: str) -> None:
    values = {"host": "127.0.0.1", "port": refused_port, "username": "a@example.test",
              "password": "pw-123", "save_sent": "Sent", "imap_host": "127.0.0.1", **extra}
    response = smtp_magic.send("b@example.test", "s", "x", config=values)
    assert response.exitcode == 1 and words in response.message, response.message


def test_the_password_is_withheld_from_an_imap_host_set_after_it() -> None:
    s = SmtpMagic().update({"host": "smtp.example.org", "port": 587, "username": "ann",
                            "password": "pw-123"})
    s.update({"save_sent": "Sent", "imap_host": "imap.example.org"})
    assert not s.password  # withheld: never sent to a host it was not given for
    assert "imap.example.org" in s.password.message(s)
    together = SmtpMagic().update({"host": "smtp.example.org", "username": "ann",
                                   "imap_host": "imap.example.org", "password": "pw-123"})
    assert together.password.reveal() == "pw-123"
    together.update({"imap_host": "smtp.example.org"})  # the SMTP host itself: no other place
    assert together.password.reveal() == "pw-123"
    together.update({"imap_host": "imap.example.org"})
    assert not together.password


def test_a_non_ascii_password_is_named_not_quoted(
        dovecot: Dovecot, server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    secret = "pässwörd-ünique"
    both = tmp_path / "both.pem"
    both.write_bytes(ca_file.read_bytes() + dv.ca.read_bytes())
    # SMTP AUTH takes the UTF-8 password; IMAP LOGIN cannot send it.
    with CaptureServer(tmp_path / "smtp", tls="starttls", ssl_context=server_tls,
                       users={"ann": secret}, require_auth=True) as server:
        response = smtp_magic.send("boss@example.test", "accents", "x", config={
            "host": server.host, "port": server.port, "security": "starttls", "username": "ann",
            "password": secret, "sender": "ann@example.test", "cafile": str(both),
            "save_sent": FOLDER, "imap_host": dv.host, "imap_port": dv.imaps_port,
            "imap_security": "tls", "timeout": 20})
        assert [m.subject for m in server.messages()] == ["accents"]
    assert response.exitcode == 0, response.message
    assert response.message == ("Sent, but the copy to the folder 'Sent' failed: the username "
                                "or password has characters IMAP cannot send as they are "
                                "(non-ASCII).")


def test_a_partly_sent_message_is_copied(
        dovecot: Dovecot, server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    both = tmp_path / "both.pem"
    both.write_bytes(ca_file.read_bytes() + dv.ca.read_bytes())
    with FaultServer(tmp_path / "smtp", tls="starttls", ssl_context=server_tls,
                     users={dv.user: dv.password}, require_auth=True,
                     refuse_rcpt={"gone@example.test": (550, "5.1.1 No such user")}) as server:
        response = smtp_magic.send(["boss@example.test", "gone@example.test"], "partly", "x",
                                   config={**settings(dv, cafile=str(both)), "host": server.host,
                                           "port": server.port})
    assert response.exitcode == ExitCode.PARTIAL and response.accepted == ("boss@example.test",)
    assert "copy" not in response.message  # the copy was made: nothing to say about it
    flags, copy = stored(dv, response.message_id)
    assert b"\\Seen" in flags and b"gone@example.test" in copy  # the message as written


def test_a_message_resent_from_the_outbox_is_copied_then(
        dovecot: Dovecot, refused_port: int, tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    values = settings(dv, outbox_dir=str(tmp_path / "outbox"))
    first = smtp_magic.send("boss@example.test", "kept, then sent", "x",
                            config={**values, "port": refused_port})
    assert first.exitcode == 2
    (again,) = smtp_magic.retry_outbox(config=values)
    assert again.exitcode == 0 and again.message == "", again.message
    flags, copy = stored(dv, first.message_id)
    assert b"\\Seen" in flags
    assert relayed(dv, first.message_id) == copy.replace(b"\r\n", b"\n")


def test_local_puts_save_sent_aside_until_the_settings_leave_the_capture_server() -> None:
    s = SmtpMagic().update({"host": "smtp.example.org", "port": 587, "username": "ann",
                            "save_sent": "Sent", "imap_host": "imap.example.org"})
    s.use_local("127.0.0.1", 8025)
    assert s.save_sent is None  # a test message never lands in the real Sent folder
    s.update({"host": "smtp.example.org", "port": 587})
    assert s.save_sent == "Sent"


def test_a_folder_that_does_not_exist_is_the_reason(dovecot: Dovecot) -> None:
    dv = imap_ready(dovecot)
    response = smtp_magic.send("boss@example.test", "no such folder", "x",
                               config=settings(dv, save_sent="Snet"))
    assert response.exitcode == 0
    assert response.message == (f"Sent, but the copy to the folder 'Snet' failed: IMAP "
                                f"127.0.0.1:{dv.imap_port} said: [TRYCREATE] Mailbox doesn't "
                                "exist: Snet.")


def test_the_cell_says_when_the_copy_failed(ip: Any, auth_server: Any, ca_file: Path,
                                            refused_port: int) -> None:
    from conftest import run_cell

    from smtp_magic import config

    config.current().update({
        "host": auth_server.host, "port": auth_server.port, "security": "starttls",
        "cafile": str(ca_file), "username": USER, "password": PASSWORD,
        "sender": "alice@example.test", "save_sent": FOLDER, "imap_host": "127.0.0.1",
        "imap_port": refused_port, "send_mode": "sync"})
    out = run_cell(ip, "%%smtp_send --to boss@example.test --subject Hi\nprint('hello')")
    shown = out.stdout + "".join(str(o.data) for o in out.outputs)
    assert "Sent, but the copy to the folder 'Sent' failed: IMAP 127.0.0.1:" in shown, shown
    assert [m.subject for m in auth_server.messages()] == ["Hi"]


def test_a_silent_imap_server_costs_the_timeout_not_the_send(auth_server: Any, ca_file: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        response = smtp_magic.send("boss@example.test", "silent imap", "x", config={
            "host": auth_server.host, "port": auth_server.port, "security": "starttls",
            "cafile": str(ca_file), "username": USER, "password": PASSWORD,
            "sender": "alice@example.test", "save_sent": FOLDER, "imap_host": "127.0.0.1",
            "imap_port": port, "imap_security": "starttls", "timeout": 2})
        took = time.monotonic() - started
    assert response.exitcode == 0
    assert response.message == ("Sent, but the copy to the folder 'Sent' failed: IMAP "
                                f"127.0.0.1:{port} did not answer within 2 s.")
    assert took < 8, took
    assert [m.subject for m in auth_server.messages()] == ["silent imap"]


def test_a_large_message_sent_from_the_journal_is_copied_whole(dovecot: Dovecot,
                                                               tmp_path: Path) -> None:
    dv = imap_ready(dovecot)
    big = tmp_path / "numbers.bin"
    big.write_bytes(os.urandom(3 << 20))  # over the 1 MB kept in memory: sent from the file
    response = smtp_magic.send("boss@example.test", "large copy", "see attached",
                               attachments=[str(big)], config=settings(dv))
    assert response.exitcode == 0 and response.message == "", response.message
    flags, copy = stored(dv, response.message_id)
    assert b"\\Seen" in flags and len(copy) > 4 << 20
    assert relayed(dv, response.message_id) == copy.replace(b"\r\n", b"\n")
