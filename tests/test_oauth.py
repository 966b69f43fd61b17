"""OAuth2 sign-in against a real OpenID Connect server (node-oidc-provider on 127.0.0.1).

The device codes are approved through the provider's own pages by a script acting as the user;
the SMTP server checks every bearer token at the provider's introspection endpoint.
"""

from __future__ import annotations

import base64
import json
import stat
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any, ClassVar

import aiosmtplib
import pytest
from idp import CLIENT_ID, SCOPES, SHORT_CLIENT_ID, USER_EMAIL, IdentityProvider
from waits import until

from smtp_magic import oauth
from smtp_magic.errors import AuthFailed
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore, token_file

pytestmark = pytest.mark.oauth


def config(idp: IdentityProvider, client_id: str = CLIENT_ID, **kw: Any) -> oauth.OAuthConfig:
    return oauth.OAuthConfig(provider=idp.issuer, client_id=client_id,
                             scopes=tuple(SCOPES.split()), **kw)


class User:
    """Someone who reads the device code off the screen and approves it in a browser."""

    def __init__(self, idp: IdentityProvider, login: str = USER_EMAIL):
        self.idp, self.login = idp, login
        self.abort = False
        self.shown: list[oauth.DeviceCode] = []
        self.result: list[str] = []

    def __call__(self, code: oauth.DeviceCode) -> None:
        self.shown.append(code)

        def approve() -> None:
            time.sleep(0.3)  # the app is polling by now, as with a person
            self.result.append(self.idp.approve_device_code(
                code.verification_uri, code.user_code, self.login, abort=self.abort))

        threading.Thread(target=approve, daemon=True).start()


@pytest.fixture(autouse=True)
def _fresh_memory(no_keyring: None) -> Any:
    oauth.clear_memory()
    yield
    oauth.clear_memory()


def test_device_flow_sign_in_saves_refresh_token_in_private_file(idp: IdentityProvider) -> None:
    cfg = config(idp)
    user = User(idp)
    token = oauth.login(cfg, user)

    assert user.result == ["Sign-in Success"]
    code = user.shown[0]
    assert code.verification_uri == idp.metadata["device_authorization_endpoint"].replace(
        "/device/auth", "/device")
    assert code.user_code in code.text() and code.verification_uri in code.text()
    assert token.identity == USER_EMAIL
    assert idp.validate(USER_EMAIL, token.value)
    assert token.value not in repr(token)
    # No keyring here: the refresh token went to a file only the user can read.
    path = token_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())[cfg.key]
    assert saved["identity"] == USER_EMAIL and saved["refresh_token"]
    status = oauth.sign_in_status(cfg)
    assert status.signed_in and status.identity == USER_EMAIL
    assert "0600" in status.store and token.value not in status.describe()
    assert USER_EMAIL in status.describe() and "valid until" in status.describe()


def test_a_new_process_refreshes_silently_from_the_saved_sign_in(idp: IdentityProvider) -> None:
    cfg = config(idp)
    first = oauth.login(cfg, User(idp))
    oauth.clear_memory()  # as in a fresh kernel
    second = oauth.access_token(cfg)
    assert second.value != first.value and idp.validate(USER_EMAIL, second.value)
    assert second.identity == USER_EMAIL
    assert oauth.access_token(cfg) is second  # fresh: reused, not refreshed again


def test_expired_access_token_is_refreshed_and_refresh_token_rotates(
        idp: IdentityProvider) -> None:
    cfg = config(idp, SHORT_CLIENT_ID)  # 2 s access tokens
    store = TokenStore()
    first = oauth.login(cfg, User(idp))
    rt1 = store.get(cfg.key)["refresh_token"]  # type: ignore[index]
    # Expired at the server (its tokens live idp.short_access_ttl s).
    until(lambda: not idp.validate(USER_EMAIL, first.value), "the access token to expire",
          timeout=idp.short_access_ttl + 10, interval=0.1)
    second = oauth.access_token(cfg)
    assert second.value != first.value and idp.validate(USER_EMAIL, second.value)
    rt2 = store.get(cfg.key)["refresh_token"]  # type: ignore[index]
    assert rt2 != rt1  # public clients get rotated refresh tokens: the new one was saved


