"""The compose form: an ipywidgets VBox bound both ways to the SmtpMagic settings."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import ipywidgets as widgets
import traitlets

from . import _theme, api
from ._kinds import PANDAS, kind_of
from ._views import size_text as _size
from .attachments import is_single_spec, resolve
from .config import MB, SmtpMagic, current, withheld_password
from .errors import InvalidRequest, SmtpMagicError
from .models import Attachment, Response, SendRequest, as_address_list
from .preview import preview_html, preview_notes_html

__all__ = ["ComposeForm", "attachable_variables", "compose"]

log = logging.getLogger(__name__)

# Notebook values offered as attachments (kinds by class name: nothing is imported to look).
_ATTACHABLE = PANDAS | {"Figure"}
_CONTENT_TYPES = (
    ("HTML", "text/html"), ("Plain text", "text/plain"), ("Markdown", "text/markdown"),
)
_SECURITY = (
    ("auto (465: TLS, else STARTTLS)", "auto"), ("STARTTLS", "starttls"),
    ("TLS (implicit)", "tls"), ("none", "none"),
)
_LABEL = {"description_width": "84px"}
_ADDRESS_FIELDS = ("sender", "to", "cc", "bcc")
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


def _kind(obj: Any) -> str | None:
    kind = kind_of(obj)
    return kind if kind in _ATTACHABLE else None


def _describe(obj: Any, kind: str) -> str:
    shape = getattr(obj, "shape", None) if kind in ("DataFrame", "Series") else None
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        if len(shape) == 1:
            return f"{kind} ({shape[0]})"
        return f"{kind} " + "\u00d7".join(map(str, shape))
    return kind


def attachable_variables(namespace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, name) of the DataFrames and figures in a namespace, by name, for the picker."""
    out = []
    for name in sorted(namespace):
        if name.startswith("_") or name in ("In", "Out"):
            continue
        kind = _kind(namespace[name])
        if kind is not None:
            out.append((f"{name}  \u2014 {_describe(namespace[name], kind)}", name))
    return out


