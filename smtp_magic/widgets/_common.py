"""What the parts of the compose form share: labels, status lines, settings observers, errors."""

from __future__ import annotations

import concurrent.futures
import html
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ipywidgets as widgets

from .. import _theme, api
from .._relay import Relay
from ..config import SmtpMagic
from ..errors import ExitCode, SmtpMagicError

log = logging.getLogger(__name__)

LABEL = {"description_width": "84px"}


def caption(text: str) -> widgets.HTML:
    """A label aligned with the descriptions of the Text fields (right-aligned, 84 px)."""
    return widgets.HTML(
        f"<div style='text-align:right;padding-right:8px'>{html.escape(text)}</div>",
        layout=widgets.Layout(width="92px", min_width="92px"))


def status(kind: str, text: str) -> str:
    """A status area's content: one line, announced by screen readers when it changes."""
    return _theme.line(kind, text, tag="div", live=True)


def on_kernel(future: concurrent.futures.Future[Any], callback: Callable[[Any], None]) -> None:
    """Run ``callback(future)`` where the form's updates belong once the future is done: on the
    kernel's loop, as the widget callbacks are (updates go out in order, attached to the form,
    never to whichever cell runs next); without a loop (plain Python, tests) on the worker
    thread that finished it. See ``Relay``."""
    Relay().when_done(future, callback)


class SettingsWatch:
    """Observers of the settings that a part of the form removes again when it closes."""

    def __init__(self, settings: SmtpMagic) -> None:
        self.settings = settings
        self._handlers: list[tuple[Callable[[Any], None], list[str]]] = []

    def observe(self, handler: Callable[[Any], None], *names: str) -> None:
        self.settings.observe(handler, names=list(names))
        self._handlers.append((handler, list(names)))

    def close(self) -> None:
        for handler, names in self._handlers:
            self.settings.unobserve(handler, names=names)
        self._handlers.clear()


def sentence(exc: BaseException, settings: SmtpMagic | None = None) -> str:
    """The error as the form shows it: its sentence (see ``in_form_terms``), or its type and
    text for an error that is no SmtpMagicError (a bug, a value that cannot be converted)."""
    if isinstance(exc, SmtpMagicError):
        return in_form_terms(exc.message, exc.exitcode, settings)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def in_form_terms(message: str, exitcode: int | None, settings: SmtpMagic | None) -> str:
    """``message``, unless the failure is one the form mends itself: a login refused for want
    of an OAuth2 sign-in says to press the form's Sign in button (the sign-in state comes from
    ``api.oauth2_status``, not from reading the message)."""
    if exitcode != ExitCode.AUTH or settings is None or settings.auth != "oauth2":
        return message
    try:
        state = api.oauth2_status(settings)
    except SmtpMagicError:  # settings that cannot sign in at all: the message says why
        return message
    if state.signed_in:
        return message
    return f"Not signed in with OAuth2 ({state.provider}): press Sign in under Connection settings."


def descendants(box: widgets.Widget) -> Iterable[widgets.Widget]:
    for child in getattr(box, "children", ()):
        yield from descendants(child)
        yield child


def labelled(labels: Mapping[str, str], values: Iterable[str]) -> list[tuple[str, str]]:
    """(label, value) for a selector: every value the setting accepts, with the form's label
    where it has one and the value itself otherwise (a new value needs no edit here)."""
    return [(labels.get(value, value), value) for value in values]


class Disclosure(widgets.VBox):
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
