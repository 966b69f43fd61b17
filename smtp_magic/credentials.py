"""Resolve the password at send time: setting, environment variable or system keyring."""

from __future__ import annotations

import logging
import os

from .config import ConnectionSettings
from .errors import ConfigError, missing

log = logging.getLogger(__name__)

KEYRING_SERVICE = "smtp-magic"


def keyring_user(settings: ConnectionSettings) -> str:
    """The keyring entry name: ``username@host``, so one login can differ per server."""
    return f"{settings.username}@{settings.host}"


def resolve_password(settings: ConnectionSettings) -> str | None:
    """The password to log in with, or None to send without logging in."""
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
        try:
            import keyring
        except ImportError:
            raise missing("keyring", "Reading the password from the system keyring") from None
        log.debug("the password comes from the keyring entry %s", keyring_user(settings))
        value = keyring.get_password(KEYRING_SERVICE, keyring_user(settings))
        if not value:
            raise ConfigError(
                f"The keyring has no password for {keyring_user(settings)!r} "
                f"(service {KEYRING_SERVICE!r})."
            )
        return value
    return None


def store_in_keyring(settings: ConnectionSettings, password: str) -> None:
    """Save a password in the system keyring for these settings' username and host."""
    try:
        import keyring
    except ImportError:
        raise missing("keyring", "Saving the password in the system keyring") from None
    keyring.set_password(KEYRING_SERVICE, keyring_user(settings), password)
