"""Sends signed in with OAuth2: the Python API, the CLI and headless kernels, against
node-oidc-provider and a TLS SMTP server that checks every token by introspection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from idp import CLIENT_ID, SCOPES, SHORT_CLIENT_ID, USER_EMAIL, IdentityProvider
from waits import until

import smtp_magic
from smtp_magic import oauth
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore

pytestmark = pytest.mark.oauth


def settings(idp: IdentityProvider, server: CaptureServer, **extra: Any) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": "starttls",
            "oauth2_provider": idp.issuer, "oauth2_client_id": CLIENT_ID,
            "oauth2_scopes": SCOPES, "username": USER_EMAIL, **extra}


def sign_in(idp: IdentityProvider, values: dict[str, Any]) -> oauth.AccessToken:
    """The interactive sign-in, approved by a script acting as the user."""
    from test_oauth import User

    cfg = oauth.OAuthConfig.from_settings(smtp_magic.SmtpMagic().update(values).snapshot())
    return oauth.login(cfg, User(idp))


def send(values: dict[str, Any], subject: str = "Signed in") -> smtp_magic.Response:
    return smtp_magic.send("boss@example.test", subject, "<p>hello</p>", config=values)


def test_send_signed_in_with_oauth2_arrives(idp: IdentityProvider, oauth_server: CaptureServer,
                                            client_ssl_env: Path) -> None:
    values = settings(idp, oauth_server)
    sign_in(idp, values)
    oauth.clear_memory()  # a fresh process: only the saved sign-in
    response = send(values)
    assert response.exitcode == 0, response.message
    [got] = oauth_server.wait_for(1)
    assert got.subject == "Signed in" and got.rcpt_to == ("boss@example.test",)
    assert oauth_server.logins == [("XOAUTH2", USER_EMAIL, True)]


def test_expired_token_is_refreshed_silently_before_the_send(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    values = settings(idp, oauth_server, oauth2_client_id=SHORT_CLIENT_ID)
    first = sign_in(idp, values)
    # Expired at the server (its tokens live idp.short_access_ttl s).
    until(lambda: not idp.validate(USER_EMAIL, first.value), "the access token to expire",
          timeout=idp.short_access_ttl + 10, interval=0.1)
    response = send(values, "after expiry")
    assert response.exitcode == 0, response.message
    assert oauth_server.wait_for(1)[0].subject == "after expiry"
    assert oauth_server.logins == [("XOAUTH2", USER_EMAIL, True)]  # no failed try first


def test_token_refused_by_the_server_is_refreshed_once(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    values = settings(idp, oauth_server)
    token = sign_in(idp, values)
    idp.revoke(token.value)  # the access token dies; the app still thinks it is good for 10 min
    response = send(values, "after 535")
    assert response.exitcode == 0, response.message
    assert oauth_server.logins == [("XOAUTH2", USER_EMAIL, False), ("XOAUTH2", USER_EMAIL, True)]


def test_revoked_sign_in_is_exit_3_with_the_hint_and_kept_in_the_outbox(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    values = settings(idp, oauth_server)
    token = sign_in(idp, values)
    cfg = oauth.OAuthConfig.from_settings(smtp_magic.SmtpMagic().update(values).snapshot())
    idp.revoke(TokenStore().get(cfg.key)["refresh_token"])  # type: ignore[index]
    idp.revoke(token.value)
    response = send(values, "revoked")
    assert response.exitcode == 3
    assert "`%smtp_config --oauth2-login` interactively once" in response.message
    assert "\n" not in response.message
    assert oauth_server.count() == 0


def test_plaintext_connection_is_refused_before_credentials(
        idp: IdentityProvider, tmp_path: Path, no_keyring: None) -> None:
    fetched: list[str] = []

    def provider() -> str:
        fetched.append("token")
        return "tok"

    with CaptureServer(tmp_path / "plain", token_validator=lambda u, t: True) as plain:
        s = smtp_magic.SmtpMagic().update({"host": plain.host, "port": plain.port,
                                           "security": "none", "auth": "oauth2",
                                           "allow_plaintext_auth": True, "username": "me@x.test"})
        s.oauth2_token_provider = provider
        response = smtp_magic.send("a@example.test", "no", "x", config=s)
        assert response.exitcode == 3 and "encrypted connection" in response.message
        assert plain.logins == [] and fetched == []  # no token was even fetched
        assert plain.count() == 0


def test_token_command_signs_in(oauth_server: CaptureServer, idp: IdentityProvider,
                                client_ssl_env: Path, tmp_path: Path) -> None:
    import sys

    values = settings(idp, oauth_server)
    token = sign_in(idp, values)
    script = tmp_path / "print_token.py"
    script.write_text(f"print({token.value!r})\n")
    response = send({"host": oauth_server.host, "port": oauth_server.port,
                     "security": "starttls", "username": USER_EMAIL,
                     "oauth2_provider": "command",
                     "oauth2_token_command": f"{sys.executable} {script}"}, "via command")
    assert response.exitcode == 0, response.message
    assert oauth_server.wait_for(1)[0].subject == "via command"
    # With a provider's presets, the command is still what gives the token.
    response = send({"oauth2_provider": "google", "oauth2_token_command":
                     f"{sys.executable} {script}", "host": oauth_server.host,
                     "port": oauth_server.port, "security": "starttls",
                     "username": USER_EMAIL}, "google preset, own command")
    assert response.exitcode == 0, response.message


def test_check_shows_identity_and_expiry_not_the_token(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smtp_magic import cli

    values = settings(idp, oauth_server)
    token = sign_in(idp, values)
    conf = Path(oauth_server.maildir).parent / "conn.json"
    conf.write_text(json.dumps(values))
    rc = cli.main(["check", "--config", str(conf)])
    out = capsys.readouterr()
    assert rc == 0, out
    assert f"signed in with OAuth2 (XOAUTH2) as {USER_EMAIL}" in out.out
    assert "valid until" in out.out
    assert token.value not in out.out + out.err


def test_refused_token_message_carries_the_decoded_challenge(
        oauth_server: CaptureServer, client_ssl_env: Path, tmp_path: Path) -> None:
    import sys

    script = tmp_path / "bogus.py"
    script.write_text("print('not-a-valid-token-at-all')\n")
    response = send({"host": oauth_server.host, "port": oauth_server.port,
                     "security": "starttls", "username": USER_EMAIL,
                     "oauth2_token_command": f"{sys.executable} {script}"}, "bogus")
    assert response.exitcode == 3
    assert "refused the OAuth2 token for 'analyst@example.test': 535 5.7.8" in response.message
    assert "(the server said: status 401, schemes bearer, scope smtp)" in response.message
    assert "not-a-valid-token-at-all" not in response.message
    # Tried twice: the command was run again for a fresh token after the first 535.
    assert [ok for _, _, ok in oauth_server.logins] == [False, False]


class RefusingServer(CaptureServer):
    """Refuses every password login with one scripted reply (the providers' well-known ones)."""

    reply = "535 5.7.8 no"

    def _authenticate(self, *args: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=False, handled=False, message=self.reply)


@pytest.mark.parametrize(("reply", "expected"), [
    ("535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
     "--oauth2-provider microsoft"),
    ("550 5.7.30 Basic authentication is not supported for Client Submission.",
     "--oauth2-provider microsoft"),
    ("534 5.7.9 Application-specific password required.", "app password"),
])
def test_provider_guidance_for_refused_password_logins(
        reply: str, expected: str, tmp_path: Path, server_tls: Any, client_ssl_env: Path
        ) -> None:
    server = RefusingServer(tmp_path / "refusing", tls="starttls", ssl_context=server_tls,
                            users={"me@example.test": "pw"}, require_auth=True)
    server.reply = reply
    with server:
        response = smtp_magic.send("a@example.test", "s", "b", config={
            "host": server.host, "port": server.port, "security": "starttls",
            "username": "me@example.test", "password": "pw"})
    assert response.exitcode == 3
    assert reply.split(".")[0] in response.message and expected in response.message
    assert "README" in response.message and "\n" not in response.message


def test_a_merge_over_parallel_connections_refreshes_once(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    """Four connections sign in at once right after a restart (no token in memory): one
    refresh serves them all. The issuer rotates refresh tokens and revokes the sign-in when one
    is used twice, which parallel refreshes did."""
    values = settings(idp, oauth_server, connections=4)
    sign_in(idp, values)
    oauth.clear_memory()
    rows = [{"to": f"r{n}@example.test", "subject": f"Row {n}", "body": "x"} for n in range(8)]
    responses = smtp_magic.send_many(rows, config=values)
    assert [r.exitcode for r in responses] == [0] * 8, [r.message for r in responses]
    oauth.clear_memory()
    assert send(values, "still signed in").exitcode == 0
