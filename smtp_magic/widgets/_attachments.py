"""The attachments part of the compose form: uploads, notebook variables and given items."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from .. import _theme
from .._kinds import PANDAS, kind_of
from .._views import size_text as _size
from ..attachments import is_single_spec, resolve
from ..config import MB, SmtpMagic
from ..errors import SmtpMagicError
from ..models import Attachment
from ._common import LABEL, SettingsWatch, caption, sentence

log = logging.getLogger(__name__)

# Notebook values offered as attachments (kinds by class name: nothing is imported to look).
_ATTACHABLE = PANDAS | {"Figure"}


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


def user_namespace() -> Mapping[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return {}
    shell = get_ipython()
    return getattr(shell, "user_ns", None) or {}


def _spec_label(spec: Any, name: str | None) -> str:
    """How a prefilled attachment is listed before (or if) it can be resolved."""
    if isinstance(spec, Attachment):
        return spec.filename
    if isinstance(spec, (str, os.PathLike)):
        return os.path.basename(os.fspath(spec)) or os.fspath(spec)
    if isinstance(spec, tuple) and len(spec) == 2:
        return str(spec[0])
    return name or type(spec).__name__.lower()


@dataclass(frozen=True)
class Item:
    """One row of the attachment list: what it is, where it came from, and any problem."""

    label: str
    origin: str
    attachment: Attachment | None
    size: int | None
    problem: str | None


class AttachmentPicker:
    """Uploads, a picker of the notebook's DataFrames and figures, and the items given when the
    form was made, listed with their sizes and problems. ``on_change`` is called after the list
    was shown again (``blocking`` may have changed)."""

    def __init__(self, settings: SmtpMagic, namespace: Mapping[str, Any] | None,
                 on_change: Callable[[], None]) -> None:
        self.settings = settings
        self._namespace = namespace
        self._on_change = on_change
        self._watch = SettingsWatch(settings)
        self.fixed: list[tuple[str, Any, str | None]] = []  # (label, spec, variable name)
        self.blocking: str | None = None  # the first problem: the form cannot send
        self.upload = widgets.FileUpload(multiple=True, description="Upload files",
                                         tooltip="Attach files from your computer",
                                         layout=widgets.Layout(width="auto"))
        self.clear_uploads = widgets.Button(description="Clear uploads", icon="times",
                                            tooltip="Remove the uploaded files",
                                            layout=widgets.Layout(width="auto", display="none"))
        self.variables = widgets.SelectMultiple(
            options=[], description="Variables", rows=3, style=LABEL,
            layout=widgets.Layout(width="auto", flex="1 1 auto"),
            tooltip="DataFrames and figures of the notebook; Ctrl/Cmd-click to pick several",
        )
        self.refresh_variables = widgets.Button(
            icon="refresh", tooltip="Look for DataFrames and figures again",
            layout=widgets.Layout(width="36px"),
        )
        self.no_variables = widgets.HTML(
            f"<span style='color:{_theme.MUTED};font-size:12px'>No DataFrame or figure in the "
            "notebook yet: make one, then \u21bb to attach it.</span>",
            layout=widgets.Layout(margin="0 8px 0 88px", flex="1 1 auto"))
        self.attachment_list = widgets.HTML()
        self.upload.observe(self._on_changed, names="value")
        self.variables.observe(self._on_changed, names="value")
        self.clear_uploads.on_click(lambda _b: setattr(self.upload, "value", ()))
        self.refresh_variables.on_click(lambda _b: self.refresh())
        self._watch.observe(self._on_changed, "attachment_size")

    def rows(self) -> list[widgets.Widget]:
        return [
            widgets.HBox([caption("Attachments"), self.upload, self.clear_uploads],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.variables, self.no_variables, self.refresh_variables],
                         layout=widgets.Layout(align_items="center")),
            self.attachment_list,
        ]

    def namespace(self) -> Mapping[str, Any]:
        return self._namespace if self._namespace is not None else user_namespace()

    def add(self, items: Iterable[Any] | Any) -> list[str]:
        """Prefilled attachments: variable names (``df`` or ``df:name.xlsx``), paths, objects.

        Returns the variable names that go to the picker; the rest are kept as specs and
        resolved (``attachments.resolve``) whenever the list is shown or the message is sent.
        """
        if items is None:
            return []
        ns = self.namespace()
        picked: list[str] = []
        for item in ([items] if is_single_spec(items) else items):
            if isinstance(item, str) and item in ns and _kind(ns[item]) \
                    and not item.startswith("_"):
                picked.append(item)  # shown (and unpicked) in the picker
                continue
            name = next((k for k, v in ns.items() if v is item and not k.startswith("_")), None)
            self.fixed.append((_spec_label(item, name), item, name))
        return picked

    def refresh(self) -> None:
        """Look for DataFrames and figures in the notebook again; keeps the current picks."""
        options = attachable_variables(self.namespace())
        names = {value for _, value in options}
        keep = tuple(v for v in self.variables.value if v in names)
        if list(self.variables.options) != options:
            self.variables.options = options  # resets the selection
            self.variables.value = keep
        self.variables.layout.display = None if options else "none"
        self.no_variables.layout.display = "none" if options else None
        self.render()

    def items(self) -> list[Item]:
        # Converted on every call, not cached: a DataFrame may have changed in place.
        limit = int(self.settings.attachment_size * MB)
        ns = self.namespace()
        items: list[Item] = []

        def add(label: str, origin: str, spec: Any, name: str | None = None) -> None:
            try:
                found = resolve(spec, ns, name=name)
            except SmtpMagicError as exc:
                items.append(Item(label, origin, None, None, exc.message))
                return
            except Exception as exc:  # noqa: BLE001 - a value that cannot be converted
                items.append(Item(label, origin, None, None,
                                  f"{label} cannot be attached: {sentence(exc)}"))
                return
            for att in found:
                try:
                    size = att.size
                except SmtpMagicError as exc:
                    items.append(Item(att.filename, origin, None, None, exc.message))
                    continue
                problem = None
                if size > limit:
                    problem = (f"Attachment {att.filename!r} is {_size(size)}, over the "
                               f"{_size(limit)} limit (attachment_size).")
                items.append(Item(att.filename, origin, att, size, problem))

        for f in self.upload.value:
            add(f["name"], "upload", (f["name"], bytes(f["content"])))
        for name in self.variables.value:
            if name not in ns:
                items.append(Item(name, "variable", None, None,
                                  f"The variable {name!r} no longer exists."))
                continue
            add(name, f"variable {name}", name)
        for label, spec, name in self.fixed:
            add(label, "given", spec, name)
        return items

    def render(self) -> None:
        items = self.items()
        self.clear_uploads.layout.display = None if self.upload.value else "none"
        if not items:
            self.attachment_list.value = (
                f"<div style='margin-left:88px;color:{_theme.MUTED};font-size:12px'>No "
                f"attachments. Limit {_size(self.settings.attachment_size * MB)} per file "
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
        self.blocking = next((i.problem for i in items if i.problem), None)
        self._on_change()

    def _on_changed(self, _change: Any) -> None:
        self.render()

    def close(self) -> None:
        self._watch.close()