def _user_namespace() -> Mapping[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return {}
    shell = get_ipython()
    return getattr(shell, "user_ns", None) or {}


def _caption(text: str) -> widgets.HTML:
    """A label aligned with the descriptions of the Text fields (right-aligned, 84 px)."""
    return widgets.HTML(
        f"<div style='text-align:right;padding-right:8px'>{html.escape(text)}</div>",
        layout=widgets.Layout(width="92px", min_width="92px"))


def _status(kind: str, text: str) -> str:
    """A status area's content: one line, announced by screen readers when it changes."""
    return _theme.line(kind, text, tag="div", live=True)


def _on_kernel(future: concurrent.futures.Future[Any], callback: Callable[[Any], None]) -> None:
    """Run ``callback(future)`` on the calling thread's event loop once the future is done.

    In a kernel the widget callbacks run on the kernel's loop: widget updates made there go out
    in order, attached to the form (never to whichever cell runs next). Without a running loop
    (plain Python, tests) the callback runs on the worker thread that finished the future.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None

    def done(f: concurrent.futures.Future[Any]) -> None:
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback, f)
                return
            except RuntimeError:  # the loop closed in between
                pass
        callback(f)

    future.add_done_callback(done)


class _Binding:
    """A form field bound both ways to one setting, with public observers only.

    The field's value is tried on the setting: a value the setting refuses is reported (the
    form shows the one-line reason next to the settings) instead of raised out of a widget
    callback, and the setting keeps its value. A change of the setting (``%smtp_config``,
    ``%config``, Python) is shown in the field. After a change from the field, the field shows
    the setting's value as it was stored (e.g. a username stripped of spaces).
    """

    def __init__(self, settings: SmtpMagic, name: str, widget: widgets.ValueWidget,
                 report: Callable[[str, BaseException | None], None],
                 to_widget: Callable[[Any], Any] = lambda v: v,
                 to_setting: Callable[[Any], Any] = lambda v: v, along: tuple[str, ...] = ()
                 ) -> None:
        self.settings, self.name, self.widget = settings, name, widget
        self._report, self._to_widget, self._to_setting = report, to_widget, to_setting
        self._along = along  # settings the user sees next to this field: given with it
        self._busy = False
        self._show(getattr(settings, name))
        widget.observe(self._on_widget, names="value")
        settings.observe(self._on_setting, names=name)

    def _show(self, value: Any) -> None:
        shown = self._to_widget(value)
        if self.widget.value != shown:
            self._busy = True
            try:
                self.widget.value = shown
            finally:
                self._busy = False

    def _on_widget(self, change: Mapping[str, Any]) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            value = self._to_setting(change["new"])
            if self._along:  # e.g. a new port keeps the host shown beside it (after --local)
                self.settings.set_keeping(self.name, value, self._along)
            else:
                setattr(self.settings, self.name, value)
        except (traitlets.TraitError, ValueError, TypeError) as exc:
            self._report(self.name, exc)
            return
        finally:
            self._busy = False
        self._show(getattr(self.settings, self.name))
        self._report(self.name, None)

    def _on_setting(self, change: Mapping[str, Any]) -> None:
        if self._busy:
            return
        self._show(change["new"])
        self._report(self.name, None)

    def unlink(self) -> None:
        self.widget.unobserve(self._on_widget, names="value")
        self.settings.unobserve(self._on_setting, names=self.name)


@dataclass(frozen=True)
class _Item:
    """One row of the attachment list: what it is, where it came from, and any problem."""

    label: str
    origin: str
    attachment: Attachment | None
    size: int | None
    problem: str | None


class ComposeForm(widgets.VBox):
    """An email form bound to an :class:`~smtp_magic.SmtpMagic` settings object.

    The fields are public widgets (``to``, ``cc``, ``bcc``, ``sender``, ``subject``, ``body``,
    ``content_type``, ``upload``, ``variables``, ``send_button``, ``preview_button``, ``status``
    and, in the settings panel, ``host``, ``port``, ``username``, ``password``, ``security``,
    ``timeout``, ``check_button``, ``sign_in_button``, ``cancel_sign_in``, ``settings_status``;
    the panel itself is ``settings_panel``, opened by its ``toggle`` button), so the form can be
    driven from code and embedded in other layouts. After a send, ``last_response`` is its
    Response; ``notes`` and ``removed`` say what the last message's rendering fell back on and
    what sanitising took out of it.

    The settings fields are bound both ways to ``settings`` (see ``_Binding``): a value the
    settings refuse is reported in ``settings_status``, never raised.
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
    ) -> None:
        super().__init__()
        # State first: every handler below may run as soon as it is wired.
        self.settings: SmtpMagic = settings if settings is not None else current()
        self._namespace = namespace
        self._bindings: list[_Binding] = []
        self._setting_observers: list[tuple[Callable[[Any], None], list[str]]] = []
        self._setting_errors: dict[str, str] = {}
        self._sending = False
        self._future: concurrent.futures.Future[Any] | None = None
        self._blocking_attachment: str | None = None
        self._fixed: list[tuple[str, Any, str | None]] = []  # (label, spec, variable name)
        self.last_response: Response | None = None
        self.notes: tuple[str, ...] = ()  # what the last message's rendering fell back on
        self.removed: tuple[str, ...] = ()  # what sanitising took out of the last message
        self.last_report: list[str] | None = None

        self._build_message(to=to, cc=cc, bcc=bcc, sender=sender, subject=subject, body=body,
                            content_type=content_type)
        self._build_attachments()
        self._build_actions()
        self._build_settings_panel()
        self.children = self._arrange()
        self.layout = widgets.Layout(width="100%", max_width="780px", padding="4px")
        self.add_class("smtp-magic-form")

        self._wire_settings()
        self._wire_message()
        self._wire_attachments_and_actions()
        picked = self._add_attachments(attachments)
        self.refresh()
        if picked:
            self.variables.value = tuple(dict.fromkeys(picked))
        self._on_auth(None)  # also shows the password hint
        self._on_sender_setting(None)
        for name in _ADDRESS_FIELDS:
            self._on_address({"owner": getattr(self, name)})

    # -- building the form: the widgets, then how they are arranged --------------------------

    def _build_message(self, *, to: Any, cc: Any, bcc: Any, sender: str | None, subject: str,
                       body: str, content_type: str | None) -> None:
        def address_field(label: str, value: Any, placeholder: str) -> widgets.Text:
            text = ", ".join(as_address_list(value)) if value else ""
            return widgets.Text(value=text, description=label, placeholder=placeholder,
                                style=_LABEL, layout=widgets.Layout(width="100%"))

        self.to = address_field("To", to, "alice@example.org, Bob <bob@example.org>")
        self.cc = address_field("Cc", cc, "optional, comma separated")
        self.bcc = address_field("Bcc", bcc, "optional, comma separated; not shown to recipients")
        self.sender = widgets.Text(value=sender or "", description="From", style=_LABEL,
                                   layout=widgets.Layout(width="100%"))
        self.subject = widgets.Text(value=subject, description="Subject", style=_LABEL,
                                    placeholder="What is it about?",
                                    layout=widgets.Layout(width="100%"))
        # Under each address field: why it is not valid (hidden while it is).
        self._flags = {name: widgets.HTML(layout=widgets.Layout(display="none",
                                                                margin="-2px 0 2px 88px"))
                       for name in _ADDRESS_FIELDS}
        default_type = content_type or self.settings.content_type
        if default_type not in dict(_CONTENT_TYPES).values():
            default_type = "text/html"  # multipart/alternative: the HTML body gets a text part
        self.content_type = widgets.ToggleButtons(
            options=_CONTENT_TYPES, value=default_type,
            style={"button_width": "96px"},
            tooltips=["HTML (a plain-text alternative is added)", "Plain text only",
                      "Markdown, sent as HTML"],
        )
        # The description is the textarea's <label>: its name for screen readers too.
        self.body = widgets.Textarea(value=body, description="Body", style=_LABEL,
                                     placeholder="Write the message here",
                                     layout=widgets.Layout(width="100%", height="170px"))

    def _build_attachments(self) -> None:
        self.upload = widgets.FileUpload(multiple=True, description="Upload files",
                                         tooltip="Attach files from your computer",
                                         layout=widgets.Layout(width="auto"))
        self.clear_uploads = widgets.Button(description="Clear uploads", icon="times",
                                            tooltip="Remove the uploaded files",
                                            layout=widgets.Layout(width="auto", display="none"))
        self.variables = widgets.SelectMultiple(
            options=[], description="Variables", rows=3, style=_LABEL,
            layout=widgets.Layout(width="auto", flex="1 1 auto"),
            tooltip="DataFrames and figures of the notebook; Ctrl/Cmd-click to pick several",
        )
        self.refresh_variables = widgets.Button(
            icon="refresh", tooltip="Look for DataFrames and figures again",
            layout=widgets.Layout(width="36px"),
        )
        self._no_variables = widgets.HTML(
            f"<span style='color:{_theme.MUTED};font-size:12px'>No DataFrame or figure in the "
            "notebook yet: make one, then \u21bb to attach it.</span>",
            layout=widgets.Layout(margin="0 8px 0 88px", flex="1 1 auto"))
        self.attachment_list = widgets.HTML()

    def _build_actions(self) -> None:
        self.preview_button = widgets.Button(description="Preview", icon="eye",
                                             tooltip="Show the message as it will arrive; "
                                             "sends nothing")
        self.send_button = widgets.Button(description="Send", icon="paper-plane",
                                          button_style="primary")
        # Results are written by setting this HTML widget's value, which lands in the form
        # wherever it is shown; `with output:` from a callback would capture into another cell.
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 88px"))
        self._set_status("info", "Ready.")
        self.preview = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.close_preview = widgets.Button(description="Hide preview", icon="eye-slash",
                                            tooltip="Hide the preview",
                                            layout=widgets.Layout(width="auto"))
        self._preview_box = widgets.VBox([self.close_preview, self.preview],
                                         layout=widgets.Layout(display="none", width="100%"))

    def _build_settings_panel(self) -> None:
        def half() -> widgets.Layout:
            # Two columns where there is room for two (260 px each), else one: at 368 px the
            # fields keep their whole width instead of being cut off.
            return widgets.Layout(width="auto", flex="1 1 260px", min_width="0")

        self.host = widgets.Text(description="Host", continuous_update=False, style=_LABEL,
                                 placeholder="smtp.example.org", layout=half())
        self.port = widgets.IntText(description="Port", style=_LABEL, layout=half(),
                                    tooltip="587: submission (STARTTLS), 465: implicit TLS")
        self.security = widgets.Dropdown(options=_SECURITY, description="Security",
                                         style=_LABEL, layout=half())
        self.timeout = widgets.FloatText(description="Timeout (s)", style=_LABEL,
                                         layout=half(),
                                         tooltip="Seconds one send may take, retries included")
        self.username = widgets.Text(description="Username", continuous_update=False,
                                     style=_LABEL, layout=half())
        # continuous_update=False: the value reaches the kernel once (Enter or leaving the
        # field), is moved into the settings and cleared at once.
        self.password = widgets.Password(description="Password", continuous_update=False,
                                         placeholder="type, then Enter", style=_LABEL,
                                         layout=half())
        self.password_hint = widgets.HTML()
        self.check_button = widgets.Button(description="Check connection", icon="plug",
                                           tooltip="Connect, negotiate TLS and log in; sends "
                                           "nothing", layout=widgets.Layout(width="auto"))
        # OAuth2 (auth = oauth2): shown instead of the password; the device code appears in
        # settings_status. The token itself never reaches a widget.
        self.sign_in_button = widgets.Button(description="Sign in", icon="key",
                                             tooltip="OAuth2: sign in with a code shown here",
                                             layout=widgets.Layout(width="auto"))
        # While a sign-in waits (for the server, or for the user): stops waiting for it.
        self.cancel_sign_in = widgets.Button(description="Cancel", icon="times",
                                             tooltip="Stop waiting for the sign-in",
                                             layout=widgets.Layout(width="auto", display="none"))
        self._sign_in_attempt = 0
        self.settings_status = widgets.HTML()
        self.settings_panel = _Disclosure("Connection settings", widgets.VBox([
            widgets.HBox([self.host, self.port]),
            widgets.HBox([self.security, self.timeout]),
            widgets.HBox([self.username, self.password]),
            self.password_hint,
            widgets.HBox([self.sign_in_button, self.cancel_sign_in, self.check_button]),
            self.settings_status,
        ]))
        for row in self.settings_panel.body.children:
            if isinstance(row, widgets.HBox):
                row.layout.flex_flow = "row wrap"  # the columns of half() wrap

    def _arrange(self) -> tuple[widgets.Widget, ...]:
        return (
            widgets.HTML(_FORM_STYLE + "<b style='font-size:15px'>\u2709 New email</b>"),
            self.sender, self._flags["sender"],
            self.to, self._flags["to"],
            self.cc, self._flags["cc"],
            self.bcc, self._flags["bcc"],
            self.subject,
            widgets.HBox([_caption("Format"), self.content_type]),
            self.body,
            widgets.HBox([_caption("Attachments"), self.upload, self.clear_uploads],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.variables, self._no_variables, self.refresh_variables],
                         layout=widgets.Layout(align_items="center")),
            self.attachment_list,
            widgets.HBox([self.preview_button, self.send_button],
                         layout=widgets.Layout(margin="6px 0 0 88px")),
            self.status,
            self._preview_box,
            self.settings_panel,
        )

    # -- wiring ----------------------------------------------------------------------------------

    def _wire_settings(self) -> None:
        for name in ("host", "security", "timeout"):
            self._bind(name, getattr(self, name))
        # A new port is a server on the host shown beside it (a new host brings back the
        # port from before --local: the capture server's port means nothing elsewhere).
        self._bindings.append(_Binding(self.settings, "port", self.port, self._report_setting,
                                       along=("host",)))
        self._bind("username", self.username, lambda v: v or "", lambda v: v.strip() or None)
        self.password.observe(self._on_password, names="value")
        self._observe_settings(self._show_login_hint, "password", "password_env",
                               "use_keyring", "username", "auth")
        self._observe_settings(self._on_sender_setting, "sender", "username")
        self._observe_settings(self._on_limit, "attachment_size")
        self._observe_settings(self._on_auth, "auth", "oauth2_provider")
        self.check_button.on_click(self._on_check)
        self.sign_in_button.on_click(self._on_sign_in)
        self.cancel_sign_in.on_click(self._on_cancel_sign_in)

    def _wire_message(self) -> None:
        for name in _ADDRESS_FIELDS:
            getattr(self, name).observe(self._on_address, names="value")

    def _wire_attachments_and_actions(self) -> None:
        self.upload.observe(self._on_attachments_changed, names="value")
        self.variables.observe(self._on_attachments_changed, names="value")
        self.clear_uploads.on_click(self._on_clear_uploads)
        self.refresh_variables.on_click(lambda _b: self.refresh())
        self.preview_button.on_click(self._on_preview)
        self.close_preview.on_click(self._on_hide_preview)
        self.send_button.on_click(self._on_send)

    def _bind(self, name: str, widget: widgets.ValueWidget,
              to_widget: Callable[[Any], Any] = lambda v: v,
              to_setting: Callable[[Any], Any] = lambda v: v) -> None:
        self._bindings.append(_Binding(self.settings, name, widget, self._report_setting,
                                       to_widget, to_setting))

    def _observe_settings(self, handler: Callable[[Any], None], *names: str) -> None:
        self.settings.observe(handler, names=list(names))
        self._setting_observers.append((handler, list(names)))

    # -- public helpers ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Look for DataFrames and figures in the notebook again; keeps the current picks."""
        ns = self._ns()
        options = attachable_variables(ns)
        names = {value for _, value in options}
        keep = tuple(v for v in self.variables.value if v in names)
        if list(self.variables.options) != options:
            self.variables.options = options  # resets the selection
            self.variables.value = keep
        self.variables.layout.display = None if options else "none"
        self._no_variables.layout.display = "none" if options else None
        self._render_attachments()

    def request(self) -> SendRequest:
        """The message as filled in, validated; raises InvalidRequest with one sentence."""
        for name in _ADDRESS_FIELDS:
            problem = self._address_problem(name)
            if problem:
                raise InvalidRequest(problem)
        to = as_address_list(self.to.value)
        if not to:
            raise InvalidRequest("The message has no recipient: fill in To.")
        items = self._attachment_items()
        for item in items:
            if item.problem:
                raise InvalidRequest(item.problem)
        attachments = tuple(i.attachment for i in items if i.attachment is not None)
        common: dict[str, Any] = {
            "to": to, "cc": as_address_list(self.cc.value), "bcc": as_address_list(self.bcc.value),
            "subject": self.subject.value, "sender": self.sender.value.strip() or None}
        # The body is a template, rendered and laid out exactly as a %%smtp_send cell's.
        from .render import email_body, render_template

        rendered = render_template(self.body.value, self._ns(), self.content_type.value)
        self.notes, self.removed = rendered.warnings, rendered.removed
        if self.content_type.value == "text/plain":
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
        return self._sending

    def close(self) -> None:
        """Unlink from the settings and close every widget of the form."""
        for binding in self._bindings:
            binding.unlink()
        self._bindings.clear()
        for handler, names in self._setting_observers:
            self.settings.unobserve(handler, names=names)
        self._setting_observers.clear()
        for child in _descendants(self):
            child.close()
        super().close()

    # -- settings ------------------------------------------------------------------------------

    def _report_setting(self, name: str, exc: BaseException | None) -> None:
        """Show (or, with ``exc`` None, clear) why the form's value for ``name`` was refused."""
        if exc is None:
            if self._setting_errors.pop(name, None) is None:
                return
        else:
            message = str(exc).strip() or type(exc).__name__
            if not message.endswith("."):
                message += "."
            self._setting_errors[name] = (f"{message} The {name} setting is still "
                                          f"{getattr(self.settings, name)!r}.")
        self.settings_status.value = "".join(
            _theme.line("error", msg, tag="div", live=True)
            for msg in self._setting_errors.values())

    def _on_password(self, change: Mapping[str, Any]) -> None:
        value = change["new"]
        if not value:
            return
        try:
            self.settings.password = value
        except traitlets.TraitError:
            self._report_setting("password", ValueError("The password must be text."))
        finally:
            # Never leave it in synced widget state: a saved notebook would keep it.
            self.password.value = ""
        self._show_login_hint()

    def _show_login_hint(self, _change: Any = None) -> None:
        """Under the login fields: how this form will log in (never the password itself)."""
        s = self.settings
        if s.auth == "oauth2":
            provider = s.oauth2_provider or "no oauth2_provider set"
            kind, hint = "info", f"Signs in with OAuth2 ({provider}): press Sign in once."
        elif (withheld := withheld_password(s)) is not None:
            kind, hint = "error", (f"The password was given for {withheld.given_for}: type it "
                                   "again for this server (a password goes only to its server).")
        elif s.password:
            kind, hint = "ok", "Password set (held by the settings, never saved in the notebook)."
        elif s.password_env:
            kind, hint = "info", f"Password read from ${s.password_env} when sending."
        elif s.use_keyring:
            kind, hint = "info", "Password read from the system keyring when sending."
        elif s.auth == "none" or not s.username:
            kind, hint = "info", "No password: mail is sent without logging in."
        else:  # the send would stop with exit 1: say so before
            kind, hint = "warn", ("No password for this username: type one, or set auth to "
                                  "'none' to send without logging in.")
        self.password_hint.value = (f"<div style='font-size:12px;margin-left:88px'>"
                                    f"{_theme.line(kind, hint)}</div>")

    def _on_sender_setting(self, _change: Any) -> None:
        default = self.settings.sender or (
            self.settings.username if self.settings.username and "@" in self.settings.username
            else None)
        self.sender.placeholder = (f"{default} (from the settings)" if default else
                                   "your address (or set a sender in the settings)")

    def _on_limit(self, _change: Any) -> None:
        self._render_attachments()

    def _on_check(self, _button: Any = None) -> None:
        if self.check_button.disabled:
            return
        self.check_button.disabled = True
        self.settings_status.value = _status(
            "busy", f"Connecting to {self.settings.host}:{self.settings.port}\u2026")
        try:
            future = api.worker_loop().submit(api.check_async(self.settings))
        except Exception as exc:  # noqa: BLE001 - shown, the form stays usable
            self.check_button.disabled = False
            self.settings_status.value = _status("error", _sentence(exc))
            return
        _on_kernel(future, self._finish_check)

    def _finish_check(self, future: concurrent.futures.Future[Any]) -> None:
        try:
            lines = future.result().lines()
            self.last_report = lines
            self.settings_status.value = _status("ok", lines[0]) + "".join(
                _theme.line("info", x, tag="div") for x in lines[1:])
        except Exception as exc:  # noqa: BLE001
            self.last_report = None
            self.settings_status.value = _status("error", _sentence(exc))
        finally:
            self.check_button.disabled = False

    # -- OAuth2 sign-in ------------------------------------------------------------------------

    def _on_auth(self, _change: Any) -> None:
        oauth2 = self.settings.auth == "oauth2"
        self.sign_in_button.layout.display = None if oauth2 else "none"
        self.password.layout.display = "none" if oauth2 else None
        self._show_login_hint()

    def _on_sign_in(self, _button: Any = None) -> None:
        """The device-code sign-in on a thread of its own (it waits for the user); the code
        and the outcome are shown in ``settings_status``."""
        if self.sign_in_button.disabled:
            return
        self.sign_in_button.disabled = True
        self.cancel_sign_in.layout.display = None
        self._sign_in_attempt += 1
        attempt = self._sign_in_attempt
        self.settings_status.value = _status("busy", "Starting the OAuth2 sign-in\u2026")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def show(code: Any) -> None:  # called on the sign-in thread
            if attempt != self._sign_in_attempt:
                return  # cancelled meanwhile
            markup = code._repr_html_()
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(setattr, self.settings_status, "value", markup)
            else:
                self.settings_status.value = markup

        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(api.oauth2_login(self.settings, show=show))
            except BaseException as exc:  # noqa: BLE001 - reported by _finish_sign_in
                future.set_exception(exc)

        threading.Thread(target=run, name="smtp-magic-sign-in", daemon=True).start()
        _on_kernel(future, partial(self._finish_sign_in, attempt=attempt))

    def _on_cancel_sign_in(self, _button: Any = None) -> None:
        """Stop waiting: the form is usable again at once. The sign-in's thread cannot be
        interrupted; whatever it ends with later is not shown."""
        self._sign_in_attempt += 1
        self.cancel_sign_in.layout.display = "none"
        self.sign_in_button.disabled = False
        self.settings_status.value = _status("info", "Sign-in cancelled.")

    def _finish_sign_in(self, future: concurrent.futures.Future[Any], attempt: int = 0) -> None:
        if attempt != self._sign_in_attempt:
            return  # cancelled: the form has moved on
        try:
            self.settings_status.value = _status("ok", future.result().describe())
        except Exception as exc:  # noqa: BLE001
            self.settings_status.value = _status("error", _sentence(exc))
        finally:
            self.sign_in_button.disabled = False
            self.cancel_sign_in.layout.display = "none"

    # -- addresses -----------------------------------------------------------------------------

    def _address_problem(self, name: str) -> str | None:
        label = {"sender": "From", "to": "To", "cc": "Cc", "bcc": "Bcc"}[name]
        try:
            items = as_address_list(getattr(self, name).value)
        except InvalidRequest as exc:
            return exc.message
        if name == "sender" and len(items) > 1:
            return "From takes a single address."
        bad = []
        for item in items:
            try:
                api.check_address(item, f"{label} address")
            except InvalidRequest as exc:
                bad.append(exc.message)
        if not bad:
            return None
        return bad[0] + (f" ({len(bad) - 1} more invalid)" if len(bad) > 1 else "")

    def _on_address(self, change: Mapping[str, Any]) -> None:
        widget = change["owner"]
        name = next(n for n in _ADDRESS_FIELDS if getattr(self, n) is widget)
        problem = self._address_problem(name)
        flag = self._flags[name]
        flag.value = _theme.line("warn", problem, tag="div", live=True) if problem else ""
        flag.layout.display = None if problem else "none"
        if problem:
            widget.add_class("smtp-magic-invalid")
        else:
            widget.remove_class("smtp-magic-invalid")
        self._update_send_button()

    # -- attachments ---------------------------------------------------------------------------

    def _ns(self) -> Mapping[str, Any]:
        return self._namespace if self._namespace is not None else _user_namespace()

    def _add_attachments(self, items: Iterable[Any] | Any) -> list[str]:
        """Prefilled attachments: variable names (``df`` or ``df:name.xlsx``), paths, objects.

        Returns the variable names that go to the picker; the rest are kept as specs and
        resolved (``attachments.resolve``) whenever the list is shown or the message is sent.
        """
        if items is None:
            return []
        ns = self._ns()
        picked: list[str] = []
        for item in ([items] if is_single_spec(items) else items):
            if isinstance(item, str) and item in ns and _kind(ns[item]) \
                    and not item.startswith("_"):
                picked.append(item)  # shown (and unpicked) in the picker
                continue
            name = next((k for k, v in ns.items() if v is item and not k.startswith("_")), None)
            self._fixed.append((_spec_label(item, name), item, name))
        return picked

    def _attachment_items(self) -> list[_Item]:
        # Converted on every call, not cached: a DataFrame may have changed in place.
        limit = int(self.settings.attachment_size * MB)
        ns = self._ns()
        items: list[_Item] = []

        def add(label: str, origin: str, spec: Any, name: str | None = None) -> None:
            try:
                found = resolve(spec, ns, name=name)
            except SmtpMagicError as exc:
                items.append(_Item(label, origin, None, None, exc.message))
                return
            except Exception as exc:  # noqa: BLE001 - a value that cannot be converted
                items.append(_Item(label, origin, None, None,
                                   f"{label} cannot be attached: {_sentence(exc)}"))
                return
            for att in found:
                try:
                    size = att.size
                except SmtpMagicError as exc:
                    items.append(_Item(att.filename, origin, None, None, exc.message))
                    continue
                problem = None
                if size > limit:
                    problem = (f"Attachment {att.filename!r} is {_size(size)}, over the "
                               f"{_size(limit)} limit (attachment_size).")
                items.append(_Item(att.filename, origin, att, size, problem))

        for f in self.upload.value:
            add(f["name"], "upload", (f["name"], bytes(f["content"])))
        for name in self.variables.value:
            if name not in ns:
                items.append(_Item(name, "variable", None, None,
                                   f"The variable {name!r} no longer exists."))
                continue
            add(name, f"variable {name}", name)
        for label, spec, name in self._fixed:
            add(label, "given", spec, name)
        return items

    def _render_attachments(self) -> None:
        items = self._attachment_items()
        self.clear_uploads.layout.display = None if self.upload.value else "none"
        if not items:
            self.attachment_list.value = (
                f"<div style='margin-left:88px;color:{_theme.MUTED};font-size:12px'>No attachments. "
                f"Limit {_size(self.settings.attachment_size * MB)} per file "
                "(attachment_size).</div>")
        else:
            rows = []
            for item in items:
                size = f" \u00b7 {_size(item.size)}" if item.size is not None else ""
                text = f"<i class='fa fa-paperclip'></i> {html.escape(item.label)}{size} " \
                       f"<span style='color:{_theme.MUTED}'>({html.escape(item.origin)})</span>"
                if item.problem:
                    text += "<br>&nbsp;&nbsp;&nbsp;" + _theme.line("error", item.problem)
                rows.append(f"<div>{text}</div>")
            self.attachment_list.value = (
                f"<div style='margin-left:88px;font-size:13px'>{''.join(rows)}</div>")
        self._blocking_attachment = next((i.problem for i in items if i.problem), None)
        self._update_send_button()

    def _on_attachments_changed(self, _change: Any) -> None:
        self._render_attachments()

    def _on_clear_uploads(self, _button: Any) -> None:
        self.upload.value = ()

    # -- preview and send ----------------------------------------------------------------------

    def _blocker(self) -> str | None:
        for name in _ADDRESS_FIELDS:
            problem = self._address_problem(name)
            if problem:
                return problem
        return self._blocking_attachment

    def _update_send_button(self) -> None:
        blocker = self._blocker()
        self.send_button.disabled = self._sending or blocker is not None
        self.send_button.description = "Sending\u2026" if self._sending else "Send"
        self.send_button.tooltip = blocker or ("A send is in progress" if self._sending else
                                               "Send the message")

    def _set_status(self, kind: str, text: str) -> None:
        self.status.value = f"<div style='line-height:1.4'>{_status(kind, text)}</div>"

    def _on_preview(self, _button: Any = None) -> None:
        try:
            composed = api.build_message(self.request(), config=self.settings)
        except Exception as exc:  # noqa: BLE001 - shown, nothing sent
            self._set_status("error", _sentence(exc))
            return
        # What sanitising took out and what fell back, under the message (as --preview does).
        self.preview.value = preview_html(composed) + preview_notes_html(self.removed, self.notes)
        self._preview_box.layout.display = None
        self._set_status("info", "Preview below; nothing was sent.")

    def _on_hide_preview(self, _button: Any = None) -> None:
        self._preview_box.layout.display = "none"
        self.preview.value = ""

    def _on_send(self, _button: Any = None) -> None:
        if self._sending:
            return
        try:
            request = self.request()
        except SmtpMagicError as exc:
            self._set_status("error", exc.message + " Nothing was sent.")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a value render cannot convert
            self._set_status("error", _sentence(exc) + " Nothing was sent.")
            return
        self._sending = True
        self._update_send_button()
        self._on_hide_preview()  # a preview of what was typed before: not what is being sent
        n = len(request.recipients)
        self._set_status("busy", f"Sending to {n} recipient{'s' if n != 1 else ''}\u2026")
        try:
            # In the outbox (and in the session's log, for %smtp_outbox --wait) on return.
            self._future = api.submit_many([request], config=self.settings)
        except BaseException as exc:
            self._sending = False
            self._update_send_button()
            self._set_status("error", _sentence(exc))
            raise
        _on_kernel(self._future, partial(self._finish_send, subject=request.subject))

    def _finish_send(self, future: concurrent.futures.Future[Any], subject: str) -> None:
        try:
            try:
                (response,) = future.result()
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the form stuck
                self.last_response = None
                self._set_status("error", f"Unexpected error while sending: {_sentence(exc)}")
                return
            self.last_response = response
            if response.ok:
                n = len(response.accepted)
                warning = f"; {response.message}" if response.message else ""  # outbox full
                self._set_status("warn" if warning else "ok",
                                 f"Sent \u201c{subject}\u201d to {n} recipient"
                                 f"{'s' if n != 1 else ''} in {response.elapsed:.2f} s "
                                 f"\u2014 Message-ID {response.message_id}{warning}"
                                 + "".join(f"; note: {note}" for note in self.notes))
            else:
                state = response.state  # partly sent, in doubt or not sent
                self._set_status("error" if state == "not sent" else "warn",
                                 f"{state.capitalize()}: {_form_words(response.message)}")
        finally:
            self._sending = False
            self._update_send_button()


