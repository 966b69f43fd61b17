"""OAuth2 access tokens for SMTP sign-in: device-code sign-in, saved refresh tokens, token commands.

The protocol work is done by maintained libraries, imported only when OAuth2 is used: ``msal`` for
Microsoft, ``google-auth-oauthlib`` for Google (installed-app loopback flow), ``authlib`` for any
OpenID Connect issuer (device authorization grant, RFC 8628). Refresh tokens are kept by
:mod:`smtp_magic.tokenstore`; access tokens only in this process's memory.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import AuthFailed, ConfigError, missing
from .tokenstore import TokenStore

__all__ = [
    "DEFAULT_SCOPES",
    "HINT",
    "AccessToken",
    "DeviceCode",
    "OAuthConfig",
    "SignIn",
    "access_token",
    "forget",
    "login",
    "sasl_oauthbearer",
    "sasl_xoauth2",
    "sign_in_status",
]

log = logging.getLogger(__name__)

HINT = "run `%smtp_config --oauth2-login` interactively once"
CLI_HINT = "(in a terminal: `smtp-magic check --oauth2-login`)"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/{tenant}"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
# Scopes MSAL adds by itself and refuses to be given.
_MSAL_RESERVED = {"openid", "profile", "offline_access"}
# The sections of MSAL's token cache a saved sign-in keeps: no AccessToken, no IdToken.
_MSAL_KEPT = ("Account", "RefreshToken", "AppMetadata")


# Host, port and security of the two providers are presets of the settings (config.py).
DEFAULT_SCOPES: Mapping[str, str] = {
    "microsoft": "https://outlook.office.com/SMTP.Send offline_access",
    "google": "https://mail.google.com/",
}
GENERIC_SCOPES = "openid email offline_access"
# transport graph: Microsoft Graph's sendMail (delegated permission Mail.Send) instead of SMTP.
GRAPH_SCOPES = "https://graph.microsoft.com/Mail.Send offline_access"


def default_scopes(provider: str | None, transport: str | None = None) -> str:
    if provider == "microsoft" and transport == "graph":
        return GRAPH_SCOPES
    if provider is not None and provider in DEFAULT_SCOPES:
        return DEFAULT_SCOPES[provider]
    return GENERIC_SCOPES if provider and provider not in ("command", "callable") else ""


# -- what the rest of the package sees ---------------------------------------------------------
@dataclass(frozen=True)
class AccessToken:
    """A bearer token for one SMTP login. The token never shows in a repr."""

    value: str = field(repr=False)
    expires_at: float | None = None
    identity: str | None = None
    issued_at: float = field(default_factory=time.time)

    def fresh(self, now: float | None = None) -> bool:
        """Still usable: refreshed before expiry, with a margin of a third of its lifetime
        (at most a minute)."""
        if self.expires_at is None:
            return True
        now = time.time() if now is None else now
        margin = min(60.0, max(0.0, (self.expires_at - self.issued_at) / 3))
        return now < self.expires_at - margin


@dataclass(frozen=True)
class DeviceCode:
    """What the user must do to finish a device-code sign-in."""

    verification_uri: str
    user_code: str
    expires_in: int
    verification_uri_complete: str | None = None

    def text(self) -> str:
        return (f"To sign in, open {self.verification_uri} and enter the code {self.user_code} "
                f"(valid for {max(1, self.expires_in // 60)} min).")

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        """The URL as a link and the code with a copy button (the code is short-lived and
        single-use, not a secret: it only lets whoever enters it sign in to this app)."""
        import html

        url, code = html.escape(self.verification_uri), html.escape(self.user_code)
        copy = ("navigator.clipboard.writeText(this.dataset.code);"
                "this.textContent='Copied';setTimeout(()=>this.textContent='Copy code',1500)")
        return (f"<div class='smtp-magic-device-code'>To sign in, open "
                f"<a href='{url}' target='_blank' rel='noopener noreferrer'>{url}</a> and enter the "
                f"code <code style='font-size:1.2em;font-weight:bold'>{code}</code> "
                f"<button data-code='{code}' onclick=\"{copy}\">Copy code</button> "
                f"<small>(valid for {max(1, self.expires_in // 60)} min; waiting for you to "
                f"approve)</small></div>")


@dataclass(frozen=True)
class SignIn:
    """The state of a sign-in, for ``--check``: who, until when, and where it is kept."""

    provider: str
    signed_in: bool
    identity: str | None
    expires_at: float | None
    store: str

    def describe(self) -> str:
        if self.provider == "command":
            return "OAuth2 access tokens come from oauth2_token_command."
        if not self.signed_in:
            return f"Not signed in with OAuth2 ({self.provider}): {HINT}."
        when = valid_until(self.expires_at)
        return f"Signed in with OAuth2 ({self.provider}) as {self.identity or 'unknown'}{when}."


def valid_until(token: AccessToken | float | None) -> str:
    """"; access token valid until 2026-12-01 10:00:00 UTC" (local time), or ''."""
    expires_at = token.expires_at if isinstance(token, AccessToken) else token
    if not expires_at:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires_at))
    return f"; access token valid until {stamp}"


@dataclass(frozen=True)
class OAuthConfig:
    """The OAuth2 settings of one connection (taken from the settings snapshot)."""

    provider: str
    client_id: str | None = None
    tenant: str | None = None
    scopes: tuple[str, ...] = ()
    token_command: str | None = None
    token_provider: Callable[[], Any] | None = field(default=None, compare=False)
    username: str | None = None
    timeout: float = 30.0
    store: TokenStore | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, *, store: TokenStore | None = None) -> OAuthConfig:
        provider = getattr(settings, "oauth2_provider", None) or ""
        if getattr(settings, "oauth2_token_provider", None) is not None and not provider:
            provider = "callable"
        elif getattr(settings, "oauth2_token_command", None) and not provider:
            provider = "command"
        if not provider:
            raise ConfigError("auth is 'oauth2' but oauth2_provider is not set: "
                              "`%smtp_config --oauth2-provider microsoft|google|ISSUER-URL`.")
        scopes = getattr(settings, "oauth2_scopes", None) or default_scopes(
            provider, getattr(settings, "transport", None))
        if isinstance(scopes, str):
            scopes = scopes.replace(",", " ").split()
        return cls(
            provider=provider,
            client_id=getattr(settings, "oauth2_client_id", None) or None,
            tenant=getattr(settings, "oauth2_tenant", None) or None,
            scopes=tuple(scopes),
            token_command=getattr(settings, "oauth2_token_command", None) or None,
            token_provider=getattr(settings, "oauth2_token_provider", None),
            username=getattr(settings, "username", None) or None,
            timeout=float(getattr(settings, "timeout", 30) or 30),
            store=store,
        )

    @property
    def kind(self) -> str:
        """Where tokens come from: a callable or a command when one is set (whatever the
        provider, whose presets still apply), else the provider's sign-in."""
        if self.token_provider is not None:
            return "callable"
        if self.token_command or self.provider == "command":
            return "command"
        if self.provider in ("microsoft", "google"):
            return self.provider
        return "issuer"

    @property
    def key(self) -> str:
        """The saved sign-in's name: provider, app and tenant (one sign-in per app)."""
        parts = [self.kind, self.provider if self.kind == "issuer" else "",
                 self.client_id or "", self.tenant or "", " ".join(sorted(self.scopes))]
        return "|".join(parts)

    def token_store(self) -> TokenStore:
        return self.store if self.store is not None else TokenStore()

    def validate(self) -> OAuthConfig:
        """Raise ConfigError (exit 1) for settings that can never sign in; before connecting."""
        if self.kind in ("microsoft", "google", "issuer") and not self.client_id:
            raise ConfigError(
                f"oauth2_client_id is not set: register an app with {self.provider} and "
                "`%smtp_config --oauth2-client-id ID` (see the README, 'Microsoft 365 with "
                "OAuth2').")
        return self


