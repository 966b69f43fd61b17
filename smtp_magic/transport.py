"""The only aiosmtplib user: TLS modes, login, transactions, reused connections, and the SMTP
transport (``SmtpTransport``: ``deliver(envelope, data)`` over a pool of connections)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import logging
import os
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from . import _shortcuts
from .config import ConnectionSettings
from .conversation import Conversation
from .delivery import Data, Envelope, Outcome, Payload
from .errors import (
    IN_DOUBT_NOTE,
    AuthFailed,
    ConnectFailed,
    InDoubt,
    OutboxUnwritable,
    Rejected,
    SendTimeout,
    SmtpMagicError,
    TemporaryFailure,
)

if TYPE_CHECKING:  # aiosmtplib is imported when the first connection is opened
    import aiosmtplib

    from ._pipeline import Channel, Trace

log = logging.getLogger(__name__)

__all__ = [
    "Data",
    "Envelope",
    "Outcome",
    "Payload",
    "ServerReport",
    "Session",
    "SmtpTransport",
    "Upcoming",
    "check_connection",
    "data_chunks",
    "tls_context",
]



class _Transient(TemporaryFailure):
    """A failure worth retrying (4xx, or a connection dropped before the end of the message
    went out; a drop after it is ``InDoubt``)."""


@dataclass
class ServerReport:
    """What ``check_connection`` learnt about a server; nothing was sent."""

    host: str
    port: int
    greeting: str
    tls: str  # "implicit", "STARTTLS" or "none"
    tls_version: str | None
    authenticated: bool
    extensions: dict[str, str] = field(default_factory=dict)
    signed_in: str | None = None  # OAuth2: who signed in and until when (never the token)

    def lines(self) -> list[str]:
        out = [f"Connected to {self.host}:{self.port}: {self.greeting}"]
        out.append(f"Encryption: {self.tls}" + (f" ({self.tls_version})" if self.tls_version else ""))
        if self.signed_in:
            out.append(f"Login: {self.signed_in}")
        else:
            out.append("Login: succeeded" if self.authenticated
                       else "Login: not attempted (no password)")
        exts = ", ".join(f"{k.upper()} {v}".strip() for k, v in sorted(self.extensions.items()))
        out.append(f"Extensions: {exts or '(none)'}")
        return out


def tls_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """The system trust store (honouring SSL_CERT_FILE), plus ``cafile`` when set.

    Building a context reads the whole trust store (~30 ms), so one context is kept per
    combination of what it depends on and shared by every connection; it is built only when a
    connection actually negotiates TLS.
    """
    env = os.environ
    return _tls_context(settings.cafile or None, _mtime(settings.cafile),
                        bool(settings.validate_certs), env.get("SSL_CERT_FILE"),
                        _mtime(env.get("SSL_CERT_FILE")), env.get("SSL_CERT_DIR"))


def _mtime(path: str | None) -> float | None:
    """When ``path`` last changed (a rewritten CA file is read again), or None."""
    try:
        return os.stat(path).st_mtime if path else None
    except OSError:
        return None


@functools.lru_cache(maxsize=8)
def _tls_context(cafile: str | None, _cafile_mtime: float | None, validate_certs: bool,
                 _cert_file: str | None, _cert_file_mtime: float | None,
                 _cert_dir: str | None) -> ssl.SSLContext:
    # SSL_CERT_FILE and SSL_CERT_DIR are part of the key: create_default_context() reads them.
    ctx = ssl.create_default_context()
    if cafile:
        try:
            ctx.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"The CA file {cafile!r} cannot be used: {exc}.") from exc
    if not validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _where(settings: ConnectionSettings) -> str:
    return f"{settings.host}:{settings.port}"


def _reply(exc: Any) -> str:
    """``550 5.1.1 no such user`` from an aiosmtplib response exception."""
    text = " ".join(str(getattr(exc, "message", "") or "").split())
    return f"{exc.code} {text}".strip()


def _answered(cls: type[SmtpMagicError], message: str, exc: Any) -> SmtpMagicError:
    """``cls(message)`` carrying the server's reply (``code``, ``reply``) from ``exc``."""
    return cls(message, code=exc.code, reply=_reply(exc))


def _connect_error(settings: ConnectionSettings, exc: BaseException) -> SmtpMagicError:
    import aiosmtplib

    where = _where(settings)
    cause = exc.__cause__ or exc.__context__
    for err in (exc, cause):
        if isinstance(err, ssl.SSLCertVerificationError):
            return ConnectFailed(
                f"The TLS certificate of {where} could not be verified "
                f"({err.verify_message or err.reason}); trust its CA with cafile or SSL_CERT_FILE."
            )
        if isinstance(err, ssl.SSLError):
            return ConnectFailed(f"The TLS handshake with {where} failed ({err.reason or err}).")
        if isinstance(err, socket.gaierror):
            return ConnectFailed(f"The host name {settings.host!r} could not be resolved.")
        if isinstance(err, ConnectionRefusedError):
            return ConnectFailed(f"Could not connect to {where}: the connection was refused.")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        if 400 <= exc.code < 500:
            return _answered(_Transient, f"{where} is not accepting mail right now: {_reply(exc)}.", exc)
        return _answered(ConnectFailed, f"{where} refused the session: {_reply(exc)}.", exc)
    # aiosmtplib wraps a hang-up before the greeting in SMTPConnectError; it is still a drop.
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected) or isinstance(
        cause, aiosmtplib.SMTPServerDisconnected
    ):
        return _Transient(f"{where} closed the connection before the session started.")
    detail = " ".join(str(cause or exc).split()) or type(exc).__name__
    return ConnectFailed(f"Could not connect to {where}: {detail}.")


# -- the DATA payload and pipelined commands (what aiosmtplib lacks) ------------------------------

_timeout = getattr(asyncio, "timeout", None)
_GREETING_GRACE = 1.0  # seconds of silence before asking whether the port speaks implicit TLS
_SMTP_REPLY = re.compile(rb"\d{3}[ -]")