def test_revoked_refresh_token_is_exit_3_with_the_login_hint(idp: IdentityProvider) -> None:
    cfg = config(idp)
    oauth.login(cfg, User(idp))
    idp.revoke(TokenStore().get(cfg.key)["refresh_token"])  # type: ignore[index]
    with pytest.raises(AuthFailed) as info:
        oauth.access_token(cfg, force_refresh=True)
    assert info.value.exitcode == 3
    assert "was refused" in str(info.value) and oauth.HINT in str(info.value)
    assert not oauth.sign_in_status(cfg).signed_in  # the useless entry is gone


def test_headless_without_sign_in_fails_at_once_without_prompting(idp: IdentityProvider) -> None:
    started = time.monotonic()
    with pytest.raises(AuthFailed) as info:
        oauth.access_token(config(idp))
    assert time.monotonic() - started < 2
    assert str(info.value).count("\n") == 0 and oauth.HINT in str(info.value)


def test_sign_out_revokes_at_the_provider(idp: IdentityProvider) -> None:
    cfg = config(idp)
    oauth.login(cfg, User(idp))
    refresh = TokenStore().get(cfg.key)["refresh_token"]  # type: ignore[index]
    assert idp.introspect(refresh)["active"]
    assert oauth.forget(cfg)
    assert not idp.introspect(refresh)["active"]
    assert not oauth.sign_in_status(cfg).signed_in


