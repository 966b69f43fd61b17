"""The OAuth2 part of the compose form's settings panel: the device-code sign-in."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from functools import partial
from typing import Any

import ipywidgets as widgets

from .. import api
from .._relay import Relay
from ..config import SmtpMagic
from ._common import sentence, status

log = logging.getLogger(__name__)


class SignInPanel:
    """Sign in (auth = oauth2) and Cancel buttons; the device code and the outcome are shown in
    ``out`` (the settings panel's status). The token itself never reaches a widget."""

    def __init__(self, settings: SmtpMagic, out: widgets.HTML) -> None:
        self.settings, self.out = settings, out
        self.sign_in_button = widgets.Button(description="Sign in", icon="key",
                                             tooltip="OAuth2: sign in with a code shown here",
                                             layout=widgets.Layout(width="auto"))
        # While a sign-in waits (for the server, or for the user): stops waiting for it.
        self.cancel_sign_in = widgets.Button(description="Cancel", icon="times",
                                             tooltip="Stop waiting for the sign-in",
                                             layout=widgets.Layout(width="auto", display="none"))
        self._attempt = 0
        self.sign_in_button.on_click(self.start)
        self.cancel_sign_in.on_click(self.cancel)

    def start(self, _button: Any = None) -> None:
        """The device-code sign-in on a thread of its own (it waits for the user)."""
        if self.sign_in_button.disabled:
            return
        self.sign_in_button.disabled = True
        self.cancel_sign_in.layout.display = None
        self._attempt += 1
        attempt = self._attempt
        self.out.value = status("busy", "Starting the OAuth2 sign-in\u2026")
        relay = Relay()  # the code and the outcome reach the form from the sign-in's thread

        def show(code: Any) -> None:  # called on the sign-in thread
            if attempt != self._attempt:
                return  # cancelled meanwhile
            relay.post(partial(setattr, self.out, "value", code._repr_html_()))

        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(api.oauth2_login(self.settings, show=show))
            except BaseException as exc:  # noqa: BLE001 - reported by _finish
                future.set_exception(exc)

        threading.Thread(target=run, name="smtp-magic-sign-in", daemon=True).start()
        relay.when_done(future, partial(self._finish, attempt=attempt))

    def cancel(self, _button: Any = None) -> None:
        """Stop waiting: the form is usable again at once. The sign-in's thread cannot be
        interrupted; whatever it ends with later is not shown."""
        self._attempt += 1
        self.cancel_sign_in.layout.display = "none"
        self.sign_in_button.disabled = False
        self.out.value = status("info", "Sign-in cancelled.")

    def _finish(self, future: concurrent.futures.Future[Any], attempt: int = 0) -> None:
        if attempt != self._attempt:
            return  # cancelled: the form has moved on
        try:
            self.out.value = status("ok", future.result().describe())
        except Exception as exc:  # noqa: BLE001
            self.out.value = status("error", sentence(exc))  # about the sign-in itself
        finally:
            self.sign_in_button.disabled = False
            self.cancel_sign_in.layout.display = "none"
