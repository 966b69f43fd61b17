"""Shared fixtures: isolated data dirs, test certificates, and real SMTP servers (aiosmtpd, Postfix)."""

from __future__ import annotations

import email
import email.parser
import email.policy
import itertools
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from faults import PASSWORD, USER, FaultServer
from faults import refused_port as _refused_port
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from smtp_magic.server import CaptureServer

ROOT = Path(__file__).resolve().parent.parent


# -- isolation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TmpData:
    root: Path
    capture: Path  # $SMTP_MAGIC_CAPTURE_DIR
    outbox: Path  # $SMTP_MAGIC_OUTBOX


@pytest.fixture(autouse=True)
def tmp_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TmpData:
    """Point every data directory at tmp_path and drop the developer's SMTP_* settings.

    Autouse: no test may write into the real outbox or capture folder, or inherit the settings
    object (``smtp_magic.current()``) or the send log of an earlier test.
    """
    import smtp_magic.config
    from smtp_magic.outbox import history

    monkeypatch.setattr(smtp_magic.config, "_current", None)
    history.clear()
    for name in list(os.environ):
        if name.startswith("SMTP_") and name != "SMTP_MAGIC_NO_SHORTCUTS":  # kept: a whole run's mode
            monkeypatch.delenv(name)
    data = TmpData(tmp_path, tmp_path / "capture", tmp_path / "outbox")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))  # profiles.json
    monkeypatch.setenv("SMTP_MAGIC_CAPTURE_DIR", str(data.capture))
    monkeypatch.setenv("SMTP_MAGIC_OUTBOX", str(data.outbox))
    return data


# -- IPython ---------------------------------------------------------------------------------
class TestingShell(InteractiveShell):
    """A shell whose cells raise their errors (as jupysql's TestingShell does); no history."""

    __test__ = False  # not a test class for pytest

    def run_cell(self, raw_cell: str, *args: Any, **kwargs: Any) -> Any:
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture(scope="module")
def shell() -> Iterator[TestingShell]:
    """The module's in-process IPython shell (the extension is not loaded: see ``ip``)."""
    if InteractiveShell.initialized():
        InteractiveShell.clear_instance()
    cfg = Config()
    cfg.HistoryManager.enabled = False
    ip = TestingShell.instance(config=cfg)
    yield ip
    TestingShell.clear_instance()