def test_system_keyring_is_used_when_there_is_one(idp: IdentityProvider) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        items: ClassVar[dict[tuple[str, str], str]] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.items.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.items[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.items.pop((service, username))

    keyring.set_keyring(Memory())
    cfg = config(idp)
    oauth.login(cfg, User(idp))
    assert not token_file().exists()
    assert json.loads(Memory.items[("smtp-magic-oauth2", cfg.key)])["refresh_token"]
    assert "system keyring" in oauth.sign_in_status(cfg).store
    oauth.clear_memory()
    assert idp.validate(USER_EMAIL, oauth.access_token(cfg).value)


def test_device_code_aborted_by_the_user(idp: IdentityProvider) -> None:
    user = User(idp)
    user.abort = True
    with pytest.raises(AuthFailed, match="not completed") as info:
        oauth.login(config(idp), user)
    assert info.value.exitcode == 3
    assert not oauth.sign_in_status(config(idp)).signed_in


# -- token command and callable ----------------------------------------------------------------
def test_token_command_output_is_the_token(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text("print('tok-from-command')\n")
    cfg = oauth.OAuthConfig(provider="command", token_command=f"{sys.executable} {script}",
                            username="me@example.test")
    token = oauth.access_token(cfg)
    assert token.value == "tok-from-command" and "tok-from-command" not in repr(token)


def test_failing_token_command_is_exit_3_without_its_output(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text("import sys\nprint('half-a-token')\nsys.exit('no cached token: log in')\n")
    cfg = oauth.OAuthConfig(provider="command", token_command=f"{sys.executable} {script}")
    with pytest.raises(AuthFailed) as info:
        oauth.access_token(cfg)
    assert info.value.exitcode == 3
    assert "exited with status 1: no cached token: log in" in str(info.value)
    assert "half-a-token" not in str(info.value)


def test_token_callable() -> None:
    cfg = oauth.OAuthConfig(provider="callable", token_provider=lambda: "tok-from-callable")
    assert oauth.access_token(cfg).value == "tok-from-callable"
    bad = oauth.OAuthConfig(provider="callable", token_provider=lambda: None)
    with pytest.raises(AuthFailed, match="must return an access token"):
        oauth.access_token(bad)


# -- Google's installed-app loopback flow (google-auth-oauthlib), aimed at the local provider ---
def test_google_loopback_flow_with_a_browser_on_this_machine(
        idp: IdentityProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Google backend with its endpoints taken from a client file, as Google's console
    downloads it, pointing at the local provider; the "browser" is a script clicking through."""
    client_file = tmp_path / "client_secret.json"
    client_file.write_text(json.dumps({"installed": {
        "client_id": "smtp-magic-installed", "client_secret": "installed-app-secret",
        "auth_uri": idp.metadata["authorization_endpoint"],
        "token_uri": idp.metadata["token_endpoint"],
        "redirect_uris": ["http://localhost"]}}))
    visits: list[str] = []

    class ScriptedBrowser(webbrowser.BaseBrowser):
        def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
            def run() -> None:
                import requests
                redirect = idp.approve_authorization(url)
                visits.append(redirect)
                requests.get(redirect, timeout=10)  # the browser lands on the loopback server
            threading.Thread(target=run, daemon=True).start()
            return True

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the local provider is plain http
    monkeypatch.setattr(webbrowser, "get", lambda using=None: ScriptedBrowser())
    cfg = oauth.OAuthConfig(provider="google", client_id=str(client_file),
                            scopes=tuple(SCOPES.split()))
    token = oauth.login(cfg, lambda code: pytest.fail("Google has no device code"))
    assert visits and visits[0].startswith("http://localhost:")
    assert idp.validate(USER_EMAIL, token.value)
    assert token.identity == USER_EMAIL
    oauth.clear_memory()
    refreshed = oauth.access_token(cfg)
    assert refreshed.value != token.value and idp.validate(USER_EMAIL, refreshed.value)


def test_google_without_a_browser_points_to_the_token_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_browser(using: str | None = None) -> webbrowser.BaseBrowser:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", no_browser)
    cfg = oauth.OAuthConfig(provider="google", client_id="123.apps.googleusercontent.com",
                            scopes=("https://mail.google.com/",))
    with pytest.raises(AuthFailed, match="oauth2_token_command"):
        oauth.login(cfg, lambda code: None)


# -- the SMTP side: XOAUTH2 and OAUTHBEARER checked by introspection ----------------------------
async def _auth(server: CaptureServer, client_tls: Any, mechanism: str, blob: bytes
                ) -> list[tuple[int, str]]:
    replies = []
    async with aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=True,
                               tls_context=client_tls) as smtp:
        await smtp.ehlo()
        reply = await smtp.execute_command(b"AUTH", mechanism.encode(), base64.b64encode(blob))
        replies.append((reply.code, reply.message))
        if reply.code == 334:
            reply = await smtp.execute_command(b"" if mechanism == "XOAUTH2" else b"AQ==")
            replies.append((reply.code, reply.message))
    return replies


async def test_smtp_server_accepts_only_live_tokens_of_that_user(
        idp: IdentityProvider, oauth_server: CaptureServer, client_tls: Any) -> None:
    import asyncio

    token = await asyncio.to_thread(oauth.login, config(idp), User(idp))
    ok = await _auth(oauth_server, client_tls, "XOAUTH2",
                     oauth.sasl_xoauth2(USER_EMAIL, token.value))
    assert ok == [(235, "2.7.0 Authentication successful")]
    ok = await _auth(oauth_server, client_tls, "OAUTHBEARER", oauth.sasl_oauthbearer(
        USER_EMAIL, token.value, oauth_server.host, oauth_server.port))
    assert ok[0][0] == 235
    wrong_user = await _auth(oauth_server, client_tls, "XOAUTH2",
                             oauth.sasl_xoauth2("mallory@example.test", token.value))
    assert [c for c, _ in wrong_user] == [334, 535]
    assert oauth.decode_challenge(wrong_user[0][1]) == "status 401, schemes bearer, scope smtp"
    bogus = await _auth(oauth_server, client_tls, "OAUTHBEARER",
                        oauth.sasl_oauthbearer(USER_EMAIL, "not-a-token", "h", 1))
    assert [c for c, _ in bogus] == [334, 535]
    assert oauth_server.logins == [("XOAUTH2", USER_EMAIL, True),
                                   ("OAUTHBEARER", USER_EMAIL, True),
                                   ("XOAUTH2", "mallory@example.test", False),
                                   ("OAUTHBEARER", USER_EMAIL, False)]


def test_no_token_in_debug_logs_of_any_library(
        idp: IdentityProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Everything at DEBUG (requests-oauthlib logs whole token responses there): device flow,
    refresh, sign-out, and Google's loopback flow; no token may reach a log record."""
    import logging

    caplog.set_level(logging.DEBUG)
    cfg = config(idp)
    first = oauth.login(cfg, User(idp))
    refresh = TokenStore().get(cfg.key)["refresh_token"]  # type: ignore[index]
    oauth.clear_memory()
    second = oauth.access_token(cfg)
    rotated = TokenStore().get(cfg.key)["refresh_token"]  # type: ignore[index]
    oauth.forget(cfg)
    test_google_loopback_flow_with_a_browser_on_this_machine(idp, tmp_path, monkeypatch)
    google = json.loads(token_file().read_text())
    secrets = {first.value, second.value, refresh, rotated,
               *(e["refresh_token"] for e in google.values())}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "requests_oauthlib" in {r.name.split(".")[0] for r in caplog.records}
    leaked = [s[:6] for s in secrets if s in logged]
    assert leaked == [], [line for line in logged.splitlines() if any(s in line for s in secrets)]


def test_oauth_libraries_are_imported_only_when_oauth_is_used() -> None:
    from test_render import _imported_after

    libraries = {"msal", "authlib", "joserfc", "google_auth_oauthlib", "requests_oauthlib",
                 "oauthlib", "keyring", "requests", "smtp_magic.oauth"}
    code = ("import smtp_magic, smtp_magic.magics, smtp_magic.transport, smtp_magic.api\n"
            "from smtp_magic.config import SmtpMagic\n"
            "SmtpMagic().update({'oauth2_provider': 'microsoft', 'oauth2_client_id': 'x'})"
            ".snapshot()")
    assert _imported_after(code, libraries) == []
    # The module itself is light too: the libraries come with the provider's backend.
    assert _imported_after("import smtp_magic.oauth", libraries) == ["smtp_magic.oauth"]


def test_microsoft_not_signed_in_says_sign_in_once_without_asking_the_authority(
        refused_port: int) -> None:
    # MSAL looks the authority up as its app is made: with no saved sign-in there is nothing
    # to refresh, so the answer is the hint, whether the authority is reachable or not.
    cfg = oauth.OAuthConfig(provider="microsoft", client_id="x", scopes=("s",),
                            tenant=f"https://127.0.0.1:{refused_port}/organizations", timeout=2)
    with pytest.raises(AuthFailed) as info:
        oauth.access_token(cfg)
    text = str(info.value)
    assert info.value.exitcode == 3
    assert text.startswith("No saved OAuth2 sign-in (microsoft): ") and "Cannot reach" not in text
    assert "`%smtp_config --oauth2-login`" in text and "`smtp-magic check --oauth2-login`" in text


def test_missing_client_id_is_exit_1_before_any_connection(refused_port: int) -> None:
    import smtp_magic

    response = smtp_magic.send("a@example.test", "s", "b", config={
        "host": "127.0.0.1", "port": refused_port, "security": "tls",
        "oauth2_provider": "microsoft", "username": "me@example.test"})
    assert response.exitcode == 1  # not 2: the refused port was never tried
    assert "oauth2_client_id is not set" in response.message


def test_locked_keyring_is_exit_3_said_plainly(idp: IdentityProvider) -> None:
    import keyring
    from keyring.backend import KeyringBackend
    from keyring.errors import KeyringLocked

    class Locked(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            raise KeyringLocked("the collection is locked")

        def set_password(self, service: str, username: str, password: str) -> None:
            raise KeyringLocked("the collection is locked")

        def delete_password(self, service: str, username: str) -> None:
            raise KeyringLocked("the collection is locked")

    keyring.set_keyring(Locked())
    with pytest.raises(AuthFailed, match="system keyring could not be used.*KeyringLocked"):
        oauth.access_token(config(idp))