# -- SASL -------------------------------------------------------------------------------------
def sasl_xoauth2(user: str, token: str) -> bytes:
    """The XOAUTH2 initial response (before base64), as Google and Microsoft document it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def sasl_oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial response (RFC 7628, before base64)."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def decode_challenge(text: str) -> str:
    """The server's base64 JSON error challenge as words ("status 401, scope ..."), or ''."""
    import base64
    import binascii

    try:
        data = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [f"{k} {v}" for k, v in data.items() if isinstance(v, (str, int)) and v != ""]
    return ", ".join(parts)


# -- keeping tokens out of the OAuth libraries' debug logs ------------------------------------
# requests-oauthlib logs whole token responses at DEBUG, and others log request bodies. Every
# token this module handles is registered here and masked in those libraries' log records.
_SECRETS: set[str] = set()
_LIBRARY_LOGGERS = ("requests_oauthlib", "oauthlib", "msal", "authlib", "google_auth_oauthlib",
                    "google.auth", "google.oauth2", "urllib3", "requests")


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let logging report it
            return True
        masked = _TOKEN_FIELD.sub(r"\1********", text)
        for secret in list(_SECRETS):
            masked = masked.replace(secret, "********")
        if masked != text:
            record.msg, record.args = masked, ()
        return True


_REDACT = _Redact()
# Tokens by their field names too, for responses logged before this module has seen them:
# JSON ("refresh_token": "x"), Python reprs ('access_token': 'x') and form bodies (code=x&...).
_TOKEN_FIELD = re.compile(
    r"""((?:access_token|refresh_token|id_token|device_code|code|client_secret|assertion)"""
    r"""['"]?\s*[:=]\s*['"]?|Bearer\s+)([^'"&\s,}]+)""")


