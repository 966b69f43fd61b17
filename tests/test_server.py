"""The capture server and the fault server, driven directly with aiosmtplib."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest
from faults import PASSWORD, USER, FaultServer
from waits import until_async

from smtp_magic.errors import ConfigError, MissingDependency
from smtp_magic.server import (
    CaptureServer,
    _controller_class,
    default_maildir,
    local_server,
    messages,
)

if TYPE_CHECKING:
    from conftest import TmpData

ROOT = Path(__file__).resolve().parent.parent


def mail(to: str | list[str] = "bob@example.test", subject: str = "Grüße ✓") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "nb@example.test"
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.test")
    msg.set_content("Zahlen: ½ € ✓\n")
    msg.add_attachment(b"\x00\x01binary\xff", maintype="application", subtype="octet-stream",
                       filename="data.bin")
    return msg


async def send(server: CaptureServer, msg: EmailMessage, **kw: Any
               ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    kw.setdefault("start_tls", False)  # aiosmtplib upgrades whenever STARTTLS is offered
    return await aiosmtplib.send(msg, hostname=server.host, port=server.port, timeout=5, **kw)


def assert_stored(server: CaptureServer, sent: EmailMessage, rcpts: tuple[str, ...]) -> None:
    (got,) = server.wait_for(1)
    assert got.mail_from == "nb@example.test"
    assert got.rcpt_to == rcpts
    assert got.message["Message-ID"] == sent["Message-ID"]
    assert got.message["Subject"] == sent["Subject"]
    att = next(got.message.iter_attachments())
    assert att.get_filename() == "data.bin" and att.get_content() == b"\x00\x01binary\xff"
    assert got.path.suffix == ".eml" and got.path.parent == server.maildir / "new"


# -- the capture server ----------------------------------------------------------------------
async def test_plain_stores_eml_with_envelope(smtp_server: CaptureServer, tmp_data: TmpData
                                              ) -> None:
    msg = mail(["bob@example.test", "carol@example.test"])
    msg["Bcc"] = "dave@example.test"
    await send(smtp_server, msg)
    rcpts = ("bob@example.test", "carol@example.test", "dave@example.test")
    assert_stored(smtp_server, msg, rcpts)
    raw = smtp_server.messages()[0].path.read_bytes()
    assert raw.startswith(b"X-Peer: 127.0.0.1\r\nX-MailFrom: nb@example.test\r\nX-RcptTo: ")
    assert b"\r\nBcc:" not in raw  # aiosmtplib strips Bcc; the envelope still has it
    # The default maildir is where the smtp_server fixture stores, as %smtp_inbox reads it.
    assert smtp_server.maildir == default_maildir() == tmp_data.capture
    assert [m.path for m in messages()] == [m.path for m in smtp_server.messages()]


async def test_keeps_bytes_and_smtputf8(smtp_server: CaptureServer) -> None:
    raw = ("From: nb@example.test\r\nTo: jörg@exämple.test\r\nSubject: 8bit ✓\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           "\r\nüber\r\n.leading dot\r\n").encode()
    await aiosmtplib.send(raw, sender="nb@example.test", recipients=["jörg@exämple.test"],
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"],
                          hostname=smtp_server.host, port=smtp_server.port, start_tls=False)
    (got,) = smtp_server.wait_for(1)
    assert got.rcpt_to == ("jörg@exämple.test",)
    assert got.path.read_bytes().endswith(raw)
    assert got.message.get_content().splitlines() == ["über", ".leading dot"]
    # UTF-8 headers read back as text, in their order (not surrogate-escaped bytes).
    assert got.subject == "8bit ✓" and str(got.message["To"]) == "jörg@exämple.test"
    (to,) = got.message["To"].addresses
    assert (to.username, to.domain) == ("jörg", "exämple.test")
    order = [name for name, _ in got.message.items() if name in ("From", "To", "Subject")]
    assert order == ["From", "To", "Subject"]


async def test_starttls(starttls_server: CaptureServer, client_tls: ssl.SSLContext) -> None:
    msg = mail()
    await send(starttls_server, msg, start_tls=True, tls_context=client_tls)
    assert_stored(starttls_server, msg, ("bob@example.test",))


async def test_starttls_is_optional(starttls_server: CaptureServer) -> None:
    await send(starttls_server, mail())
    starttls_server.wait_for(1)


async def test_implicit_tls(tls_server: CaptureServer, client_tls: ssl.SSLContext) -> None:
    msg = mail()
    await send(tls_server, msg, use_tls=True, tls_context=client_tls)
    assert_stored(tls_server, msg, ("bob@example.test",))
    assert tls_server.url.startswith("smtps://127.0.0.1:")


async def test_auth_after_starttls(auth_server: CaptureServer, client_tls: ssl.SSLContext
                                   ) -> None:
    msg = mail()
    await send(auth_server, msg, start_tls=True, tls_context=client_tls,
               username=USER, password=PASSWORD)
    assert_stored(auth_server, msg, ("bob@example.test",))


async def test_auth_on_implicit_tls(tls_auth_server: CaptureServer,
                                    client_tls: ssl.SSLContext) -> None:
    await send(tls_auth_server, mail(), use_tls=True, tls_context=client_tls,
               username=USER, password=PASSWORD)
    tls_auth_server.wait_for(1)


async def test_bad_password_gets_535(auth_server: CaptureServer, client_tls: ssl.SSLContext
                                     ) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await send(auth_server, mail(), start_tls=True, tls_context=client_tls,
                   username=USER, password="wrong")
    assert err.value.code == 535
    assert auth_server.messages() == []


async def test_auth_required_and_not_offered_before_starttls(auth_server: CaptureServer) -> None:
    async with aiosmtplib.SMTP(hostname=auth_server.host, port=auth_server.port,
                               start_tls=False, timeout=5) as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        assert not smtp.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPResponseException) as err:
            await smtp.mail("nb@example.test")
        assert err.value.code == 530


async def test_auth_required_on_implicit_tls(tls_auth_server: CaptureServer,
                                             client_tls: ssl.SSLContext) -> None:
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await send(tls_auth_server, mail(), use_tls=True, tls_context=client_tls)
    assert err.value.code == 530


async def test_plaintext_auth_server(plain_auth_server: CaptureServer) -> None:
    await send(plain_auth_server, mail(), username=USER, password=PASSWORD)
    plain_auth_server.wait_for(1)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await send(plain_auth_server, mail(), username=USER, password="nope")


async def test_no_auth_offered_without_users(starttls_server: CaptureServer,
                                             client_tls: ssl.SSLContext) -> None:
    async with aiosmtplib.SMTP(hostname=starttls_server.host, port=starttls_server.port,
                               start_tls=True, tls_context=client_tls, timeout=5) as smtp:
        assert not smtp.supports_extension("auth")


async def test_untrusted_certificate_is_refused(untrusted_tls_server: CaptureServer,
                                                client_tls: ssl.SSLContext) -> None:
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(untrusted_tls_server, mail(), use_tls=True, tls_context=client_tls)


async def test_ssl_cert_file_env_is_trusted(tls_server: CaptureServer, client_ssl_env: Path
                                            ) -> None:
    await send(tls_server, mail(), use_tls=True, tls_context=ssl.create_default_context())
    tls_server.wait_for(1)


async def test_refused_port(refused_port: int) -> None:
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.send(mail(), hostname="127.0.0.1", port=refused_port, timeout=2)


async def test_start_inside_running_loop_and_lifecycle(tmp_path: Path) -> None:
    server = CaptureServer(tmp_path / "box")  # started from a coroutine, as in a kernel
    assert not server.running and server.port == 0
    with server:
        assert server.running and server.port > 0
        assert repr(server) == (f"<CaptureServer smtp://127.0.0.1:{server.port} "
                                f"maildir='{tmp_path / 'box'}' running>")
        await send(server, mail())
        await send(server, mail(subject="second"))
        newest = (await server.wait_for_async(2))[0]
        assert newest.subject == "second"
        server.clear()
        assert server.messages() == []
    server.stop()  # twice is fine
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(server, mail())


def test_existing_directory_becomes_maildir_and_wait_times_out(tmp_path: Path) -> None:
    with CaptureServer(tmp_path) as server:
        assert all((tmp_path / sub).is_dir() for sub in ("tmp", "new", "cur"))
        with pytest.raises(TimeoutError, match="0 of 1 messages"):
            server.wait_for(1, timeout=0.05)


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError, match="certificate"):
        CaptureServer(tls="starttls")
    with pytest.raises(ConfigError, match="users"):
        CaptureServer(require_auth=True)
    with pytest.raises(ConfigError, match="tls must be"):
        CaptureServer(tls="ssl")  # type: ignore[arg-type]


async def test_certfile_and_keyfile(tmp_path: Path, ca: Any, client_tls: ssl.SSLContext
                                    ) -> None:
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with CaptureServer(tmp_path / "m", tls="tls", certfile=pem) as server:
        await send(server, mail(), use_tls=True, tls_context=client_tls)
        server.wait_for(1)
    with pytest.raises(ConfigError, match="Cannot load the certificate"):
        CaptureServer(tmp_path / "m", tls="tls", certfile=tmp_path / "missing.pem").start()


def test_port_in_use_is_a_clear_error(smtp_server: CaptureServer) -> None:
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{smtp_server.port}"):
        CaptureServer(smtp_server.maildir, port=smtp_server.port).start()


def test_missing_aiosmtpd_is_actionable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "aiosmtpd.controller", None)  # makes the import fail
    _controller_class.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"needs aiosmtpd.*: pip install aiosmtpd\."):
            CaptureServer(tmp_path).start()
    finally:
        _controller_class.cache_clear()


def test_default_maildir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SMTP_MAGIC_CAPTURE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_maildir() == tmp_path / "smtp_magic" / "capture"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_maildir() == tmp_path / ".local" / "share" / "smtp_magic" / "capture"
    monkeypatch.setenv("SMTP_MAGIC_CAPTURE_DIR", str(tmp_path / "x"))
    assert default_maildir() == tmp_path / "x"


def test_local_server_is_a_singleton(tmp_data: TmpData) -> None:
    server = local_server()
    try:
        assert server.running and local_server() is server
        assert server.maildir == tmp_data.capture
    finally:
        server.stop()
    assert local_server() is not server  # a stopped one is replaced
    local_server().stop()


@contextlib.contextmanager
def serving(*argv: str) -> Iterator[tuple[int, str]]:
    """A capture server in a child process: (its port, the line it printed); stopped with
    SIGTERM at the end, which must end it with status 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                          env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("Capture server listening on 127.0.0.1:"), line
            yield int(line.split(":")[1].split(",")[0]), line.rstrip()
            proc.terminate()
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_prints_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    code = "from smtp_magic.server import serve; serve(port=0, maildir=r'%s')" % (tmp_path / "m")
    with serving("-c", code) as (port, line):
        assert port > 0 and line.endswith(f"storing messages in {tmp_path / 'm'}")
        asyncio.run(aiosmtplib.send(mail(), hostname="127.0.0.1", port=port, timeout=5))
    assert len(messages(tmp_path / "m")) == 1


