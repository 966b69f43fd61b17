"""The colours of what smtp-magic shows in a notebook (status lines, tables, the form), in one place.

Front ends differ: JupyterLab has a light and a dark theme (its dark background is about
#111), classic Notebook and nbviewer are light, VS Code follows its own theme. No single colour
reads at WCAG AA (4.5:1) as text on both white and #111, and JupyterLab's own theme colours do
not either (its light theme's ``--jp-success-color1`` is 4.1:1 on white, ``--jp-warn-color1``
2.7:1). So a colour here is a *hue* mixed with the text colour around it (``currentcolor``):
the mix is darker than the hue on a light page and lighter on a dark one. The hue is
JupyterLab's theme variable (so it follows the theme: a lighter green in the dark theme), with
a fallback for front ends without the variables.

``HUE_SHARE`` keeps every colour at 4.5:1 or more in JupyterLab light and dark, and with the
fallback hues on white, on VS Code's dark #1e1e1e and on #111 (tests/test_theme.py computes
it; tests/test_theme_browser.py measures it in chromium).

Where a value is not understood, text keeps the front end's own colour: a browser without
``color-mix()`` ignores the declaration, and JupyterLab's sanitiser (for the outputs of a
notebook opened untrusted) drops ``var()``/``color-mix()`` values. So no colour is ever given
as a plain hex value, which would survive the sanitiser and could be unreadable there.

Message HTML (previews, ``%smtp_inbox``) is not themed: it is shown as its recipients see it,
on white, in its own sandboxed frame; only the frame's border follows the theme.
"""

from __future__ import annotations

import html
import logging

__all__ = ["BORDER", "HUES", "ICONS", "MUTED", "colour", "line", "progress_bar"]

log = logging.getLogger(__name__)

# kind -> (JupyterLab variable, fallback hue for front ends without it)
HUES: dict[str, tuple[str, str]] = {
    "ok": ("--jp-success-color1", "#1a7f37"),
    "error": ("--jp-error-color1", "#cf222e"),
    "warn": ("--jp-warn-color1", "#9a6700"),
    "busy": ("--jp-brand-color1", "#0969da"),
}
HUE_SHARE = 60  # percent of the hue in the mix; the rest is the surrounding text colour
# Secondary text (hints, timestamps, "from" columns): the text colour, a little transparent.
MUTED = "color-mix(in srgb, currentcolor 70%, transparent)"
# Lines around things (the frame of a message, the progress bar's track).
BORDER = "color-mix(in srgb, currentcolor 35%, transparent)"
# Status marks in characters the common fonts have (DejaVu, Arial, Segoe UI Symbol): "⏳" needs
# an emoji font and shows as an empty box without one.
ICONS = {"info": "", "busy": "\u2192 ", "ok": "\u2714 ", "error": "\u2718 ", "warn": "\u26a0 "}


def colour(kind: str) -> str:
    """The CSS colour for text of ``kind``: ok, error, warn, busy; info and muted are the
    surrounding text colour (muted: a little lighter)."""
    if kind == "info":
        return "inherit"
    if kind == "muted":
        return MUTED
    variable, fallback = HUES[kind]
    return f"color-mix(in srgb, var({variable}, {fallback}) {HUE_SHARE}%, currentcolor)"


def line(kind: str, text: str, *, tag: str = "span", live: bool = False,
         escape: bool = True, icon: str | None = None) -> str:
    """``text`` with the icon (default: ``kind``'s) and colour of ``kind``. ``live``: marked as
    a status area that screen readers announce when it changes (``role="status"``, or
    ``alert`` for errors). ``escape=False``: ``text`` is HTML already."""
    role = ""
    if live:  # an alert is announced at once; a status when the reader is idle
        role = ' role="alert"' if kind == "error" else ' role="status" aria-live="polite"'
    body = html.escape(text) if escape else text
    mark = ICONS.get(kind, "") if icon is None else icon
    return f'<{tag}{role} style="color:{colour(kind)}">{mark}{body}</{tag}>'


def progress_bar(done: int, total: int) -> str:
    """An inline progress bar in the surrounding text colour (the status line's), on a track
    in the border colour; a ``progressbar`` for screen readers."""
    share = 100.0 * done / total if total else 100.0
    return (f'<span role="progressbar" aria-label="messages done" aria-valuemin="0" '
            f'aria-valuemax="{total}" aria-valuenow="{done}" style="display:inline-block;'
            f"width:12em;max-width:30%;height:0.7em;margin:0 0.5em 0 0;vertical-align:middle;"
            f'border:1px solid {BORDER};border-radius:2px;overflow:hidden">'
            f'<span style="display:block;height:100%;width:{share:.1f}%;'
            f'background:currentcolor"></span></span>')
