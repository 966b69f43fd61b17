"""The built-in capture server: an aiosmtpd SMTP server that stores every message in a Maildir."""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import email
import email.parser
import email.policy
import functools
import hmac
import itertools
import json
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._paths import open_private, private_dir, user_path
from ._shortcuts import controller_on_socket
from .errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DATA_SIZE_LIMIT",
    "CaptureServer",
    "CapturedMessage",
    "OAuthCaptureHandler",
    "TokenValidator",
    "count_messages",
    "default_maildir",
    "local_server",
    "messages",
    "serve",
]

log = logging.getLogger(__name__)

TLSMode = Literal["starttls", "tls"]
# (user, access token) -> whether the token is valid for that user; e.g. an introspection call.
TokenValidator = Callable[[str, str], bool]

# Room for the 10 MB attachment limit (attachment_size) several times over, base64 included (like Postfix's 50 MB).
DATA_SIZE_LIMIT = 64 * 1024 * 1024
_BANNER_HOST = "smtp-magic.localhost"  # a fixed name: aiosmtpd would otherwise call getfqdn() per connection
_IDENT = "smtp_magic capture server"
_SEQ = itertools.count(1)


def default_maildir() -> Path:
    """``$SMTP_MAGIC_CAPTURE_DIR``, else ``$XDG_DATA_HOME/smtp_magic/capture`` (``~/.local/share``)."""
    return user_path("SMTP_MAGIC_CAPTURE_DIR", "data", "capture")


def _ensure_maildir(path: Path) -> Path:
    # mailbox.Maildir(create=True) skips tmp/new/cur when the directory already exists.
    private_dir(path)  # 0700 (an old 0755 one under smtp_magic/ too)
    for sub in ("tmp", "new", "cur"):
        private_dir(path / sub, tighten=True)
    return path


def _deliver(maildir: Path, data: bytes) -> Path:
    """Write one message the Maildir way (tmp/ then rename into new/), as ``<unique>.eml``."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    name = f"{int(now)}.M{int(now % 1 * 1e6):06d}P{os.getpid()}Q{next(_SEQ)}.{host}.eml"
    tmp = maildir / "tmp" / name
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
        f.write(data)
    final = maildir / "new" / name
    os.replace(tmp, final)
    return final


def _envelope_headers(peer: str, mail_from: str, rcpt_tos: list[str], eol: bytes) -> bytes:
    """``X-Peer``/``X-MailFrom``/``X-RcptTo`` lines, as aiosmtpd's Mailbox handler adds them."""
    rcpt_lines: list[str] = []
    for addr in rcpt_tos:
        # Fold long recipient lists so the header stays within the 998-octet line limit.
        if rcpt_lines and len(rcpt_lines[-1]) + len(addr) > 76:
            rcpt_lines[-1] += ","
            rcpt_lines.append(" " + addr)
        elif rcpt_lines:
            rcpt_lines[-1] += ", " + addr
        else:
            rcpt_lines.append("X-RcptTo: " + addr)
    lines = [f"X-Peer: {peer}", f"X-MailFrom: {mail_from}", *rcpt_lines]
    # SMTPUTF8 addresses arrive as str with surrogate escapes for any undecodable bytes.
    return b"".join(line.encode("utf-8", "surrogateescape") + eol for line in lines)


@dataclass(frozen=True)
class CapturedMessage:
    """One message stored by the capture server, with its SMTP envelope."""

    path: Path
    mail_from: str
    rcpt_to: tuple[str, ...]
    message: EmailMessage
    received: float

    @classmethod
    def from_path(cls, path: Path) -> CapturedMessage:
        data = path.read_bytes()
        msg = email.message_from_bytes(data, policy=email.policy.default)
        _utf8_headers(msg, data)
        assert isinstance(msg, EmailMessage)
        rcpts = str(msg.get("X-RcptTo", ""))
        return cls(
            path=path,
            mail_from=str(msg.get("X-MailFrom", "")),
            rcpt_to=tuple(a.strip() for a in rcpts.split(",") if a.strip()),
            message=msg,
            received=path.stat().st_mtime,
        )

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def message_id(self) -> str | None:
        value = self.message.get("Message-ID")
        return str(value) if value is not None else None


