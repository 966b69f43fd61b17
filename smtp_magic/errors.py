"""Exit codes (ExitCode) and the exception tree; each error carries its exit code and one sentence."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from enum import IntEnum

__all__ = [
    "IN_DOUBT_NOTE",
    "AuthFailed",
    "ConfigError",
    "ConnectFailed",
    "ExitCode",
    "InDoubt",
    "InvalidRequest",
    "MissingDependency",
    "OutboxUnwritable",
    "PartiallyRefused",
    "Rejected",
    "SendTimeout",
    "SmtpMagicError",
    "TemporaryFailure",
    "did_you_mean",
    "error_for",
]

log = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """The outcome of a send: ``Response.exitcode``, the CLI's exit status, the outbox's record."""

    SENT = 0
    INVALID = 1  # invalid request or configuration; no connection was opened
    CONNECT = 2  # could not connect (DNS, refused, TLS handshake, certificate)
    AUTH = 3  # authentication failed, or it would need plaintext credentials
    REJECTED = 4  # rejected for every recipient, or the message refused
    PARTIAL = 5  # accepted for some recipients, refused for others
    TIMEOUT = 6  # the execution timeout ran out; the outcome is unknown
    TEMPORARY = 7  # a temporary (4xx) failure persisted through every retry
    OUTBOX = 8  # the message could not be kept in the outbox (disk full, not writable); not sent

    @property
    def result(self) -> str:
        """The delivery status as ``Response.result`` words it."""
        return _RESULTS[self]

    @property
    def meaning(self) -> str:
        """What the code means, for help texts and tables."""
        return _MEANINGS[self]


_RESULTS = {
    ExitCode.SENT: "sent",
    ExitCode.INVALID: "not sent: invalid request",
    ExitCode.CONNECT: "not sent: could not connect",
    ExitCode.AUTH: "not sent: authentication failed",
    ExitCode.REJECTED: "not sent: rejected by the server",
    ExitCode.PARTIAL: "partly sent",
    ExitCode.TIMEOUT: "unknown: timed out",
    ExitCode.TEMPORARY: "not sent: temporary failure, kept in the outbox",
    ExitCode.OUTBOX: "not sent: the outbox cannot be written",
}
_MEANINGS = {
    ExitCode.SENT: "sent",
    ExitCode.INVALID: "invalid",
    ExitCode.CONNECT: "could not connect",
    ExitCode.AUTH: "authentication failed",
    ExitCode.REJECTED: "rejected",
    ExitCode.PARTIAL: "partly refused",
    ExitCode.TIMEOUT: "timed out",
    ExitCode.TEMPORARY: "temporary failure",
    ExitCode.OUTBOX: "outbox not writable",
}


class SmtpMagicError(Exception):
    """Base class. ``str(exc)`` is one sentence a user understands, never a password.

    ``code`` and ``reply`` are the SMTP reply behind the error, when a server gave one
    (``550``, ``"550 5.1.1 no such user"``); the library error that caused it stays in
    ``__cause__``.
    """

    exitcode: ExitCode = ExitCode.INVALID

    def __init__(self, message: str, *, refused: Mapping[str, tuple[int, str]] | None = None,
                 code: int | None = None, reply: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.refused: dict[str, tuple[int, str]] = dict(refused or {})
        self.code = code
        self.reply = reply


class InvalidRequest(SmtpMagicError, ValueError):
    """Exit 1: the request cannot be sent as given; no connection was opened."""

    exitcode = ExitCode.INVALID


class ConfigError(InvalidRequest):
    """Exit 1: a setting or a configuration file is invalid."""


class MissingDependency(InvalidRequest, ImportError):
    """Exit 1: an optional package is needed for what was asked."""


class ConnectFailed(SmtpMagicError, ConnectionError):
    """Exit 2: no usable connection (DNS, refused, TLS handshake, certificate, no STARTTLS)."""

    exitcode = ExitCode.CONNECT


class AuthFailed(SmtpMagicError):
    """Exit 3: login refused, or it would need credentials in plaintext."""

    exitcode = ExitCode.AUTH


class Rejected(SmtpMagicError):
    """Exit 4: the server refused every recipient, or the message itself."""

    exitcode = ExitCode.REJECTED


class PartiallyRefused(SmtpMagicError):
    """Exit 5: accepted for some recipients; ``refused`` maps the others to (code, reply)."""

    exitcode = ExitCode.PARTIAL


class SendTimeout(SmtpMagicError, TimeoutError):
    """Exit 6: the execution timeout ran out; the outcome is unknown."""

    exitcode = ExitCode.TIMEOUT


class InDoubt(SmtpMagicError):
    """Exit 6: the message went out (its final "." was sent) but the server's final reply never
    came (a timeout or a dropped connection): it may have been delivered. Kept in the outbox as
    ``in doubt`` and never resent unless asked (``--retry --in-doubt``)."""

    exitcode = ExitCode.TIMEOUT


# How an in-doubt message is reported, by every transport and the engine: the end of a sentence.
IN_DOUBT_NOTE = ("it may or may not have been delivered, so it is kept in the outbox as in doubt "
                 "and not sent again unless asked (--retry --in-doubt).")


class TemporaryFailure(SmtpMagicError):
    """Exit 7: a temporary (4xx) failure persisted through every retry."""

    exitcode = ExitCode.TEMPORARY


class OutboxUnwritable(SmtpMagicError):
    """Exit 8: the message could not be kept in the outbox (disk full, not writable), so it was
    not sent."""

    exitcode = ExitCode.OUTBOX


_ERROR_CLASSES: dict[ExitCode, type[SmtpMagicError]] = {
    cls.exitcode: cls
    for cls in (InvalidRequest, ConnectFailed, AuthFailed, Rejected, PartiallyRefused,
                SendTimeout, TemporaryFailure, OutboxUnwritable)
}


def error_for(exitcode: int, message: str, **fields: object) -> SmtpMagicError:
    """The error matching an exit code (e.g. to raise a failed Response)."""
    try:
        cls = _ERROR_CLASSES[ExitCode(exitcode)]
    except (ValueError, KeyError):
        cls = SmtpMagicError
    return cls(message, **fields)  # type: ignore[arg-type]


def missing(package: str, purpose: str, extra: str = "all") -> MissingDependency:
    """The actionable error for an optional dependency that is not installed."""
    return MissingDependency(
        f"{purpose} needs {package}: pip install 'smtp-magic[{extra}]'."
    )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'port'?"`` for the closest choice, else ``"."``: ends a sentence."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else "."
