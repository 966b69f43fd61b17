"""OAuth2 sign-in from the front ends: %smtp_config, the CLI in a terminal, the form's Sign in."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from idp import CLIENT_ID, SCOPES, USER_EMAIL, IdentityProvider
from kernels import kernel_environment
from test_oauth import User

from smtp_magic import oauth
from smtp_magic.config import SmtpMagic
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore

pytestmark = pytest.mark.oauth


def options(idp: IdentityProvider, server: CaptureServer) -> str:
    return (f"--host {server.host} --port {server.port} --security starttls "
            f"--oauth2-provider {idp.issuer} --oauth2-client-id {CLIENT_ID} "
            f"--oauth2-scopes '{SCOPES}' --username {USER_EMAIL}")


def test_smtp_config_oauth2_login_check_and_send(
        ip: Any, idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from smtp_magic.config import current

    shown: list[Any] = []
    user = User(idp)

    def display(obj: Any) -> None:  # the notebook shows the code; the user reads it
        shown.append(obj)
        user(obj)

    monkeypatch.setattr("smtp_magic.magics.display", display)
    ip.run_line_magic("smtp_config", options(idp, oauth_server))
    assert current().auth == "oauth2"  # implied by --oauth2-provider
    ip.run_line_magic("smtp_config", "--oauth2-login")
    assert user.result == ["Sign-in Success"]
    [code] = shown
    markup = code._repr_html_()
    assert code.user_code in markup and "Copy code" in markup
    assert f"href='{code.verification_uri}'" in markup
    out = capsys.readouterr().out
    assert f"Signed in with OAuth2 ({idp.issuer}) as {USER_EMAIL}" in out

    oauth.clear_memory()  # as after a kernel restart
    ip.run_line_magic("smtp_config", "--check")
    out = capsys.readouterr().out
    assert f"Login: signed in with OAuth2 (XOAUTH2) as {USER_EMAIL}; access token valid until" \
        in out
    ip.run_cell('%%smtp_send --to boss@example.test --subject "From the magic" --sync\nhi')
    assert oauth_server.wait_for(1)[0].subject == "From the magic"

    ip.run_line_magic("smtp_config", "--oauth2-logout")
    assert "Signed out" in capsys.readouterr().out
    assert not oauth.sign_in_status(oauth.OAuthConfig.from_settings(current().snapshot())
                                    ).signed_in


def test_provider_presets_set_host_port_and_security(ip: Any) -> None:
    from smtp_magic.config import current

    ip.run_line_magic("smtp_config", "--oauth2-provider microsoft --oauth2-client-id app-1")
    s = current()
    assert (s.host, s.port, s.security, s.auth) == ("smtp.office365.com", 587, "starttls",
                                                   "oauth2")
    cfg = oauth.OAuthConfig.from_settings(s.snapshot())
    assert cfg.scopes == ("https://outlook.office.com/SMTP.Send", "offline_access")
    ip.run_line_magic("smtp_config", "--oauth2-provider google --port 587 --security starttls")
    assert (s.host, s.port, s.security) == ("smtp.office365.com", 587, "starttls")  # kept
    s2 = SmtpMagic().update({"oauth2_provider": "google"})
    assert (s2.host, s2.port, s2.security) == ("smtp.gmail.com", 465, "tls")
    assert oauth.OAuthConfig.from_settings(s2.snapshot()).scopes == ("https://mail.google.com/",)


def test_json_config_and_unknown_provider(tmp_path: Path) -> None:
    from smtp_magic.errors import ConfigError

    path = tmp_path / "conn.json"
    path.write_text(json.dumps({"target": "smtp.example.org", "oauth2_provider": "command",
                                "oauth2_token_command": "pass show mail/token"}))
    s = SmtpMagic().load_file(path)
    assert s.auth == "oauth2" and s.host == "smtp.example.org"
    with pytest.raises(ConfigError, match="oauth2_provider.*expected microsoft, google"):
        SmtpMagic().update({"oauth2_provider": "yahoo"})
    with pytest.raises(ConfigError, match="did you mean 'oauth2_provider'"):
        SmtpMagic().update({"oauth2_providr": "google"})


def test_cli_check_signs_in_from_a_terminal(
        idp: IdentityProvider, oauth_server: CaptureServer, ca_file: Path, tmp_path: Path
        ) -> None:
    """`smtp-magic check --oauth2-login`: the code is printed as text; a person approves it."""
    conf = tmp_path / "conn.json"
    conf.write_text(json.dumps({
        "host": oauth_server.host, "port": oauth_server.port, "security": "starttls",
        "oauth2_provider": idp.issuer, "oauth2_client_id": CLIENT_ID, "oauth2_scopes": SCOPES,
        "username": USER_EMAIL}))
    env = {**kernel_environment(tmp_path / "env"), "SSL_CERT_FILE": str(ca_file),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    proc = subprocess.Popen([sys.executable, "-m", "smtp_magic", "check", "--config", str(conf),
                             "--oauth2-login"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # for the person at the terminal; stdout stays JSON
    match = re.match(r"To sign in, open (\S+) and enter the code (\S+) \(valid for", first)
    assert match, first
    assert idp.approve_device_code(match[1], match[2]) == "Sign-in Success"
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(rest)
    assert report["exitcode"] == 0 and f"as {USER_EMAIL}" in report["oauth2_login"]
    assert report["login"].startswith("signed in with OAuth2 (XOAUTH2)")
    saved = json.loads((tmp_path / "env" / "xdg" / "smtp_magic" / "oauth2-tokens.json")
                       .read_text())
    [entry] = saved.values()
    assert entry["refresh_token"] not in first + rest + err

    # A later headless send from cron: no code, just the saved sign-in.
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"to": "boss@example.test", "subject": "cron",
                                   "body": "nightly"}))
    done = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conf),
                           "--request", str(request)], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["exitcode"] == 0
    assert oauth_server.wait_for(1)[0].subject == "cron"


def test_cli_send_without_sign_in_is_exit_3_json(
        idp: IdentityProvider, oauth_server: CaptureServer, ca_file: Path, tmp_path: Path
        ) -> None:
    conf = tmp_path / "conn.json"
    conf.write_text(json.dumps({
        "host": oauth_server.host, "port": oauth_server.port, "security": "starttls",
        "oauth2_provider": idp.issuer, "oauth2_client_id": CLIENT_ID, "username": USER_EMAIL}))
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"to": "boss@example.test", "subject": "x", "body": "y"}))
    env = {**kernel_environment(tmp_path / "env"), "SSL_CERT_FILE": str(ca_file),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    done = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conf),
                           "--request", str(request)], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 3
    response = json.loads(done.stdout)
    assert response["exitcode"] == 3 and oauth.HINT in response["message"]
    assert "Traceback" not in done.stderr


def form_settings(idp: IdentityProvider, server: CaptureServer) -> SmtpMagic:
    """Settings of a form that signs in at ``idp`` to send through ``server``."""
    return SmtpMagic().update({
        "host": server.host, "port": server.port, "security": "starttls",
        "oauth2_provider": idp.issuer, "oauth2_client_id": CLIENT_ID, "oauth2_scopes": SCOPES,
        "username": USER_EMAIL})


def test_form_sign_in_button_shows_the_code_then_sends(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    from smtp_magic.widgets import compose
    from smtp_magic.widgets._common import descendants as _descendants

    settings = form_settings(idp, oauth_server)
    form = compose(settings=settings, to="boss@example.test", subject="From the form",
                   namespace={})
    try:
        assert form.sign_in_button.layout.display is None  # shown for auth = oauth2
        assert form.password.layout.display == "none"
        form.sign_in_button.click()
        deadline = time.monotonic() + 10
        while "Copy code" not in form.settings_status.value:
            assert time.monotonic() < deadline, form.settings_status.value
            time.sleep(0.05)
        code = re.search(r"<code[^>]*>([^<]+)</code>", form.settings_status.value)
        uri = re.search(r"href='([^']+)'", form.settings_status.value)
        assert code and uri and form.sign_in_button.disabled
        assert idp.approve_device_code(uri[1], code[1]) == "Sign-in Success"
        while "Signed in" not in form.settings_status.value:
            assert time.monotonic() < deadline + 20, form.settings_status.value
            time.sleep(0.05)
        assert USER_EMAIL in form.settings_status.value and not form.sign_in_button.disabled

        form.send_button.click()
        deadline = time.monotonic() + 15
        while form.sending:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert oauth_server.wait_for(1)[0].subject == "From the form"
        # No token in any widget's synced state.
        cfg = oauth.OAuthConfig.from_settings(settings.snapshot())
        secrets = [TokenStore().get(cfg.key)["refresh_token"],  # type: ignore[index]
                   oauth.access_token(cfg).value]
        state = json.dumps([w.get_state() for w in [form, *_descendants(form)]], default=str)
        assert not [s for s in secrets if s in state]
    finally:
        form.close()
