"""Where OAuth2 refresh tokens are kept: the system keyring, else a file only the user can read."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ._paths import private_dir, user_path, write_private
from .errors import AuthFailed

__all__ = ["KEYRING_SERVICE", "TokenStore", "default_store", "token_file"]

log = logging.getLogger(__name__)

KEYRING_SERVICE = "smtp-magic-oauth2"
_LOCK = threading.Lock()


def token_file() -> Path:
    """``$SMTP_MAGIC_TOKEN_FILE``, else ``$XDG_DATA_HOME/smtp_magic/oauth2-tokens.json``."""
    return user_path("SMTP_MAGIC_TOKEN_FILE", "data", "oauth2-tokens.json")


def _usable_keyring() -> Any | None:
    """The keyring module when it has a real backend (not keyring's "fail" or "null" one)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or type(backend).__module__.startswith(
            "keyring.backends.null"):
        return None
    with contextlib.suppress(Exception):
        if backend.priority <= 0:  # type: ignore[operator]  # a classproperty on the class
            return None
    return keyring


class TokenStore:
    """Saved sign-ins (refresh tokens and what is needed to use them), one JSON entry per key.

    Entries go to the system keyring (service ``smtp-magic-oauth2``) when a keyring backend
    exists; otherwise to :func:`token_file`, created with mode 0600 in a 0700 folder. The entries
    never hold passwords; they are the secrets of a sign-in and never leave this store except to
    the authorization server.
    """

    def __init__(self, path: Path | None = None, *, use_keyring: bool | None = None):
        self._path = path
        self._keyring = _usable_keyring() if use_keyring in (None, True) else None
        if use_keyring and self._keyring is None:
            raise RuntimeError("no usable keyring backend")

    @property
    def path(self) -> Path:
        return self._path or token_file()

    @property
    def in_keyring(self) -> bool:
        return self._keyring is not None

    def describe(self) -> str:
        """Where sign-ins are kept, in words for a user."""
        if self._keyring is not None:
            backend = self._keyring.get_keyring()
            return f"the system keyring ({type(backend).__name__}, service {KEYRING_SERVICE!r})"
        return (f"{self.path} (no system keyring is available; the file is readable only by you, "
                "mode 0600)")

    # -- entries ------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        if self._keyring is not None:
            with self._keyring_errors():
                raw = self._keyring.get_password(KEYRING_SERVICE, key)
            return _loads(raw)
        with _LOCK:
            return self._read_file().get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self._keyring is not None:
            with self._keyring_errors():
                self._keyring.set_password(KEYRING_SERVICE, key, json.dumps(entry))
            return
        with _LOCK:
            entries = self._read_file()
            entries[key] = entry
            self._write_file(entries)

    def delete(self, key: str) -> bool:
        """Forget a sign-in; True when there was one."""
        if self._keyring is not None:
            try:
                from keyring.errors import PasswordDeleteError
            except ImportError:  # pragma: no cover - keyring is there when _keyring is set
                return False
            try:
                with self._keyring_errors():
                    self._keyring.delete_password(KEYRING_SERVICE, key)
            except PasswordDeleteError:
                return False
            return True
        with _LOCK:
            entries = self._read_file()
            found = entries.pop(key, None) is not None
            if found:
                self._write_file(entries)
            return found

    @contextlib.contextmanager
    def _keyring_errors(self) -> Any:
        """A locked or broken keyring (e.g. Secret Service in a cron job) is exit 3, said
        plainly, not a traceback."""
        from keyring.errors import KeyringError, PasswordDeleteError

        try:
            yield
        except PasswordDeleteError:
            raise
        except (KeyringError, OSError) as exc:
            raise AuthFailed(f"The system keyring could not be used for the OAuth2 sign-in "
                             f"({type(exc).__name__}: {exc}); unlock it, or set "
                             "PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring to keep "
                             "sign-ins in a private file instead.") from exc

    # -- the file fallback --------------------------------------------------------------------
    def _read_file(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable or corrupt: as if nobody had signed in
        return data if isinstance(data, dict) else {}

    def _write_file(self, entries: dict[str, Any]) -> None:
        path = self.path
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            write_private(tmp, json.dumps(entries).encode("utf-8"))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _loads(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def default_store() -> TokenStore:
    return TokenStore()
