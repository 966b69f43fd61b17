"""The compose form's connection settings panel, bound both ways to the SmtpMagic settings."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
import traitlets

from .. import _theme, api
from ..config import SmtpMagic, choices, withheld_password
from ._common import LABEL, Disclosure, SettingsWatch, labelled, on_kernel, sentence, status
from ._signin import SignInPanel

log = logging.getLogger(__name__)

# The form's names for the security modes the setting offers (others: the mode itself).
SECURITY_LABELS = {"auto": "auto (465: TLS, else STARTTLS)", "starttls": "STARTTLS",
                   "tls": "TLS (implicit)"}


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


class ConnectionPanel:
    """Host, port, security, timeout, login and the connection check, in a section that opens
    from its button (``panel``). A value the settings refuse is reported in ``settings_status``,
    never raised; a typed password goes into the settings and leaves the widget at once."""

    def __init__(self, settings: SmtpMagic) -> None:
        self.settings = settings
        self._watch = SettingsWatch(settings)
        self._errors: dict[str, str] = {}
        self.last_report: list[str] | None = None

        def half() -> widgets.Layout:
            # Two columns where there is room for two (260 px each), else one: at 368 px the
            # fields keep their whole width instead of being cut off.
            return widgets.Layout(width="auto", flex="1 1 260px", min_width="0")

        self.host = widgets.Text(description="Host", continuous_update=False, style=LABEL,
                                 placeholder="smtp.example.org", layout=half())
        self.port = widgets.IntText(description="Port", style=LABEL, layout=half(),
                                    tooltip="587: submission (STARTTLS), 465: implicit TLS")
        self.security = widgets.Dropdown(
            options=labelled(SECURITY_LABELS, choices("security", settings)),
            description="Security", style=LABEL, layout=half())
        self.timeout = widgets.FloatText(description="Timeout (s)", style=LABEL,
                                         layout=half(),
                                         tooltip="Seconds one send may take, retries included")
        self.username = widgets.Text(description="Username", continuous_update=False,
                                     style=LABEL, layout=half())
        # continuous_update=False: the value reaches the kernel once (Enter or leaving the
        # field), is moved into the settings and cleared at once.
        self.password = widgets.Password(description="Password", continuous_update=False,
                                         placeholder="type, then Enter", style=LABEL,
                                         layout=half())
        self.password_hint = widgets.HTML()
        self.check_button = widgets.Button(description="Check connection", icon="plug",
                                           tooltip="Connect, negotiate TLS and log in; sends "
                                           "nothing", layout=widgets.Layout(width="auto"))
        self.settings_status = widgets.HTML()
        self.sign_in = SignInPanel(settings, self.settings_status)
        self.panel = Disclosure("Connection settings", widgets.VBox([
            widgets.HBox([self.host, self.port]),
            widgets.HBox([self.security, self.timeout]),
            widgets.HBox([self.username, self.password]),
            self.password_hint,
            widgets.HBox([self.sign_in.sign_in_button, self.sign_in.cancel_sign_in,
                          self.check_button]),
            self.settings_status,
        ]))
        for row in self.panel.body.children:
            if isinstance(row, widgets.HBox):
                row.layout.flex_flow = "row wrap"  # the columns of half() wrap

        self._bindings: list[_Binding] = []
        for name in ("host", "security", "timeout"):
            self._bind(name, getattr(self, name))
        # A new port is a server on the host shown beside it (a new host brings back the
        # port from before --local: the capture server's port means nothing elsewhere).
        self._bind("port", self.port, along=("host",))
        self._bind("username", self.username, lambda v: v or "", lambda v: v.strip() or None)
        self.password.observe(self._on_password, names="value")
        self._watch.observe(self._show_login_hint, "password", "password_env", "use_keyring",
                            "username", "auth")
        self._watch.observe(self._on_auth, "auth", "oauth2_provider")
        self.check_button.on_click(self.check)
        self._on_auth(None)  # also shows the password hint

    def _bind(self, name: str, widget: widgets.ValueWidget,
              to_widget: Callable[[Any], Any] = lambda v: v,
              to_setting: Callable[[Any], Any] = lambda v: v, along: tuple[str, ...] = ()
              ) -> None:
        self._bindings.append(_Binding(self.settings, name, widget, self.report, to_widget,
                                       to_setting, along))

    def report(self, name: str, exc: BaseException | None) -> None:
        """Show (or, with ``exc`` None, clear) why the form's value for ``name`` was refused."""
        if exc is None:
            if self._errors.pop(name, None) is None:
                return
        else:
            message = str(exc).strip() or type(exc).__name__
            if not message.endswith("."):
                message += "."
            self._errors[name] = (f"{message} The {name} setting is still "
                                  f"{getattr(self.settings, name)!r}.")
        self.settings_status.value = "".join(
            _theme.line("error", msg, tag="div", live=True) for msg in self._errors.values())

    def _on_password(self, change: Mapping[str, Any]) -> None:
        value = change["new"]
        if not value:
            return
        try:
            self.settings.password = value
        except traitlets.TraitError:
            self.report("password", ValueError("The password must be text."))
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

    def _on_auth(self, _change: Any) -> None:
        oauth2 = self.settings.auth == "oauth2"
        self.sign_in.sign_in_button.layout.display = None if oauth2 else "none"
        self.password.layout.display = "none" if oauth2 else None
        self._show_login_hint()

    def check(self, _button: Any = None) -> None:
        """Connect, negotiate TLS and log in on the worker loop; the report is shown here."""
        if self.check_button.disabled:
            return
        self.check_button.disabled = True
        self.settings_status.value = status(
            "busy", f"Connecting to {self.settings.host}:{self.settings.port}\u2026")
        try:
            future = api.worker_loop().submit(api.check_async(self.settings))
        except Exception as exc:  # noqa: BLE001 - shown, the form stays usable
            self.check_button.disabled = False
            self.settings_status.value = status("error", sentence(exc, self.settings))
            return
        on_kernel(future, self._finish_check)

    def _finish_check(self, future: concurrent.futures.Future[Any]) -> None:
        try:
            lines = future.result().lines()
            self.last_report = lines
            self.settings_status.value = status("ok", lines[0]) + "".join(
                _theme.line("info", x, tag="div") for x in lines[1:])
        except Exception as exc:  # noqa: BLE001
            self.last_report = None
            self.settings_status.value = status("error", sentence(exc, self.settings))
        finally:
            self.check_button.disabled = False

    def close(self) -> None:
        for binding in self._bindings:
            binding.unlink()
        self._bindings.clear()
        self._watch.close()
