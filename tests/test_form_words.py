"""The form says what to do in its own terms: press Sign in, fill in From. It knows this from
the sign-in state and its own fields, not by rewriting the library's sentences (which name the
magics' options, and stay as they are for magics users)."""

from __future__ import annotations

from pathlib import Path

from idp import IdentityProvider
from test_faces import wait
from test_oauth_frontends import form_settings

from smtp_magic import oauth
from smtp_magic.config import SmtpMagic
from smtp_magic.errors import InvalidRequest
from smtp_magic.server import CaptureServer
from smtp_magic.widgets import ComposeForm, compose


def no_command_lines(text: str) -> None:
    for magic_words in ("%smtp_config", "smtp-magic ", "--oauth2-login", "--from", "(exit"):
        assert magic_words not in text, text


def test_without_a_sign_in_the_form_says_to_press_sign_in(
        idp: IdentityProvider, oauth_server: CaptureServer, client_ssl_env: Path) -> None:
    form = compose(settings=form_settings(idp, oauth_server), to="boss@example.test",
                   subject="Not yet", namespace={})
    try:
        form.send_button.click()
        wait(lambda: not form.sending, lambda: form.status.value)
        assert form.last_response is not None and form.last_response.exitcode == 3
        assert oauth.HINT in form.last_response.message  # the library's sentence, unchanged
        assert f"Not signed in with OAuth2 ({idp.issuer}): press Sign in under Connection " \
               "settings." in form.status.value
        no_command_lines(form.status.value)

        form.check_button.click()
        wait(lambda: not form.check_button.disabled, lambda: form.settings_status.value)
        assert "press Sign in under Connection settings" in form.settings_status.value
        no_command_lines(form.settings_status.value)
        assert oauth_server.count() == 0
    finally:
        form.close()


def test_without_a_sender_the_form_says_to_fill_in_from(smtp_server: CaptureServer) -> None:
    settings = SmtpMagic().update({"host": "127.0.0.1", "port": smtp_server.port,
                                   "security": "none", "username": "not-an-address",
                                   "auth": "none"})
    form: ComposeForm = compose(settings=settings, to="boss@example.test", subject="Who?",
                                namespace={})
    try:
        form.send_button.click()
        assert ("No sender address: fill in From, or set the sender or an email-address "
                "username. Nothing was sent.") in form.status.value
        no_command_lines(form.status.value)
        form.preview_button.click()
        assert "fill in From" in form.status.value
        try:
            form.request()
        except InvalidRequest as exc:
            assert "fill in From" in exc.message
        form.sender.value = "me@example.test"  # filled in: it goes
        form.send_button.click()
        wait(lambda: not form.sending, lambda: form.status.value)
        assert form.last_response is not None and form.last_response.ok, form.status.value
        assert smtp_server.wait_for(1)[0].mail_from == "me@example.test"
    finally:
        form.close()