def _spec_label(spec: Any, name: str | None) -> str:
    """How a prefilled attachment is listed before (or if) it can be resolved."""
    if isinstance(spec, Attachment):
        return spec.filename
    if isinstance(spec, (str, os.PathLike)):
        return os.path.basename(os.fspath(spec)) or os.fspath(spec)
    if isinstance(spec, tuple) and len(spec) == 2:
        return str(spec[0])
    return name or type(spec).__name__.lower()


def _sentence(exc: BaseException) -> str:
    """The error in the form's words (see _form_words)."""
    if isinstance(exc, SmtpMagicError):
        return _form_words(exc.message)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# What a message says to type in a terminal or a cell, said for the form instead.
_FORM_WORDS = (
    (re.compile(r"\s*\(in a terminal: `[^`]*`\)"), ""),
    (re.compile(r"run `%smtp_config --oauth2-login` interactively once"),
     "press Sign in under Connection settings"),
    (re.compile(r"\s*\(exit (?:code )?\d\)"), ""),
    (re.compile(r"\s*\(%smtp_outbox --retry\)"), ""),
    (re.compile(r"give 'from' \(--from\)"), "fill in From"),
)


def _form_words(text: str) -> str:
    """``text`` without command lines and exit codes, which mean nothing in the form."""
    for pattern, replacement in _FORM_WORDS:
        text = pattern.sub(replacement, text)
    return text


