"""Microsoft Graph ``sendMail``: the second transport, for tenants that keep SMTP AUTH off.

``GraphTransport(settings).deliver(envelope, data)`` posts the exact message bytes, base64, as
``text/plain`` to ``{graph_endpoint}/me/sendMail`` with a bearer token of the Microsoft sign-in
(:mod:`smtp_magic.oauth`, scope ``https://graph.microsoft.com/Mail.Send``). Graph answers
``202 Accepted`` once it has taken the message, and files a copy in Sent Items itself.

How Graph's answers map to the transport protocol (:mod:`smtp_magic.delivery`):

- ``202`` (any 2xx): sent; ``401``: a new token (forced refresh) and one more try, then
  ``AuthFailed`` (exit 3); ``429``, or ``503`` with ``Retry-After``: ``pacing.Throttled`` carrying
  the seconds asked for; other 4xx: ``Rejected`` (exit 4) with Graph's error code and message;
  other 5xx: ``TemporaryFailure``; no connection: ``ConnectFailed`` (exit 2); no answer after the
  request went out: ``InDoubt``.
- Graph takes the recipients from the message's own To, Cc and Bcc headers (Exchange turns a
  MIME ``Bcc`` header into Bcc recipients and never passes it on, [MS-OXCMAIL] 2.1.3.1.1.2).
  Our messages carry no Bcc header, so the envelope's other recipients are put in one on the
  bytes posted to Graph only; the message kept in the outbox stays as it is.
- Graph refuses requests over 4 MB (HTTP 413, "The maximum request length supported is 4MB"):
  the base64 of the message must fit, so a message over 3 MB is refused before anything is sent
  (:func:`check_size`, exit 1), and the engine refuses it before keeping it in the outbox
  (:func:`check_message`).

HTTP is the standard library's ``http.client`` in worker threads, over the TLS context of the
SMTP transport (system trust store, ``SSL_CERT_FILE``, ``cafile``); idle connections are kept
for the next message. With ``debug`` the exchange is shown with the token replaced by
``********``; the message itself only as its size.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import re
import select
import socket
import ssl
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .conversation import REDACTED, Conversation
from .delivery import Data, Envelope, Outcome, chunks_of
from .errors import (
    IN_DOUBT_NOTE,
    AuthFailed,
    ConfigError,
    ConnectFailed,
    InDoubt,
    InvalidRequest,
    Rejected,
    SmtpMagicError,
    TemporaryFailure,
)
from .pacing import Throttled
from .transport import ServerReport, tls_context

if TYPE_CHECKING:
    import http.client

    from .config import ConnectionSettings
    from .oauth import AccessToken, OAuthConfig

__all__ = ["GRAPH_SCOPE", "MAX_MESSAGE", "MAX_REQUEST", "GraphTransport", "check_message",
           "check_settings", "check_size"]

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/Mail.Send"
# Graph's limit for one request (ASP.NET's default of 4096 KB): the base64 of the message.
MAX_REQUEST = 4 * 1024 * 1024
MAX_MESSAGE = MAX_REQUEST // 4 * 3  # the largest message whose base64 fits: 3 MB
_MAX_RETRY_AFTER = 3600.0  # a longer Retry-After is taken as an hour


def encoded_size(size: int) -> int:
    """The size of the base64 (no line breaks) of ``size`` bytes: what Graph counts."""
    return 4 * ((size + 2) // 3)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"


def check_size(size: int) -> None:
    """Raise ``InvalidRequest`` (exit 1) when a message of ``size`` bytes is too large for
    Microsoft Graph (its base64 over 4 MB); the engine can call this at validation time."""
    if encoded_size(size) > MAX_REQUEST:
        shown, limit = f"{_mb(size)} MB", f"{_mb(MAX_MESSAGE)} MB"
        if shown == limit:  # just over: "3.0 MB, at most 3.0 MB" would say nothing
            shown, limit = f"{size:,} bytes", f"{MAX_MESSAGE:,} bytes"
        raise InvalidRequest(
            f"The message is {shown}, and Microsoft Graph takes at most {limit} (4 MB once "
            "base64-encoded), so it was not sent: attach less, or send it over SMTP (transport "
            "smtp).")


def check_settings(settings: ConnectionSettings) -> None:
    """Settings with which Graph can never be used: one sentence (exit 1), before any
    connection. Graph needs the Microsoft OAuth2 sign-in (or a token command or callable that
    gives a Graph token)."""
    from .oauth import OAuthConfig

    if settings.auth != "oauth2":
        raise ConfigError(
            f"transport graph signs in with OAuth2, but auth is {settings.auth!r}: set "
            "`%smtp_config --oauth2-provider microsoft --oauth2-client-id ID` and sign in once "
            "with `%smtp_config --oauth2-login` (or set transport smtp).")
    config = OAuthConfig.from_settings(settings)
    if config.kind not in ("microsoft", "command", "callable"):
        raise ConfigError(
            f"transport graph needs the Microsoft sign-in, but oauth2_provider is "
            f"{config.provider!r}: set `%smtp_config --oauth2-provider microsoft` (or set "
            "transport smtp).")
    config.validate()  # the app registration's client id
    if settings.save_sent:
        raise ConfigError(
            "transport graph files every sent message in Sent Items itself, so save_sent would "
            "make a second copy: unset save_sent.")


# -- the request body -------------------------------------------------------------------------
def _header_end(raw: bytes) -> int:
    """Where the header block ends (the empty line), or the end of ``raw``."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def _listed(raw: bytes) -> set[str]:
    """The addresses of the message's To, Cc and Bcc headers (lower case)."""
    # Internationalised messages (SMTPUTF8) carry their addresses as raw UTF-8 in the headers.
    head = raw[:_header_end(raw) + 4].decode("utf-8", "surrogateescape")
    headers = HeaderParser(policy=compat32).parsestr(head)
    fields = [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name, [])]
    return {addr.lower() for _, addr in email.utils.getaddresses(fields) if addr}


