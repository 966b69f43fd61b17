"""A copy of each sent message in an IMAP folder (the ``save_sent`` setting): APPEND with imaplib.

The SMTP server has accepted the message when a copy is made, so a copy that fails never turns
the send into a failure: ``SentFolder.append`` returns the reason in one sentence instead of
raising, and the caller adds it to the response. imaplib blocks, so it runs in a worker thread,
bounded by the ``timeout`` setting (its socket timeout and a deadline for the whole copy). One
``SentFolder`` keeps one connection for a whole batch; appends are made one at a time.

Credentials are the SMTP login's (the same account): the username and password, or the OAuth2
token (XOAUTH2, else OAUTHBEARER). The debug conversation shows IMAP lines with LOGIN's
arguments and every AUTHENTICATE response replaced by ``********`` and the message only as its
size; any line that still holds the password or token is scrubbed too.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import logging
import re
import ssl
import threading
from typing import Any

from .config import ConnectionSettings
from .conversation import REDACTED, Conversation, secret_forms
from .errors import ConfigError
from .mime import check_header_value

__all__ = ["SentFolder", "check_settings"]

log = logging.getLogger(__name__)  # the IMAP lines go through the conversation's logger

_LOGIN = re.compile(rb"^(\S+) (LOGIN) ", re.IGNORECASE)
_AUTHENTICATE = re.compile(rb"^(\S+ AUTHENTICATE \S+)", re.IGNORECASE)
_TIMING = re.compile(r" \([\d.]+( \+ [\d.]+)* secs\)(?=\.?$)")  # Dovecot's "(0.001 + 0.000 secs)"
_LITERAL = re.compile(rb"^\S+ APPEND .* \{(\d+)\}\r\n$", re.IGNORECASE | re.DOTALL)


def where(settings: ConnectionSettings) -> str:
    return f"{settings.imap_host}:{settings.imap_port}"


def check_settings(settings: ConnectionSettings) -> None:
    """Settings with which no copy could ever be made: one sentence (exit 1), before anything is
    sent. Nothing to check when ``save_sent`` is unset."""
    folder = settings.save_sent
    if not folder:
        return
    check_header_value("save_sent folder name", folder)  # no CR/LF/controls on an IMAP line
    if not settings.imap_host:
        raise ConfigError(f"save_sent is {folder!r} but imap_host is not set: set imap_host "
                          "(the IMAP server of that folder), or unset save_sent.")
    if settings.auth == "none" or not settings.username:
        raise ConfigError("save_sent needs a login at the IMAP server, but auth is 'none' or no "
                          "username is set: set username and a password (or OAuth2), or unset "
                          "save_sent.")
    if settings.imap_security == "none" and (
            settings.auth == "oauth2" or not settings.allow_plaintext_auth):
        what = "the OAuth2 token" if settings.auth == "oauth2" else "the password"
        fix = ("" if settings.auth == "oauth2" else ", or set allow_plaintext_auth")
        raise ConfigError(f"Signing in to IMAP {where(settings)} would send {what} unencrypted "
                          f"(imap_security 'none'): set imap_security to 'tls' or "
                          f"'starttls'{fix}; nothing was sent.")


def _tls(settings: ConnectionSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.cafile or None)
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Traced:
    """The IMAP lines, to the debug conversation: logins redacted, the message as its size."""

    conversation: Conversation | None = None
    _in_auth = False
    _literal: int | None = None

    def send(self, data: Any) -> None:
        conv = self.conversation
        if conv is not None and conv.active and data != b"\r\n":
            if self._literal is not None:
                conv.line(">", f"(message: {self._literal:,} bytes)")
                self._literal = None
            elif self._in_auth:
                conv.line(">", REDACTED)
            else:
                login = _LOGIN.match(data)
                auth = _AUTHENTICATE.match(data)
                if login:
                    conv.line(">", f"{login.group(1).decode()} LOGIN {REDACTED}")
                elif auth:
                    self._in_auth = True
                    conv.line(">", auth.group(1).decode("ascii", "replace"))
                else:
                    literal = _LITERAL.match(data)
                    if literal:
                        self._literal = int(literal.group(1))
                    conv.line(">", data.decode("utf-8", "replace").rstrip("\r\n"))
        elif _AUTHENTICATE.match(data):
            self._in_auth = True  # tracked even when nobody listens
        super().send(data)  # type: ignore[misc]

    def readline(self) -> bytes:
        line: bytes = super().readline()  # type: ignore[misc]
        if not line.startswith(b"+"):
            self._in_auth = False  # a tagged or untagged reply: the SASL exchange is over
        conv = self.conversation
        if conv is not None and conv.active and line:
            conv.line("<", line.decode("utf-8", "replace").rstrip("\r\n"))
        return line


class _Answers:
    """The SASL answers: the initial response, then an empty one (XOAUTH2's error challenge)."""

    def __init__(self, first: bytes) -> None:
        self._first: bytes | None = first

    def __call__(self, challenge: bytes) -> bytes:
        first, self._first = self._first, None
        return first if first is not None else b""


class _IMAP(_Traced, imaplib.IMAP4):
    pass


class _IMAPS(_Traced, imaplib.IMAP4_SSL):
    pass


class SentFolder:
    """The ``save_sent`` folder of one batch: one IMAP connection, opened on the first copy and
    kept until ``close()``; None of this raises (a failure is the returned sentence)."""

    def __init__(self, settings: ConnectionSettings, password: str | None) -> None:
        self.settings = settings
        self._password = password
        self._imap: imaplib.IMAP4 | None = None
        self._phase = "connect"  # connect, login, append: what a failure is about
        self._lock = asyncio.Lock()  # one APPEND at a time on the connection
        self._thread_lock = threading.Lock()
        self._secrets: tuple[str, ...] = secret_forms((password,), settings.username)

    def __repr__(self) -> str:
        return f"<SentFolder {self.settings.save_sent!r} at {where(self.settings)}>"

    async def append(self, data: bytes) -> str | None:
        """Store ``data`` (the exact bytes sent) in the folder, flagged \\Seen. None when it is
        there, else one sentence saying that the copy failed and why."""
        s = self.settings
        given_up = threading.Event()
        async with self._lock:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._append, data, given_up), s.timeout)
                return None
            except asyncio.TimeoutError:
                given_up.set()  # a connection the thread still opens is closed, not used
                reason = f"IMAP {where(s)} did not answer within {s.timeout:g} s"
                self._drop()
            except Exception as exc:  # a copy never fails the send
                reason = self._reason(exc)
                log.debug("the copy to %r failed", s.save_sent, exc_info=True)
                self._drop()
        return (f"Sent, but the copy to the folder {s.save_sent!r} failed: "
                f"{self._scrub(reason).rstrip('.')}.")

    async def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            await asyncio.to_thread(self._logout, imap)

    # -- in the worker thread ---------------------------------------------------------------------
    def _append(self, data: bytes, given_up: threading.Event) -> None:
        with self._thread_lock:
            imap = self._imap
            if imap is None:
                imap = self._open()
                if given_up.is_set():  # too late: the send already says the copy failed
                    _quietly(imap.shutdown)
                    return
                self._imap = imap
            if given_up.is_set():
                return
            typ, detail = imap.append(_quoted(self.settings.save_sent), r"(\Seen)", None, data)
            if typ != "OK":
                raise imaplib.IMAP4.error(_text(detail))

    def _open(self) -> imaplib.IMAP4:
        s = self.settings
        host, port, timeout = s.imap_host, s.imap_port, s.timeout
        conv = Conversation(f"IMAP {where(s)}", debug=s.debug, secrets=(self._password,),
                            username=s.username)
        conv.note(f"connecting to IMAP {where(s)} for the copy in {s.save_sent!r}")
        imap: imaplib.IMAP4 | None = None
        self._phase = "connect"
        try:
            # The class carries the conversation, so the greeting is in it too.
            if s.imap_security == "tls":
                imap = type("_IMAPS", (_IMAPS,), {"conversation": conv})(
                    host, port, ssl_context=_tls(s), timeout=timeout)
            else:
                imap = type("_IMAP", (_IMAP,), {"conversation": conv})(host, port, timeout=timeout)
            if s.imap_security == "starttls":
                if "STARTTLS" not in imap.capabilities:
                    raise ConnectionError(f"IMAP {where(s)} does not offer STARTTLS, and "
                                          "imap_security is 'starttls'")
                imap.starttls(_tls(s))
            self._phase = "login"
            self._login(imap, conv)
            self._phase = "append"
            conv.note(f"signed in; appending to {s.save_sent!r}")
        except BaseException:
            conv.note("the copy gave up")
            if imap is not None:
                _quietly(imap.shutdown)
            raise
        return imap

    def _login(self, imap: imaplib.IMAP4, conv: Conversation) -> None:
        s = self.settings
        if s.auth != "oauth2":
            if not self._password:
                raise ConnectionError("there is no password to sign in with")
            imap.login(s.username, self._password)
            return
        from . import oauth

        offered = {c.upper() for c in imap.capabilities}
        mechanism = next((m for m in ("XOAUTH2", "OAUTHBEARER") if f"AUTH={m}" in offered), None)
        if mechanism is None:
            raise ConnectionError(f"IMAP {where(s)} does not offer OAuth2 sign-in "
                                  "(AUTH=XOAUTH2 or AUTH=OAUTHBEARER)")
        config = oauth.OAuthConfig.from_settings(s)
        for attempt in (1, 2):
            token = oauth.access_token(config, force_refresh=attempt == 2)
            user = s.username or token.identity or ""
            blob = (oauth.sasl_xoauth2(user, token.value) if mechanism == "XOAUTH2"
                    else oauth.sasl_oauthbearer(user, token.value, s.imap_host, s.imap_port))
            self._secrets = tuple(sorted({*self._secrets, *secret_forms((token.value,), user),
                                          base64.b64encode(blob).decode("ascii")},
                                         key=len, reverse=True))
            conv.add_secrets(token.value, base64.b64encode(blob).decode("ascii"), username=user)
            try:  # after the first answer, an error challenge gets the empty response
                imap.authenticate(mechanism, _Answers(blob))
                return
            except imaplib.IMAP4.error:
                if attempt == 2:
                    raise

    def _drop(self) -> None:
        """Forget a connection that failed or timed out (closed by its own thread's error)."""
        imap, self._imap = self._imap, None
        if imap is not None:
            _quietly(imap.shutdown)

    @staticmethod
    def _logout(imap: imaplib.IMAP4) -> None:
        _quietly(imap.logout)  # the copies are made; nothing left to report

    def _reason(self, exc: BaseException) -> str:
        s = self.settings
        if isinstance(exc, ConnectionRefusedError):
            return f"IMAP {where(s)} refused the connection"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"the certificate of IMAP {where(s)} is not trusted ({exc.verify_message})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS with IMAP {where(s)} failed ({exc.reason or exc})"
        if isinstance(exc, TimeoutError):
            return f"IMAP {where(s)} did not answer within {s.timeout:g} s"
        if isinstance(exc, UnicodeError):  # never its text: it quotes a character of the login
            what = "username or password" if self._phase == "login" else "folder name"
            return f"the {what} has characters IMAP cannot send as they are (non-ASCII)"
        if isinstance(exc, imaplib.IMAP4.error):
            text = _text(exc.args[0] if exc.args else "")
            if self._phase == "login":
                return f"IMAP {where(s)} refused the login for {s.username!r}: {text}"
            return f"IMAP {where(s)} said: {text}"
        if isinstance(exc, OSError):
            return f"cannot reach IMAP {where(s)} ({exc.strerror or exc})"
        return f"{type(exc).__name__}: {exc}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return " ".join(text.split())


def _quietly(close: Any) -> None:
    """Close a connection that is done with or already broken; what it says is of no interest."""
    try:
        close()
    except Exception:  # noqa: BLE001, S110
        pass


def _quoted(folder: str) -> str:
    """An IMAP quoted string (imaplib sends mailbox names as given)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _TIMING.sub("", " ".join(str(value).split()))

