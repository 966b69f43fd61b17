"""The email page around a rendered body: a client-safe layout with every CSS rule inlined."""

from __future__ import annotations

import html as _html
import importlib.util
import logging
import re
from collections.abc import Iterable

__all__ = ["email_document", "inline_css", "is_document", "text_to_html", "with_narrow_style",
           "with_notes"]

log = logging.getLogger(__name__)

FONT = (
    "-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif,"
    "'Apple Color Emoji','Segoe UI Emoji'"
)
MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace"
# overflow-wrap: a long word or URL wraps instead of widening the page on a phone.
TEXT_STYLE = (f"font-family:{FONT};font-size:15px;line-height:1.5;color:#1f2328;"
              "overflow-wrap:break-word;word-wrap:break-word")

# Inlined into style= attributes, then removed: Gmail drops <style> blocks. The table rules
# skip tables that already carry a style (the DataFrame tables) so their cells do not grow;
# css-inline matches selectors against the document as given, before any inlining.
_CSS = f"""
h1{{font-size:24px;line-height:1.25;margin:0 0 12px;font-weight:600}}
h2{{font-size:20px;line-height:1.25;margin:16px 0 10px;font-weight:600}}
h3{{font-size:17px;line-height:1.25;margin:16px 0 8px;font-weight:600}}
h4,h5,h6{{font-size:15px;line-height:1.25;margin:16px 0 8px;font-weight:600}}
p{{margin:0 0 12px}}
a{{color:#0969da}}
ul,ol{{margin:0 0 12px;padding-left:24px}}
blockquote{{margin:0 0 12px;padding:0 12px;border-left:4px solid #d0d7de;color:#57606a}}
pre{{font-family:{MONO};font-size:13px;line-height:1.45;background:#f6f8fa;padding:8px 12px;
margin:0 0 12px;white-space:pre-wrap;word-wrap:break-word}}
code{{font-family:{MONO};font-size:13px;background:#f6f8fa;padding:1px 4px}}
pre code{{background:transparent;padding:0}}
table:not([style]){{border-collapse:collapse;margin:0 0 12px}}
table:not([style]) th,table:not([style]) td{{border:1px solid #d0d7de;padding:4px 8px;
text-align:left}}
table:not([style]) thead th{{background:#f6f8fa;font-weight:600}}
img{{max-width:100%;border:0;background:#ffffff}}
hr{{border:0;border-top:1px solid #d0d7de;margin:16px 0}}
"""

# Presentation tables rather than divs: Outlook for Windows lays out only tables reliably.
# The message is designed for a light page: it says so (color-scheme, and Apple's older
# supported-color-schemes), so that mail apps in dark mode either leave it light or darken it
# as a whole, with its own white background, instead of mixing their black with its dark text.
_SCHEME = "color-scheme:light;supported-color-schemes:light"
_PAGE = """<!DOCTYPE html>
<html lang="en" style="{scheme}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<meta name="supported-color-schemes" content="light">
<title>{title}</title>
<style>{css}</style>
</head>
<body style="margin:0;padding:0;background:#ffffff;color:#1f2328;{scheme}">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" \
bgcolor="#ffffff" style="border-collapse:collapse;background:#ffffff;{scheme}">
<tr><td align="center" style="padding:16px 12px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" \
style="max-width:720px;border-collapse:collapse;table-layout:fixed">
<tr><td align="left" style="{text_style};text-align:left">
{body}
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"""

