"""Exception tree; each error carries the exit code of SPEC §8 and a one-sentence message."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AuthFailed",
    "ConfigError",
    "ConnectFailed",
    "InvalidRequest",
    "MissingDependency",
    "PartiallyRefused",
    "Rejected",
    "SendTimeout",
    "SmtpMagicError",
    "TemporaryFailure",
]


class SmtpMagicError(Exception):
    """Base class. ``str(exc)`` is one sentence a user understands, never a password."""

    exitcode: int = 1

    def __init__(self, message: str, *, refused: Mapping[str, tuple[int, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.refused: dict[str, tuple[int, str]] = dict(refused or {})


class InvalidRequest(SmtpMagicError, ValueError):
    """Exit 1: the request cannot be sent as given; no connection was opened."""

    exitcode = 1


class ConfigError(InvalidRequest):
    """Exit 1: a setting or a configuration file is invalid."""


class MissingDependency(InvalidRequest, ImportError):
    """Exit 1: an optional package is needed for what was asked."""


class ConnectFailed(SmtpMagicError, ConnectionError):
    """Exit 2: no usable connection (DNS, refused, TLS handshake, certificate, no STARTTLS)."""

    exitcode = 2


class AuthFailed(SmtpMagicError):
    """Exit 3: login refused, or it would need credentials in plaintext."""

    exitcode = 3


class Rejected(SmtpMagicError):
    """Exit 4: the server refused every recipient, or the message itself."""

    exitcode = 4


class PartiallyRefused(SmtpMagicError):
    """Exit 5: accepted for some recipients; ``refused`` maps the others to (code, reply)."""

    exitcode = 5


class SendTimeout(SmtpMagicError, TimeoutError):
    """Exit 6: the execution timeout ran out; the outcome is unknown."""

    exitcode = 6


class TemporaryFailure(SmtpMagicError):
    """Exit 7: a temporary (4xx) failure persisted through every retry."""

    exitcode = 7


def missing(package: str, purpose: str, extra: str = "all") -> MissingDependency:
    """The actionable error for an optional dependency that is not installed."""
    return MissingDependency(
        f"{purpose} needs {package}: pip install 'smtp-magic[{extra}]'."
    )
