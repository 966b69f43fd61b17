"""The compose form: an ipywidgets VBox bound both ways to the SmtpMagic settings."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import ipywidgets as widgets

from .. import _theme
from ..config import SmtpMagic, current
from ..errors import InvalidRequest
from ..models import Response, SendRequest
from ._actions import SendActions
from ._attachments import AttachmentPicker, attachable_variables
from ._common import caption, descendants
from ._connection import ConnectionPanel
from ._fields import MessageFields

__all__ = ["ComposeForm", "attachable_variables", "compose"]

log = logging.getLogger(__name__)

_FOCUS_RING = "var(--jp-ui-font-color1, currentcolor)"
# An address field whose value is not valid (class smtp-magic-invalid) shows its text and
# border in the error colour; the theme's colours, as everything else (see _theme).
# Keyboard focus: a 2 px ring in the text colour (the theme's), outside the control, on every
# control of the form (ipywidgets' own is a 1 px light blue line, about 2.2:1). Placeholders in
# a colour that reads at 4.5:1 in light and dark (the theme's default is fainter).
_FORM_STYLE = (
    "<style>.smtp-magic-form .smtp-magic-invalid input{"
    f"color:{_theme.colour('error')};border-color:{_theme.colour('error')}}}"
    ".smtp-magic-form :is(button,input,textarea,select,[tabindex]):focus-visible{"
    f"outline:2px solid {_FOCUS_RING} !important;outline-offset:1px}}"
    ".smtp-magic-form :is(input,textarea)::placeholder{"
    "color:color-mix(in srgb,currentcolor 72%,transparent);opacity:1}"
    "</style>")


class ComposeForm(widgets.VBox):
    """An email form bound to an :class:`~smtp_magic.SmtpMagic` settings object.

    The fields are public widgets (``to``, ``cc``, ``bcc``, ``sender``, ``reply_to``,
    ``subject``, ``body``, ``content_type``, ``upload``, ``variables``, ``send_button``,
    ``preview_button``, ``status`` and, in the settings panel, ``host``, ``port``, ``username``,
    ``password``, ``security``, ``timeout``, ``check_button``, ``sign_in_button``,
    ``cancel_sign_in``, ``settings_status``; the panel itself is ``settings_panel``, opened by
    its ``toggle`` button), so the form can be driven from code and embedded in other layouts.
    After a send, ``last_response`` is its Response; ``notes`` and ``removed`` say what the last
    message's rendering fell back on and what sanitising took out of it.

    It is made of parts, each a module of this package: ``fields`` (addresses, subject, format,
    body), ``attachments``, ``actions`` (Preview, Send, the status and the preview) and
    ``connection`` (the settings panel with its OAuth2 sign-in);
    the address fields are the message options ``%%smtp_send`` has, and the choices of format
    and security are the values the settings accept. The settings fields are bound both ways to
    ``settings``: a value the settings refuse is reported in ``settings_status``, never raised.
    """

    def __init__(
        self,
        *,
        to: str | Iterable[str] | None = None,
        cc: str | Iterable[str] | None = None,
        bcc: str | Iterable[str] | None = None,
        subject: str = "",
        body: str = "",
        content_type: str | None = None,
        attachments: Iterable[Any] | Any = (),
        settings: SmtpMagic | None = None,
        sender: str | None = None,
        namespace: Mapping[str, Any] | None = None,
        reply_to: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        # State first: every handler below may run as soon as it is wired.
        self.settings: SmtpMagic = settings if settings is not None else current()
        self.notes: tuple[str, ...] = ()  # what the last message's rendering fell back on
        self.removed: tuple[str, ...] = ()  # what sanitising took out of the last message
        self.actions = SendActions(self.settings, request=self.request,
                                   rendering=lambda: (self.notes, self.removed),
                                   blocker=self._blocker)
        self.fields = MessageFields(
            self.settings, addresses={"to": to, "cc": cc, "bcc": bcc, "sender": sender,
                                      "reply_to": reply_to},
            subject=subject, body=body, content_type=content_type,
            on_change=self._update_send_button)
        self.attachments = AttachmentPicker(self.settings, namespace, self._update_send_button)
        self.connection = ConnectionPanel(self.settings)
        self._expose()
        self.children = self._arrange()
        self.layout = widgets.Layout(width="100%", max_width="780px", padding="4px")
        self.add_class("smtp-magic-form")
        picked = self.attachments.add(attachments)
        self.refresh()
        if picked:
            self.variables.value = tuple(dict.fromkeys(picked))

    # -- building the form: its parts, then how they are arranged ------------------------------

    def _expose(self) -> None:
        """The parts' widgets as attributes of the form (its public surface)."""
        fields, picker, panel = self.fields, self.attachments, self.connection
        self.to, self.cc, self.bcc = (fields.addresses[n] for n in ("to", "cc", "bcc"))
        self.sender, self.reply_to = fields.addresses["sender"], fields.addresses["reply_to"]
        self.subject, self.content_type, self.body = fields.subject, fields.content_type, \
            fields.body
        self._flags = fields.flags
        self.upload, self.clear_uploads = picker.upload, picker.clear_uploads
        self.variables, self.refresh_variables = picker.variables, picker.refresh_variables
        self.attachment_list = picker.attachment_list
        self.host, self.port, self.security = panel.host, panel.port, panel.security
        self.timeout, self.username, self.password = panel.timeout, panel.username, \
            panel.password
        self.password_hint, self.check_button = panel.password_hint, panel.check_button
        self.sign_in_button = panel.sign_in.sign_in_button
        self.cancel_sign_in = panel.sign_in.cancel_sign_in
        self.settings_status, self.settings_panel = panel.settings_status, panel.panel
        actions = self.actions
        self.preview_button, self.send_button = actions.preview_button, actions.send_button
        self.status, self.preview = actions.status, actions.preview
        self.close_preview, self._preview_box = actions.close_preview, actions.preview_box

    def _arrange(self) -> tuple[widgets.Widget, ...]:
        return (
            widgets.HTML(_FORM_STYLE + "<b style='font-size:15px'>\u2709 New email</b>"),
            *self.fields.rows(),
            widgets.HBox([caption("Format"), self.content_type]),
            self.body,
            *self.attachments.rows(),
            *self.actions.rows(),
            self.settings_panel,
        )

    # -- public helpers ------------------------------------------------------------------------

    @property
    def last_report(self) -> list[str] | None:
        """The lines of the last connection check (None before one, or after a failed one)."""
        return self.connection.last_report

    def refresh(self) -> None:
        """Look for DataFrames and figures in the notebook again; keeps the current picks."""
        self.attachments.refresh()

    def request(self) -> SendRequest:
        """The message as filled in, validated; raises InvalidRequest with one sentence."""
        problem = self.fields.first_problem()
        if problem:
            raise InvalidRequest(problem)
        common = self.fields.values()
        if not common["to"]:
            raise InvalidRequest("The message has no recipient: fill in To.")
        if not common["sender"] and not self.fields.default_sender():
            raise InvalidRequest("No sender address: fill in From, or set the sender or an "
                                 "email-address username.")
        items = self.attachments.items()
        for item in items:
            if item.problem:
                raise InvalidRequest(item.problem)
        attachments = tuple(i.attachment for i in items if i.attachment is not None)
        # The body is a template, rendered and laid out exactly as a %%smtp_send cell's.
        from ..render import email_body, render_template

        content_type = self.content_type.value
        rendered = render_template(self.body.value, self.attachments.namespace(), content_type)
        self.notes, self.removed = rendered.warnings, rendered.removed
        if content_type == "text/plain":
            return SendRequest(**common, body=rendered.text or "", content_type="text/plain",
                               attachments=attachments)
        body = email_body(rendered, title=self.subject.value)
        return SendRequest(**common, body=body.html, content_type="text/html",
                           inline_images=body.images, attachments=(*body.attachments, *attachments))

    def __repr__(self) -> str:
        # The text/plain of the form's output: what a saved notebook shows without its kernel.
        return ("Compose form of smtp-magic \u2014 run the cell again to show it "
                "(the form needs a running kernel).")

    @property
    def sending(self) -> bool:
        """True while a send started from this form is in flight."""
        return self.actions.sending

    def close(self) -> None:
        """Unlink from the settings and close every widget of the form."""
        for part in (self.fields, self.attachments, self.connection):
            part.close()
        for child in descendants(self):
            child.close()
        super().close()

    @property
    def last_response(self) -> Response | None:
        """The Response of the last send from this form (None before one, or after a crash)."""
        return self.actions.last_response

    def _blocker(self) -> str | None:
        """Why the message cannot be sent as it is now (shown on the Send button), or None."""
        if not hasattr(self, "attachments"):
            return None  # still being built
        return self.fields.first_problem() or self.attachments.blocking

    def _update_send_button(self) -> None:
        if hasattr(self, "actions"):
            self.actions.update_send_button()

    def _on_send(self, _button: Any = None) -> None:
        self.actions.send()

    @property
    def _future(self) -> concurrent.futures.Future[Any] | None:
        return self.actions.future