# The one <style> the message keeps: it only ADDS the narrow-screen stack for the tables that
# are too wide to read on a phone (_tables marks them and hides each cell's column label
# inline). Every rule is !important to win over the inline styles; the selectors are classes
# and descendants, which Gmail's apps keep (it drops a block with anything it cannot parse).
STACK_CLASS = "smx-stack"
LABEL_CLASS = "smx-label"
NARROW_MAX_WIDTH = 480
NARROW_CSS = (
    f"@media screen and (max-width:{NARROW_MAX_WIDTH}px){{"
    f".{STACK_CLASS},.{STACK_CLASS} tbody,.{STACK_CLASS} tr,.{STACK_CLASS} th,"
    f".{STACK_CLASS} td{{display:block!important;width:auto!important;"
    "text-align:left!important;white-space:normal!important;overflow-wrap:break-word!important;"
    "word-break:normal!important}"
    f".{STACK_CLASS} thead{{display:none!important}}"
    f".{STACK_CLASS}{{font-size:14px!important}}"  # a phone's width holds one value a line
    f".{STACK_CLASS} tr{{margin:0 0 8px!important;border:1px solid #d0d7de!important}}"
    f".{STACK_CLASS} th,.{STACK_CLASS} td{{border:0!important;padding:2px 8px!important}}"
    f".{STACK_CLASS} tbody th{{background:#eaeef2!important}}"
    f".{LABEL_CLASS}{{display:inline!important;font-weight:600!important}}"
    "}"
)
_NARROW_STYLE = f'<style type="text/css">{NARROW_CSS}</style>'

_DOCUMENT = re.compile(r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\b|html\b)", re.IGNORECASE | re.DOTALL)


def is_document(html: str) -> bool:
    """Whether ``html`` is a whole document (``<!DOCTYPE``/``<html>``) rather than a fragment."""
    return _DOCUMENT.match(html) is not None


def text_to_html(text: str) -> str:
    """Already-escaped text as HTML paragraphs: a blank line ends a paragraph, a line break
    stays a line break."""
    paragraphs = re.split(r"\n[ \t]*\n\s*", text.strip("\n").replace("\r\n", "\n"))
    return "\n".join(
        "<p>" + p.rstrip().replace("\n", "<br>\n") + "</p>" for p in paragraphs if p.strip()
    )


_TOP_NOTE_STYLE = (
    "margin:0 0 12px;padding:8px 12px;font-size:13px;line-height:1.4;color:#3b2300;"
    "background:#fff8c5;border:1px solid #d4a72c"
)


def with_notes(fragment: str, notes: Iterable[str]) -> str:
    """``fragment`` with the notes for the reader in a box at its very top."""
    notes = list(dict.fromkeys(notes))
    if not notes:
        return fragment
    box = "".join(f'<p style="{_TOP_NOTE_STYLE}">{_html.escape(n)}</p>\n' for n in notes)
    body = re.search(r"<body\b[^>]*>", fragment, re.IGNORECASE)
    if body is not None and is_document(fragment):
        return fragment[: body.end()] + "\n" + box + fragment[body.end():]
    return box + fragment


def email_document(fragment: str, *, title: str | None = None) -> str:
    """Wrap an HTML fragment in the email layout and inline all of its CSS.

    A full document (starting with ``<!DOCTYPE`` or ``<html>``) is not wrapped again, only
    inlined, so applying this twice changes nothing. Without css-inline installed the
    ``<style>`` block is kept instead.
    """
    if _DOCUMENT.match(fragment):
        document = fragment
    else:
        document = _PAGE.format(
            title=_html.escape(title or ""), css=_CSS, text_style=TEXT_STYLE, body=fragment,
            scheme=_SCHEME,
        )
    return with_narrow_style(inline_css(document))


def with_narrow_style(document: str) -> str:
    """The narrow-screen <style> in the head of a document holding a stacking table (once)."""
    if f'class="{STACK_CLASS}' not in document and f" {STACK_CLASS}\"" not in document:
        return document
    if NARROW_CSS in document:
        return document
    head = re.search(r"</head\s*>", document, re.IGNORECASE)
    if head is None:
        return document
    return document[:head.start()] + _NARROW_STYLE + "\n" + document[head.start():]


def inline_css(document: str) -> str:
    """Move the rules of every ``<style>`` block into ``style=`` attributes and drop the blocks."""
    if "<style" not in document.lower() or importlib.util.find_spec("css_inline") is None:
        return document
    import css_inline

    try:
        # No remote stylesheets: an email must not depend on (or fetch) external resources.
        return str(css_inline.inline(document, load_remote_stylesheets=False, keep_link_tags=False))
    except css_inline.InlineError:
        return document
