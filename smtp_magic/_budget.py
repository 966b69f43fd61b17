"""The size budget of an HTML body, and cutting HTML and text to it at a sensible boundary.

Light on purpose (no rendering libraries): the message stages ask it of every HTML body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence

from ._layout import with_notes
from ._names import UniqueNames, slug

__all__ = ["DEFAULT_MAX_BYTES", "cut_html", "head_text", "is_plain_text", "shorten",
           "utf8_size"]

log = logging.getLogger(__name__)

# Gmail clips an HTML part over 102 KB. The part is sent quoted-printable, which adds about 7 %
# to markup like ours, and the page layout adds ~3 KB: 90 KB of rendered HTML stays under.
DEFAULT_MAX_BYTES = 90_000

_JINJA_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
# The elements of HTML (and the svg/math roots): only these make a body HTML. A word in angle
# brackets that is not one of them (<your-name>, <attached>) is what a note typed as text says.
_WORDS = """
a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption
center cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset
figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img
input ins kbd label legend li link main map mark math menu meta meter nav noscript object ol
optgroup option output p picture pre progress q rp rt ruby s samp script search section select
small source span strike strong style sub summary sup svg table tbody td template textarea tfoot
th thead time title tr track tt u ul var video wbr
"""
_ELEMENTS = frozenset(_WORDS.split())
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?/?>")
_MARKUP = re.compile(
    r"<!--|<!doctype|&(?:[a-zA-Z][a-zA-Z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});",
    re.IGNORECASE,
)


def is_plain_text(source: str, *, jinja: bool = True) -> bool:
    """Whether a body meant as HTML has no markup (no HTML element, comment or entity outside
    Jinja's ``{{ }}``/``{% %}``): it was typed as text, and is sent as text laid out in HTML.

    Only real HTML counts: ``<p>``, ``</b>``, ``<br/>`` do; ``<your-name>``, ``<attached>`` or
    ``a < b`` do not, and arrive as typed. ``jinja=False``: the body is not a template, so
    markup inside ``{{ }}`` counts too."""
    text = _JINJA_CODE.sub(" ", source) if jinja and "{" in source else source
    if "<" not in text and "&" not in text:
        return True
    # Elements first: an HTML body usually opens with one, and the search stops there.
    if any(m.group(2).lower() in _ELEMENTS for m in _TAG.finditer(text)):
        return False
    return not _MARKUP.search(text)


def shorten(fragment: str, notes: Sequence[str], layout: Callable[[str], str], *, limit: int,
            title: str | None = None, taken: Iterable[str] = ()) -> tuple[str, str | None]:
    """The page of ``fragment`` (with ``notes`` at its top) as ``layout`` lays it out, within
    ``limit`` bytes: (page, None) when it fits whole, else (the page cut at a sensible boundary
    with a note saying so, the name of the file the whole page is to be attached as, unique
    among the names ``taken``). The size is that of the laid-out page, so it is measured on
    what ``layout`` returns."""
    size = utf8_size(fragment)
    if size <= 2 * limit:
        document = layout(with_notes(fragment, notes))
        if utf8_size(document) <= limit:
            return document, None
        room = limit - (utf8_size(document) - size)
    else:
        room = limit - 6_000
    names = UniqueNames()
    for name in taken:
        names.unique(name)
    filename = names.unique(f"{slug(title or '') or 'message'}.html")
    note = (f"This message is longer than email programs show (about {size / 1000:,.0f} KB), "
            f"so it stops early; the whole message is attached as {filename}.")
    document = ""
    for _ in range(8):
        shortened = cut_html(fragment, max(room, 1_000))
        document = layout(with_notes(shortened, [note, *notes]))
        over = utf8_size(document)
        if over <= limit or room <= 1_000:
            break
        room = int(room * limit / over * 0.97)
    return document, filename


_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment
    r"|<(/?)([a-zA-Z][\w:.-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>"  # 1: '/' 2: tag 3: attributes
    r"|<!(?:[^>]*)>",  # a doctype or the like
    re.DOTALL,
)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
_RAW = frozenset({"script", "style", "textarea", "title"})
_BLOCKS = frozenset({"p", "div", "table", "tr", "li", "ul", "ol", "dl", "dd", "dt", "pre",
                     "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                     "figure", "hr", "br", "tbody", "thead", "details", "center"})
# Candidate cut points, best first: after a top-level element, after any block, at a line
# break in text, at a space in text, anywhere in text (not inside an entity).
_LEVELS = 5


def utf8_size(text: str) -> int:
    """UTF-8 size, without encoding a copy in the common all-ASCII case."""
    return len(text) if text.isascii() else len(text.encode())


def _chars_within(text: str, max_bytes: int) -> int:
    """How many leading characters of ``text`` fit in ``max_bytes`` of UTF-8."""
    if text.isascii():
        return min(len(text), max_bytes)
    return len(text.encode()[:max_bytes].decode("utf-8", "ignore"))


def head_text(text: str, max_bytes: int) -> str:
    """The longest run of whole first lines within ``max_bytes`` (else whole first words, else
    characters): a long string shown in part."""
    end = _chars_within(text, max_bytes)
    if end >= len(text):
        return text
    for sep in ("\n", " "):
        cut = text.rfind(sep, 0, end + 1)
        if cut > end // 2:
            return text[:cut]
    return text[:end]


def cut_html(html: str, max_bytes: int) -> str:
    """The longest head of ``html`` within ``max_bytes`` that ends at a sensible boundary, with
    the elements still open there closed. ``html`` itself when it fits."""
    if utf8_size(html) <= max_bytes:
        return html
    limit = _chars_within(html, max_bytes)
    for _ in range(4):  # the closing tags take room too
        pos = _best_cut(html, limit)
        closing = "".join(f"</{tag}>" for tag in reversed(_open_at(html, pos)))
        if utf8_size(html[:pos]) + len(closing) <= max_bytes or pos == 0:
            return html[:pos].rstrip() + closing
        limit = max(0, limit - len(closing))
    return ""


def _best_cut(html: str, limit: int) -> int:
    """The position of the best cut at or before ``limit`` (in characters)."""
    best = [0] * _LEVELS  # the last candidate seen per level
    stack: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(html, 0, limit):
        _text_candidates(html, pos, match.start(), best, limit)
        pos = match.end()
        if pos > limit:
            break
        closing, tag = match.group(1), (match.group(2) or "").lower()
        if not tag:
            continue
        if closing:
            if tag in stack:
                while stack and stack.pop() != tag:
                    pass
            _candidate(best, 0 if not stack else 1 if tag in _BLOCKS else 2, pos)
        elif tag in _VOID or match.group(3).rstrip().endswith("/"):
            _candidate(best, 0 if not stack else 1 if tag in _BLOCKS else 3, pos)
        elif tag in _RAW:
            end = re.compile(rf"</{tag}\s*>", re.IGNORECASE).search(html, pos)
            if end is None or end.end() > limit:
                break
            pos = end.end()
            _candidate(best, 0 if not stack else 1, pos)
        else:
            stack.append(tag)
    else:
        tail = html.find("<", pos, limit)  # a tag cut in half by the limit is not text
        _text_candidates(html, pos, limit if tail < 0 else tail, best, limit)
    for level in range(_LEVELS):
        if best[level] >= limit // 2:
            return best[level]
    return max(best)


def _candidate(best: list[int], level: int, pos: int) -> None:
    for lvl in range(level, _LEVELS):  # a good boundary is also an acceptable one
        best[lvl] = max(best[lvl], pos)


def _text_candidates(html: str, start: int, end: int, best: list[int], limit: int) -> None:
    end = min(end, limit)
    if end <= start:
        return
    line = html.rfind("\n", start, end)
    if line >= 0:
        _candidate(best, 2, line)
    space = max(html.rfind(" ", start, end), line)
    if space >= 0:  # never inside an entity: they hold no spaces
        _candidate(best, 3, space)
    amp = html.rfind("&", max(start, end - 10), end)
    _candidate(best, 4, amp if amp >= 0 and ";" not in html[amp:end] else end)


def _open_at(html: str, pos: int) -> list[str]:
    """The elements open at ``pos``, outermost first."""
    stack: list[str] = []
    index = 0
    while True:
        match = _TOKEN.search(html, index, pos)
        if match is None:
            return stack
        index = match.end()
        closing, tag = match.group(1), (match.group(2) or "").lower()
        if not tag or tag in _VOID or match.group(3).rstrip().endswith("/"):
            continue
        if closing:
            if tag in stack:
                while stack and stack.pop() != tag:
                    pass
        elif tag in _RAW:
            end = re.compile(rf"</{tag}\s*>", re.IGNORECASE).search(html, index, pos)
            if end is None:
                return stack
            index = end.end()
        else:
            stack.append(tag)