# -- the fault server ------------------------------------------------------------------------
async def test_refuse_rcpt(fault_server) -> None:
    server = fault_server(refuse_rcpt={"bad@x.test": (550, "5.1.1 no such user")})
    errors, _ = await send(server, mail(["bad@x.test", "good@x.test"]))
    assert errors == {"bad@x.test": aiosmtplib.SMTPResponse(550, "5.1.1 no such user")}
    assert server.wait_for(1)[0].rcpt_to == ("good@x.test",)


async def test_greeting_reply_then_behaves(fault_server) -> None:
    server = fault_server(greeting=(421, "4.3.2 busy"), times=1)
    with pytest.raises(aiosmtplib.SMTPConnectError, match="busy"):
        await send(server, mail())
    await send(server, mail())
    assert (server.connections, server.accepted) == (2, 1)


@pytest.mark.parametrize("where", ["mail_reply", "rcpt_reply", "data_reply"])
async def test_scripted_reply_for_first_transactions(fault_server, where: str) -> None:
    server = fault_server(**{where: (451, "4.3.0 try later")}, times=2)
    for _ in range(2):
        with pytest.raises((aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)
                           ) as err:
            await send(server, mail())
        exc = err.value
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):  # every recipient refused
            exc = exc.recipients[0]
        assert isinstance(exc, aiosmtplib.SMTPResponseException)
        assert (exc.code, exc.message) == (451, "4.3.0 try later")
    await send(server, mail())
    assert (server.transactions, server.accepted, len(server.messages())) == (3, 1, 1)