def _keep_out_of_logs(*secrets: str | None) -> None:
    """Register tokens to mask, and put the filter on every library logger that exists now
    (a filter on a logger does not apply to its children, so each one gets it)."""
    _SECRETS.update(s for s in secrets if s)
    manager = logging.Logger.manager
    for name in [*_LIBRARY_LOGGERS, *list(manager.loggerDict)]:
        if name.startswith(_LIBRARY_LOGGERS):
            logger = logging.getLogger(name)
            if _REDACT not in logger.filters:
                logger.addFilter(_REDACT)


# -- the token cache of this process ----------------------------------------------------------
_MEMORY: dict[tuple[str, str | None], AccessToken] = {}
_MEMORY_LOCK = threading.Lock()
_REFRESHING: dict[str, threading.Lock] = {}  # per sign-in (OAuthConfig.key)


def _remember(config: OAuthConfig, token: AccessToken) -> AccessToken:
    _keep_out_of_logs(token.value)
    with _MEMORY_LOCK:
        _MEMORY[(config.key, config.username)] = token
    return token


def _drop_memory(config: OAuthConfig) -> None:
    with _MEMORY_LOCK:
        for key in [k for k in _MEMORY if k[0] == config.key]:
            del _MEMORY[key]


def clear_memory() -> None:
    """Forget the access tokens held in memory (the saved sign-ins stay)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def access_token(config: OAuthConfig, *, force_refresh: bool = False) -> AccessToken:
    """An access token for a send, without ever asking the user (headless-safe).

    Reuses the one in memory while it is fresh, else refreshes silently from the saved sign-in.
    ``force_refresh`` (after the server refused the token) skips the memory. Raises
    :class:`AuthFailed` (exit 3) with the hint to sign in once when no sign-in is usable.
    """
    kind = config.kind
    if kind == "callable":
        return _from_callable(config)
    if kind == "command":
        return _from_command(config)
    if not force_refresh:
        cached = _fresh_in_memory(config)
        if cached is not None:
            return cached
    # One refresh at a time per sign-in: parallel connections of a merge that start with no
    # token in memory would otherwise spend the same refresh token at once, and an issuer that
    # rotates refresh tokens takes the second use for a replay and revokes the sign-in.
    with _MEMORY_LOCK:
        lock = _REFRESHING.setdefault(config.key, threading.Lock())
    with lock:
        if not force_refresh:  # refreshed by another thread while this one waited
            cached = _fresh_in_memory(config)
            if cached is not None:
                return cached
        try:
            token = _backend(config).silent(force_refresh)
        except AuthFailed:
            _drop_memory(config)
            raise
        return _remember(config, token)


def _fresh_in_memory(config: OAuthConfig) -> AccessToken | None:
    with _MEMORY_LOCK:
        cached = _MEMORY.get((config.key, config.username))
    return cached if cached is not None and cached.fresh() else None


def login(config: OAuthConfig, show: Callable[[DeviceCode], object]) -> AccessToken:
    """The interactive sign-in: ``show`` gets the device code (URL and code) to display, then
    this blocks until the user has approved it (or it expired). The refresh token is saved."""
    if config.kind in ("callable", "command"):
        raise ConfigError(f"Signing in is not needed with oauth2_provider {config.provider!r}: "
                          "the access token comes from the configured command or callable.")
    token = _backend(config).login(show)
    return _remember(config, token)


def forget(config: OAuthConfig) -> bool:
    """Sign out: delete the saved sign-in (and revoke it where the provider supports that)."""
    _drop_memory(config)
    if config.kind in ("callable", "command"):
        return False
    return _backend(config).logout()


def sign_in_status(config: OAuthConfig, token: AccessToken | None = None) -> SignIn:
    """Who is signed in and until when (never the token)."""
    store = config.token_store()
    if config.kind in ("callable", "command"):
        return SignIn(config.kind, True, token.identity if token else None,
                      token.expires_at if token else None, "")
    entry = store.get(config.key)
    with _MEMORY_LOCK:
        cached = token or _MEMORY.get((config.key, config.username))
    identity = (cached.identity if cached else None) or (entry or {}).get("identity")
    return SignIn(config.provider, entry is not None or cached is not None, identity,
                  cached.expires_at if cached else None, store.describe())


def _refused(config: OAuthConfig, detail: str) -> AuthFailed:
    who = f" for {config.username}" if config.username else ""
    return AuthFailed(f"The saved OAuth2 sign-in{who} was refused by {config.provider} "
                      f"({detail}): {HINT} {CLI_HINT}.")


def _not_signed_in(config: OAuthConfig) -> AuthFailed:
    who = f" for {config.username}" if config.username else ""
    return AuthFailed(f"No saved OAuth2 sign-in{who} ({config.provider}): {HINT} {CLI_HINT}.")


def _unreachable(config: OAuthConfig, exc: BaseException) -> AuthFailed:
    return AuthFailed(f"Cannot reach the OAuth2 authorization server of {config.provider}: "
                      f"{_network_reason(exc)}.")


def _network_reason(exc: BaseException) -> str:
    """Why a request to the authorization server failed, in words (never a library's
    ``HTTPSConnectionPool(host=..., port=...)`` text, nor one cut in the middle of a word)."""
    import socket
    import ssl
    import textwrap

    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 20:  # the exception, its causes, and exceptions in its args
        e = todo.pop(0)
        if e in chain:
            continue
        chain.append(e)
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    status = next((getattr(getattr(e, "response", None), "status_code", None) for e in chain
                   if getattr(getattr(e, "response", None), "status_code", None)), None)
    if status:
        return f"it answered with HTTP status {status}"
    if names & {"SSLError", "SSLCertVerificationError"} or any(isinstance(e, ssl.SSLError)
                                                               for e in chain):
        return "its TLS certificate was not accepted (for a private CA, set REQUESTS_CA_BUNDLE)"
    if names & {"NameResolutionError"} or any(isinstance(e, socket.gaierror) for e in chain):
        return "its host name could not be found"
    # before the timeouts: urllib3's NewConnectionError is a ConnectTimeoutError by class
    if names & {"ConnectionRefusedError"} or any("refused" in str(e).lower() for e in chain):
        return "the connection was refused (nothing listens at that address)"
    if names & {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "ReadTimeoutError",
                "ConnectTimeoutError"}:
        return "it did not answer in time"
    if names & {"ConnectionError", "NewConnectionError", "MaxRetryError", "OSError"}:
        return "the connection failed"
    if names & {"JSONDecodeError"}:
        return "its answer was not JSON"
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else type(exc).__name__
    return textwrap.shorten(text, 160, placeholder=" \u2026")


# -- token command and callable ---------------------------------------------------------------
def _from_command(config: OAuthConfig) -> AccessToken:
    command = config.token_command
    if not command:
        raise ConfigError("oauth2_provider is 'command' but oauth2_token_command is not set.")
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True,
                              timeout=config.timeout, check=False)
    except FileNotFoundError:
        raise AuthFailed(f"oauth2_token_command: {shlex.split(command)[0]!r} was not found.") \
            from None
    except subprocess.TimeoutExpired:
        raise AuthFailed(f"oauth2_token_command did not finish within {config.timeout:g} s.") \
            from None
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        last = (done.stderr.strip().splitlines() or [""])[-1][:200]
        why = f"exited with status {done.returncode}" if done.returncode else "printed nothing"
        raise AuthFailed(f"oauth2_token_command {why}" + (f": {last}" if last else "") + ".")
    return AccessToken(token.splitlines()[0], None, config.username)


def _from_callable(config: OAuthConfig) -> AccessToken:
    assert config.token_provider is not None
    try:
        value = config.token_provider()
    except Exception as exc:
        raise AuthFailed(f"oauth2_token_provider raised {type(exc).__name__}.") from exc
    if isinstance(value, AccessToken):
        return value
    if not isinstance(value, str) or not value.strip():
        raise AuthFailed("oauth2_token_provider must return an access token (a non-empty str).")
    return AccessToken(value.strip(), None, config.username)


# -- providers --------------------------------------------------------------------------------
def _backend(config: OAuthConfig) -> _Backend:
    config.validate()
    backend: _Backend
    if config.kind == "microsoft":
        backend = _Microsoft(config)
    elif config.kind == "google":
        backend = _Google(config)
    else:
        backend = _Issuer(config)
    _keep_out_of_logs()  # the libraries are imported now: filter their loggers
    return backend


class _Backend:
    def __init__(self, config: OAuthConfig):
        self.config = config
        self.store = config.token_store()
        entry = self.store.get(config.key) or {}
        _keep_out_of_logs(entry.get("refresh_token"))  # before any library sends it

    def silent(self, force: bool) -> AccessToken:
        raise NotImplementedError

    def login(self, show: Callable[[DeviceCode], object]) -> AccessToken:
        raise NotImplementedError

    def logout(self) -> bool:
        return self.store.delete(self.config.key)

    def _entry(self) -> dict[str, Any]:
        entry = self.store.get(self.config.key)
        if not entry:
            raise _not_signed_in(self.config)
        return entry


class _Issuer(_Backend):
    """Any OpenID Connect issuer, through authlib: discovery, device grant, refresh, revoke."""

    _metadata_cache: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: OAuthConfig):
        super().__init__(config)
        try:
            from authlib.integrations.requests_client import OAuth2Session
        except ImportError:
            raise missing("authlib", "OAuth2 sign-in with an OpenID Connect issuer",
                          extra="oauth") from None
        self.issuer = config.provider.rstrip("/")
        self.session = OAuth2Session(config.client_id, scope=" ".join(config.scopes),
                                     token_endpoint_auth_method="none")

    def metadata(self) -> dict[str, Any]:
        cached = self._metadata_cache.get(self.issuer)
        if cached is not None:
            return cached
        url = self.issuer + "/.well-known/openid-configuration"
        try:
            response = self.session.get(url, timeout=self.config.timeout,
                                        withhold_token=True)
            response.raise_for_status()
            data = response.json()
        except Exception as exc:
            raise _unreachable(self.config, exc) from exc
        if data.get("issuer", "").rstrip("/") != self.issuer:
            raise AuthFailed(f"{url} describes the issuer {data.get('issuer')!r}, "
                             f"not {self.issuer!r}.")
        self._metadata_cache[self.issuer] = data
        return data

    def _token(self, result: Mapping[str, Any], identity: str | None) -> AccessToken:
        expires_at = result.get("expires_at")
        if expires_at is None and result.get("expires_in"):
            expires_at = time.time() + float(result["expires_in"])
        claims = self._id_claims(result.get("id_token"))
        identity = (claims.get("email") or claims.get("preferred_username")
                    or claims.get("sub") or identity)
        _keep_out_of_logs(result.get("access_token"), result.get("refresh_token"),
                          result.get("id_token"))
        if result.get("refresh_token"):  # rotated refresh tokens replace the saved one
            self.store.put(self.config.key, {"refresh_token": result["refresh_token"],
                                             "identity": identity, "issuer": self.issuer})
        return AccessToken(result["access_token"], float(expires_at) if expires_at else None,
                           identity)

    def _id_claims(self, id_token: str | None) -> dict[str, Any]:
        if not id_token:
            return {}
        from joserfc import jwt  # authlib's own JOSE library
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        md = self.metadata()
        try:
            keys = KeySet.import_key_set(
                self.session.get(md["jwks_uri"], timeout=self.config.timeout,
                                 withhold_token=True).json())
            token = jwt.decode(id_token, keys,
                               algorithms=md.get("id_token_signing_alg_values_supported"))
            jwt.JWTClaimsRegistry(
                leeway=120, iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.config.client_id or ""},
            ).validate(token.claims)
        except (JoseError, ValueError, KeyError) as exc:
            raise AuthFailed(f"The ID token from {self.issuer} is not valid: {exc}.") from exc
        claims = token.claims
        return dict(claims)

    def login(self, show: Callable[[DeviceCode], object]) -> AccessToken:
        from authlib.integrations.base_client import OAuthError

        md = self.metadata()
        endpoint = md.get("device_authorization_endpoint")
        if not endpoint:
            raise AuthFailed(f"{self.issuer} does not offer the device authorization grant; "
                             "use oauth2_token_command instead.")
        try:
            response = self.session.post(endpoint, data={"client_id": self.config.client_id,
                                                         "scope": " ".join(self.config.scopes)},
                                         timeout=self.config.timeout, withhold_token=True)
            grant = response.json()
        except Exception as exc:
            raise _unreachable(self.config, exc) from exc
        if "device_code" not in grant:
            raise AuthFailed(f"{self.issuer} refused to start the sign-in: "
                             f"{grant.get('error_description') or grant.get('error')}.")
        show(DeviceCode(grant["verification_uri"], grant["user_code"],
                        int(grant.get("expires_in", 600)), grant.get("verification_uri_complete")))
        interval = float(grant.get("interval", 5))
        deadline = time.monotonic() + float(grant.get("expires_in", 600))
        while True:
            try:
                result = self.session.fetch_token(md["token_endpoint"], grant_type=DEVICE_GRANT,
                                                  device_code=grant["device_code"],
                                                  timeout=self.config.timeout)
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    pass
                elif exc.error == "slow_down":
                    interval += 5
                elif exc.error == "expired_token":
                    raise AuthFailed("The sign-in code expired before it was approved; "
                                     "sign in again.") from None
                else:
                    raise AuthFailed(f"The sign-in was not completed: "
                                     f"{exc.description or exc.error}.") from None
            except Exception as exc:
                raise _unreachable(self.config, exc) from exc
            else:
                return self._token(result, None)
            if time.monotonic() + interval > deadline:
                raise AuthFailed("The sign-in code expired before it was approved; sign in again.")
            time.sleep(interval)

    def silent(self, force: bool) -> AccessToken:
        from authlib.integrations.base_client import OAuthError

        entry = self._entry()
        md = self.metadata()
        try:
            result = self.session.refresh_token(md["token_endpoint"],
                                                refresh_token=entry["refresh_token"],
                                                timeout=self.config.timeout)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "unauthorized_client", "invalid_client"):
                self.store.delete(self.config.key)  # useless now; --check must not claim it
                raise _refused(self.config, exc.error) from None
            raise AuthFailed(f"Refreshing the OAuth2 access token failed: "
                             f"{exc.description or exc.error}.") from None
        except Exception as exc:
            raise _unreachable(self.config, exc) from exc
        return self._token(result, entry.get("identity"))

    def logout(self) -> bool:
        entry = self.store.get(self.config.key)
        if entry and self.metadata().get("revocation_endpoint"):
            try:
                self.session.revoke_token(self.metadata()["revocation_endpoint"],
                                          token=entry["refresh_token"],
                                          token_type_hint="refresh_token",
                                          timeout=self.config.timeout)
            except Exception:  # noqa: BLE001, S110 - the local copy is deleted all the same
                pass
        return super().logout()


def _msal_kept(serialized: str) -> str:
    """MSAL's serialized token cache with only what a silent refresh needs (``_MSAL_KEPT``)."""
    try:
        state = json.loads(serialized)
    except ValueError:
        return "{}"
    if not isinstance(state, dict):
        return "{}"
    return json.dumps({kind: state[kind] for kind in _MSAL_KEPT if kind in state},
                      sort_keys=True)


