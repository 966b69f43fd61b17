"""The Microsoft backend (MSAL itself) against node-oidc-provider shaped like an Entra authority.

MSAL only talks to HTTPS authorities with a tenant path, so the provider here serves
``https://127.0.0.1:PORT/contoso/v2.0`` with a certificate of the test CA, and ``oauth2_tenant``
is set to that authority URL (the form used for national clouds). Everything else is what a
Microsoft 365 user runs: device code, MSAL's token cache saved as the sign-in, silent refresh.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from idp import CLIENT_ID, USER_EMAIL, IdentityProvider
from test_oauth import User
from waits import until

import smtp_magic
from smtp_magic import oauth
from smtp_magic.errors import AuthFailed
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore, token_file

pytestmark = pytest.mark.oauth


@pytest.fixture(autouse=True)
def _trust(ms_idp: IdentityProvider, client_ssl_env: Path, no_keyring: None,
           monkeypatch: pytest.MonkeyPatch) -> Any:
    # MSAL uses requests, which reads REQUESTS_CA_BUNDLE (not SSL_CERT_FILE).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ms_idp.verify))
    oauth.clear_memory()
    yield
    oauth.clear_memory()


def settings(ms_idp: IdentityProvider, **extra: Any) -> dict[str, Any]:
    return {"oauth2_provider": "microsoft", "oauth2_client_id": CLIENT_ID,
            "oauth2_tenant": ms_idp.issuer.removesuffix("/v2.0"),
            "oauth2_scopes": "smtp offline_access", "username": USER_EMAIL, **extra}


def cfg(values: dict[str, Any]) -> oauth.OAuthConfig:
    return oauth.OAuthConfig.from_settings(smtp_magic.SmtpMagic().update(values).snapshot())


def refresh_token_of(config: oauth.OAuthConfig) -> str:
    cache = json.loads(TokenStore().get(config.key)["msal_cache"])  # type: ignore[index]
    [entry] = cache["RefreshToken"].values()
    return str(entry["secret"])


def test_msal_device_flow_refresh_and_revocation(ms_idp: IdentityProvider) -> None:
    config = cfg(settings(ms_idp))
    assert config.kind == "microsoft"
    user = User(ms_idp)
    token = oauth.login(config, user)
    assert user.result == ["Sign-in Success"]
    assert token.identity == USER_EMAIL and ms_idp.validate(USER_EMAIL, token.value)
    assert json.loads(token_file().read_text())[config.key]["identity"] == USER_EMAIL

    oauth.clear_memory()  # a new kernel: MSAL's cache comes back from the saved sign-in
    again = oauth.access_token(config)
    assert ms_idp.validate(USER_EMAIL, again.value)
    forced = oauth.access_token(config, force_refresh=True)
    assert forced.value != again.value and ms_idp.validate(USER_EMAIL, forced.value)

    ms_idp.revoke(refresh_token_of(config))
    with pytest.raises(AuthFailed) as info:
        oauth.access_token(config, force_refresh=True)
    assert info.value.exitcode == 3 and oauth.HINT in str(info.value)
    assert not oauth.sign_in_status(config).signed_in


def test_send_signed_in_through_msal(ms_idp: IdentityProvider, tmp_path: Path,
                                     server_tls: ssl.SSLContext,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with CaptureServer(tmp_path / "m365", tls="starttls", ssl_context=server_tls,
                       token_validator=ms_idp.validate, require_auth=True) as server:
        # The preset would say smtp.office365.com:587; the test's server is given explicitly.
        values = settings(ms_idp, host=server.host, port=server.port)
        assert smtp_magic.SmtpMagic().update(values).security == "starttls"  # from the preset
        token = oauth.login(cfg(values), User(ms_idp))
        oauth.clear_memory()
        response = smtp_magic.send("boss@example.test", "Via MSAL", "hello", config=values)
        assert response.exitcode == 0, response.message
        assert server.wait_for(1)[0].subject == "Via MSAL"
        assert server.logins == [("XOAUTH2", USER_EMAIL, True)]
        report = smtp_magic.api.check(values)
        assert f"signed in with OAuth2 (XOAUTH2) as {USER_EMAIL}" in "\n".join(report.lines())
    secrets = {token.value, refresh_token_of(cfg(values)), oauth.access_token(cfg(values)).value}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("msal") for r in caplog.records)
    assert [s[:6] for s in secrets if s in logged] == []


def unreachable_copy(ms_idp: IdentityProvider, port: int, values: dict[str, Any],
                     signed_in: bool) -> dict[str, Any]:
    """``values`` with the authority at ``port``, where nothing answers; with the saved sign-in
    of ``values`` (as if the authority had gone away since) when ``signed_in``."""
    from urllib.parse import urlsplit

    tenant = f"https://127.0.0.1:{port}" + urlsplit(ms_idp.issuer).path.removesuffix("/v2.0")
    moved = {**values, "oauth2_tenant": tenant, "timeout": 5}
    if signed_in:
        TokenStore().put(cfg(moved).key, TokenStore().get(cfg(values).key))  # type: ignore[arg-type]
    return moved


def test_an_unreachable_authority_is_said_only_when_a_sign_in_is_saved(
        ms_idp: IdentityProvider, refused_port: int) -> None:
    values = settings(ms_idp)
    oauth.login(cfg(values), User(ms_idp))
    oauth.clear_memory()
    away = cfg(unreachable_copy(ms_idp, refused_port, values, signed_in=True))
    with pytest.raises(AuthFailed) as saved:
        oauth.access_token(away)
    assert str(saved.value).startswith(
        "Cannot reach the OAuth2 authorization server of microsoft: the connection was refused")
    assert TokenStore().get(away.key) is not None  # kept: the authority may come back
    TokenStore().delete(away.key)  # the same settings, never signed in
    with pytest.raises(AuthFailed) as none:
        oauth.access_token(away)
    assert str(none.value) == (f"No saved OAuth2 sign-in for {USER_EMAIL} (microsoft): "
                               f"{oauth.HINT} {oauth.CLI_HINT}.")
    assert none.value.exitcode == saved.value.exitcode == 3


def test_smtp_send_not_signed_in_says_sign_in_once_with_the_authority_unreachable(
        ms_idp: IdentityProvider, tmp_path: Path, server_tls: ssl.SSLContext,
        refused_port: int) -> None:
    with CaptureServer(tmp_path / "m365", tls="starttls", ssl_context=server_tls,
                       token_validator=ms_idp.validate, require_auth=True) as server:
        values = unreachable_copy(ms_idp, refused_port, settings(
            ms_idp, host=server.host, port=server.port), signed_in=False)
        response = smtp_magic.send("boss@example.test", "Not signed in", "x", config=values)
        assert response.exitcode == 3, response.message
        assert "No saved OAuth2 sign-in" in response.message, response.message
        assert oauth.HINT in response.message and "Cannot reach" not in response.message
        assert server.logins == [] and server.messages() == []


def test_short_lived_msal_token_is_refreshed_before_use(ms_idp: IdentityProvider) -> None:
    from idp import SHORT_CLIENT_ID

    config = cfg(settings(ms_idp, oauth2_client_id=SHORT_CLIENT_ID))
    first = oauth.login(config, User(ms_idp))
    # Expired at the server (its tokens live ms_idp.short_access_ttl s) and for the client (the
    # server counts whole seconds, so it may reject the token a moment before the client would).
    until(lambda: not first.fresh() and not ms_idp.validate(USER_EMAIL, first.value),
          "the access token to expire", timeout=ms_idp.short_access_ttl + 10, interval=0.1)
    second = oauth.access_token(config)
    assert second.value != first.value and ms_idp.validate(USER_EMAIL, second.value)


def test_the_saved_sign_in_holds_no_access_or_id_token(ms_idp: IdentityProvider,
                                                       tmp_path: Path) -> None:
    """The docs say access tokens stay in memory: the saved sign-in is MSAL's account and
    refresh token only, and a new process (a kernel restart) still refreshes silently."""
    values = settings(ms_idp)
    config = cfg(values)
    token = oauth.login(config, User(ms_idp))
    raw = token_file().read_text()
    cache = json.loads(json.loads(raw)[config.key]["msal_cache"])
    assert set(cache) <= {"Account", "RefreshToken", "AppMetadata"} and cache["RefreshToken"]
    assert token.value not in raw
    jwt = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]*")  # an ID token (or a JWT access token)
    assert not jwt.search(raw)

    restart = ("import json, sys\nfrom smtp_magic import SmtpMagic, oauth\n"
               "values = json.loads(sys.argv[1])\n"
               "config = oauth.OAuthConfig.from_settings(SmtpMagic().update(values).snapshot())\n"
               "print(oauth.access_token(config).value)")
    proc = subprocess.run([sys.executable, "-c", restart, json.dumps(values)], env=os.environ,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    fresh = proc.stdout.strip()
    assert fresh != token.value and ms_idp.validate(USER_EMAIL, fresh)
    raw = token_file().read_text()
    assert fresh not in raw and not jwt.search(raw)
    assert set(json.loads(json.loads(raw)[config.key]["msal_cache"])) <= {
        "Account", "RefreshToken", "AppMetadata"}