def graph_bytes(raw: bytes, recipients: Iterable[str]) -> bytes:
    """The message as posted to Graph: with a ``Bcc`` header naming the envelope's recipients
    that no To, Cc or Bcc header names (Graph delivers to the headers' addresses only).

    Raises ``InvalidRequest`` when the headers name someone the envelope does not (e.g. a resend
    to only the recipients that refused it once): Graph would send it to them too."""
    bcc = _bcc_header(raw, recipients)
    return bcc + raw if bcc else raw


def _bcc_header(raw: bytes, recipients: Iterable[str]) -> bytes:
    """The ``Bcc`` header ``graph_bytes`` puts in front of ``raw`` (or its header block), or
    b""."""
    listed = _listed(raw)
    wanted = {r.lower(): r for r in recipients}
    extra = sorted(listed - set(wanted))
    if extra:
        raise InvalidRequest(
            f"Microsoft Graph sends a message to every address in its To and Cc headers, and "
            f"this send is not meant for {', '.join(extra)}: send it over SMTP (transport smtp).")
    hidden = [address for key, address in wanted.items() if key not in listed]
    if not hidden:
        return b""
    eol = b"\r\n" if b"\r\n" in raw[:_header_end(raw) + 2] or not raw else b"\n"
    folded = (b"," + eol + b" ").join(a.encode("utf-8") for a in hidden)
    return b"Bcc: " + folded + eol


def check_message(head: bytes, size: int, recipients: Iterable[str]) -> None:
    """``check_size`` for a message before it is made into bytes (before it is kept in the
    outbox): ``head`` is its header block and ``size`` its size; the ``Bcc`` header that
    ``graph_bytes`` adds counts too. Exit 1 for a message Graph could never take."""
    check_size(size + len(_bcc_header(head, recipients)))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _graph_error(body: bytes) -> str:
    """``ErrorSendAsDenied: The user account which was used to submit this request does not
    have the right to send mail on behalf of the specified sending account`` from Graph's JSON
    error body, else the start of the body's text."""
    text = body[:4000].decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
        text = f"{code}: {message}" if code and message else code or message
    return " ".join(text.split())[:300].rstrip(".")