def _msal_signed_in(saved: str | None) -> bool:
    """Whether MSAL's saved token cache holds an account and a refresh token to use."""
    try:
        state = json.loads(saved or "{}")
    except ValueError:
        return False
    return isinstance(state, dict) and bool(state.get("Account")) and \
        bool(state.get("RefreshToken"))


class _Microsoft(_Backend):
    """Microsoft identity platform through MSAL (device code flow, its own token cache)."""

    def __init__(self, config: OAuthConfig):
        super().__init__(config)
        try:
            import msal
        except ImportError:
            raise missing("msal", "OAuth2 sign-in with Microsoft", extra="oauth") from None
        tenant = config.tenant or "common"
        authority = tenant if tenant.startswith("https://") else \
            MICROSOFT_AUTHORITY.format(tenant=tenant)
        self.cache = msal.SerializableTokenCache()
        entry = self.store.get(config.key)
        self.saved = (entry or {}).get("msal_cache")
        self.identity = (entry or {}).get("identity")
        if self.saved:
            self.cache.deserialize(self.saved)
            kept = _msal_kept(self.saved)
            if kept != self.saved:  # saved by an older version, access and ID tokens included
                self.store.put(config.key, {"msal_cache": kept, "identity": self.identity})
                self.saved = kept
        self.authority = authority
        self.scopes = [s for s in config.scopes if s not in _MSAL_RESERVED]

    @functools.cached_property
    def app(self) -> Any:
        """MSAL's application, made when first needed: MSAL reads the authority's metadata as
        it is made, so a send with no saved sign-in never contacts the authority."""
        import msal

        config, tenant = self.config, self.config.tenant or "common"
        try:
            return msal.PublicClientApplication(
                config.client_id, authority=self.authority, token_cache=self.cache,
                timeout=config.timeout,
                # A full authority URL is taken as given (no lookup at Microsoft first).
                instance_discovery=not tenant.startswith("https://"))
        except ValueError as exc:
            raise ConfigError(f"oauth2_tenant: {str(exc).splitlines()[0]}") from None
        except Exception as exc:  # requests' connection errors and the like
            raise _unreachable(config, exc) from exc

    def _save(self, identity: str | None) -> None:
        for kind in ("RefreshToken", "AccessToken"):
            _keep_out_of_logs(*(item.get("secret") for item in self.cache.search(kind)))
        if not (self.cache.has_state_changed or identity != self.identity):
            return
        # Only what a silent refresh needs is kept: the account and its refresh token. Access
        # and ID tokens stay in this process's memory (MSAL gets new ones with the refresh).
        kept = _msal_kept(self.cache.serialize())
        if kept != self.saved or identity != self.identity:
            self.store.put(self.config.key, {"msal_cache": kept, "identity": identity})
            self.saved, self.identity = kept, identity
        self.cache.has_state_changed = False

    def _token(self, result: Mapping[str, Any]) -> AccessToken:
        if "access_token" not in result:
            error = result.get("error", "")
            if error in ("invalid_grant", "interaction_required"):
                self.store.delete(self.config.key)  # useless now; --check must not claim it
                raise _refused(self.config, error)
            text = (result.get("error_description") or error or "no token").splitlines()[0]
            raise AuthFailed(f"Microsoft did not issue a token: {text}.")
        claims = result.get("id_token_claims") or {}
        identity = claims.get("preferred_username") or claims.get("email") or self.identity
        self._save(identity)
        return AccessToken(result["access_token"], time.time() + float(result["expires_in"]),
                           identity)

    def login(self, show: Callable[[DeviceCode], object]) -> AccessToken:
        app = self.app
        try:
            flow = app.initiate_device_flow(scopes=self.scopes)
        except Exception as exc:
            raise _unreachable(self.config, exc) from exc
        if "user_code" not in flow:
            raise AuthFailed(f"Microsoft refused to start the sign-in: "
                             f"{flow.get('error_description') or flow.get('error')}.")
        show(DeviceCode(flow["verification_uri"], flow["user_code"], int(flow["expires_in"]),
                        flow.get("verification_uri_complete")))
        return self._token(app.acquire_token_by_device_flow(flow))

    def silent(self, force: bool) -> AccessToken:
        if not _msal_signed_in(self.saved):  # told without asking the authority anything
            raise _not_signed_in(self.config)
        app = self.app
        accounts = app.get_accounts(username=self.config.username) if \
            self.config.username else []
        accounts = accounts or app.get_accounts()
        if not accounts:
            raise _not_signed_in(self.config)
        try:
            result = app.acquire_token_silent_with_error(self.scopes, account=accounts[0],
                                                         force_refresh=force)
        except Exception as exc:
            raise _unreachable(self.config, exc) from exc
        if result is None:
            raise _not_signed_in(self.config)
        return self._token(result)

    def logout(self) -> bool:
        if _msal_signed_in(self.saved):
            for account in self.app.get_accounts():
                self.app.remove_account(account)
        return super().logout()