def compose(
    *,
    to: str | Iterable[str] | None = None,
    cc: str | Iterable[str] | None = None,
    bcc: str | Iterable[str] | None = None,
    subject: str = "",
    body: str = "",
    content_type: str | None = None,
    attachments: Iterable[Any] | Any = (),
    settings: SmtpMagic | None = None,
    sender: str | None = None,
    namespace: Mapping[str, Any] | None = None,
    reply_to: str | Iterable[str] | None = None,
) -> ComposeForm:
    """An email form (an ipywidgets ``VBox``) bound both ways to ``settings`` (default: current).

    Every argument prefills the form: addresses (``to``, ``cc``, ``bcc``, ``sender``,
    ``reply_to``) as a string (comma separated) or a list;
    ``content_type`` is ``text/html``, ``text/plain`` or ``text/markdown``; ``attachments`` are
    notebook variable names (``"df"``, ``"df:sales.xlsx"``), file paths, or objects (DataFrames,
    figures, ``Attachment``, ``(filename, bytes)``). ``namespace`` is where DataFrames and
    figures are looked for (default: the IPython user namespace).
    """
    return ComposeForm(to=to, cc=cc, bcc=bcc, subject=subject, body=body,
                       content_type=content_type, attachments=attachments, settings=settings,
                       sender=sender, namespace=namespace, reply_to=reply_to)