# -- one HTTP exchange, in a worker thread ------------------------------------------------------
@dataclass
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    reusable: bool

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def redact(self, secret: str) -> None:
        if len(secret) >= 3:
            self.body = self.body.replace(secret.encode("utf-8"), REDACTED.encode())
            self.headers = [(k, v.replace(secret, REDACTED)) for k, v in self.headers]


class _Failed(Exception):
    """A connection that broke while the request was going out (nothing can have been
    delivered) or while waiting for the answer (``after`` the whole request went out)."""

    def __init__(self, cause: BaseException, *, after: bool) -> None:
        super().__init__(str(cause))
        self.cause, self.after = cause, after


def _dropped(conn: http.client.HTTPSConnection) -> bool:
    """An idle kept connection the server has closed (readable means EOF or stray bytes)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _abort(conn: http.client.HTTPSConnection) -> None:
    """Close at once, also waking a thread blocked on the socket."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


class _Endpoint:
    """Where requests go: ``https://host[:port]/base`` split for http.client."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.path = (parts.path.rstrip("/") or "") + "/me/sendMail"
        self.where = self.host if self.port == 443 else f"{self.host}:{self.port}"
        self.name = f"Microsoft Graph at {self.where}"


class GraphTransport:
    """Delivers messages with Microsoft Graph's ``sendMail`` (see the module's docstring).

    ``settings`` are the defaults; an envelope's own ``settings`` win. Safe to share between
    the workers of a batch; ``aclose()`` closes the kept connections.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._idle: dict[tuple[Any, ...], list[http.client.HTTPSConnection]] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"GraphTransport({self.settings.graph_endpoint!r})"

    # -- the protocol ---------------------------------------------------------------------------
    async def deliver(self, envelope: Envelope, data: Data | Iterable[bytes]) -> Outcome | None:
        settings = envelope.settings or self.settings
        if envelope.size:
            check_size(envelope.size)
        check_settings(settings)
        from . import oauth

        config = oauth.OAuthConfig.from_settings(settings)
        body = await asyncio.to_thread(self._body, data, envelope.recipients)
        token = await self._token(config)
        answer = await self._post(settings, envelope, body, token)
        if answer.status == 401:  # expired or revoked early: one new token, one more try
            first = answer
            token = await self._token(config, refused=token.value)
            answer = await self._post(settings, envelope, body, token)
            if answer.status == 401:
                raise AuthFailed(
                    f"{_Endpoint(settings.graph_endpoint).name} refused the OAuth2 token twice "
                    f"({_graph_error(answer.body) or _graph_error(first.body) or '401'}): check "
                    f"that the app registration has the delegated permission Mail.Send and that "
                    f"oauth2_scopes is unset or includes {GRAPH_SCOPE}, then "
                    f"{oauth.HINT} {oauth.CLI_HINT}.", code=401)
        return self._outcome(settings, answer)

    async def check(self) -> GraphReport:
        """``--check`` for Graph: the settings, a token from the sign-in and a TLS connection to
        the endpoint. Nothing is posted (Graph has no request that tests Mail.Send without
        sending), so the token itself is first checked by Graph with the first message."""
        from . import oauth

        settings = self.settings
        check_settings(settings)
        endpoint = _Endpoint(settings.graph_endpoint)
        token = await self._token(oauth.OAuthConfig.from_settings(settings))
        conv = Conversation(endpoint.name, debug=settings.debug, secrets=(token.value,))
        conn = await self._connect(settings, endpoint, conv)
        sock = conn.sock
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        conn.close()
        who = token.identity or settings.username or "unknown"
        return GraphReport(
            host=endpoint.host, port=endpoint.port,
            greeting=f"Microsoft Graph sendMail at {endpoint.path} (nothing was sent)",
            tls="TLS", tls_version=version, authenticated=True,
            signed_in=f"an OAuth2 token for Graph, signed in as {who}"
                      f"{oauth.valid_until(token)} (Graph checks it with the first message)")

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        self.closed = True

    # -- the parts ------------------------------------------------------------------------------
    async def _token(self, config: OAuthConfig, *, refused: str | None = None) -> AccessToken:
        return await asyncio.to_thread(_token, config, refused)

    @staticmethod
    def _body(data: Data | Iterable[bytes], recipients: tuple[str, ...]) -> bytes:
        raw = b"".join(chunks_of(data))
        check_size(len(raw))
        posted = graph_bytes(raw, recipients)
        body = base64.b64encode(posted)
        if len(body) > MAX_REQUEST:  # the Bcc header tipped it over
            check_size(len(posted))
        return body

    def _take(self, settings: ConnectionSettings, endpoint: _Endpoint
              ) -> http.client.HTTPSConnection | None:
        kept = self._idle.get(self._key(settings, endpoint), [])
        while kept:
            conn = kept.pop()
            if not _dropped(conn):
                return conn
            conn.close()
        return None

    def _give(self, settings: ConnectionSettings, endpoint: _Endpoint,
              conn: http.client.HTTPSConnection) -> None:
        if self.closed:
            conn.close()
            return
        self._idle.setdefault(self._key(settings, endpoint), []).append(conn)

    @staticmethod
    def _key(settings: ConnectionSettings, endpoint: _Endpoint) -> tuple[Any, ...]:
        """What a kept connection must match: the endpoint, the trust and the proxy."""
        proxy = _proxy(endpoint)
        return (endpoint.host, endpoint.port, id(tls_context(settings)),
                proxy.where if proxy is not None else None)

    async def _connect(self, settings: ConnectionSettings, endpoint: _Endpoint,
                       conv: Conversation) -> http.client.HTTPSConnection:
        import http.client

        ctx = tls_context(settings)  # raises ConnectFailed for a cafile it cannot read
        proxy = _proxy(endpoint)
        if proxy is None:
            conn = http.client.HTTPSConnection(endpoint.host, endpoint.port, context=ctx,
                                               timeout=settings.timeout)
        else:  # a CONNECT tunnel; TLS (and the certificate check) end to end with Graph
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, context=ctx,
                                               timeout=settings.timeout)
            conn.set_tunnel(endpoint.host, endpoint.port, headers=proxy.headers)
        try:
            await asyncio.to_thread(conn.connect)
        except asyncio.CancelledError:
            _abort(conn)
            raise
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            if proxy is not None and not isinstance(exc, ssl.SSLError):
                raise ConnectFailed(f"Could not connect to {endpoint.where} through the proxy "
                                    f"{proxy.where} (HTTPS_PROXY): {_reason(exc)}.") from exc
            raise _connect_error(endpoint, settings, exc) from exc
        sock = conn.sock
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        via = f" through the proxy {proxy.where}" if proxy is not None else ""
        conv.note(f"connected to {endpoint.where}{via}" + (f" ({version})" if version else ""))
        return conn

    async def _post(self, settings: ConnectionSettings, envelope: Envelope, body: bytes,
                    token: AccessToken) -> _Answer:
        """One POST: everything but its last byte, then ``envelope.sending()``, then the last
        byte and the answer (``envelope.answered()`` once it came)."""
        endpoint = _Endpoint(settings.graph_endpoint)
        request_id = str(uuid.uuid4())
        headers = [("Authorization", f"Bearer {token.value}"), ("Content-Type", "text/plain"),
                   ("Content-Length", str(len(body))), ("Accept", "application/json"),
                   ("client-request-id", request_id), ("User-Agent", _user_agent())]
        kept = self._take(settings, endpoint)
        # A transcript per request (not per kept connection): it writes where the debug output
        # of this send goes, and a kept connection may serve the next send.
        conv = Conversation(endpoint.name, debug=settings.debug, secrets=(token.value,))
        conn = kept if kept is not None else await self._connect(settings, endpoint, conv)
        sending = False
        try:
            try:
                await asyncio.to_thread(_send_head, conn, endpoint.path, headers, body[:-1])
            except _Failed:
                if kept is None:
                    raise
                # A kept connection closed by the server meanwhile: nothing went out; afresh.
                conn.close()
                conn = await self._connect(settings, endpoint, conv)
                await asyncio.to_thread(_send_head, conn, endpoint.path, headers, body[:-1])
            _show_request(conv, endpoint, headers, body)
            envelope.sending()  # may raise (the outbox cannot be written): nothing more goes out
            sending = True
            answer = await asyncio.to_thread(_finish, conn, body[-1:])
        except _Failed as exc:
            conn.close()
            if sending and not exc.after:  # the last byte never left: not in doubt after all
                envelope.answered()
            raise self._failure(settings, endpoint, exc) from exc.cause
        except BaseException:
            _abort(conn)  # cancelled (the execution timeout) or sending() refused: drop it
            raise
        envelope.answered()
        answer.redact(token.value)  # an answer that echoes the token never shows it
        _show_answer(conv, answer)
        if answer.reusable:
            self._give(settings, endpoint, conn)
        else:
            conn.close()
        return answer

    def _failure(self, settings: ConnectionSettings, endpoint: _Endpoint,
                 failed: _Failed) -> SmtpMagicError:
        cause = failed.cause
        if not failed.after:
            if isinstance(cause, (ssl.SSLError, ConnectionRefusedError, socket.gaierror)):
                return _connect_error(endpoint, settings, cause)
            return TemporaryFailure(f"{endpoint.name} dropped the connection before the "
                                    "message was sent; it is kept in the outbox.")
        if isinstance(cause, TimeoutError):  # socket.timeout is TimeoutError
            return InDoubt(f"{endpoint.name} did not answer within {settings.timeout:g} s after "
                           f"the message was sent; {IN_DOUBT_NOTE}")
        return InDoubt(f"{endpoint.name} dropped the connection after the message was sent "
                       f"and before answering; {IN_DOUBT_NOTE}")

    def _outcome(self, settings: ConnectionSettings, answer: _Answer) -> Outcome | None:
        name = _Endpoint(settings.graph_endpoint).name
        status = answer.status
        reply = f"{status} {_graph_error(answer.body) or answer.reason}".strip()
        if 200 <= status < 300:
            return None
        wait = _retry_after(answer.header("Retry-After"))
        if status == 429 or (status == 503 and wait is not None):
            when = f"; it asked to wait {wait:g} s" if wait is not None else ""
            raise Throttled(f"{name} is throttling: {reply}{when}.", code=status, reply=reply,
                            retry_after=wait)
        if status >= 500:
            raise TemporaryFailure(f"{name} failed to take the message ({reply}); it is kept "
                                   "in the outbox.", code=status, reply=reply)
        if status == 413:
            raise Rejected(f"{name} refused the message as too large: {reply}.", code=status,
                           reply=reply)
        if 400 <= status < 500:
            hint = ""
            if "SendAs" in reply or "SendOnBehalf" in reply:
                hint = (" (the From address must be the signed-in mailbox, or one it may send "
                        "as)")
            elif status == 403:
                hint = " (the app registration needs the delegated permission Mail.Send)"
            elif status == 404:
                hint = f" (is graph_endpoint {settings.graph_endpoint!r} right?)"
            raise Rejected(f"{name} refused the message: {reply}{hint}.", code=status,
                           reply=reply)
        raise ConnectFailed(f"{name} answered {status} {answer.reason}, which is not a "
                            f"sendMail answer: is graph_endpoint {settings.graph_endpoint!r} "
                            "right?", code=status, reply=reply)