async def test_permanent_data_reply(fault_server) -> None:
    server = fault_server(data_reply=(554, "5.6.0 message refused"))
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(server, mail())
    assert err.value.code == 554 and server.messages() == []


async def test_max_rcpts(fault_server) -> None:
    server = fault_server(max_rcpts=2)
    rcpts = ["a@x.test", "b@x.test", "c@x.test"]
    errors, _ = await send(server, mail(rcpts))
    assert errors == {"c@x.test": aiosmtplib.SMTPResponse(452, "4.5.3 Too many recipients")}
    assert server.wait_for(1)[0].rcpt_to == ("a@x.test", "b@x.test")


@pytest.mark.parametrize("stall_at", ["greeting", "data"])
async def test_stall_makes_client_time_out(fault_server, stall_at: str) -> None:
    server = fault_server(stall=2.0, stall_at=stall_at)
    start = time.monotonic()
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await aiosmtplib.send(mail(), hostname=server.host, port=server.port, start_tls=False,
                              timeout=0.3)
    assert time.monotonic() - start < 1.5
    await until_async(lambda: server.active == 0, lambda: f"the connection to close: {server!r}")
    assert server.messages() == []  # the stalled transaction died with its connection


async def test_drop_after_data_then_behaves(fault_server) -> None:
    server = fault_server(drop_after_data=True, times=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(server, mail())
    assert server.transactions == 1 and server.messages() == []
    await send(server, mail())
    assert server.accepted == 1


async def test_drop_at_greeting(fault_server) -> None:
    server = fault_server(drop_at_greeting=True)
    with pytest.raises((aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected)):
        await send(server, mail())
    assert server.connections == 1


async def test_no_starttls(fault_server, client_tls: ssl.SSLContext) -> None:
    server = fault_server(tls="starttls", no_starttls=True)
    with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
        await send(server, mail(), start_tls=True, tls_context=client_tls)


async def test_random_faults_are_seeded(fault_server) -> None:
    async def run(server: FaultServer) -> list[int]:
        codes = []
        async with aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False,
                                   timeout=5) as smtp:
            for _ in range(40):
                try:
                    await smtp.sendmail("nb@example.test", ["a@x.test"], b"Subject: x\r\n\r\nx\r\n")
                    codes.append(250)
                except aiosmtplib.SMTPResponseException as exc:
                    codes.append(exc.code)
        return codes

    first = await run(fault_server(transient_ratio=0.25, seed=7))
    again = await run(fault_server(transient_ratio=0.25, seed=7))
    assert first == again and 3 <= first.count(451) <= 20 and set(first) == {250, 451}

    dropper = fault_server(drop_ratio=0.5, seed=1)
    outcomes = []
    for _ in range(10):
        try:
            await send(dropper, mail())
            outcomes.append("ok")
        except aiosmtplib.SMTPServerDisconnected:
            outcomes.append("dropped")
    assert set(outcomes) == {"ok", "dropped"}
    assert dropper.accepted == outcomes.count("ok") == len(dropper.messages())
    assert dropper.connections == 10 and dropper.max_active == 1