@pytest.fixture
def ip(shell: TestingShell, tmp_data: TmpData, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[TestingShell]:
    """The shell with the extension freshly loaded: new settings, empty send log, clean names."""
    from smtp_magic import _kernel, config
    from smtp_magic.magics import load_ipython_extension, unload_ipython_extension
    from smtp_magic.outbox import history

    monkeypatch.setattr(config, "_current", None)
    history.clear()
    _kernel._jobs.clear()
    names = set(shell.user_ns)
    load_ipython_extension(shell)
    yield shell
    _kernel.wait_all(timeout=10)
    unload_ipython_extension(shell)
    for name in set(shell.user_ns) - names:
        del shell.user_ns[name]
    shell.config.pop("SmtpMagic", None)


# -- keyring -----------------------------------------------------------------------------------
@pytest.fixture
def memory_keyring() -> Iterator[dict[tuple[str, str], str]]:
    """A working system keyring for the test (a real keyring backend that keeps its passwords
    in a dict, which the test gets); the machine's own (often none: headless) comes back after."""
    import keyring
    from keyring.backend import KeyringBackend

    store: dict[tuple[str, str], str] = {}

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            return store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            store.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield store
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No keyring backend, as on a headless Linux machine (keyring's own ``fail`` backend):
    passwords cannot be kept there, and OAuth2 sign-ins go to the 0600 file in tmp_data."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


NOTEBOOK_SENDER = "reports@example.test"  # the sender of the to_server settings


@pytest.fixture
def no_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``no_module("kaleido", ...)``: pretend optional modules are not installed (as
    ``importlib.util.find_spec`` sees them; the renderer's availability caches are reset)."""
    import importlib.util

    from smtp_magic import render

    real = importlib.util.find_spec

    def clear_caches() -> None:
        render._markdown.cache_clear()
        render._environment.cache_clear()
        render._compile.cache_clear()

    def hide(*names: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name in names else real(name, *a))
        clear_caches()

    yield hide
    clear_caches()


@pytest.fixture
def to_server(ip: TestingShell, smtp_server: CaptureServer) -> CaptureServer:
    """``ip``'s settings pointing at ``smtp_server`` (plain, no login), sender NOTEBOOK_SENDER."""
    from smtp_magic import config

    config.current().update({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                             "sender": NOTEBOOK_SENDER})
    return smtp_server


def run_cell(ip: TestingShell, source: str) -> Any:
    """Run a cell, returning what it displayed (IPython's CapturedIO)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        ip.run_cell(source)
    return captured


def shown_text(captured: Any) -> str:
    """Everything a cell showed, as text: stdout and the text/plain of its displays."""
    return captured.stdout + "\n".join(o.data.get("text/plain", "") for o in captured.outputs)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright (skips, or fails where CI requires it)."""
    from lab import chromium

    with chromium() as b:
        yield b


# -- a beacon: anything that fetches a URL calls it ------------------------------------------
_BEACON = r"""
import http.server, sys, threading
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            sys.stdout.write(self.path + "\n")
            sys.stdout.flush()
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
    do_POST = do_GET
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Beacon:
    """An HTTP server on 127.0.0.1 that records every request's path in ``hits``. It runs in a
    process of its own, so it answers even while this one is busy in native code (vl-convert
    holds the GIL while it fetches)."""

    def __init__(self) -> None:
        import sys
        import threading

        self.hits: list[str] = []
        self._proc = subprocess.Popen([sys.executable, "-c", _BEACON], stdout=subprocess.PIPE,
                                      text=True)
        assert self._proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self._proc.stdout.readline())}"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.hits.append(line.strip())

    def settle(self, grace: float = 0.0) -> list[str]:
        """The hits, once every request that reached the beacon before this call is among them:
        a request of the test's own goes last, and the beacon logs in the order it answers (a
        fetch whose answer its caller has had is logged before the call is even made).

        ``grace`` seconds are waited first for requests another process (a browser) may still
        be about to make: nothing orders those against the test's own request."""
        import urllib.request

        from waits import until

        time.sleep(grace)

        marker = f"/settled-{len(self.hits)}-{time.monotonic_ns()}"
        urllib.request.urlopen(self.url + marker, timeout=10).close()
        until(lambda: marker in self.hits, f"the beacon to log {marker}")
        return [hit for hit in self.hits if not hit.startswith("/settled-")]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def beacon() -> Iterator[Beacon]:
    b = Beacon()
    yield b
    b.close()


# -- certificates ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The test certificate authority; clients trust it via ``client_ssl_env`` or ``ca_file``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _server_context(authority: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """Server-side context with a cert for localhost and 127.0.0.1, issued by ``ca``."""
    return _server_context(ca)


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """Client context that trusts ``ca`` (for talking to the test servers with aiosmtplib)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def client_ssl_env(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Trust the test CA the way a user would: ``SSL_CERT_FILE`` (read by OpenSSL per context)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return ca_file


# -- aiosmtpd servers ------------------------------------------------------------------------
_names = itertools.count(1)


@pytest.fixture
def smtp_server(tmp_data: TmpData) -> Iterator[CaptureServer]:
    """Plain capture server (no TLS, no AUTH) storing into ``$SMTP_MAGIC_CAPTURE_DIR``."""
    with CaptureServer(tmp_data.capture) as server:
        yield server


@pytest.fixture
def starttls_server(tmp_path: Path, server_tls: ssl.SSLContext) -> Iterator[CaptureServer]:
    """STARTTLS offered (not required), no AUTH."""
    with CaptureServer(tmp_path / "starttls", tls="starttls", ssl_context=server_tls) as server:
        yield server


@pytest.fixture
def tls_server(tmp_path: Path, server_tls: ssl.SSLContext) -> Iterator[CaptureServer]:
    """Implicit TLS (like port 465), no AUTH."""
    with CaptureServer(tmp_path / "tls", tls="tls", ssl_context=server_tls) as server:
        yield server


@pytest.fixture
def auth_server(tmp_path: Path, server_tls: ssl.SSLContext) -> Iterator[CaptureServer]:
    """Submission-style: STARTTLS, then AUTH as ``alice`` / ``s3cret-pw`` is required."""
    with CaptureServer(tmp_path / "auth", tls="starttls", ssl_context=server_tls,
                       users={USER: PASSWORD}, require_auth=True) as server:
        yield server


@pytest.fixture
def tls_auth_server(tmp_path: Path, server_tls: ssl.SSLContext) -> Iterator[CaptureServer]:
    """Implicit TLS with AUTH required (``alice`` / ``s3cret-pw``)."""
    with CaptureServer(tmp_path / "tls-auth", tls="tls", ssl_context=server_tls,
                       users={USER: PASSWORD}, require_auth=True) as server:
        yield server


@pytest.fixture
def plain_auth_server(tmp_path: Path) -> Iterator[CaptureServer]:
    """No TLS at all, AUTH offered and required in plaintext (for ``allow_plaintext_auth``)."""
    with CaptureServer(tmp_path / "plain-auth", users={USER: PASSWORD},
                       require_auth=True) as server:
        yield server


@pytest.fixture(scope="session")
def untrusted_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def untrusted_tls_server(tmp_path: Path, untrusted_ca: trustme.CA) -> Iterator[CaptureServer]:
    """Implicit TLS with a certificate from a CA that clients do not trust."""
    with CaptureServer(tmp_path / "untrusted", tls="tls",
                       ssl_context=_server_context(untrusted_ca)) as server:
        yield server


@pytest.fixture
def untrusted_starttls_server(tmp_path: Path, untrusted_ca: trustme.CA
                              ) -> Iterator[CaptureServer]:
    """STARTTLS with a certificate from a CA that clients do not trust."""
    with CaptureServer(tmp_path / "untrusted-starttls", tls="starttls",
                       ssl_context=_server_context(untrusted_ca)) as server:
        yield server


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused."""
    with _refused_port() as port:
        yield port


@pytest.fixture
def fault_server(tmp_path: Path, server_tls: ssl.SSLContext
                 ) -> Iterator[Callable[..., FaultServer]]:
    """Factory: ``fault_server(data_reply=(451, "4.3.0 later"), times=1)`` -> a started server.

    Takes :class:`tests.faults.FaultServer` arguments; ``tls=`` gets the test certificate unless
    an ``ssl_context`` is given. Every server is stopped at teardown.
    """
    started: list[FaultServer] = []

    def make(**behaviour: Any) -> FaultServer:
        if behaviour.get("tls"):
            behaviour.setdefault("ssl_context", server_tls)
        server = FaultServer(tmp_path / f"fault{next(_names)}", **behaviour)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


# -- Postfix ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Postfix:
    """A private Postfix on loopback (scripts/postfix-up.sh); every recipient lands in ``maildir``."""

    dir: Path
    smtp_port: int  # plain, STARTTLS offered, AUTH only after STARTTLS
    submission_port: int  # STARTTLS and AUTH required
    smtps_port: int  # implicit TLS, AUTH required
    ca: Path  # the server certificate to trust (self-signed)
    host: str = "127.0.0.1"
    user: str = "testuser@example.test"
    password: str = "testpass"
    dkim_port: int | None = None  # a listener whose mail OpenDKIM verifies (opendkim installed)
    dkim_keys: Path | None = None  # rsa.pem / ed.pem, selectors rsa / ed of example.test

    @property
    def maildir(self) -> Path:
        return self.dir / "mail" / "sink"

    @property
    def ports(self) -> dict[str, int]:
        return {"smtp": self.smtp_port, "submission": self.submission_port,
                "smtps": self.smtps_port}

    def wait_for(self, message_id: str, timeout: float = 10.0) -> EmailMessage:
        """The delivered message with this Message-ID, parsed (waits for local delivery)."""
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        deadline = time.monotonic() + timeout
        while True:
            for sub in ("new", "cur"):
                for path in (self.maildir / sub).glob("*"):
                    with open(path, "rb") as f:
                        if parser.parse(f).get("Message-ID") == message_id:
                            msg = email.message_from_bytes(path.read_bytes(),
                                                           policy=email.policy.default)
                            assert isinstance(msg, EmailMessage)
                            return msg
            if time.monotonic() > deadline:
                raise TimeoutError(f"{message_id} was not delivered to {self.maildir} "
                                   f"within {timeout} s; see {self.dir / 'maillog'}.")
            time.sleep(0.05)

    @classmethod
    def from_env_file(cls, path: Path) -> Postfix:
        env = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return cls(dir=Path(env["SMTP_MAGIC_POSTFIX_DIR"]), smtp_port=int(env["POSTFIX_SMTP_PORT"]),
                   submission_port=int(env["POSTFIX_SUB_PORT"]),
                   smtps_port=int(env["POSTFIX_SMTPS_PORT"]), ca=Path(env["POSTFIX_CA"]),
                   dkim_port=int(env["POSTFIX_DKIM_PORT"]) if "POSTFIX_DKIM_PORT" in env else None,
                   dkim_keys=Path(env["POSTFIX_DKIM_KEYS"]) if "POSTFIX_DKIM_KEYS" in env else None)


def _postfix_unavailable(reason: str) -> None:
    if os.environ.get("SMTP_MAGIC_REQUIRE_POSTFIX") == "1":
        pytest.fail(f"Postfix is required (SMTP_MAGIC_REQUIRE_POSTFIX=1) but {reason}")
    pytest.skip(f"Postfix tests skipped: {reason}")


@pytest.fixture(scope="session")
def postfix() -> Iterator[Postfix]:
    """A running private Postfix: the one described by ``$SMTP_MAGIC_POSTFIX_ENV``, else one
    started (and stopped) here with scripts/postfix-up.sh. Skips when Postfix is unavailable,
    fails instead when ``SMTP_MAGIC_REQUIRE_POSTFIX=1``."""
    env_file = os.environ.get("SMTP_MAGIC_POSTFIX_ENV")
    if env_file:
        if not Path(env_file).is_file():
            _postfix_unavailable(f"SMTP_MAGIC_POSTFIX_ENV={env_file} does not exist.")
        yield Postfix.from_env_file(Path(env_file))
        return
    if not (shutil.which("postfix") or Path("/usr/sbin/postfix").exists()):
        _postfix_unavailable("postfix is not installed.")
    if os.geteuid() != 0:
        _postfix_unavailable("starting a private Postfix needs root.")
    # Not under pytest's 0700 tmp dirs: virtual delivery runs as nobody and must reach $PF/mail.
    pf = Path(tempfile.mkdtemp(prefix="smtp-magic-postfix-"))
    pf.chmod(0o755)
    env = {**os.environ, "PF": str(pf)}
    up = subprocess.run(["bash", str(ROOT / "scripts" / "postfix-up.sh")], env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    try:
        if up.returncode != 0:
            pytest.fail(f"scripts/postfix-up.sh failed ({up.returncode}):\n{up.stdout}{up.stderr}")
        yield Postfix.from_env_file(pf / "env")
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "postfix-down.sh")], env=env,
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(pf, ignore_errors=True)


# -- OAuth2: a real OpenID Connect server and an SMTP server that asks it about tokens ---------
def _oidc_unavailable(reason: str) -> None:
    if os.environ.get("SMTP_MAGIC_REQUIRE_OIDC") == "1":
        pytest.fail(f"The OpenID Connect server is required (SMTP_MAGIC_REQUIRE_OIDC=1) but {reason}")
    pytest.skip(f"OAuth2 tests skipped: {reason}")


@pytest.fixture(scope="session")
def idp() -> Iterator[Any]:
    """node-oidc-provider on 127.0.0.1 (tests/oidc), for the whole session. Skips when Node or
    its npm packages are missing; fails instead when ``SMTP_MAGIC_REQUIRE_OIDC=1``."""
    import idp as idp_module

    reason = idp_module.unavailable_reason()
    if reason:
        _oidc_unavailable(reason)
    with idp_module.IdentityProvider() as server:
        yield server


@pytest.fixture(scope="session")
def ms_idp(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same provider shaped like a Microsoft authority (HTTPS, ``/contoso/v2.0``), so that
    MSAL itself can sign in against it; its certificate is issued by ``ca``."""
    import idp as idp_module

    reason = idp_module.unavailable_reason()
    if reason:
        _oidc_unavailable(reason)
    folder = tmp_path_factory.mktemp("ms-idp")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    with idp_module.IdentityProvider(tls=(folder / "cert.pem", folder / "key.pem"),
                                     ca=folder / "ca.pem", path="/contoso/v2.0") as server:
        yield server


@pytest.fixture
def oauth_server(tmp_path: Path, server_tls: ssl.SSLContext, idp: Any, no_keyring: None
                 ) -> Iterator[CaptureServer]:
    """STARTTLS submission server whose XOAUTH2/OAUTHBEARER asks ``idp`` (introspection)
    whether the presented token is an active access token of the user signing in."""
    import smtp_magic.oauth

    smtp_magic.oauth.clear_memory()
    with CaptureServer(tmp_path / "oauth", tls="starttls", ssl_context=server_tls,
                       token_validator=idp.validate, oauth_scope="smtp",
                       require_auth=True) as server:
        yield server
    smtp_magic.oauth.clear_memory()


# -- Dovecot: an independent submission server (OAuth2 and passwords), relaying to aiosmtpd ------
@dataclass(frozen=True)
class Dovecot:
    """A private Dovecot on loopback (scripts/dovecot-up.sh). Its submission service
    (``submission_port``: STARTTLS, AUTH required) relays what it accepts to ``relay``."""

    dir: Path
    submission_port: int
    ca: Path  # the server certificate to trust (self-signed)
    jwt_key: bytes  # signs the OAuth2 access tokens Dovecot accepts (HS256)
    relay: CaptureServer
    user: str
    password: str
    host: str = "127.0.0.1"
    imap_port: int = 0  # IMAP with STARTTLS (0: dovecot-imapd is not installed)
    imaps_port: int = 0  # IMAP over implicit TLS

    @property
    def log(self) -> Path:
        return self.dir / "dovecot.log"

    def token(self, user: str | None = None, size: int = 0, lifetime: int = 600) -> str:
        """A JWT access token Dovecot accepts for ``user``, padded to about ``size`` chars."""
        import base64
        import hashlib
        import hmac
        import json

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

        who = user or self.user
        claims = {"sub": who, "email": who, "iat": int(time.time()) - 5,
                  "exp": int(time.time()) + lifetime}
        body = b64(json.dumps(claims).encode())
        if size:  # a claim the size of Microsoft's tokens, which carry many
            claims["pad"] = "x" * max(0, (size - len(body) - 120) * 3 // 4)
        head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = hmac.new(self.jwt_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"


def _dovecot_unavailable(reason: str) -> None:
    if os.environ.get("SMTP_MAGIC_REQUIRE_DOVECOT") == "1":
        pytest.fail(f"Dovecot is required (SMTP_MAGIC_REQUIRE_DOVECOT=1) but {reason}")
    pytest.skip(f"Dovecot tests skipped: {reason}")


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A running private Dovecot (submission with passdb oauth2 and passwd-file) relaying to a
    capture server, both started here and stopped after the session. Skips when Dovecot is not
    installed or this is not root; fails instead when ``SMTP_MAGIC_REQUIRE_DOVECOT=1``."""
    import base64

    if not (shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists()):
        _dovecot_unavailable("dovecot is not installed (dovecot-core, dovecot-submissiond).")
    if not Path("/usr/lib/dovecot/submission").exists():
        _dovecot_unavailable("its submission service is not installed (dovecot-submissiond).")
    if os.geteuid() != 0:
        _dovecot_unavailable("starting a private Dovecot needs root.")
    # Not under pytest's 0700 tmp dirs: Dovecot's own users must reach its folder.
    dv = Path(tempfile.mkdtemp(prefix="smtp-magic-dovecot-"))
    dv.chmod(0o755)
    relay = CaptureServer(tmp_path_factory.mktemp("dovecot-relay")).start()
    env = {**os.environ, "DV": str(dv / "dv"), "DV_RELAY_PORT": str(relay.port),
           "DV_EXTRA_USERS": f"{LONG_LOGIN[0]}:{LONG_LOGIN[1]}"}
    if Path("/usr/lib/dovecot/imap").exists():  # dovecot-imapd: the save_sent tests' IMAP
        env["DV_PROTOCOLS"] = "submission imap"
    try:
        up = subprocess.run(["bash", str(ROOT / "scripts" / "dovecot-up.sh")], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
        if up.returncode != 0:
            pytest.fail(f"scripts/dovecot-up.sh failed ({up.returncode}):\n{up.stdout}{up.stderr}")
        values = dict(line.split("=", 1) for line in (dv / "dv" / "env").read_text().splitlines())
        yield Dovecot(dir=dv / "dv", submission_port=int(values["DOVECOT_SUBMISSION_PORT"]),
                      ca=Path(values["DOVECOT_CA"]),
                      jwt_key=base64.b64decode(values["DOVECOT_JWT_KEY"]), relay=relay,
                      user=values["DOVECOT_USER"], password=values["DOVECOT_PASS"],
                      imap_port=int(values.get("DOVECOT_IMAP_PORT", 0)),
                      imaps_port=int(values.get("DOVECOT_IMAPS_PORT", 0)))
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "dovecot-down.sh")], env=env,
                       capture_output=True, timeout=60, check=False)
        relay.stop()
        shutil.rmtree(dv, ignore_errors=True)


# A password login whose AUTH PLAIN / LOGIN initial response does not fit on a 512-octet line.
LONG_LOGIN = ("long.login@example.test", "p" * 420 + "-long-passphrase")