class GraphReport(ServerReport):
    """What ``--check`` learnt about Graph (no SMTP extensions to list)."""

    def lines(self) -> list[str]:
        return [line for line in super().lines() if not line.startswith("Extensions:")]


def _token(config: OAuthConfig, refused: str | None) -> AccessToken:
    """A token from the sign-in (worker thread; ``oauth.access_token`` refreshes one at a time
    per sign-in). After a 401 for ``refused``, a new one, unless another worker got one
    meanwhile."""
    from . import oauth

    token = oauth.access_token(config)
    if refused is not None and token.value == refused:
        token = oauth.access_token(config, force_refresh=True)
    return token


def _user_agent() -> str:
    import sys

    # The package's own __version__ (its parent is always imported first), as the CLI reads it.
    package = sys.modules.get(__package__ or "smtp_magic")
    return f"smtp-magic/{getattr(package, '__version__', 'unknown')}"


def _send_head(conn: http.client.HTTPSConnection, path: str, headers: list[tuple[str, str]],
               start: bytes) -> None:
    """The request line, the headers and all of the body but its last byte (worker thread)."""
    import http.client

    try:
        if conn.sock is None:
            conn.connect()
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(start)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise _Failed(exc, after=False) from exc


def _finish(conn: http.client.HTTPSConnection, last: bytes) -> _Answer:
    """The body's last byte, then the answer (worker thread)."""
    import http.client

    try:
        conn.send(last)
    except (OSError, ssl.SSLError) as exc:
        raise _Failed(exc, after=False) from exc  # the server never had the whole request
    try:
        response = conn.getresponse()
        body = response.read()
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise _Failed(exc, after=True) from exc
    return _Answer(response.status, response.reason, list(response.getheaders()), body,
                   not response.will_close)