def _descendants(box: widgets.Widget) -> Iterable[widgets.Widget]:
    for child in getattr(box, "children", ()):
        yield from _descendants(child)
        yield child


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
) -> ComposeForm:
    """An email form (an ipywidgets ``VBox``) bound both ways to ``settings`` (default: current).

    Every argument prefills the form: addresses as a string (comma separated) or a list;
    ``content_type`` is ``text/html``, ``text/plain`` or ``text/markdown``; ``attachments`` are
    notebook variable names (``"df"``, ``"df:sales.xlsx"``), file paths, or objects (DataFrames,
    figures, ``Attachment``, ``(filename, bytes)``). ``namespace`` is where DataFrames and
    figures are looked for (default: the IPython user namespace).
    """
    return ComposeForm(to=to, cc=cc, bcc=bcc, subject=subject, body=body,
                       content_type=content_type, attachments=attachments, settings=settings,
                       sender=sender, namespace=namespace)


class _Disclosure(widgets.VBox):
    """A section that opens and closes from a button (``toggle``) reachable by keyboard (Tab,
    then Enter or Space), unlike the header of an ipywidgets Accordion, which only a mouse can
    open. ``body`` is hidden while closed; ``opened`` says which."""

    def __init__(self, title: str, body: widgets.Widget) -> None:
        self.title = title
        self.toggle = widgets.ToggleButton(description=title, icon="caret-right", value=False,
                                           tooltip=f"Show or hide the {title.lower()}",
                                           layout=widgets.Layout(width="auto"))
        self.body = body
        body.layout.display = "none"
        super().__init__([self.toggle, body], layout=widgets.Layout(width="100%"))
        self.toggle.observe(self._on_toggle, names="value")

    @property
    def opened(self) -> bool:
        return bool(self.toggle.value)

    def _on_toggle(self, change: Mapping[str, Any]) -> None:
        self.body.layout.display = None if change["new"] else "none"
        self.toggle.icon = "caret-down" if change["new"] else "caret-right"