async def _probe_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (on a second, short-lived connection)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # any TLS at all will do
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), timeout)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def _probe_smtp(host: str, port: int, timeout: float) -> str | None:
    """The plain-text SMTP greeting of ``host:port`` (on a second connection), or None."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if _SMTP_REPLY.match(line):
            writer.write(b"QUIT\r\n")
            return line.decode("utf-8", "replace").strip()
        return None
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()


def _tls_mismatch(exc: BaseException) -> bool:
    """A TLS handshake that failed on something that is not TLS (not a certificate problem)."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, ssl.SSLCertVerificationError):
            return False
        if isinstance(err, ssl.SSLError):
            return True
    return False
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f<>]")
_SLICE = 1 << 20  # large payloads go to the socket a megabyte at a time


def _normalized(chunk: bytes) -> bool:
    """Whether every line end in ``chunk`` is CRLF: no CR or LF is left once each CRLF is
    replaced. A same-length replacement is one search pass (plus a copy), and the two ``in``
    tests are memchr; counting LF, CR and CRLF took three slower passes."""
    rest = chunk.replace(b"\r\n", b"  ")
    return b"\r" not in rest and b"\n" not in rest


def data_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The DATA payload of a message: CRLF line ends, leading dots doubled, then ``.``.

    The same transformation as aiosmtplib's ``execute_data_command`` (and smtplib's), done a
    chunk at a time, so a large message never exists as one bytes object plus its copies.
    """
    at_line_start, ended, carry = True, False, b""  # ended: the last byte sent ends a line
    for chunk in chunks:
        if carry:
            chunk, carry = carry + chunk, b""
        if chunk.endswith(b"\r"):  # its LF may start the next chunk
            chunk, carry = chunk[:-1], b"\r"
        if not chunk:
            continue
        if not _normalized(chunk):
            chunk = _LINE_ENDINGS.sub(b"\r\n", chunk)
        if at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        chunk = chunk.replace(b"\n.", b"\n..")
        at_line_start = ended = chunk.endswith(b"\n")
        yield chunk
    if carry:
        yield b"\r\n"
        ended = True
    yield b".\r\n" if ended else b"\r\n.\r\n"


def _bytes_chunks(data: bytes) -> Iterator[bytes]:
    if len(data) <= _SLICE:
        yield data
        return
    view = memoryview(data)
    for start in range(0, len(data), _SLICE):
        yield bytes(view[start:start + _SLICE])


def _size(data: Data) -> int:
    return len(data) if isinstance(data, (bytes, bytearray)) else data.size


def _payload(data: Data) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray)):
        if len(data) <= _SLICE:  # one write for a small message
            return iter((b"".join(data_chunks((bytes(data),))),))
        return data_chunks(_bytes_chunks(bytes(data)))
    return data_chunks(data.chunks())


_tapped_class: type | None = None


def _smtp_class() -> type[aiosmtplib.SMTP]:
    """aiosmtplib's SMTP client, reporting every command and reply to its ``conversation``.

    Every command outside a mail transaction (EHLO, AUTH and its SASL lines, RSET, QUIT...)
    goes through the public ``execute_command``; the greeting and STARTTLS are reported where
    ``Session`` runs them, the transactions by the pipelining channel's trace.
    """
    global _tapped_class
    if _tapped_class is None:
        import aiosmtplib

        class TappedSMTP(aiosmtplib.SMTP):  # type: ignore[misc]
            conversation: Conversation | None = None

            # AUTH PLAIN and LOGIN put their initial response on the AUTH line, even when that
            # makes it longer than SMTP allows (RFC 4954 §4): these send it after a 334 then.
            async def auth_plain(self, username: str | bytes, password: str | bytes,
                                 **kwargs: Any) -> Any:
                blob = b"\0" + _as_bytes(username) + b"\0" + _as_bytes(password)
                response = await sasl_start(self, b"PLAIN", base64.b64encode(blob), **kwargs)
                if response.code != 235:
                    raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
                return response

            async def auth_login(self, username: str | bytes, password: str | bytes,
                                 **kwargs: Any) -> Any:
                user = base64.b64encode(_as_bytes(username))
                response = await sasl_start(self, b"LOGIN", user, **kwargs)
                if response.code == 334:
                    response = await self.execute_command(
                        base64.b64encode(_as_bytes(password)), **kwargs)
                if response.code != 235:
                    raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
                return response

            async def execute_command(self, *args: bytes, **kwargs: Any) -> Any:
                conv = self.conversation
                if conv is None:
                    return await super().execute_command(*args, **kwargs)
                conv.command(*args)
                try:
                    response = await super().execute_command(*args, **kwargs)
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
                    conv.note(f"no reply: {exc}")
                    raise
                conv.reply(response.code, response.message)
                return response

        _tapped_class = TappedSMTP
    return _tapped_class


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


_LINE_LIMIT = 512  # octets in an SMTP command line, CRLF included (RFC 5321 §4.5.3.1.4)


async def sasl_start(smtp: aiosmtplib.SMTP, mechanism: bytes, response: bytes,
                     **kwargs: Any) -> Any:
    """``AUTH <mechanism> <initial response>``, or, when that line would be longer than SMTP
    allows, ``AUTH <mechanism>`` alone and the response after the server's ``334`` (RFC 4954
    §4; Dovecot answers a long AUTH line with ``500 5.5.2 Line too long``). Returns the reply
    to the response (or to the AUTH command, if it was not a 334)."""
    if len(b"AUTH " + mechanism + b" " + response + b"\r\n") <= _LINE_LIMIT:
        return await smtp.execute_command(b"AUTH", mechanism, response, **kwargs)
    reply = await smtp.execute_command(b"AUTH", mechanism, **kwargs)
    if reply.code != 334:
        return reply
    return await smtp.execute_command(response, **kwargs)


def _conversation(smtp: Any) -> Conversation | None:
    return getattr(smtp, "conversation", None)


def _address(address: str, smtputf8: bool) -> bytes:
    raw = address.encode("utf-8" if smtputf8 else "ascii")
    if _CONTROL.search(raw):
        raise ValueError(f"address {address!r} contains a prohibited character")
    return b"<" + raw + b">"


def envelope_commands(smtp: aiosmtplib.SMTP, sender: str, recipients: tuple[str, ...],
                      size: int, smtputf8: bool) -> list[bytes]:
    """MAIL FROM (with SIZE and SMTPUTF8 when they apply) and one RCPT TO per recipient."""
    mail = b"MAIL FROM:" + _address(sender, smtputf8)
    if "size" in smtp.esmtp_extensions:  # (supports_extension, without a call per message)
        mail += b" SIZE=%d" % size
    if smtputf8:
        mail += b" SMTPUTF8"
    commands = [mail + b"\r\n"]
    for r in recipients:
        commands.append(b"RCPT TO:" + _address(r, smtputf8) + b"\r\n")
    return commands


# Servers known to break on an envelope sent with the end of the previous message's data,
# though RFC 2920 §3.1 allows it: Dovecot 2.3's submission service fails an assertion and drops
# the connection (the message is then in doubt). They are told by their greeting; a server that
# drops a connection right after such a write is remembered too, for the rest of the process.
_AHEAD_UNSAFE = re.compile(r"\bDovecot\b", re.IGNORECASE)
_no_ahead: set[tuple[str, int]] = set()


class Upcoming(NamedTuple):
    """The message a connection sends next: its envelope may go out ahead, in the same write
    as the end of the current message's data (see ``Session.upcoming``). A tuple (made per
    message): a transaction compares the envelope sent ahead with its own in one comparison."""

    sender: str
    recipients: tuple[str, ...]
    size: int
    smtputf8: bool


async def _send_message(
    smtp: aiosmtplib.SMTP, channel: Channel | None, sender: str, recipients: tuple[str, ...],
    data: Data, smtputf8: bool, sending: Callable[[], None] = lambda: None,
    upcoming: Callable[[], Upcoming | None] | None = None, size: int | None = None,
) -> dict[str, Any]:
    """One mail transaction; returns the refused recipients as aiosmtplib's ``sendmail`` does
    and raises aiosmtplib's exceptions, whichever path carries it.

    With a ``Channel`` (the pipelining shortcut) MAIL, RCPT... and DATA go out together when
    the server offers PIPELINING (RFC 2920) and the payload is streamed; the envelope of the
    message ``upcoming()`` names (asked only then) goes out with the end of the data when every
    recipient was accepted or refused for good (so that this message needs no second
    transaction first). Without a
    channel, this is aiosmtplib's public API (``mail``, ``rcpt``, ``data``).
    """
    if channel is None:
        return await _send_public(smtp, sender, recipients, data, smtputf8, sending)
    import aiosmtplib

    if smtputf8 and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    timeout = smtp.timeout
    if size is None:
        size = _size(data)
    pipelining = "pipelining" in smtp.esmtp_extensions  # (supports_extension("pipelining"))
    refused: dict[str, Any] = {}
    try:
        if pipelining:
            # Sent ahead, the envelope is known by what it was made of (the same commands):
            # no need to make them again to recognise it.
            replies = await channel.prefetched((sender, recipients, size, smtputf8), timeout)
            if replies is None:
                envelope = b"".join(envelope_commands(smtp, sender, recipients, size,
                                                      smtputf8)) + b"DATA\r\n"
                replies = await channel.exchange(envelope, len(recipients) + 2, timeout)
            mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        else:
            commands = envelope_commands(smtp, sender, recipients, size, smtputf8)
            (mail_reply,) = await channel.exchange(commands[0], 1, timeout)
            rcpt_replies, data_reply = [], None
            if mail_reply.code == 250:
                for command in commands[1:]:
                    rcpt_replies += await channel.exchange(command, 1, timeout)
        if mail_reply.code != 250:
            await _end_data(channel, data_reply, timeout)
            raise aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        for rcpt, reply in zip(recipients, rcpt_replies):
            if reply.code not in (250, 251):
                refused[rcpt] = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt)
        if len(refused) == len(recipients):
            await _end_data(channel, data_reply, timeout)
            raise aiosmtplib.SMTPRecipientsRefused(list(refused.values()))
        if data_reply is None:
            (data_reply,) = await channel.exchange(b"DATA\r\n", 1, timeout)
        if data_reply.code != 354:
            raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        try:  # reset the envelope for the next message, as aiosmtplib's sendmail does
            await channel.exchange(b"RSET\r\n", 1, timeout)
        except (ConnectionError, aiosmtplib.SMTPException):
            pass
        raise
    then, then_replies = b"", 0
    after = (upcoming() if upcoming is not None and pipelining
             and not (refused and any(400 <= r.code < 500 for r in refused.values())) else None)
    if after is not None and (not after.smtputf8 or smtp.supports_extension("smtputf8")):
        then = b"".join(envelope_commands(smtp, after.sender, after.recipients,
                                          after.size, after.smtputf8)) + b"DATA\r\n"
        then_replies = len(after.recipients) + 2
    # ``sending`` runs just before the write that carries the final ".": until then a drop
    # delivers nothing and the message may be sent again; from then on it is in doubt.
    (reply,) = await channel.exchange(b"", 1, timeout, _payload(data), size,
                                      then, then_replies, ending=sending, then_key=after)
    # The end of the data ends the transaction whatever the reply (RFC 5321 §4.1.1.4): no RSET,
    # which would also reset an envelope sent ahead.
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return refused


async def _send_public(
    smtp: aiosmtplib.SMTP, sender: str, recipients: tuple[str, ...], data: Data, smtputf8: bool,
    sending: Callable[[], None],
) -> dict[str, Any]:
    """The same transaction through aiosmtplib's public ``mail``, ``rcpt`` and ``data``, as its
    ``sendmail`` does it (no PIPELINING; the message is held whole in memory); ``sending()``
    runs before DATA (``data`` sends the content and the final "." in one go)."""
    import aiosmtplib

    if smtputf8 and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    message = bytes(data) if isinstance(data, (bytes, bytearray)) else b"".join(data.chunks())
    options = ["SMTPUTF8"] if smtputf8 else []
    if smtp.supports_extension("size"):
        options.insert(0, f"SIZE={len(message)}")
    encoding = "utf-8" if smtputf8 else "ascii"
    refused: dict[str, Any] = {}
    try:
        await smtp.mail(sender, options=options, encoding=encoding)
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = exc
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(list(refused.values()))
        sending()
        await smtp.data(message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        try:  # reset the envelope for the next message, as sendmail does
            await smtp.rset()
        except (ConnectionError, aiosmtplib.SMTPException):
            pass
        raise
    return refused


async def _end_data(channel: Channel, data_reply: Any, timeout: float | None) -> None:
    """A server that accepted DATA after refusing the envelope gets an empty message ending."""
    if data_reply is not None and data_reply.code == 354:
        await channel.exchange(b".\r\n", 1, timeout)


# -- OAuth2 sign-in (SASL XOAUTH2 / OAUTHBEARER) -------------------------------------------------

_MICROSOFT_GUIDANCE = (
    " Microsoft 365 no longer accepts passwords for SMTP (basic authentication is off): sign in "
    "with OAuth2, `%smtp_config --oauth2-provider microsoft --oauth2-client-id APP-ID "
    "--oauth2-login` (host smtp.office365.com, port 587, starttls; see the README, 'Microsoft 365 "
    "with OAuth2'). If OAuth2 is already in use, an admin must enable Authenticated SMTP for "
    "the mailbox."
)
_GOOGLE_GUIDANCE = (
    " Google wants an app password (with 2-Step Verification) or OAuth2: `%smtp_config "
    "--oauth2-provider google --oauth2-client-id client_secret.json --oauth2-login` (host "
    "smtp.gmail.com, port 465, tls; see the README, 'Google with OAuth2')."
)


def provider_guidance(reply: str) -> str:
    """What to do about the providers' well-known login refusals, or ''."""
    if "5.7.139" in reply or "5.7.30" in reply:
        return _MICROSOFT_GUIDANCE
    if "5.7.9" in reply and reply.startswith("534"):
        return _GOOGLE_GUIDANCE
    return ""


_OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")  # in order of preference
# Replies to AUTH that say the command itself was not understood (syntax, line too long, not
# implemented, unknown mechanism): no credential was judged, so signing in again cannot help.
_NOT_UNDERSTOOD = (500, 501, 502, 504)


def not_understood(where: str, command: str, reply: str) -> ConnectFailed:
    return ConnectFailed(f"{where} did not understand the sign-in command ({command}): "
                         f"{reply}; the credentials were not checked and nothing was sent.",
                         code=int(reply[:3]) if reply[:3].isdigit() else None, reply=reply)


async def _sasl(smtp: aiosmtplib.SMTP, mechanism: str, blob: bytes) -> tuple[Any, str]:
    """One AUTH exchange; returns the final reply and the decoded JSON error challenge, if any.

    (aiosmtplib's own ``auth_xoauth2`` answers the challenge but drops what it said.)
    """
    import base64

    from .oauth import decode_challenge

    reply = await sasl_start(smtp, mechanism.encode(), base64.b64encode(blob))
    detail = ""
    if reply.code == 334:  # the error challenge: acknowledge it to get the final reply
        detail = decode_challenge(reply.message)
        reply = await smtp.execute_command(b"" if mechanism == "XOAUTH2" else b"AQ==")
    return reply, detail


async def oauth_login(smtp: aiosmtplib.SMTP, s: ConnectionSettings, *, encrypted: bool) -> str:
    """Sign in with a bearer token; retried once with a refreshed token when refused.

    Returns who signed in, and until when, for ``--check``. The token is checked for TLS before
    it is even fetched, and never appears in a message.
    """
    from . import oauth

    where = _where(s)
    if not encrypted:
        raise AuthFailed(f"Signing in to {where} with OAuth2 needs an encrypted connection; "
                         "nothing was sent. Use security 'starttls' or 'tls'.")
    if smtp.is_ehlo_or_helo_needed:  # after STARTTLS
        await smtp.ehlo()
    offered = {m.upper() for m in smtp.server_auth_methods}
    mechanism = next((m for m in _OAUTH_MECHANISMS if m in offered), None)
    if mechanism is None:
        shown = " ".join(sorted(offered)) or "no AUTH at all"
        raise AuthFailed(f"{where} does not offer OAuth2 sign-in (XOAUTH2 or OAUTHBEARER), only "
                         f"{shown}; set auth to 'password' for this server.")
    config = oauth.OAuthConfig.from_settings(s)
    for attempt in (1, 2):
        token = await asyncio.to_thread(oauth.access_token, config, force_refresh=attempt == 2)
        user = s.username or token.identity
        if not user:
            raise AuthFailed("OAuth2 sign-in needs the mailbox address: set username.")
        blob = (oauth.sasl_xoauth2(user, token.value) if mechanism == "XOAUTH2"
                else oauth.sasl_oauthbearer(user, token.value, s.host, s.port))
        conv = _conversation(smtp)
        if conv is not None:  # AUTH lines are redacted anyway; this scrubs any other echo
            conv.add_secrets(token.value, base64.b64encode(blob).decode("ascii"), username=user)
        reply, detail = await _sasl(smtp, mechanism, blob)
        if reply.code == 235:
            return f"signed in with OAuth2 ({mechanism}) as {user}{oauth.valid_until(token)}"
        text = f"{reply.code} {' '.join(reply.message.split())}".strip()
        if 400 <= reply.code < 500:
            raise _Transient(f"{where} could not check the OAuth2 sign-in now: {text}.",
                             code=reply.code, reply=text)
        if reply.code in _NOT_UNDERSTOOD:  # a protocol problem: a new token would not help
            raise not_understood(where, f"AUTH {mechanism}", text)
        if reply.code != 535:  # only "credentials invalid" is worth a fresh token
            break
    said = f" (the server said: {detail})" if detail else ""
    raise AuthFailed(f"{where} refused the OAuth2 token for {user!r}: {text}{said}."
                     f"{provider_guidance(text)}", code=reply.code, reply=text)