@dataclass
class _Proxy:
    host: str
    port: int
    headers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _proxy(endpoint: _Endpoint) -> _Proxy | None:
    """The environment's proxy for HTTPS (``HTTPS_PROXY``, minus ``NO_PROXY``), as requests and
    curl read it, so that sign-in and sending go the same way; None for a direct connection."""
    import urllib.request
    from urllib.parse import unquote

    url = urllib.request.getproxies().get("https")
    if not url or urllib.request.proxy_bypass(endpoint.host):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http" or not parts.hostname or not port:
        shown = f"{parts.scheme}://{parts.hostname or ''}"  # never its password
        raise ConfigError(f"HTTPS_PROXY {shown!r} cannot be used: Microsoft Graph is reached "
                          "through an http://HOST:PORT proxy only.")
    headers = {}
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
    return _Proxy(parts.hostname, port, headers)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, socket.gaierror):
        return "its host name could not be resolved"
    return " ".join(str(exc).split()) or type(exc).__name__  # "Tunnel connection failed: 407 ..."


def _connect_error(endpoint: _Endpoint, settings: ConnectionSettings,
                   exc: BaseException) -> ConnectFailed:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailed(f"The TLS certificate of {endpoint.where} could not be verified "
                             f"({exc.verify_message or exc.reason}); trust its CA with cafile "
                             "or SSL_CERT_FILE.")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed(f"The TLS handshake with {endpoint.where} failed "
                             f"({exc.reason or exc}).")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"The host name {endpoint.host!r} of graph_endpoint could not be "
                             "resolved.")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"Could not connect to {endpoint.where}: the connection was "
                             "refused.")
    if isinstance(exc, TimeoutError):
        return ConnectFailed(f"Could not connect to {endpoint.where} within "
                             f"{settings.timeout:g} s.")
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ConnectFailed(f"Could not connect to {endpoint.where}: {detail}.")