class _Google(_Backend):
    """Google through google-auth-oauthlib: the installed-app loopback flow, then refresh."""

    def __init__(self, config: OAuthConfig):
        super().__init__(config)
        try:
            import google_auth_oauthlib  # noqa: F401
        except ImportError:
            raise missing("google-auth-oauthlib", "OAuth2 sign-in with Google",
                          extra="oauth") from None
        assert config.client_id
        path = Path(config.client_id).expanduser()
        if config.client_id.endswith(".json") or path.is_file():
            try:
                self.client_config: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"oauth2_client_id: cannot read the Google client file "
                                  f"{path}: {exc}.") from exc
        else:
            self.client_config = {"installed": {
                "client_id": config.client_id, "auth_uri": GOOGLE_AUTH_URI,
                "token_uri": GOOGLE_TOKEN_URI, "redirect_uris": ["http://localhost"]}}
        self.client = next(iter(self.client_config.values()))

    def login(self, show: Callable[[DeviceCode], object]) -> AccessToken:
        import webbrowser

        from google_auth_oauthlib.flow import InstalledAppFlow

        _keep_out_of_logs()

        try:
            webbrowser.get()
        except webbrowser.Error:
            raise AuthFailed(
                "Google does not allow its mail scope with a device code, and this machine has "
                "no web browser for its loopback sign-in: get tokens elsewhere and set "
                "oauth2_token_command (see the README, 'Google with OAuth2').") from None
        flow = InstalledAppFlow.from_client_config(self.client_config, list(self.config.scopes),
                                                   autogenerate_code_verifier=True)
        try:
            creds = flow.run_local_server(
                host="localhost", bind_addr="127.0.0.1", port=0, open_browser=True,
                authorization_prompt_message="", success_message=(
                    "Signed in; you can close this tab and go back to your notebook."),
                timeout_seconds=int(max(self.config.timeout, 300)),
                access_type="offline", prompt="consent")
        except Exception as exc:  # noqa: BLE001 - oauthlib's, requests' or socket errors alike
            raise AuthFailed(f"The Google sign-in did not complete: {exc}.") from None
        if creds is None or not creds.token:
            raise AuthFailed("The Google sign-in did not complete (no answer in time).")
        return self._token(creds, self.config.username)

    def _token(self, creds: Any, identity: str | None) -> AccessToken:
        _keep_out_of_logs(creds.token, creds.refresh_token)
        identity = identity or self.config.username
        id_token = getattr(creds, "id_token", None)
        if isinstance(id_token, str):
            claims = _unverified_claims(id_token)
            identity = claims.get("email") or identity or claims.get("sub")
        if creds.refresh_token:
            self.store.put(self.config.key, {"refresh_token": creds.refresh_token,
                                             "identity": identity})
        expires_at = None
        if creds.expiry is not None:  # naive UTC
            import calendar

            expires_at = float(calendar.timegm(creds.expiry.utctimetuple()))
        return AccessToken(creds.token, expires_at, identity)

    def silent(self, force: bool) -> AccessToken:
        from google.auth.exceptions import RefreshError, TransportError
        from google.auth.transport.requests import Request
        from google.oauth2.credentials import Credentials

        entry = self._entry()
        creds = Credentials(None, refresh_token=entry["refresh_token"],
                            token_uri=self.client.get("token_uri", GOOGLE_TOKEN_URI),
                            client_id=self.client["client_id"],
                            client_secret=self.client.get("client_secret"),
                            scopes=list(self.config.scopes))
        try:
            creds.refresh(Request())
        except RefreshError as exc:
            if "invalid_grant" in str(exc):
                self.store.delete(self.config.key)
                raise _refused(self.config, "invalid_grant") from None
            raise AuthFailed(f"Refreshing the Google access token failed: "
                             f"{str(exc).splitlines()[0][:200]}.") from None
        except TransportError as exc:
            raise _unreachable(self.config, exc) from exc
        return self._token(creds, entry.get("identity"))


def _unverified_claims(id_token: str) -> dict[str, str]:
    """The string claims of an ID token received directly from the token endpoint over TLS
    (OpenID Connect Core 3.1.3.7 lets a client skip the signature check there); shown to the
    user as who signed in, never used to decide anything."""
    import base64

    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    if not isinstance(claims, dict):
        return {}
    return {k: v for k, v in claims.items() if isinstance(v, str)}
