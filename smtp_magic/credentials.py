"""Resolve the password at send time: setting, environment variable or system keyring."""

from __future__ import annotations

import logging
import os
from typing import Any

from .config import ConnectionSettings, withheld_password
from .errors import AuthFailed, ConfigError, missing

log = logging.getLogger(__name__)

KEYRING_SERVICE = "smtp-magic"
# What to do instead, for a machine without a usable keyring (a headless Linux box has none).
_KEYRING_FIX = ("use --password-env VAR or --password-prompt instead, or install a keyring "
                "backend (e.g. pip install keyrings.alt)")


def keyring_user(settings: ConnectionSettings) -> str:
    """The keyring entry name: ``username@host``, so one login can differ per server."""
    return f"{settings.username}@{settings.host}"


def _keyring(purpose: str) -> Any:
    """The keyring module, once it is known to have a backend; else a one-line ConfigError."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        raise missing("keyring", purpose, extra="keyring") from None
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - a broken backend configuration
        raise _keyring_error(exc) from None
    if isinstance(backend, fail.Keyring):
        raise ConfigError(f"No system keyring is available on this machine: {_KEYRING_FIX}.")
    return keyring


def _keyring_error(exc: BaseException) -> ConfigError:
    """A backend's failure (locked, no D-Bus, refused...) as one sentence; never a password."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"The system keyring failed ({detail.rstrip('.')}): {_KEYRING_FIX}.")


def check_keyring() -> None:
    """Raise a ConfigError with the fix unless a system keyring can be used here."""
    _keyring("Using the system keyring")


def resolve_password(settings: ConnectionSettings) -> str | None:
    """The password to log in with, or None to send without logging in.

    Every failure is a ``ConfigError`` (exit 1, nothing was sent), never a backend's exception,
    except a password given for another server: ``AuthFailed`` (exit 3), before connecting.
    A username with no password source is a ``ConfigError`` too: sending it without logging in
    would be silent (``auth = none`` says so on purpose).
    """
    auth = getattr(settings, "auth", "password")
    if auth == "none":
        return None
    withheld = withheld_password(settings)
    if withheld is not None:
        raise AuthFailed(withheld.message(settings))
    if settings.password:
        log.debug("the password comes from the settings")
        return settings.password.reveal()
    if settings.password_env:
        log.debug("the password comes from the environment variable %s", settings.password_env)
        value = os.environ.get(settings.password_env)
        if not value:
            raise ConfigError(
                f"The environment variable {settings.password_env!r} that should hold the "
                "password is not set."
            )
        return value
    if settings.use_keyring:
        if not settings.username:
            raise ConfigError("Reading the password from the keyring needs a username.")
        keyring = _keyring("Reading the password from the system keyring")
        log.debug("the password comes from the keyring entry %s", keyring_user(settings))
        try:
            value = keyring.get_password(KEYRING_SERVICE, keyring_user(settings))
        except Exception as exc:  # noqa: BLE001 - the backend's own errors, as one sentence
            raise _keyring_error(exc) from None
        if not value:
            raise ConfigError(
                f"The keyring has no password for {keyring_user(settings)!r} "
                f"(service {KEYRING_SERVICE!r}): set it with %smtp_config --keyring "
                "--password-prompt."
            )
        return value
    if settings.username and auth == "password":
        raise ConfigError(
            f"The username {settings.username!r} has no password: give one "
            "(--password-prompt, --password-env VAR, --keyring, or SMTP_PASSWORD), or set auth "
            "to 'none' (--auth none) to send without logging in."
        )
    return None


def store_in_keyring(settings: ConnectionSettings, password: str) -> None:
    """Save a password in the system keyring for these settings' username and host."""
    keyring = _keyring("Saving the password in the system keyring")
    try:
        keyring.set_password(KEYRING_SERVICE, keyring_user(settings), password)
    except Exception as exc:  # noqa: BLE001 - the backend's own errors, as one sentence
        raise _keyring_error(exc) from None