# -- the debug conversation ---------------------------------------------------------------------
_SHOWN_ANSWER_HEADERS = ("content-type", "retry-after", "request-id", "client-request-id",
                         "www-authenticate")
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def _show_request(conv: Conversation, endpoint: _Endpoint, headers: list[tuple[str, str]],
                  body: bytes) -> None:
    if not conv.active:
        return
    conv.line(">", f"POST {endpoint.path} HTTP/1.1")
    conv.line(">", f"Host: {endpoint.where}")
    for name, value in headers:
        shown = f"Bearer {REDACTED}" if name.lower() == "authorization" else value
        conv.line(">", f"{name}: {shown}")
    conv.line(">", f"(message: {len(body) // 4 * 3:,} bytes, base64: {len(body):,} bytes)")


def _show_answer(conv: Conversation, answer: _Answer) -> None:
    if not conv.active:
        return
    conv.line("<", f"HTTP/1.1 {answer.status} {answer.reason}")
    for name, value in answer.headers:
        if name.lower() in _SHOWN_ANSWER_HEADERS:
            conv.line("<", f"{name}: {_BEARER.sub(lambda m: m.group(1) + REDACTED, value)}")
    if answer.body:
        text = answer.body[:2000].decode("utf-8", "replace")
        conv.line("<", _BEARER.sub(lambda m: m.group(1) + REDACTED, " ".join(text.split())))
