"""The only aiosmtplib user: TLS modes, login, transactions, retries, timeouts, reused connections."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .config import ConnectionSettings
from .errors import (
    AuthFailed,
    ConnectFailed,
    PartiallyRefused,
    Rejected,
    SendTimeout,
    SmtpMagicError,
    TemporaryFailure,
)

if TYPE_CHECKING:  # aiosmtplib is imported when the first connection is opened
    import aiosmtplib


class Envelope(Protocol):
    """What the transport needs to know besides the bytes (``compose.Composed`` is one)."""

    sender: str
    recipients: tuple[str, ...]
    smtputf8: bool

__all__ = ["Envelope", "Session", "ServerReport", "Outcome", "deliver", "check_connection", "tls_context"]


class _Transient(SmtpMagicError):
    """A failure worth retrying (4xx, or a connection dropped before the final reply)."""

    exitcode = 7


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

    def lines(self) -> list[str]:
        out = [f"Connected to {self.host}:{self.port}: {self.greeting}"]
        out.append(f"Encryption: {self.tls}" + (f" ({self.tls_version})" if self.tls_version else ""))
        out.append("Login: succeeded" if self.authenticated else "Login: not attempted (no password)")
        exts = ", ".join(f"{k.upper()} {v}".strip() for k, v in sorted(self.extensions.items()))
        out.append(f"Extensions: {exts or '(none)'}")
        return out


def tls_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """The system trust store (honouring SSL_CERT_FILE), plus ``cafile`` when set."""
    ctx = ssl.create_default_context()
    if settings.cafile:
        try:
            ctx.load_verify_locations(cafile=settings.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"The CA file {settings.cafile!r} cannot be used: {exc}.") from None
    if not settings.validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _where(settings: ConnectionSettings) -> str:
    return f"{settings.host}:{settings.port}"


def _reply(exc: Any) -> str:
    """``550 5.1.1 no such user`` from an aiosmtplib response exception."""
    text = " ".join(str(getattr(exc, "message", "") or "").split())
    return f"{exc.code} {text}".strip()


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
            return _Transient(f"{where} is not accepting mail right now: {_reply(exc)}.")
        return ConnectFailed(f"{where} refused the session: {_reply(exc)}.")
    # aiosmtplib wraps a hang-up before the greeting in SMTPConnectError; it is still a drop.
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected) or isinstance(
        cause, aiosmtplib.SMTPServerDisconnected
    ):
        return _Transient(f"{where} closed the connection before the session started.")
    detail = " ".join(str(cause or exc).split()) or type(exc).__name__
    return ConnectFailed(f"Could not connect to {where}: {detail}.")


class Session:
    """One SMTP connection, opened on first use and reused for later messages."""

    def __init__(self, settings: ConnectionSettings, password: str | None) -> None:
        self.settings = settings
        self._password = password
        self._smtp: aiosmtplib.SMTP | None = None
        self.encrypted = False

    def __repr__(self) -> str:
        state = "open" if self._smtp is not None else "closed"
        return f"<Session {_where(self.settings)} {state}>"

    @property
    def is_open(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        self.abort()
        import aiosmtplib

        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, use_tls=s.implicit_tls, start_tls=False,
            tls_context=tls_context(s) if s.security != "none" else None,
            validate_certs=s.validate_certs, timeout=s.timeout,
        )
        try:
            await smtp.connect()
            self.encrypted = s.implicit_tls
            await self._negotiate(smtp)
            await self._login(smtp)
        except SmtpMagicError:
            smtp.close()
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            if 400 <= exc.code < 500:
                raise _Transient(f"{_where(s)} could not check the login now: {_reply(exc)}.") from None
            raise AuthFailed(
                f"{_where(s)} refused the login for {s.username!r}: {_reply(exc)}."
            ) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            smtp.close()
            if isinstance(exc, asyncio.TimeoutError | aiosmtplib.SMTPTimeoutError):
                raise SendTimeout(
                    f"{_where(s)} did not answer within {s.timeout:g} s while connecting."
                ) from None
            raise _connect_error(s, exc) from None
        self._smtp = smtp
        return smtp

    async def _negotiate(self, smtp: aiosmtplib.SMTP) -> None:
        s = self.settings
        if s.implicit_tls or s.security == "none":
            return
        await smtp.ehlo()
        if smtp.supports_extension("starttls"):
            await smtp.starttls(tls_context=tls_context(s))
            self.encrypted = True
        elif s.security == "starttls":
            # Never fall back to plaintext when encryption was asked for.
            raise ConnectFailed(
                f"{_where(s)} does not offer STARTTLS, and security is 'starttls'; "
                "nothing was sent in plaintext."
            )

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        s = self.settings
        if not (s.username and self._password):
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
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def close(self) -> None:
        import aiosmtplib

        if self._smtp is not None and self._smtp.is_connected:
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
            authenticated=bool(self.settings.username and self._password),
            extensions=dict(smtp.esmtp_extensions),
        )

    async def transaction(
        self, sender: str, recipients: tuple[str, ...], data: bytes, smtputf8: bool
    ) -> tuple[list[str], dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
        """One MAIL/RCPT/DATA. Returns (accepted, refused permanently, refused temporarily)."""
        import aiosmtplib

        smtp = await self.open()
        where = _where(self.settings)
        options = ["SMTPUTF8"] if smtputf8 else []
        try:
            errors, _ = await smtp.sendmail(sender, list(recipients), data, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            errors = {r.recipient: r for r in exc.recipients}
        except aiosmtplib.SMTPSenderRefused as exc:
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _Transient(f"{where} deferred the sender: {_reply(exc)}.") from None
            raise Rejected(f"{where} refused the sender {sender!r}: {_reply(exc)}.") from None
        except aiosmtplib.SMTPDataError as exc:
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _Transient(f"{where} deferred the message: {_reply(exc)}.") from None
            if exc.code == 552:
                raise Rejected(f"{where} refused the message as too large: {_reply(exc)}.") from None
            raise Rejected(f"{where} refused the message: {_reply(exc)}.") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise Rejected(f"{where} cannot take this message: {exc}.") from None
        except aiosmtplib.SMTPResponseException as exc:
            self._after_error(exc)
            if 400 <= exc.code < 500:
                raise _Transient(f"{where} answered {_reply(exc)}.") from None
            raise Rejected(f"{where} answered {_reply(exc)}.") from None
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, OSError):
            self.abort()
            raise _Transient(f"{where} dropped the connection before confirming delivery.") from None
        except aiosmtplib.SMTPTimeoutError:
            self.abort()
            raise SendTimeout(f"{where} stopped answering.") from None
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


@dataclass
class Outcome:
    """What happened to one message across all its attempts."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): short, growing, jittered."""
    return 0.25 * (3 ** (attempt - 1)) * random.uniform(0.8, 1.2)


