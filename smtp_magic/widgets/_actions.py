"""The compose form's actions: Preview and Send, the status line under them, the preview area."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import ipywidgets as widgets

from .. import api
from ..config import SmtpMagic
from ..errors import SmtpMagicError
from ..models import Response, SendRequest
from ..preview import preview_html, preview_notes_html
from ._common import in_form_terms, on_kernel, sentence, status

log = logging.getLogger(__name__)


class SendActions:
    """Preview shows the message as it will arrive; Send sends it in the background and the
    status line says how it went (the form stays usable meanwhile).

    ``request()`` makes the message from the form (raising with one sentence when it cannot);
    ``rendering()`` says what its rendering fell back on and what sanitising removed (notes,
    removed); ``blocker()`` why Send cannot be pressed now, or None.
    """

    def __init__(self, settings: SmtpMagic, *, request: Callable[[], SendRequest],
                 rendering: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]],
                 blocker: Callable[[], str | None]) -> None:
        self.settings = settings
        self._request, self._rendering, self._blocker = request, rendering, blocker
        self.sending = False
        self.future: concurrent.futures.Future[Any] | None = None
        self.last_response: Response | None = None
        self.preview_button = widgets.Button(description="Preview", icon="eye",
                                             tooltip="Show the message as it will arrive; "
                                             "sends nothing")
        self.send_button = widgets.Button(description="Send", icon="paper-plane",
                                          button_style="primary")
        # Results are written by setting this HTML widget's value, which lands in the form
        # wherever it is shown; `with output:` from a callback would capture into another cell.
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 88px"))
        self.set_status("info", "Ready.")
        self.preview = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.close_preview = widgets.Button(description="Hide preview", icon="eye-slash",
                                            tooltip="Hide the preview",
                                            layout=widgets.Layout(width="auto"))
        self.preview_box = widgets.VBox([self.close_preview, self.preview],
                                        layout=widgets.Layout(display="none", width="100%"))
        self.preview_button.on_click(self.show_preview)
        self.close_preview.on_click(self.hide_preview)
        self.send_button.on_click(self.send)

    def rows(self) -> list[widgets.Widget]:
        return [widgets.HBox([self.preview_button, self.send_button],
                             layout=widgets.Layout(margin="6px 0 0 88px")),
                self.status, self.preview_box]

    def update_send_button(self) -> None:
        blocker = self._blocker()
        self.send_button.disabled = self.sending or blocker is not None
        self.send_button.description = "Sending\u2026" if self.sending else "Send"
        self.send_button.tooltip = blocker or ("A send is in progress" if self.sending else
                                               "Send the message")

    def set_status(self, kind: str, text: str) -> None:
        self.status.value = f"<div style='line-height:1.4'>{status(kind, text)}</div>"

    def show_preview(self, _button: Any = None) -> None:
        try:
            composed = api.build_message(self._request(), config=self.settings)
        except Exception as exc:  # noqa: BLE001 - shown, nothing sent
            self.set_status("error", sentence(exc, self.settings))
            return
        notes, removed = self._rendering()
        # What sanitising took out and what fell back, under the message (as --preview does).
        self.preview.value = preview_html(composed) + preview_notes_html(removed, notes)
        self.preview_box.layout.display = None
        self.set_status("info", "Preview below; nothing was sent.")

    def hide_preview(self, _button: Any = None) -> None:
        self.preview_box.layout.display = "none"
        self.preview.value = ""

    def send(self, _button: Any = None) -> None:
        if self.sending:
            return
        try:
            request = self._request()
        except SmtpMagicError as exc:
            self.set_status("error", exc.message + " Nothing was sent.")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a value render cannot convert
            self.set_status("error", sentence(exc, self.settings) + " Nothing was sent.")
            return
        self.sending = True
        self.update_send_button()
        self.hide_preview()  # a preview of what was typed before: not what is being sent
        n = len(request.recipients)
        self.set_status("busy", f"Sending to {n} recipient{'s' if n != 1 else ''}\u2026")
        try:
            # In the outbox (and in the session's log, for %smtp_outbox --wait) on return.
            self.future = api.submit_many([request], config=self.settings)
        except BaseException as exc:
            self.sending = False
            self.update_send_button()
            self.set_status("error", sentence(exc, self.settings))
            raise
        on_kernel(self.future, partial(self._finish, subject=request.subject))

    def _finish(self, future: concurrent.futures.Future[Any], subject: str) -> None:
        try:
            try:
                (response,) = future.result()
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the form stuck
                self.last_response = None
                self.set_status("error", f"Unexpected error while sending: {sentence(exc)}")
                return
            self.last_response = response
            if response.ok:
                n = len(response.accepted)
                warning = f"; {response.message}" if response.message else ""  # outbox full
                notes, _ = self._rendering()
                self.set_status("warn" if warning else "ok",
                                f"Sent \u201c{subject}\u201d to {n} recipient"
                                f"{'s' if n != 1 else ''} in {response.elapsed:.2f} s "
                                f"\u2014 Message-ID {response.message_id}{warning}"
                                + "".join(f"; note: {note}" for note in notes))
            else:
                state = response.state  # partly sent, in doubt or not sent
                said = in_form_terms(response.message, response.exitcode, self.settings)
                self.set_status("error" if state == "not sent" else "warn",
                                f"{state.capitalize()}: {said}")
        finally:
            self.sending = False
            self.update_send_button()