def _serve_cli(tmp_path: Path, *options: str) -> list[str]:
    return ["-m", "smtp_magic", "serve", "--port", "0", "--maildir", str(tmp_path / "m"),
            *options]


@pytest.mark.parametrize("options", [["--user", "alice:pw-1"],
                                     ["--user", "alice:pw-1", "--require-auth"]])
def test_serve_with_a_user_refuses_mail_from_clients_that_never_logged_in(
        tmp_path: Path, options: list[str]) -> None:
    """`smtp-magic serve --user` (which implies --require-auth): an end-to-end check with no
    password configured must fail, not pass."""
    with serving(*_serve_cli(tmp_path, *options)) as (port, line):
        assert line.endswith("; a login is required"), line
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            asyncio.run(aiosmtplib.send(mail(), hostname="127.0.0.1", port=port, timeout=5))
        assert refused.value.code == 530 and "5.7.0 Authentication required" in str(refused.value)
        # The same send with the login goes through (AUTH in plaintext: a loopback test server).
        asyncio.run(aiosmtplib.send(mail(), hostname="127.0.0.1", port=port, timeout=5,
                                    username="alice", password="pw-1"))
    assert len(messages(tmp_path / "m")) == 1


def test_serve_require_auth_without_a_user_is_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, *_serve_cli(tmp_path, "--require-auth")],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout
    assert proc.returncode == 1
    assert "--require-auth needs at least one --user" in json.loads(out)["message"]