_fqdn: concurrent.futures.Future[str] | None = None
_fqdn_lock = threading.Lock()


def look_up_local_hostname() -> concurrent.futures.Future[str]:
    """``socket.getfqdn()``, the name smtplib and aiosmtplib give in EHLO, looked up once per
    process in a thread of its own (it may wait on DNS); aiosmtplib would start a thread per
    connection for it."""
    global _fqdn
    with _fqdn_lock:
        if _fqdn is None:
            found = _fqdn = concurrent.futures.Future()
            found.set_running_or_notify_cancel()  # a send that gives up waiting cannot cancel it

            def look_up() -> None:
                try:
                    found.set_result(socket.getfqdn())
                except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits it
                    found.set_exception(exc)

            threading.Thread(target=look_up, name="smtp_magic-getfqdn", daemon=True).start()
        return _fqdn


class Session:
    """One SMTP connection, opened on first use and reused for later messages."""

    def __init__(self, settings: ConnectionSettings, password: str | None,
                 next_up: Callable[[Session], Upcoming | None] | None = None) -> None:
        self.settings = settings
        self._password = password
        self._smtp: aiosmtplib.SMTP | None = None
        self._channel: Channel | None = None  # the pipelining shortcut, when it took over
        self.encrypted = False
        self.conversation: Conversation | None = None  # of the current connection
        self.signed_in: str | None = None
        self._trace: Trace | None = None
        self.phase = "closed"  # name, connect, tls, login, ehlo, ready: where a stall would be
        # Names the message this connection carries next, if one is waiting for it (the
        # transport's lane, which then hands this connection to that message): its envelope
        # may go out ahead, with the end of the data, unless the server is known not to take
        # that (``_AHEAD_UNSAFE``, ``_no_ahead``).
        self._next_up = next_up
        self._send_ahead = True
        self._claimed: Upcoming | None = None  # what ``_next_up`` named in this transaction
        self._ahead: Upcoming | None = None  # the envelope the server has, awaiting its data
        self.went_stale = False  # the last transaction found its kept connection dropped

    def __repr__(self) -> str:
        state = "open" if self._smtp is not None else "closed"
        return f"<Session {_where(self.settings)} {state}>"

    @property
    def trace(self) -> Trace | None:
        """Called with ("C", command) and ("S", reply) for each line of the mail transactions
        (the message itself only as its size); the one place to log the conversation."""
        return self._trace

    @trace.setter
    def trace(self, trace: Trace | None) -> None:
        self._trace = trace
        if self._channel is not None:
            self._channel.trace = trace

    @property
    def is_open(self) -> bool:
        if self._channel is not None:
            return self._channel.is_open
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self.is_open:
            return self._smtp
        self.abort()
        import aiosmtplib

        s = self.settings
        if s.auth == "oauth2":  # settings that can never sign in: exit 1, before connecting
            from .oauth import OAuthConfig

            OAuthConfig.from_settings(s).validate()
        self.phase = "name"
        local_hostname = await asyncio.wrap_future(look_up_local_hostname())
        smtp = _smtp_class()(
            hostname=s.host, port=s.port, use_tls=s.implicit_tls, start_tls=False,
            tls_context=tls_context(s) if s.implicit_tls else None,
            validate_certs=s.validate_certs, timeout=s.timeout, local_hostname=local_hostname,
        )
        conv = self.conversation = Conversation(
            _where(s), debug=s.debug, secrets=(self._password,), username=s.username)
        smtp.conversation = conv  # type: ignore[attr-defined]  # see _smtp_class
        conv.note(f"connecting to {_where(s)}" + (" (implicit TLS)" if s.implicit_tls else ""))
        try:
            self.phase = "connect"
            greeting = await self._connect(smtp)
            conv.reply(greeting.code, greeting.message)
            self._send_ahead = ((s.host, s.port) not in _no_ahead
                                and not _AHEAD_UNSAFE.search(greeting.message))
            self.encrypted = s.implicit_tls
            if self.encrypted:
                self._note_tls(smtp)
            self.phase = "tls"
            await self._negotiate(smtp)
            self.phase = "login"
            await self._login(smtp)
            self.phase = "ehlo"
            await self._greet(smtp)
        except SmtpMagicError as exc:
            smtp.close()
            conv.note(f"gave up: {exc}")
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            conv.note(f"login refused: {_reply(exc)}")
            if 400 <= exc.code < 500:
                raise _answered(_Transient, f"{_where(s)} could not check the login now: "
                                f"{_reply(exc)}.", exc) from exc
            if exc.code in _NOT_UNDERSTOOD:
                raise not_understood(_where(s), "AUTH", _reply(exc)) from exc
            raise _answered(AuthFailed, f"{_where(s)} refused the login for {s.username!r}: "
                            f"{_reply(exc)}.{provider_guidance(_reply(exc))}", exc) from exc
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            smtp.close()
            conv.note(f"connection failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, asyncio.TimeoutError | aiosmtplib.SMTPTimeoutError):
                raise self.stalled() from exc
            if s.implicit_tls and self.phase == "connect" and _tls_mismatch(exc):
                greeting = await _probe_smtp(s.host, s.port, min(2.0, s.timeout))
                if greeting is not None:
                    raise ConnectFailed(
                        f"{_where(s)} speaks plain SMTP, not implicit TLS (it greeted "
                        f"{greeting[:60]!r}): use security 'starttls' (or 'auto')."
                    ) from exc
            raise _connect_error(s, exc) from exc
        except BaseException:  # cancelled (the execution timeout): leave no socket behind
            smtp.close()
            raise
        self.phase = "ready"
        self._smtp = smtp
        transport = _shortcuts.take_transport(smtp)
        if transport is not None:
            from ._pipeline import Channel

            # The transactions are reported to the conversation when someone listens.
            trace = self.trace or (conv.trace if conv.active else None)
            self._channel = Channel.take(transport, trace)
        return smtp

    async def _connect(self, smtp: aiosmtplib.SMTP) -> Any:
        """aiosmtplib's connect (TCP, TLS if implicit, the greeting), failing fast when a port
        that should greet in plain text turns out to speak implicit TLS (it waits silently for
        a TLS handshake, so nothing would happen until the timeout)."""
        s = self.settings
        connecting = asyncio.ensure_future(smtp.connect())
        probe: asyncio.Future[bool] | None = None
        try:
            done, _ = await asyncio.wait({connecting}, timeout=min(_GREETING_GRACE, s.timeout))
            if not done and not s.implicit_tls:
                probe = asyncio.ensure_future(_probe_tls(s.host, s.port, min(3.0, s.timeout)))
                await asyncio.wait({connecting, probe}, return_when=asyncio.FIRST_COMPLETED)
                if not connecting.done() and probe.done() and probe.result():
                    raise ConnectFailed(
                        f"{_where(s)} speaks implicit TLS and sends no plain SMTP greeting"
                        f"{' (port 465 is the implicit-TLS port)' if s.port == 465 else ''}: "
                        "use security 'tls'; nothing was sent."
                    )
            return await connecting  # the greeting
        finally:
            for task in (connecting, probe):
                if task is not None and not task.done():
                    task.cancel()

    def _note_tls(self, smtp: aiosmtplib.SMTP) -> None:
        conv = self.conversation
        if conv is not None and conv.active:
            info = smtp.get_transport_info("ssl_object")
            version = info.version() if info is not None else None
            conv.note("TLS established" + (f" ({version})" if version else ""))

    def stalled(self) -> SmtpMagicError:
        """The error for a timeout in the current phase; before any data it is not 'unknown'."""
        s, where = self.settings, _where(self.settings)
        if self.phase == "name":
            return ConnectFailed(f"Looking up this machine's own name (for EHLO) took over "
                                 f"{s.timeout:g} s (check its DNS settings), so {where} was "
                                 "never contacted; nothing was sent.")
        if self.phase == "connect":
            what = ("did not complete the TLS handshake and greet" if s.implicit_tls
                    else "sent no SMTP greeting")
            return ConnectFailed(f"{where} {what} within {s.timeout:g} s; nothing was sent.")
        if self.phase == "tls":
            return ConnectFailed(f"{where} did not finish STARTTLS within {s.timeout:g} s; "
                                 "nothing was sent.")
        if self.phase in ("login", "ehlo"):
            return ConnectFailed(f"{where} did not answer the {self.phase.upper()} within "
                                 f"{s.timeout:g} s; nothing was sent.")
        return SendTimeout(f"{where} stopped answering.")

    async def _greet(self, smtp: aiosmtplib.SMTP) -> None:
        """EHLO (or HELO) once before the first transaction, if TLS and login did not."""
        import aiosmtplib

        if smtp.is_ehlo_or_helo_needed:
            try:
                await smtp.ehlo()
            except aiosmtplib.SMTPHeloError:
                await smtp.helo()

    async def _negotiate(self, smtp: aiosmtplib.SMTP) -> None:
        import aiosmtplib

        s = self.settings
        if s.implicit_tls or s.security == "none":
            return
        await smtp.ehlo()
        if smtp.supports_extension("starttls"):
            conv = self.conversation
            if conv is not None:
                conv.command(b"STARTTLS")
            try:
                response = await smtp.starttls(tls_context=tls_context(s))
            except aiosmtplib.SMTPResponseException as exc:
                if conv is not None:
                    conv.reply(exc.code, exc.message)
                raise
            if conv is not None:
                conv.reply(response.code, response.message)
            self.encrypted = True
            self._note_tls(smtp)
        elif s.security == "starttls":
            # Never fall back to plaintext when encryption was asked for.
            raise ConnectFailed(
                f"{_where(s)} does not offer STARTTLS, and security is 'starttls'; "
                "nothing was sent in plaintext."
            )

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        s = self.settings
        if s.auth == "oauth2":
            self.signed_in = await oauth_login(smtp, s, encrypted=self.encrypted)
            return
        if s.auth == "none" or not (s.username and self._password):
            return
        if not self.encrypted and not s.allow_plaintext_auth:
            raise AuthFailed(
                f"Logging in to {_where(s)} would send the password unencrypted; use TLS "
                "(security 'starttls' or 'tls') or set allow_plaintext_auth."
            )
        if not smtp.supports_extension("auth"):
            await smtp.ehlo()
        if not smtp.supports_extension("auth"):
            raise AuthFailed(f"{_where(s)} does not offer a login (no AUTH), but a password is set.")
        await smtp.login(s.username, self._password)

    def abort(self) -> None:
        """Drop the connection without QUIT (its state is unknown after an error)."""
        self._ahead = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def close(self) -> None:
        import aiosmtplib

        if self._channel is not None:
            await self._channel.quit()
        elif self._smtp is not None and self._smtp.is_connected:
            try:
                await asyncio.wait_for(self._smtp.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                pass
        self.abort()

    async def report(self) -> ServerReport:
        smtp = await self.open()
        info = smtp.get_transport_info("ssl_object")
        greeting = (smtp.last_ehlo_response.message.splitlines() or [""])[0] if smtp.last_ehlo_response else ""
        return ServerReport(
            host=self.settings.host, port=self.settings.port, greeting=greeting,
            tls="implicit" if self.settings.implicit_tls else ("STARTTLS" if self.encrypted else "none"),
            tls_version=info.version() if info is not None else None,
            authenticated=bool(self.settings.username and self._password) or bool(self.signed_in),
            extensions=dict(smtp.esmtp_extensions), signed_in=self.signed_in,
        )

    def _claim_next(self) -> Upcoming | None:
        self._claimed = self._next_up(self) if self._next_up is not None else None
        return self._claimed

    async def transaction(
        self, envelope: Envelope, data: Data
    ) -> tuple[list[str], dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
        """One MAIL/RCPT/DATA. Returns (accepted, refused permanently, refused temporarily).

        ``data`` is the message as bytes, or a ``Payload`` streamed from disk in chunks.
        ``envelope.sending()`` runs just before the final "." goes out (it may raise
        OutboxUnwritable: then it never does), ``envelope.answered()`` when the final reply
        then came.
        """
        import aiosmtplib

        sender, recipients, smtputf8 = envelope.sender, envelope.recipients, envelope.smtputf8
        kept = self._smtp
        reused = kept is not None and self.is_open  # a connection kept from an earlier message
        smtp = kept if kept is not None and reused else await self.open()
        size = _size(data)
        ahead = self._ahead
        if ahead is not None and ahead != (sender, recipients, size, smtputf8):
            self.abort()  # the server waits for another message's data: start afresh
            smtp = await self.open()
        sent = False  # the final "." went out and no final reply came back (yet)
        # A kept connection the server dropped before this message's end went out (its
        # envelope perhaps sent ahead with the previous message's data) was stale: not this
        # message's own attempt, so ``SmtpTransport`` tries it again at once on a new one.
        self.went_stale = False

        def sending() -> None:
            nonlocal sent
            envelope.sending()
            sent = True

        channel = self._channel
        self._claimed = None
        try:
            try:
                errors = await _send_message(smtp, channel, sender, recipients, data,
                                             smtputf8, sending,
                                             self._claim_next if self._send_ahead else None,
                                             size)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused,
                    aiosmtplib.SMTPNotSupported):
                if sent:  # a final answer: this attempt delivered nothing
                    sent = False
                    envelope.answered()
                raise
            finally:
                self._ahead = self._claimed if channel is not None and channel.ahead else None
            if sent:
                sent = False
                envelope.answered()
        except aiosmtplib.SMTPRecipientsRefused as exc:
            errors = {r.recipient: r for r in exc.recipients}
        except aiosmtplib.SMTPSenderRefused as exc:
            where = _where(self.settings)  # (made only for an error's sentence)
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _answered(_Transient, f"{where} deferred the sender: {_reply(exc)}.",
                                exc) from exc
            if exc.code == 530:  # "authentication required": a login problem, not a rejection
                raise _answered(AuthFailed, f"{where} requires a login before sending "
                                f"({_reply(exc)}); set username and password.", exc) from exc
            if provider_guidance(_reply(exc)):  # Microsoft's "basic authentication is off"
                raise _answered(AuthFailed, f"{where} refused the sender {sender!r}: "
                                f"{_reply(exc)}.{provider_guidance(_reply(exc))}", exc) from exc
            raise _answered(Rejected, f"{where} refused the sender {sender!r}: {_reply(exc)}.",
                            exc) from exc
        except aiosmtplib.SMTPDataError as exc:
            where = _where(self.settings)
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _answered(_Transient, f"{where} deferred the message: {_reply(exc)}.",
                                exc) from exc
            if exc.code == 552:
                raise _answered(Rejected, f"{where} refused the message as too large: "
                                f"{_reply(exc)}.", exc) from exc
            raise _answered(Rejected, f"{where} refused the message: {_reply(exc)}.",
                            exc) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            where = _where(self.settings)
            raise Rejected(f"{where} cannot take this message: {exc}.") from exc
        except OutboxUnwritable:
            self.abort()  # the end of the data was never sent: nothing was delivered
            raise
        except aiosmtplib.SMTPResponseException as exc:
            where = _where(self.settings)
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _answered(_Transient, f"{where} answered {_reply(exc)}.", exc) from exc
            raise _answered(Rejected, f"{where} answered {_reply(exc)}.", exc) from exc
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
            where = _where(self.settings)
            if self._ahead is not None:  # dropped with an envelope sent ahead: not again here
                _no_ahead.add((self.settings.host, self.settings.port))
                log.warning("%s dropped the connection after a message's end of data that carried "
                            "the next envelope; its envelopes are no longer sent ahead", where)
            self.abort()
            self.went_stale = reused and not sent
            if sent:  # after the final ".": resending could deliver it twice
                raise InDoubt(f"{where} dropped the connection after the message was sent and "
                              f"before confirming it; {IN_DOUBT_NOTE}") from exc
            raise _Transient(f"{where} dropped the connection before confirming delivery.") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            where = _where(self.settings)
            self.abort()
            if not sent:  # stalled before the data: nothing can have arrived
                raise TemporaryFailure(f"{where} stopped answering before the message was "
                                       "sent; it is kept in the outbox.") from exc
            raise InDoubt(f"{where} stopped answering after the message was sent; "
                          f"{IN_DOUBT_NOTE}") from exc
        if not errors:  # every recipient accepted
            return list(recipients), {}, {}
        refused_perm: dict[str, tuple[int, str]] = {}
        refused_temp: dict[str, tuple[int, str]] = {}
        for rcpt, err in errors.items():
            entry = (err.code, " ".join(str(err.message).split()))
            (refused_temp if 400 <= err.code < 500 else refused_perm)[rcpt] = entry
        accepted = [r for r in recipients if r not in errors]
        return accepted, refused_perm, refused_temp

    def _after_error(self, exc: Any) -> None:
        if getattr(exc, "code", 0) == 421:  # the server is closing the connection
            self.abort()


class _Lane:
    """The connections to one destination (one ``ConnectionSettings``) and the messages
    waiting for one of them, in the order they came.

    A connection that finishes a message goes to the message it sent the envelope of ahead,
    if it did, else to the first one waiting. While a message's data goes out, the first
    message waiting is claimed for the same connection, so that its envelope can ride on the
    end of that data (``Session``'s ``next_up``).
    """

    def __init__(self, settings: ConnectionSettings, password: str | None) -> None:
        self.settings, self.password = settings, password
        self.connections = max(1, settings.connections)
        self.idle: list[Session] = []
        self.count = 0  # connections (sessions) in all, idle or busy
        self.waiting: deque[tuple[Upcoming, asyncio.Future[Session]]] = deque()
        self.promised: dict[Session, asyncio.Future[Session]] = {}

    def take(self) -> Session | None:
        """A free connection (a new one while there are fewer than ``connections``), or None."""
        if self.idle:
            return self.idle.pop()
        if self.count < self.connections:
            self.count += 1
            return Session(self.settings, self.password, self.claim)
        return None

    def wait(self, upcoming: Upcoming) -> tuple[Upcoming, asyncio.Future[Session]]:
        """A place in the queue for the next free connection (awaited by the caller)."""
        waiter = (upcoming, asyncio.get_running_loop().create_future())
        self.waiting.append(waiter)
        return waiter

    def gave_up(self, waiter: tuple[Upcoming, asyncio.Future[Session]]) -> None:
        """The caller stopped waiting (cancelled): nobody waits there any more."""
        if waiter in self.waiting:
            self.waiting.remove(waiter)
        future = waiter[1]
        if future.done() and not future.cancelled():
            self.release(future.result())  # handed over at the same moment: pass it on

    def claim(self, session: Session) -> Upcoming | None:
        """The message ``session`` carries next, if one is waiting: it is promised to it."""
        while self.waiting:
            upcoming, future = self.waiting.popleft()
            if not future.done():
                self.promised[session] = future
                return upcoming
        return None

    def release(self, session: Session) -> None:
        promised = self.promised.pop(session, None)
        if promised is not None and not promised.done():
            promised.set_result(session)
            return
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_result(session)
                return
        self.idle.append(session)

    async def close(self) -> None:
        sessions, self.idle = self.idle, []
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


class SmtpTransport:
    """``deliver(envelope, data)`` over SMTP: a pool of reused connections per destination.

    ``settings`` are where messages go when their envelope names none; ``password`` is the
    password of those settings, or a function that gives the password of any settings (looked
    up when a destination gets its first connection). Each destination uses at most its
    ``connections`` setting's connections; messages wait for a free one in the order they came,
    and, when the server offers PIPELINING, the envelope of the next message waiting goes out
    with the end of the current one's data. One attempt per call: retries, pacing and the
    execution timeout are the caller's (``engine.Mailer``).
    """

    queues = True  # calls envelope.started() when a connection takes the message

    def __init__(self, settings: ConnectionSettings | None = None, *,
                 password: str | None | Callable[[ConnectionSettings], str | None] = None
                 ) -> None:
        self.settings = settings
        self._password = password
        self._lanes: dict[ConnectionSettings, _Lane] = {}
        # The lane found last, by the very settings object asked for (a batch's messages share
        # one): an equal one from another batch would be compared field by field each time.
        self._last: tuple[ConnectionSettings, _Lane] | None = None

    def __repr__(self) -> str:
        return f"<SmtpTransport {len(self._lanes)} destination(s)>"

    def _lane(self, settings: ConnectionSettings) -> _Lane:
        last = self._last
        if last is not None and last[0] is settings:
            return last[1]
        lane = self._lanes.get(settings)
        if lane is None:
            if callable(self._password):
                password = self._password(settings)
            elif settings == self.settings:
                password = self._password
            else:  # never the password of other settings
                from .credentials import resolve_password

                password = resolve_password(settings)
            lane = self._lanes[settings] = _Lane(settings, password)
        self._last = (settings, lane)
        return lane

    async def deliver(self, envelope: Envelope, data: Data | Iterable[bytes]) -> Outcome | None:
        settings = envelope.settings or self.settings
        if settings is None:
            raise ValueError("the SMTP transport was given no settings for this message")
        if isinstance(data, bytes):
            payload: Data = data
        else:  # an iterable of chunks is held whole
            payload = cast(Data, data if hasattr(data, "chunks") else b"".join(data))
        lane = self._lane(settings)
        session = lane.take()
        if session is None:  # its envelope may go out ahead, with the end of another's data
            waiter = lane.wait(Upcoming(envelope.sender, envelope.recipients, _size(payload),
                                        envelope.smtputf8))
            try:
                session = await waiter[1]
            except BaseException:
                lane.gave_up(waiter)
                raise
        try:
            envelope.started()
            accepted: list[str] = []
            refused: dict[str, tuple[int, str]] = {}
            current = envelope
            again = True  # once, when a kept connection turned out to be dropped
            while True:
                try:
                    got, perm, temp = await session.transaction(current, payload)
                except _Transient:
                    if not (again and session.went_stale):
                        raise
                    again = False
                    continue
                if not (perm or temp or refused):  # every recipient accepted (the common case)
                    break
                accepted += got
                refused.update(perm)
                # "452 too many recipients" asks for the rest in another transaction.
                too_many = tuple(r for r, (code, _) in temp.items() if code == 452)
                if too_many and got:
                    refused.update({r: v for r, v in temp.items() if r not in too_many})
                    current = replace(envelope, recipients=too_many)
                    continue
                refused.update(temp)
                break
        except _Transient:
            session.abort()
            raise
        except SmtpMagicError:
            raise
        except BaseException:  # cancelled (the caller's timeout), or a bug: state unknown
            if session.phase != "ready":
                envelope.stalled = session.stalled()
            session.abort()
            raise
        finally:
            lane.release(session)
        if not refused:
            return None
        return Outcome([r for r in envelope.recipients if r in set(accepted)], refused)

    def abandon(self) -> None:
        """Drop every idle connection without QUIT (the event loop they belong to is gone)."""
        lanes = list(self._lanes.values())
        self._lanes.clear()
        self._last = None
        for lane in lanes:
            for session in lane.idle:
                try:
                    session.abort()
                except RuntimeError:  # its loop is closed: the socket goes with its objects
                    pass

    async def aclose(self) -> None:
        """QUIT every idle connection (call when no message is being sent)."""
        lanes = list(self._lanes.values())
        self._lanes.clear()
        self._last = None
        await asyncio.gather(*(lane.close() for lane in lanes))


async def check_connection(settings: ConnectionSettings, password: str | None) -> ServerReport:
    """Connect, negotiate TLS and log in, then report; sends nothing."""
    session = Session(settings, password)
    try:
        return await asyncio.wait_for(session.report(), settings.timeout)
    except asyncio.TimeoutError as exc:
        raise session.stalled() from exc
    finally:
        await session.close()