def _utf8_headers(msg: EmailMessage, data: bytes) -> None:
    """Re-read SMTPUTF8 (raw UTF-8) headers as text: the bytes parser surrogate-escapes them.

    The body stays as the bytes parser read it, which is right for 8-bit bodies.
    """
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    if head.isascii():
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    parsed = email.parser.HeaderParser(policy=email.policy.default).parsestr(text + "\n\n")
    for name in dict.fromkeys(msg.keys()):  # every header goes, then comes back decoded, in order
        del msg[name]
    for name, value in parsed.items():
        msg[name] = value


def _message_paths(maildir: Path) -> list[Path]:
    """Message files in new/ and cur/, newest first."""
    paths: list[tuple[int, str, Path]] = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(maildir / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_file() and not entry.name.startswith("."):
                try:
                    paths.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
                except FileNotFoundError:  # removed meanwhile (clear() from another thread)
                    continue
    paths.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [p for _, _, p in paths]


def messages(maildir: str | os.PathLike[str] | None = None, *, limit: int | None = None
             ) -> list[CapturedMessage]:
    """The captured messages in ``maildir`` (default: :func:`default_maildir`), newest first."""
    folder = Path(maildir).expanduser() if maildir is not None else default_maildir()
    out: list[CapturedMessage] = []
    for path in _message_paths(folder)[:limit]:
        try:
            out.append(CapturedMessage.from_path(path))
        except FileNotFoundError:
            continue
    return out


def _quiet_aiosmtpd() -> None:
    """aiosmtpd logs every command it receives at INFO (logger ``mail.log``). With
    ``%smtp_config --local`` the server runs in the kernel, so a notebook that logs at INFO
    (``logging.basicConfig(level=logging.INFO)``) would get a dozen of those lines per message in
    its cells. Unless that logger was configured on purpose, it reports warnings only; what was
    said is ``smtp_magic.conversation``'s to log (the client's side, redacted)."""
    aiosmtpd_log = logging.getLogger("mail.log")
    if aiosmtpd_log.level == logging.NOTSET:
        aiosmtpd_log.setLevel(logging.WARNING)


def count_messages(maildir: str | os.PathLike[str] | None = None) -> int:
    """How many messages ``maildir`` (default: :func:`default_maildir`) holds."""
    folder = Path(maildir).expanduser() if maildir is not None else default_maildir()
    return len(_message_paths(folder))


def _server_context(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None
                    ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"Cannot load the certificate {certfile}: {exc.strerror or exc}.") from exc
    return ctx


class CaptureHandler:
    """aiosmtpd handler: optional AUTH policy, then every accepted message into the Maildir."""

    def __init__(self, maildir: Path, *, offer_auth: bool, require_auth: bool,
                 offer_starttls: bool = True):
        self.maildir = maildir
        self.offer_auth = offer_auth
        self.require_auth = require_auth
        self.offer_starttls = offer_starttls

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must set it itself
        hidden = []
        if not self.offer_auth:  # no users: AUTH could only ever fail, so do not offer it
            hidden.append("250-AUTH")
        if not self.offer_starttls:
            hidden.append("250-STARTTLS")
        return [r for r in responses if not r.startswith(tuple(hidden))] if hidden else responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        # Enforced here rather than with aiosmtpd's auth_required, which warns on every connection
        # when AUTH is allowed without STARTTLS (implicit TLS, or the plaintext-AUTH test server).
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def store(self, session: Any, envelope: Any) -> Path:
        content: bytes = envelope.original_content or b""
        first_line = content.split(b"\n", 1)[0]
        eol = b"\r\n" if first_line.endswith(b"\r") else b"\n"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        head = _envelope_headers(peer, envelope.mail_from or "", list(envelope.rcpt_tos), eol)
        return _deliver(self.maildir, head + content)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        path = self.store(session, envelope)
        log.debug("stored a message from %s as %s", envelope.mail_from, path)
        return f"250 2.0.0 Ok: stored as {path.stem}"


@dataclass(frozen=True)
class OAuthLogin:
    """Who signed in with a bearer token, and how (the token itself is not kept)."""

    login: bytes
    mechanism: str


def _parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    # user=<addr>\x01auth=Bearer <token>\x01\x01
    fields = dict(part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01")
                  if "=" in part)
    auth = fields.get("auth", "")
    if "user" not in fields or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth[len("Bearer "):]


def _parse_oauthbearer(blob: bytes) -> tuple[str, str] | None:
    # RFC 7628: gs2-header ("n,a=<authzid>,") \x01 key=value \x01 ... \x01\x01
    head, _, rest = blob.decode("utf-8", "replace").partition("\x01")
    user = next((f[2:] for f in head.split(",") if f.startswith("a=")), "")
    user = user.replace("=2C", ",").replace("=3D", "=")
    fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    if not auth.startswith("Bearer "):
        return None
    return user, auth[len("Bearer "):]


class OAuthCaptureHandler(CaptureHandler):
    """A capture handler that also accepts SASL XOAUTH2 and OAUTHBEARER (RFC 7628).

    aiosmtpd finds the ``auth_*`` methods with ``dir()``, so they live on this subclass only,
    and only servers given a ``token_validator`` offer the mechanisms. A refused token gets the
    providers' error dance: a ``334`` challenge with base64 JSON, then ``535`` after the client's
    (empty) reply.
    """

    def __init__(self, maildir: Path, validator: TokenValidator, *, require_auth: bool,
                 scope: str = "", logins: list[tuple[str, str, bool]] | None = None):
        super().__init__(maildir, offer_auth=True, require_auth=require_auth)
        self.validator = validator
        self.scope = scope
        self.logins = logins if logins is not None else []

    async def _bearer(self, server: Any, args: list[str], mechanism: str,
                      parse: Callable[[bytes], tuple[str, str] | None]) -> Any:
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            response = await server.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)
            blob = response
        parsed = parse(blob)
        if parsed is None:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 Malformed " + mechanism + " response")
        user, token = parsed
        loop = asyncio.get_running_loop()
        try:
            ok = bool(await loop.run_in_executor(None, self.validator, user, token))
        except Exception:  # the authorization server is down: a temporary failure
            logging.getLogger(__name__).exception("token validation failed")
            return AuthResult(success=False, handled=False,
                              message="454 4.7.0 Temporary authentication failure")
        self.logins.append((mechanism, user, ok))
        if ok:
            return AuthResult(success=True, auth_data=OAuthLogin(user.encode(), mechanism))
        if mechanism == "XOAUTH2":  # Google's and Microsoft's shape
            error = {"status": "401", "schemes": "bearer", "scope": self.scope}
        else:  # RFC 7628 section 3.2.2
            error = {"status": "invalid_token", "scope": self.scope}
        await server.challenge_auth(json.dumps(error))  # the client answers with an empty line
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        return await self._bearer(server, args, "XOAUTH2", _parse_xoauth2)

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> Any:
        return await self._bearer(server, args, "OAUTHBEARER", _parse_oauthbearer)