async def deliver_once(session: Session, envelope: Envelope, data: bytes) -> Outcome:
    """Send one message over a session, retrying temporary failures; raise typed errors."""
    settings = session.settings
    outcome = Outcome()
    pending = envelope.recipients
    last: SmtpMagicError | None = None
    attempt = 0
    while pending:
        attempt += 1
        try:
            accepted, perm, temp = await session.transaction(
                envelope.sender, pending, data, envelope.smtputf8
            )
        except _Transient as exc:
            last = exc
            session.abort()
        else:
            outcome.accepted += accepted
            outcome.refused.update(perm)
            # "452 too many recipients" asks for the rest in another transaction: no retry needed.
            too_many = tuple(r for r, (code, _) in temp.items() if code == 452)
            if too_many and accepted:
                pending = too_many
                attempt -= 1
                temp = {r: v for r, v in temp.items() if r not in too_many}
                outcome.refused.update(temp)
                continue
            pending = tuple(temp)
            if not pending:
                break
            last = TemporaryFailure(
                "The server deferred some recipients: "
                + "; ".join(f"{r} ({c} {t})" for r, (c, t) in temp.items()) + ".",
                refused=temp,
            )
        if attempt >= settings.attempts:
            break
        await asyncio.sleep(backoff(attempt))
    if pending:
        assert last is not None
        left = {r: outcome.refused.get(r) or last.refused.get(r) or (450, last.message) for r in pending}
        if not outcome.accepted:
            raise TemporaryFailure(
                f"{last.message.rstrip('.')}, still failing after {attempt} attempts; "
                "the message is kept in the outbox.",
                refused={**outcome.refused, **left},
            )
        outcome.refused.update(left)
    return outcome


def outcome_error(outcome: Outcome, settings: ConnectionSettings) -> SmtpMagicError | None:
    """The exit-4/5 error for refused recipients, or None when everyone accepted."""
    if not outcome.refused:
        return None
    listed = "; ".join(f"{r} ({c} {t})" for r, (c, t) in outcome.refused.items())
    if not outcome.accepted:
        return Rejected(f"{_where(settings)} refused every recipient: {listed}.", refused=outcome.refused)
    return PartiallyRefused(
        f"Delivered to {len(outcome.accepted)} recipient(s), refused for {len(outcome.refused)}: "
        f"{listed}.",
        refused=outcome.refused,
    )


async def deliver(session: Session, envelope: Envelope, data: bytes) -> Outcome:
    """``deliver_once`` bounded by the execution timeout (connecting and retries included)."""
    settings = session.settings
    try:
        outcome = await asyncio.wait_for(deliver_once(session, envelope, data), settings.timeout)
    except asyncio.TimeoutError:
        session.abort()
        raise SendTimeout(
            f"The send to {_where(settings)} did not finish within {settings.timeout:g} s; "
            "it may or may not have been delivered and is kept in the outbox."
        ) from None
    error = outcome_error(outcome, settings)
    if error is not None:
        raise error
    return outcome


async def check_connection(settings: ConnectionSettings, password: str | None) -> ServerReport:
    """Connect, negotiate TLS and log in, then report; sends nothing."""
    session = Session(settings, password)
    try:
        return await asyncio.wait_for(session.report(), settings.timeout)
    except asyncio.TimeoutError:
        raise SendTimeout(f"{_where(settings)} did not answer within {settings.timeout:g} s.") from None
    finally:
        await session.close()
