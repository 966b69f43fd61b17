"""The message part of the compose form: the address fields, subject, format and body."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets

from .. import _theme, api
from ..config import SmtpMagic, body_formats
from ..errors import InvalidRequest
from ..models import MESSAGE_OPTIONS, MessageOption, as_address_list
from ._common import LABEL, SettingsWatch, labelled

log = logging.getLogger(__name__)

# The address fields are the message options that take addresses (the table %%smtp_send and
# send-notebook share), From first as mail clients show it.
ADDRESS_OPTIONS: tuple[MessageOption, ...] = tuple(sorted(
    (o for o in MESSAGE_OPTIONS if o.metavar == "ADDR"), key=lambda o: o.dest != "sender"))
ADDRESS_FIELDS: tuple[str, ...] = tuple(o.dest for o in ADDRESS_OPTIONS)
# What an empty field shows; the sender and Reply-To show their default from the settings.
_PLACEHOLDERS = {
    "to": "alice@example.org, Bob <bob@example.org>",
    "cc": "optional, comma separated",
    "bcc": "optional, comma separated; not shown to recipients",
}
# The form's names for the body formats the content_type setting offers (others: their type).
FORMAT_LABELS = {"text/html": "HTML", "text/plain": "Plain text", "text/markdown": "Markdown"}
_FORMAT_TIPS = {"text/html": "HTML (a plain-text alternative is added)",
                "text/plain": "Plain text only", "text/markdown": "Markdown, sent as HTML"}


def label_of(option: MessageOption) -> str:
    """The field's label from its flag: --to is To, --reply-to is Reply-To."""
    return "-".join(word.capitalize() for word in option.flag.lstrip("-").split("-"))


class MessageFields:
    """The fields of the message: an address field per address option (each with a line under
    it saying why its value is not valid), subject, format and body. ``on_change`` is called
    when an address field's validity may have changed."""

    def __init__(self, settings: SmtpMagic, *, addresses: Mapping[str, Any], subject: str,
                 body: str, content_type: str | None, on_change: Callable[[], None]) -> None:
        self.settings = settings
        self._on_change = on_change
        self._watch = SettingsWatch(settings)
        self.labels = {o.dest: label_of(o) for o in ADDRESS_OPTIONS}
        self.addresses: dict[str, widgets.Text] = {}
        for option in ADDRESS_OPTIONS:
            value = addresses.get(option.dest)
            text = ", ".join(as_address_list(value)) if value else ""
            self.addresses[option.dest] = widgets.Text(
                value=text, description=self.labels[option.dest], style=LABEL,
                placeholder=_PLACEHOLDERS.get(option.dest, ""), tooltip=option.help,
                layout=widgets.Layout(width="100%"))
        self.subject = widgets.Text(value=subject, description="Subject", style=LABEL,
                                    placeholder="What is it about?",
                                    layout=widgets.Layout(width="100%"))
        # Under each address field: why it is not valid (hidden while it is).
        self.flags = {name: widgets.HTML(layout=widgets.Layout(display="none",
                                                               margin="-2px 0 2px 88px"))
                      for name in ADDRESS_FIELDS}
        formats = body_formats(settings)
        default_type = content_type or settings.content_type
        if default_type not in formats:
            default_type = "text/html"  # multipart/alternative: the HTML body gets a text part
        self.content_type = widgets.ToggleButtons(
            options=labelled(FORMAT_LABELS, formats), value=default_type,
            style={"button_width": "96px"},
            tooltips=[_FORMAT_TIPS.get(f, f) for f in formats],
        )
        # The description is the textarea's <label>: its name for screen readers too.
        self.body = widgets.Textarea(value=body, description="Body", style=LABEL,
                                     placeholder="Write the message here",
                                     layout=widgets.Layout(width="100%", height="170px"))
        for field in self.addresses.values():
            field.observe(self._on_address, names="value")
        self._watch.observe(self._show_defaults, "sender", "username", "reply_to")
        self._show_defaults(None)
        for name in ADDRESS_FIELDS:
            self._flag(name)

    def rows(self) -> list[widgets.Widget]:
        """The address fields with their lines, then the subject (format and body go after)."""
        return [w for name in ADDRESS_FIELDS for w in (self.addresses[name], self.flags[name])
                ] + [self.subject]

    def problem(self, name: str) -> str | None:
        """Why the value of address field ``name`` is not valid, or None."""
        label = self.labels[name]
        try:
            items = as_address_list(self.addresses[name].value)
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

    def first_problem(self) -> str | None:
        return next((p for p in map(self.problem, ADDRESS_FIELDS) if p), None)

    def values(self) -> dict[str, Any]:
        """The request's address fields and subject, as filled in (validated: see ``problem``)."""
        out: dict[str, Any] = {name: as_address_list(self.addresses[name].value)
                               for name in ADDRESS_FIELDS if name != "sender"}
        out["sender"] = self.addresses["sender"].value.strip() or None
        out["subject"] = self.subject.value
        return out

    def _flag(self, name: str) -> None:
        problem = self.problem(name)
        flag, field = self.flags[name], self.addresses[name]
        flag.value = _theme.line("warn", problem, tag="div", live=True) if problem else ""
        flag.layout.display = None if problem else "none"
        if problem:
            field.add_class("smtp-magic-invalid")
        else:
            field.remove_class("smtp-magic-invalid")

    def _on_address(self, change: Mapping[str, Any]) -> None:
        name = next(n for n, w in self.addresses.items() if w is change["owner"])
        self._flag(name)
        self._on_change()

    def default_sender(self) -> str | None:
        """The sender the settings give when From is left empty (the sender setting, else a
        username that is an address), or None."""
        s = self.settings
        return s.sender or (s.username if s.username and "@" in s.username else None)

    def _show_defaults(self, _change: Any) -> None:
        """From and Reply-To show what the settings give when they are left empty."""
        s = self.settings
        default = self.default_sender()
        self.addresses["sender"].placeholder = (
            f"{default} (from the settings)" if default else
            "your address (or set a sender in the settings)")
        if "reply_to" in self.addresses:
            self.addresses["reply_to"].placeholder = (
                f"{s.reply_to} (from the settings)" if s.reply_to else
                "optional: where replies go")

    def close(self) -> None:
        self._watch.close()