def _drop_login_data_warning(record: logging.LogRecord) -> bool:
    # aiosmtpd itself sets the deprecated Session.login_data on every successful AUTH and logs a
    # warning about it, which a kernel would show as red stderr output.
    return "login_data is deprecated" not in record.getMessage()


@functools.cache
def _controller_class() -> type:
    """aiosmtpd's threaded Controller, listening on a socket we bound (so port 0 just works)."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError as exc:
        raise MissingDependency("The capture server needs aiosmtpd, a dependency of smtp-magic "
                                "that is missing here: pip install aiosmtpd.") from exc
    logging.getLogger("mail.log").addFilter(_drop_login_data_warning)

    return controller_on_socket(Controller)


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bound here rather than by aiosmtpd, so that port=0 works and the real port is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every multi-line reply (EHLO) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"The capture server cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}.") from exc
    return sock


class CaptureServer:
    """An SMTP server on a background thread that stores every message it accepts.

    ``tls``: ``None`` (plain), ``"starttls"`` (offered; required only with ``require_auth``) or
    ``"tls"`` (implicit TLS); both need ``ssl_context`` or ``certfile``/``keyfile``.
    ``users`` maps logins to passwords for AUTH PLAIN/LOGIN; AUTH is offered after STARTTLS, on
    implicit TLS, and in plaintext only when ``tls`` is None. ``token_validator(user, token)``
    adds SASL XOAUTH2 and OAUTHBEARER, accepting a bearer token when it returns true (e.g. after
    asking the authorization server's introspection endpoint). ``logins`` records
    ``(mechanism, user, accepted)`` per login attempt, password or token (never the secret). ``port=0`` picks a free port.
    Works from plain code and from inside a running event loop (a Jupyter kernel)::

        with CaptureServer(port=0) as server:
            ...  # send to server.host, server.port
            server.wait_for(1)
    """

    def __init__(
        self,
        maildir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSMode | None = None,
        ssl_context: ssl.SSLContext | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        users: Mapping[str, str] | None = None,
        require_auth: bool = False,
        data_size_limit: int = DATA_SIZE_LIMIT,
        token_validator: TokenValidator | None = None,
        oauth_scope: str = "",
    ):
        if tls not in (None, "starttls", "tls"):
            raise ConfigError(f"tls must be None, 'starttls' or 'tls', not {tls!r}.")
        if tls and ssl_context is None and certfile is None:
            raise ConfigError(f"tls={tls!r} needs a certificate: pass certfile/keyfile or ssl_context.")
        if require_auth and not users and token_validator is None:
            raise ConfigError("require_auth needs users (or a token_validator) to log in with.")
        self._maildir = Path(maildir).expanduser() if maildir is not None else default_maildir()
        self._host = host
        self._port = port
        self.tls = tls
        self._ssl_context = ssl_context
        self._certfile, self._keyfile = certfile, keyfile
        self.users: dict[str, str] = dict(users or {})
        self.require_auth = require_auth
        self.data_size_limit = data_size_limit
        self.token_validator = token_validator
        self.oauth_scope = oauth_scope
        self.logins: list[tuple[str, str, bool]] = []
        self._controller: Any = None
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port (the real one once started with ``port=0``)."""
        return self._port

    @property
    def maildir(self) -> Path:
        return self._maildir

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def url(self) -> str:
        return f"{'smtps' if self.tls == 'tls' else 'smtp'}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        extra = f" tls={self.tls}" if self.tls else ""
        return f"<CaptureServer {self.url}{extra} maildir={str(self.maildir)!r} {state}>"

    # -- what aiosmtpd is built from (overridden by tests/faults.py) ---------------------------
    def _make_handler(self) -> CaptureHandler:
        if self.token_validator is not None:
            return OAuthCaptureHandler(self._maildir, self.token_validator,
                                       require_auth=self.require_auth, scope=self.oauth_scope,
                                       logins=self.logins)
        return CaptureHandler(self._maildir, offer_auth=bool(self.users),
                              require_auth=self.require_auth)

    def _smtp_factory(self) -> Callable[[], Any]:
        """Builds the aiosmtpd ``SMTP`` protocol object for each new connection."""
        from aiosmtpd.smtp import SMTP

        handler, kwargs = self._make_handler(), self._smtp_kwargs()
        return lambda: SMTP(handler, **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), bytes(auth_data.password))
        self.logins.append((mechanism, login, ok))  # who tried; never the password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._ssl_context is None and self._certfile is not None:
            self._ssl_context = _server_context(self._certfile, self._keyfile)
        return self._ssl_context

    def _smtp_kwargs(self) -> dict[str, Any]:
        ctx = self._tls_context()
        return {
            "hostname": _BANNER_HOST,
            "ident": _IDENT,
            "data_size_limit": self.data_size_limit,
            "enable_SMTPUTF8": True,
            "decode_data": False,  # keep the bytes exactly as received (8BITMIME, SMTPUTF8)
            "tls_context": ctx if self.tls == "starttls" else None,
            "require_starttls": self.tls == "starttls" and self.require_auth,
            # aiosmtpd counts only STARTTLS as TLS: implicit TLS and the plaintext test server
            # must allow AUTH "without TLS" (aio-libs/aiosmtpd#281).
            "auth_require_tls": self.tls == "starttls",
            "authenticator": self._authenticate if self.users else None,
            # Bearer tokens only: PLAIN/LOGIN could never succeed without users.
            "auth_exclude_mechanism": ["PLAIN", "LOGIN"] if not self.users else None,
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        """Start listening (on a background thread); returns self. A no-op when running."""
        with self._lock:
            if self._controller is not None:
                return self
            controller_cls = _controller_class()
            _quiet_aiosmtpd()
            _ensure_maildir(self._maildir)
            factory = self._smtp_factory()  # before binding: a bad certificate raises here
            implicit_tls = self._tls_context() if self.tls == "tls" else None
            sock = _listening_socket(self._host, self._port)
            controller = controller_cls(factory, sock, ssl_context=implicit_tls)
            try:
                controller.start()
            except BaseException:
                sock.close()
                with contextlib.suppress(RuntimeError):  # its loop may never have run
                    controller.stop(no_assert=True)
                raise
            self._port = controller.port
            self._controller = controller
            return self

    def stop(self) -> None:
        """Stop listening and close open connections. Safe to call twice."""
        with self._lock:
            controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the mailbox --------------------------------------------------------------------------
    def messages(self, *, limit: int | None = None) -> list[CapturedMessage]:
        """The stored messages, newest first."""
        return messages(self._maildir, limit=limit)

    def count(self) -> int:
        return len(_message_paths(self._maildir))

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CapturedMessage]:
        """Block until at least ``count`` messages are stored; return them, newest first.

        Do not call this on the event loop that runs the send; use :meth:`wait_for_async` there.
        """
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(self._waited_msg(count, timeout))
            time.sleep(0.01)
        return self.messages()

    async def wait_for_async(self, count: int = 1, timeout: float = 5.0) -> list[CapturedMessage]:
        """Like :meth:`wait_for`, without blocking the running event loop."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(self._waited_msg(count, timeout))
            await asyncio.sleep(0.01)
        return self.messages()

    def _waited_msg(self, count: int, timeout: float) -> str:
        return f"{self.count()} of {count} messages arrived in {self.maildir} within {timeout} s."

    def clear(self) -> None:
        """Delete every stored message."""
        for path in _message_paths(self._maildir):
            path.unlink(missing_ok=True)


_LOCAL: CaptureServer | None = None
_LOCAL_LOCK = threading.Lock()


def local_server(**kwargs: Any) -> CaptureServer:
    """The one shared capture server of this process, started on first use (on a free port).

    Later calls return the same running server; their arguments are then ignored.
    """
    global _LOCAL
    with _LOCAL_LOCK:
        if _LOCAL is None or not _LOCAL.running:
            first = _LOCAL is None
            _LOCAL = CaptureServer(**kwargs).start()
            if first:
                atexit.register(lambda: _LOCAL.stop() if _LOCAL is not None else None)
        return _LOCAL


def serve(
    host: str = "127.0.0.1",
    port: int = 8025,
    maildir: str | os.PathLike[str] | None = None,
    tls: TLSMode | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    users: Mapping[str, str] | None = None,
    print_fn: Callable[[str], object] = print,
    *,
    require_auth: bool = False,
) -> None:
    """Run a capture server until SIGINT or SIGTERM (what ``smtp-magic serve`` runs)."""
    done = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        with CaptureServer(maildir, host=host, port=port, tls=tls, certfile=certfile,
                           keyfile=keyfile, users=users, require_auth=require_auth) as server:
            print_fn(f"Capture server listening on {server.host}:{server.port}, "
                     f"storing messages in {server.maildir}"
                     + ("; a login is required" if require_auth else ""))
            if print_fn is print:
                sys.stdout.flush()  # the CLI's stdout may be a pipe; the line must show at once
            try:
                done.wait()
            except KeyboardInterrupt:  # no handler could be installed (not the main thread)
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
