"""HTML to readable plain text for the text/plain alternative of an HTML email (stdlib only)."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from html import unescape
from html.parser import HTMLParser

__all__ = ["html_to_text", "text_alternative"]

log = logging.getLogger(__name__)

# Elements whose content a reader never sees.
_SKIPPED = frozenset({"script", "style", "head", "title", "template", "svg", "iframe", "object"})
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
# Block elements get a blank line around them (the brief treats divs like paragraphs).
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "dl",
        "blockquote",
        "pre",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "figure",
        "figcaption",
        "address",
        "form",
        "fieldset",
        "details",
        "summary",
        "center",
        "hr",
    }
)
# Inside a table cell, any of these marks the table as a layout table rather than data.
_CELL_BLOCKS = (_BLOCKS - {"hr"}) | {"ul", "ol"}
_LINE_ITEMS = frozenset({"li", "dt", "dd", "caption", "option"})
_NO_LINK_SCHEMES = ("javascript:", "cid:", "data:", "#")
_HTML_SPACE = " \t\n\r\f"
_SPACES = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace only: a no-break space is content
WIDTH = 76  # running text is wrapped to this many characters per line
_NUMBER_SOURCE = r"[-+(\u2212]?[$€£¥]?\d[\d,._' ]*(?:[eE][-+]?\d+)?%?\)?"
_NUMBER = re.compile(rf"^{_NUMBER_SOURCE}$")
_NUMBER_START = "-+(\u2212$€£¥"  # what a number may start with, but for a digit (\d)


def html_to_text(html: str) -> str:
    """Render an HTML document or fragment as plain text with no markup left.

    Paragraphs are separated by blank lines, lists become ``- item`` / ``1. item``, links
    ``text (url)``, images their alt text, and each table row one line of aligned cells.
    """
    text = _running_text(html)
    if text is not None:
        return text
    converter = _Converter()
    if not _fast_tokenize(html, converter):
        converter = _Converter()
        try:
            _stdlib_tokenize(html, converter)
        except (AssertionError, ValueError):
            # HTMLParser asserts on some malformed markup (e.g. "<![ x"); a text part must still
            # come out, so strip whatever looks like a tag.
            return _stripped(html)
    return converter.finish()


def _stripped(html: str) -> str:
    """Last resort: tags removed, entities decoded, blank runs collapsed."""
    text = unescape(re.sub(r"<[^>]*>?", " ", html))
    return re.sub(r"[ \t]*\n[ \t\n]*\n", "\n\n", re.sub(r"[ \t]+", " ", text)).strip()


def _html_to_text_reference(html: str) -> str:
    """``html_to_text`` through HTMLParser only: the oracle of the fast tokenizer's tests."""
    converter = _Converter()
    _stdlib_tokenize(html, converter)
    return converter.finish()


# -- tokenizers ---------------------------------------------------------------------------------
# HTMLParser spends most of its time in per-token bookkeeping (positions, line numbers, several
# regexes per tag). The fast tokenizer is one regex over the common, well-formed subset of HTML,
# written so that whatever it accepts HTMLParser tokenizes the same way (same tags, attributes,
# text chunks); anything else, e.g. a '<' + letter that is not a clean tag, goes to HTMLParser.
# Only the five HTML whitespace characters separate: HTMLParser's rules differ for other \s.
_WS = r"[ \t\n\r\f]"
_NAME = r"[a-zA-Z_:][-a-zA-Z0-9_:.]*"
_ATTRS = re.compile(rf"""{_WS}+({_NAME})(?:{_WS}*={_WS}*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_ATTR = rf"""{_WS}+{_NAME}(?:{_WS}*={_WS}*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?"""
_TOKEN = re.compile(
    r"([^<]*)(?:"  # 1: the text before the markup, then one of:
    rf"<([a-zA-Z][-a-zA-Z0-9_:.]*)((?:{_ATTR})*){_WS}*(/?)>"  # 2: tag 3: attributes 4: '/'
    r"|</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>"  # 5: end tag (as HTMLParser's endtagfind)
    r"|<!--.*?--\s*>|<![dD][oO][cC][tT][yY][pP][eE][^>]*>|<\?[^>]*>"  # ignored
    r"|(<)(?![a-zA-Z/!?])"  # 6: a '<' that starts no markup is text
    r"|(<)"  # 7: anything else
    r"|\Z)",
    re.DOTALL,
)


def _ci(name: str) -> str:
    """A pattern for an ASCII tag name in any case (re.I would also take e.g. a long s for an s)."""
    return "".join(f"[{c}{c.upper()}]" for c in name)


# HTMLParser ends a script/style at the first such end tag whose name is ASCII.
_RAW_TEXT_END = {
    tag: re.compile(rf"</\s*{_ci(tag)}\s*>") for tag in HTMLParser.CDATA_CONTENT_ELEMENTS
}


def _fast_tokenize(html: str, sink: _Converter) -> bool:
    """Feed ``html`` to ``sink``; False (with ``sink`` spoilt) for input left to HTMLParser."""
    data, start, end, pos = sink.data, sink.start, sink.end, 0
    while True:  # one pass of finditer, restarted after each script/style element or whole table
        table = None
        for token in _TOKEN.finditer(html, pos):
            text, tag, attrs, slash, end_tag, stray, other = token.groups()
            if text:
                data(unescape(text) if "&" in text else text)
            if tag is not None:
                tag = tag.lower()
                attr = _attributes(attrs) if attrs else _NO_ATTRIBUTES
                # (A table with a role is a layout table: no use trying.)
                if tag == "table" and not slash and "role" not in attr and sink.takes_whole_tables:
                    table = _whole_table(html, token.end(1))
                    if table is not None:
                        break
                if slash:
                    sink.startend(tag, attr)
                    continue
                start(tag, attr)
                if tag in _RAW_TEXT_END:  # script/style: all up to the end tag is their text
                    break
            elif end_tag is not None:
                end(end_tag.lower())
            elif stray is not None:
                data("<")
            elif other is not None:
                return False
        else:
            return True
        if table is not None:
            laid_out, pos = table
            sink.whole_table(laid_out)
            continue
        pos = token.end()
        close = _RAW_TEXT_END[tag].search(html, pos)
        if close is None:  # HTMLParser drops an unterminated script's text
            return True
        if close.start() > pos:
            data(html[pos : close.start()])
        end(tag)
        pos = close.end()


_NO_ATTRIBUTES: dict[str, str] = {}  # shared, like the cached ones below: read only


@lru_cache(maxsize=1024)  # email HTML repeats attributes (an inlined style on every cell)
def _attributes(source: str) -> dict[str, str]:
    """A start tag's attributes; the dict is shared by all tags with this source: read only."""
    attr = {}
    for name, double, single, bare in _ATTRS.findall(source):
        value = double or single or bare
        attr[name.lower()] = unescape(value) if "&" in value else value
    return attr


def _finished(written: str) -> str:
    """The converter's output as given: no-break spaces as spaces, soft hyphens dropped, no
    trailing spaces, no blank lines at either end."""
    text = written.replace("\xa0", " ").replace("\u00ad", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


# -- running text -------------------------------------------------------------------------------
# A message a program writes is often paragraphs of plain text, line breaks and a data table:
# "<p>Hello Ann,</p><p>...</p><table>...</table><p>Regards,<br>Bob</p>". Tag by tag, such a
# document costs a tokenizer match and a few converter calls per tag. So html_to_text first tries
# _running_text: the text up to a table checked to hold only tags of _RUNNING_TAGS (written
# exactly so: lowercase, no attributes), then split at its '<'s, the text written as _Writer
# writes it at the top level (no list, quote, link or heading open: none of those tags is taken),
# and each table handed to _whole_table as _fast_tokenize hands it. Any other tag, a '<' that is
# no tag, or a table _whole_table refuses, and the document goes the usual way: None. The
# differential tests in tests/test_htmltext_fast.py compare it with the HTMLParser path.
_BREAK, _BLOCK = 1, 2  # (and 0: a tag that does nothing to running text)
_STRIPPED_AT_ENDS = "\xa0\u00ad"  # (a no-break space becomes a space; a soft hyphen goes)
# (The most common first: _RUNNING_SEGMENT tries them in this order.)
_RUNNING_TAGS: dict[str, int] = {"p": _BLOCK, "/p": _BLOCK, "br": _BREAK, "div": _BLOCK}
_RUNNING_TAGS.update({"/div": _BLOCK, "br/": _BREAK, "br /": _BREAK})
for _name in ("html", "body", "span", "b", "strong", "i", "em", "u", "small", "font", "code"):
    # (no handler, no block: the converter does nothing on them)
    _RUNNING_TAGS[_name] = _RUNNING_TAGS["/" + _name] = 0
for _name in ("p", "div", "section", "article", "header", "footer", "main", "center"):
    # (blocks without handler: a blank line owed on either tag; "<p/>" is both)
    _RUNNING_TAGS[_name] = _RUNNING_TAGS["/" + _name] = _RUNNING_TAGS[_name + "/"] = _BLOCK


# Text and tags of _RUNNING_TAGS only, up to a table: checked first, so that a document refused
# (most are, at one of their first tags) costs one regex match.
_RUNNING_SEGMENT = re.compile(
    rf"[^<]*(?:<(?:{'|'.join(map(re.escape, _RUNNING_TAGS))})>[^<]*)*"
)


def _running_text(html: str) -> str | None:
    """``html_to_text`` of a document of running text (see above), or None."""
    # The _Writer's state, as its attributes: parts written, line breaks owed, a space owed,
    # line breaks at the end of the output, characters on the current line.
    parts: list[str] = []
    owed, space, trailing, col = 0, False, 0, 0
    pos = 0
    ragged = False  # whether a line may end in what _finished strips
    while True:
        at = html.find("<table", pos)
        stop = at if at >= 0 else len(html)
        if _RUNNING_SEGMENT.fullmatch(html, pos, stop) is None:  # (before any work on it)
            return None
        for index, piece in enumerate(html[pos:stop].split("<")):
            if index:  # a tag, then the text up to the next one
                name, _, text = piece.partition(">")
                kind = _RUNNING_TAGS[name]
            else:  # the text before the first tag
                kind, text = 0, piece
            if kind == _BLOCK:
                owed = 2
            elif kind == _BREAK:  # _Writer.hard_break
                breaks = "\n" * (owed - trailing + 1) if parts and owed > trailing else "\n"
                parts.append(breaks)
                trailing += len(breaks)
                owed, space, col = 0, False, 0
            if not text:
                continue
            # _Converter.data then _Writer.inline: the text collapsed, then word by word.
            if "&" in text:
                text = unescape(text)
            if not text.strip(_HTML_SPACE):
                space = True
                continue
            if "  " in text or not text.isprintable():
                text = _SPACES.sub(" ", text)
            core = text.strip(" ")
            if parts and owed > trailing:  # on a new line, after the line breaks owed
                lead, col, space = "\n" * (owed - trailing), 0, False
            elif trailing or not parts:  # at the start of a line
                lead, col, space = "", 0, False
            else:  # in a line
                space = space or text[0] == " "
                lead = ""
            if col + space + len(core) <= WIDTH:  # (no word is wrapped)
                parts.append(lead + " " + core if space else lead + core)
                col += space + len(core)
                ragged = ragged or core[-1].isspace() or core[-1] in _STRIPPED_AT_ENDS
            else:
                wrapped, col = _wrapped(core, col, space)
                parts.append(lead + wrapped)
                ragged = True
            owed, trailing, space = 0, 0, text[-1] == " "
        if at < 0:
            break
        table = _whole_table(html, at)
        if table is None:
            return None
        laid_out, pos = table
        if laid_out:  # _Converter.whole_table: a raw text, a blank line owed before and after
            # (Its lines end in a cell's text, stripped, not in spaces.)
            ragged = ragged or "\u00ad" in laid_out
            if parts and trailing < 2:
                laid_out = "\n" * (2 - trailing) + laid_out
            parts.append(laid_out)
            trailing, space = 0, False
            col = len(laid_out) - laid_out.rfind("\n") - 1
        owed = 2
    if ragged:
        return _finished("".join(parts))
    # No line ends in whitespace, nor in a soft hyphen that may follow some: no line to strip.
    return "".join(parts).replace("\xa0", " ").replace("\u00ad", "").strip("\n")


def _wrapped(core: str, col: int, space: bool) -> tuple[str, int]:
    """Words written from column ``col`` as _Writer._put writes them (a space owed before the
    first one if ``space``), and the column after them."""
    out = []
    for word in core.split(" "):
        if space:
            if col + 1 + len(word) > WIDTH and col > 0:
                out.append("\n")
                col = 0
            else:
                out.append(" ")
                col += 1
        out.append(word)
        col += len(word)
        space = True
    return "".join(out), col


# -- whole data tables --------------------------------------------------------------------------
# A report's table is most of its markup and, fed tag by tag, most of the converter's time. So
# when the fast tokenizer meets a <table> of plain-text cells -- rows of as many cells, no tag in
# a cell, no caption -- it checks it whole against _table_grammar and lays it out from the cell
# texts in a few string operations (_whole_table), giving what _format_rows would give; a table
# with spans, hidden parts or a layout role goes tag by tag after all, as does anything else.
# The HTMLParser path (_html_to_text_reference) never takes this shortcut: the differential tests
# in tests/test_htmltext_fast.py compare the two. Attribute values here hold no '<' or '>'
# (_SAFE_ATTR, checked by _plain_tag), so in a table taken whole every '<' starts a tag: the
# counts and scans below rely on it.
_SAFE_ATTR = rf"""{_WS}+{_NAME}(?:{_WS}*={_WS}*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'=<>`]+))?"""


# Attributes are matched loosely by the grammars below (after a space, anything up to the '>'),
# then each distinct attribute list of the table is checked once against _SAFE_ATTR
# (_plain_tag): a rendered table repeats the same long inline style on every cell, and the
# strict pattern costs per character of every one of them. ([^>]* rather than [^<>]*: the
# regex engine runs through a single excluded character several times faster than a set.)
_REST_OF_START_TAG = rf"(?:{_WS}[^>]*)?>"  # after the name (with no '/': _SAFE_ATTR has none)
_ATTRIBUTE_LIST = re.compile(rf"(?:{_SAFE_ATTR})*{_WS}*")
# A hidden label that may start a cell: the column's name that render.py's stacked tables show on
# narrow screens only (_tables._LABEL). The converter skips a hidden element whole, so the cell's
# text is what follows it; _plain_attributes checks that every such span is hidden indeed.
_LABEL_SPAN = rf"<span{_WS}[^>]*>[^<]*</span{_WS}*>"  # (with attributes)


def _tag_name(name: str, lowercase: bool) -> str:
    return name if lowercase else _ci(name)


def _close(name: str, lowercase: bool = False) -> str:
    return rf"</{_tag_name(name, lowercase)}{_WS}*>"


def _cell(lowercase: bool = False) -> str:
    td = "t[dh]" if lowercase else "[tT][dDhH]"
    return rf"{_WS}*<{td}{_REST_OF_START_TAG}(?:{_LABEL_SPAN})?[^<]*</{td}{_WS}*>"


@lru_cache(maxsize=64)
def _table_grammar(ncols: int, lowercase: bool) -> re.Pattern[str]:
    """A <table> whose every row has ``ncols`` cells of text (no tags), its <thead> if any first
    (group "head": the rows in it), its tags in lowercase or in any case. (Lowercase, the
    common case, is matched faster -- literals, not [tT] classes -- and needs no lower().)"""

    def tag(name: str) -> str:
        return f"<{_tag_name(name, lowercase)}{_REST_OF_START_TAG}"

    def close(name: str) -> str:
        return _close(name, lowercase)

    row = rf"{_WS}*{tag('tr')}(?:{_cell(lowercase)}){{{ncols}}}{_WS}*{close('tr')}"
    return re.compile(
        rf"{tag('table')}"
        rf"(?:{_WS}*{tag('thead')}(?P<head>(?:{row})*){_WS}*{close('thead')})?"
        rf"(?:{row}|{_WS}*{tag('tbody')}(?:{row})*{_WS}*{close('tbody')})*"
        rf"{_WS}*{close('table')}"
    )


# The same grammar for a table written compactly: lowercase tags without attributes and nothing
# between them, as a program writes a report (the benchmark's bodies, f-strings). It is a strict
# subset of the grammars above, matched about twice as fast: no optional whitespace to try at
# every tag, no attributes to check. So it is tried first; a table it refuses (usually at its
# first tag or row) goes on to the others.
_COMPACT_CELL = r"<t[dh]>[^<]*</t[dh]>"
_COMPACT_CELL_TEXT = re.compile(r"<t[dh]>([^<]*)")  # a cell's text in a compact table
_COMPACT_TD_TEXT = re.compile(r"<td>([^<]*)")  # the same without <th> (a longer literal: faster)
_COMPACT_FIRST_ROW = re.compile(r"<table>(?:<thead>|<tbody>)?<tr>((?:<t[dh]>[^<]*</t[dh]>)+)</tr>")


@lru_cache(maxsize=64)
def _compact_grammar(ncols: int) -> re.Pattern[str]:
    # The cells written out rather than repeated ({ncols}), up to 32: the regex engine takes a
    # repeated group at a fraction of the speed. (The general grammars stay short: their cells
    # are long patterns to compile, and their time goes to reading long tags anyway.)
    cells = _COMPACT_CELL * ncols if ncols <= 32 else f"(?:{_COMPACT_CELL}){{{ncols}}}"
    row = f"<tr>{cells}</tr>"
    return re.compile(
        rf"<table>(?:<thead>(?P<head>(?:{row})*)</thead>)?(?:{row}|<tbody>(?:{row})*</tbody>)*"
        r"</table>"
    )


# A table's start up to the end of its first row: its cells (group 1) are how many the grammar
# expects in every row. It stops where a table stops being simple, so that a page of nested
# layout tables is not scanned to its end once per table.
_FIRST_ROW = re.compile(
    rf"<{_ci('table')}{_REST_OF_START_TAG}"
    rf"(?:{_WS}*<{_ci('thead')}{_REST_OF_START_TAG})?"
    rf"(?:{_WS}*<{_ci('tbody')}{_REST_OF_START_TAG})?"
    rf"{_WS}*<{_ci('tr')}{_REST_OF_START_TAG}((?:{_cell()})*){_WS}*{_close('tr')}"
)
# A start tag with attributes, up to its '>'. (No groups: a match is one string, not a tuple
# of new ones, and the tags of a table repeat.)
_TAG_WITH_ATTRIBUTES = re.compile(rf"<[a-zA-Z]+{_WS}[^>]*")
# A cell's text: from the end of its start tag, or of its label, to its end tag (not </thead>).
_CELL_TEXT = re.compile(r">([^<]*)</[tT][dDhH][ \t\n\r\f>]")
_NOT_PLAIN = frozenset({"colspan", "rowspan", "role"})  # (role on a cell means nothing to the
# converter, but is rare enough to leave to it)
_NUMBERS = re.compile(rf"(?:{_NUMBER_SOURCE})?(?:\n(?:{_NUMBER_SOURCE})?)*")  # one per line, or ""


def _whole_table(html: str, pos: int) -> tuple[str, int] | None:
    """The table whose start tag is at ``pos`` laid out as the converter would, and where it
    ends; None for a table that is not that simple."""
    lower: Callable[[str], str] = str  # (its tags are lowercase already)
    first_row = _COMPACT_FIRST_ROW.match(html, pos)
    table = None
    if first_row is not None:
        ncols = first_row.group(1).count("</")  # one end tag per cell
        table = _compact_grammar(ncols).match(html, pos)
    if table is not None:
        cells = _COMPACT_CELL_TEXT if html.find("<th", pos, table.end()) >= 0 else _COMPACT_TD_TEXT
        texts = _cell_texts(cells.findall(html, pos, table.end()))
    else:
        first_row = _FIRST_ROW.match(html, pos)
        # One end tag per cell (and one per label).
        ncols = first_row.group(1).count("</") - first_row.group(1).count("</span") if first_row else 0
        if not ncols:
            return None
        table = _table_grammar(ncols, True).match(html, pos)
        if table is None:
            table = _table_grammar(ncols, False).match(html, pos)
            lower = str.lower
        if table is None or not _plain_attributes(html, pos, table.end()):
            return None
        texts = _cell_texts(_CELL_TEXT.findall(html, pos, table.end()))
    # Numeric columns are told by the body rows: not those in <thead>, nor those of <th> only.
    head = table.group("head")
    nhead = lower(head).count("<tr") if head else 0
    start, end = table.end("head") if head is not None else pos, table.end()
    values = texts[nhead * ncols :] if nhead else texts
    if (html.find("<th", start, end) if lower is str else lower(html[start:end]).find("<th")) >= 0:
        # In a table the grammar took, each '<tr' starts a row and each '<td' a data cell: a
        # body row without one is a header row. (Cheaper than listing every cell's kind: a
        # DataFrame has a <th> in every row, for its index.)
        rows = lower(html[start:end]).split("<tr")[1:]
        if not all("<td" in row for row in rows):
            values = [
                text
                for index, row in enumerate(rows)
                if "<td" in row
                for text in values[index * ncols : (index + 1) * ncols]
            ]
    numeric = [_numbers(values[column::ncols]) for column in range(ncols)]
    return _lay_out(texts, ncols, numeric), table.end()


def _plain_attributes(html: str, start: int, end: int) -> bool:
    """Every tag of the table (``html[start:end]``) passes _plain_tag."""
    return all(map(_plain_tag, set(_TAG_WITH_ATTRIBUTES.findall(html, start, end))))


@lru_cache(maxsize=1024)
def _plain_tag(tag: str) -> bool:
    """Attributes _TOKEN reads as the grammar's strict form would, none hiding the tag, spanning
    rows or columns or giving the table a role; but a label (a span) must be hidden."""
    name = tag[1:].split(None, 1)[0]  # (ASCII letters, then a space)
    attrs = tag[len(name) + 1 :]
    if _ATTRIBUTE_LIST.fullmatch(attrs) is None:
        return False
    attr = _attributes(attrs)
    if name == "span":
        return _hidden(attr)
    return not _hidden(attr) and _NOT_PLAIN.isdisjoint(attr)


def _cell_texts(sources: list[str]) -> list[str]:
    """Each cell's text as the converter makes it (``data``, ``_close_cell``, ``_one_line``):
    entities decoded, HTML spaces collapsed, no-break spaces as spaces, trimmed."""
    joined = "<".join(sources)  # no cell's source holds a '<'
    separator, content = "<", joined  # content: the cells' text without separators
    if "&" in joined:
        if "\0" in joined:
            texts = [unescape(source) for source in sources]
            return [_SPACES.sub(" ", text).replace("\xa0", " ").strip() for text in texts]
        # All cells decoded at once, NUL-separated (a '<' may come out of a reference): no
        # reference holds a NUL, none makes one, and one that runs on across a NUL is refused
        # whole or decoded from its part before it, so each cell comes out as it would alone.
        separator = "\0"
        joined = unescape(separator.join(sources))
        content = joined.replace(separator, "")  # (a NUL is not printable)
    if "  " in joined or not content.isprintable():
        # (The checks are cheaper than the regex when it changes nothing.)
        joined = _SPACES.sub(" ", joined).replace("\xa0", " ")
    elif (
        " " + separator not in joined
        and separator + " " not in joined
        and " " not in (joined[:1], joined[-1:])
    ):  # printable text has no space but ' ' (str.isprintable): no cell has one to strip
        return sources if separator == "<" else joined.split(separator)  # (unchanged)
    return [text.strip() for text in joined.split(separator)]


def _numbers(texts: list[str]) -> bool:
    """Whether a column is right-aligned (``_numeric_columns``): its texts, but for empty ones,
    are all numbers, and it has some."""
    digits = "".join(texts)
    if digits.isdecimal():  # the common case, cheaper than the regex
        return True
    if not digits or not (digits[0].isdecimal() or digits[0] in _NUMBER_START):
        return False  # (the first text that is not empty is no number: the other common case)
    return _NUMBERS.fullmatch("\n".join(texts)) is not None  # one line each


def _lay_out(texts: list[str], ncols: int, numeric: list[bool]) -> str:
    """A grid of cell texts (row after row) as ``_format_rows`` lays it out: columns as wide as
    their widest cell, two spaces apart, numbers to the right; rows with no text left out."""
    # One format string for the grid: an ASCII column is padded by its field ('%-5s'), where
    # widths are lengths; another has its texts padded here to their display width first.
    blank = not all(texts)  # (before the padding below)
    given = texts
    ascii_only = "".join(texts).isascii()  # (then no column needs the check)
    fields = []
    for column in range(ncols):
        cells = texts[column::ncols]
        if ascii_only or "".join(cells).isascii():
            width = max(map(len, cells))
            if numeric[column]:
                fields.append(f"%{width}s")
            else:  # (not padded in the last column: no trailing spaces to strip)
                fields.append(f"%-{width}s" if column < ncols - 1 else "%s")
            continue
        if texts is given:
            texts = texts[:]  # (the caller's list is left alone)
        sizes = list(map(_width, cells))
        width = max(sizes)
        if numeric[column]:
            texts[column::ncols] = [" " * (width - n) + t for t, n in zip(cells, sizes)]
        elif column < ncols - 1:
            texts[column::ncols] = [t + " " * (width - n) for t, n in zip(cells, sizes)]
        fields.append("%s")
    text = "\n".join(["  ".join(fields)] * (len(texts) // ncols)) % tuple(texts)
    if not blank:  # then no line ends in spaces, and none is blank
        return text
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


def _stdlib_tokenize(html: str, sink: _Converter) -> None:
    parser = _StdlibTokenizer(sink)
    parser.feed(html)
    parser.close()


class _StdlibTokenizer(HTMLParser):
    def __init__(self, sink: _Converter) -> None:
        super().__init__(convert_charrefs=True)
        self._sink = sink

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._sink.start(tag, {k: (v or "") for k, v in attrs})

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._sink.startend(tag, {k: (v or "") for k, v in attrs})

    def handle_endtag(self, tag: str) -> None:
        self._sink.end(tag)

    def handle_data(self, data: str) -> None:
        self._sink.data(data)


class _Writer:
    """Accumulates text with browser-like whitespace: collapsed spaces, deferred line breaks.

    With ``wrap`` (a width), running text is wrapped at spaces: a line never grows past it
    unless one word is longer. Preformatted text and table rows are never wrapped.
    """

    __slots__ = ("_col", "_last", "_newlines", "_space", "_trailing_nl", "hang", "parts", "wrap")

    def __init__(self, wrap: int = 0) -> None:
        self.parts: list[str] = []
        self._newlines = 0  # line breaks owed before the next text
        self._space = False  # a collapsed space owed before the next text
        self._trailing_nl = 0  # line breaks already at the end of the output
        self._last = ""
        self._col = 0  # characters on the current line
        self.wrap = wrap
        self.hang = 0  # indent of wrapped lines (a list item's text lines up after its marker)

    def inline(self, text: str) -> None:
        """Add text whose whitespace is already collapsed to single spaces."""
        if not text:
            return
        core = text.strip(" ")
        if text[0] == " ":
            self._space = True
        if core:
            if self.wrap and self._col + len(core) >= self.wrap and " " in core:
                first, *words = core.split(" ")
                self._put(first)
                for word in words:
                    self._space = True
                    self._put(word)
            else:
                self._put(core)
            self._space = text[-1] == " "

    def space(self) -> None:
        """Add text that was only whitespace: a collapsed space owed before the next text."""
        self._space = True

    def raw(self, text: str) -> None:
        """Add preformatted text verbatim."""
        if text:
            self._put(text, keep_space=False)

    def newline(self, count: int = 1) -> None:
        """Owe ``count`` line breaks (1: new line, 2: blank line) before the next text."""
        if count > self._newlines:  # noqa: PLR1730 -- max() is a call: slower, on every block
            self._newlines = count

    def hard_break(self) -> None:
        """A ``<br>``: an explicit line break that is never merged away."""
        self._put("\n", keep_space=False)

    def _put(self, text: str, keep_space: bool = True) -> None:
        # What is owed before the text (line breaks, a space) is written in the same part: one
        # append, not two. (A mark taken before it is unaffected: since() joins the parts.)
        if self.parts and self._newlines > self._trailing_nl:
            text = "\n" * (self._newlines - self._trailing_nl) + text
            self.hang = 0
        elif (
            keep_space
            and self._space
            and self.parts
            and not self._trailing_nl
            and self._last != " "
        ):
            if self.wrap and self._col + 1 + len(text) > self.wrap and self._col > self.hang:
                text = "\n" + " " * self.hang + text
            else:
                text = " " + text
        self._newlines = 0
        self._space = False
        self._append(text)

    def _append(self, text: str) -> None:
        self.parts.append(text)
        self._last = text[-1]
        line = text.rfind("\n")
        self._col = self._col + len(text) if line < 0 else len(text) - line - 1
        if self._last != "\n":  # the common case, without the arithmetic below
            self._trailing_nl = 0
            return
        stripped = text.rstrip("\n")
        trailing = len(text) - len(stripped)
        self._trailing_nl = self._trailing_nl + trailing if not stripped else trailing

    def mark(self) -> int:
        return len(self.parts)

    def since(self, mark: int) -> str:
        return "".join(self.parts[mark:])

    def replace_since(self, mark: int, text: str) -> None:
        """Replace what was written after ``mark`` by ``text``."""
        del self.parts[mark:]
        self._col, self._trailing_nl = 0, 0
        if self.parts:
            before = "".join(self.parts)
            line = before.rfind("\n")
            self._col = len(before) - line - 1
            self._trailing_nl = len(before) - len(before.rstrip("\n"))
        if text:
            self._append(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


@dataclass(slots=True)
class _Cell:
    writer: _Writer
    header: bool
    colspan: int = 1
    rowspan: int = 1
    has_blocks: bool = False
    text: str = ""


@dataclass(slots=True)
class _Table:
    layout: bool
    rows: list[tuple[bool, list[_Cell]]] = field(default_factory=list)  # (is header row, cells)
    row: list[_Cell] | None = None
    row_is_header: bool = False
    cell: _Cell | None = None
    in_thead: bool = False
    caption: str = ""


@dataclass(slots=True)
class _Link:
    href: str
    writer: _Writer
    mark: int


class _Converter:
    """The state machine that turns a stream of tags and text into plain text."""

    def __init__(self) -> None:
        self._writers: list[_Writer] = [_Writer(WIDTH)]
        self._headings: list[tuple[int, _Writer, int]] = []  # (level, writer, mark) of open h1-h6
        self._tables: list[_Table] = []
        self._lists: list[list[int]] = []  # per open list: [next number] or [] for bullets
        self._links: list[_Link] = []
        self._quotes: list[int] = []  # writer depth at each open <blockquote>
        self._skip: tuple[str, int] | None = None  # (tag, nesting depth) of a hidden element
        self._pre = 0
        self._pre_fresh = False  # a newline right after <pre> is not content (HTML spec)
        self._caption: _Writer | None = None

    @property
    def _out(self) -> _Writer:
        return self._writers[-1]

    # -- tokenizer callbacks ------------------------------------------------------------
    def start(self, tag: str, attr: dict[str, str]) -> None:
        if self._skip is not None and self._skipping_start(tag):
            return
        if tag in _SKIPPED or (attr and _hidden(attr)):
            if tag not in _VOID:
                self._skip = (tag, 1)
            return
        if tag in _CELL_BLOCKS and self._tables:
            self._flag_cell_block()
        if tag in _BLOCKS:
            self._writers[-1].newline(2)
        handler = _STARTS.get(tag)
        if handler is not None:
            handler(self, attr)

    def end(self, tag: str) -> None:
        if self._skip is not None and self._skipping_end(tag):
            return
        handler = _ENDS.get(tag)
        if handler is not None:
            handler(self)
        if tag in _BLOCKS:
            self._writers[-1].newline(2)
        elif tag in _LINE_ITEMS:
            self._writers[-1].newline(1)

    def startend(self, tag: str, attr: dict[str, str]) -> None:
        self.start(tag, attr)
        if tag not in _VOID:
            self.end(tag)

    def data(self, data: str) -> None:
        if self._skip is not None:
            return
        out = self._writers[-1]
        if self._pre:
            if self._pre_fresh and data.startswith("\n"):
                data = data[1:]
            self._pre_fresh = False
            out.raw(data)
        elif data.strip(_HTML_SPACE):
            # Printable text without double spaces has nothing to collapse; the check is much
            # cheaper than the regex.
            collapsible = "  " in data or not data.isprintable()
            out.inline(_SPACES.sub(" ", data) if collapsible else data)
        else:  # the whitespace between tags: most of the text of a formatted document
            out.space()

    def finish(self) -> str:
        while self._tables:
            self._end_table()
        while len(self._writers) > 1:
            self._pop_writer()
        return _finished(self._writers[0].getvalue())

    @property
    def takes_whole_tables(self) -> bool:
        """Whether a table's tags would reach the table code (``_whole_table``) as they are."""
        return self._skip is None and not self._pre

    def whole_table(self, text: str) -> None:
        """A table laid out by ``_whole_table``: what its tags would do to the writers. (The
        spaces between them, owed to the outer writer, are void: line breaks owed win.)"""
        self._flag_cell_block()
        out = self._writers[-1]
        out.newline(2)
        out.raw(text)
        out.newline(2)

    # -- hidden content -----------------------------------------------------------------
    def _skipping_start(self, tag: str) -> bool:
        if self._skip is None:
            return False
        name, depth = self._skip
        if name == "head" and tag == "body":  # an unclosed <head> ends where the body starts
            self._skip = None
            return False
        if tag == name and tag not in _VOID:
            self._skip = (name, depth + 1)
        return True

    def _skipping_end(self, tag: str) -> bool:
        if self._skip is None:
            return False
        name, depth = self._skip
        if tag == name:
            self._skip = None if depth == 1 else (name, depth - 1)
        return True

    # -- simple elements ----------------------------------------------------------------
    def _start_br(self, attr: dict[str, str]) -> None:
        self._out.hard_break()

    def _start_hr(self, attr: dict[str, str]) -> None:
        self._out.raw("-" * 40)
        self._out.newline(2)  # void: no end tag will owe the break

    def _start_img(self, attr: dict[str, str]) -> None:
        # Marked, so the reader knows a picture stands there; an empty alt is a decoration.
        alt = _SPACES.sub(" ", attr.get("alt", "")).strip()
        if alt:
            self._out.inline(f"[image: {alt}]")

    # (h1 to h6: registered in _STARTS and _ENDS below, the level bound)
    def _open_heading(self, attr: dict[str, str], level: int) -> None:
        self._headings.append((level, self._out, self._out.mark()))

    def _close_heading(self) -> None:
        """A heading is marked in text as it is in Markdown: underlined (h1 =, h2 -) or #-led."""
        if not self._headings:
            return
        level, writer, mark = self._headings.pop()
        if writer is not self._out:
            return
        written = writer.since(mark)
        title = written.strip("\n")
        if not title.strip():
            return
        lead = written[: len(written) - len(written.lstrip("\n"))]
        if level <= 2:
            rule = ("=" if level == 1 else "-") * max(_width(line) for line in title.split("\n"))
            marked = f"{title}\n{rule}"
        else:
            marked = "#" * level + " " + title
        writer.replace_since(mark, lead + marked)

    def _start_pre(self, attr: dict[str, str]) -> None:
        self._pre += 1
        self._pre_fresh = True

    def _end_pre(self) -> None:
        self._pre = max(0, self._pre - 1)

    # -- lists --------------------------------------------------------------------------
    def _list_break(self) -> None:
        # A list nested in an item continues that item's block; a top-level list is a block.
        self._out.newline(1 if self._lists else 2)

    def _start_ul(self, attr: dict[str, str]) -> None:
        self._list_break()
        self._lists.append([])

    def _start_ol(self, attr: dict[str, str]) -> None:
        self._list_break()
        start = attr.get("start", "1").strip()
        self._lists.append([int(start) if start.lstrip("-").isdigit() else 1])

    def _end_ul(self) -> None:
        if self._lists:
            self._lists.pop()
        self._list_break()

    _end_ol = _end_ul

    def _start_li(self, attr: dict[str, str]) -> None:
        self._out.newline(1)
        indent = "  " * max(0, len(self._lists) - 1)
        counter = self._lists[-1] if self._lists else []
        if counter:
            value = attr.get("value", "").strip()
            if value.lstrip("-").isdigit():
                counter[0] = int(value)
            marker = f"{counter[0]}. "
            counter[0] += 1
        else:
            marker = "- "
        self._out.raw(indent + marker)
        self._out.hang = len(indent) + len(marker)

    def _start_dt(self, attr: dict[str, str]) -> None:
        self._out.newline(1)

    def _start_dd(self, attr: dict[str, str]) -> None:
        self._out.newline(1)
        self._out.raw("  ")

    # -- links --------------------------------------------------------------------------
    def _start_a(self, attr: dict[str, str]) -> None:
        href = attr.get("href", "").strip()
        self._links.append(_Link(href, self._out, self._out.mark()))

    def _end_a(self) -> None:
        if not self._links:
            return
        link = self._links.pop()
        if not link.href or link.href.lower().startswith(_NO_LINK_SCHEMES):
            return
        if link.writer is not self._out:  # the link spanned table cells: leave its text alone
            return
        text = link.writer.since(link.mark).strip()
        if not text:
            self._out.inline(link.href)
        elif not _same_target(text, link.href):
            self._out.inline(f" ({link.href})")

    # -- block quotes -------------------------------------------------------------------
    def _start_blockquote(self, attr: dict[str, str]) -> None:
        self._quotes.append(len(self._writers))
        self._writers.append(_Writer(self._out.wrap - 2 if self._out.wrap > 20 else 0))

    def _end_blockquote(self) -> None:
        if self._quotes:
            self._pop_writers(self._quotes.pop())

    def _pop_writers(self, depth: int) -> None:
        while len(self._writers) > depth:
            self._pop_writer()

    def _pop_writer(self) -> None:
        """Finish the innermost nested writer (a block quote) into its parent."""
        text = self._writers.pop().getvalue().strip("\n")
        if text:
            self._out.newline(2)
            self._out.raw("\n".join("> " + line if line else ">" for line in text.split("\n")))
            self._out.newline(2)

    # -- tables -------------------------------------------------------------------------
    def _flag_cell_block(self) -> None:
        if self._tables and self._tables[-1].cell is not None:
            self._tables[-1].cell.has_blocks = True

    def _start_table(self, attr: dict[str, str]) -> None:
        self._tables.append(_Table(layout=attr.get("role", "").lower() in ("presentation", "none")))

    def _start_caption(self, attr: dict[str, str]) -> None:
        if self._tables:
            self._caption = _Writer()
            self._writers.append(self._caption)

    def _end_caption(self) -> None:
        if self._tables and self._caption is not None and self._caption in self._writers:
            self._pop_writers(self._writers.index(self._caption) + 1)
            self._writers.pop()
            self._tables[-1].caption = _one_line(self._caption.getvalue())
        self._caption = None

    def _start_thead(self, attr: dict[str, str]) -> None:
        if self._tables:
            self._tables[-1].in_thead = True

    def _end_thead(self) -> None:
        if self._tables:
            self._tables[-1].in_thead = False

    def _start_tr(self, attr: dict[str, str]) -> None:
        if not self._tables:
            return
        table = self._tables[-1]
        self._close_row(table)
        table.row = []
        table.row_is_header = table.in_thead

    def _end_tr(self) -> None:
        if self._tables:
            self._close_row(self._tables[-1])

    def _start_td(self, attr: dict[str, str], header: bool = False) -> None:
        if not self._tables:
            return
        table = self._tables[-1]
        if table.cell is not None:
            self._close_cell(table)
        if table.row is None:
            table.row = []
            table.row_is_header = table.in_thead
        cell = _Cell(_Writer(WIDTH if table.layout else 0), header)
        if attr:
            cell.colspan, cell.rowspan = _span(attr, "colspan"), _span(attr, "rowspan")
        table.cell = cell
        table.row.append(cell)
        self._writers.append(cell.writer)

    def _start_th(self, attr: dict[str, str]) -> None:
        self._start_td(attr, header=True)

    def _end_td(self) -> None:
        if self._tables:
            self._close_cell(self._tables[-1])

    _end_th = _end_td

    def _close_cell(self, table: _Table) -> None:
        cell = table.cell
        if cell is None:
            return
        if self._writers[-1] is cell.writer:
            self._writers.pop()
        elif cell.writer in self._writers:
            self._pop_writers(self._writers.index(cell.writer) + 1)
            self._writers.pop()
        # Only line breaks are trimmed: a table's first line may start with padding.
        cell.text = cell.writer.getvalue().replace("\xa0", " ").strip("\n")
        table.cell = None

    def _close_row(self, table: _Table) -> None:
        self._close_cell(table)
        if table.row is not None:
            is_header = table.row_is_header or all(c.header for c in table.row)
            table.rows.append((is_header, table.row))
            table.row = None

    def _end_table(self) -> None:
        if not self._tables:
            return
        table = self._tables.pop()
        self._close_row(table)
        cells = [c for _, row in table.rows for c in row]
        out = self._out
        out.newline(2)
        if table.layout or any(c.has_blocks for c in cells):
            # A layout table: its cells are just containers for blocks of content.
            for cell in cells:
                if cell.text.strip():
                    out.newline(2)
                    out.raw(cell.text)
        else:
            lines = ([table.caption] if table.caption else []) + _format_rows(table.rows)
            out.raw("\n".join(lines))
        out.newline(2)


# Handlers by tag name, looked up once per tag instead of by getattr on a formatted name.
_STARTS: dict[str, Callable[[_Converter, dict[str, str]], None]] = {
    name.removeprefix("_start_"): method
    for name, method in vars(_Converter).items()
    if name.startswith("_start_")
}
_ENDS: dict[str, Callable[[_Converter], None]] = {
    name.removeprefix("_end_"): method
    for name, method in vars(_Converter).items()
    if name.startswith("_end_")
}
for _level in range(1, 7):
    _STARTS[f"h{_level}"] = partial(_Converter._open_heading, level=_level)
    _ENDS[f"h{_level}"] = _Converter._close_heading


def _hidden(attr: dict[str, str]) -> bool:
    if "hidden" in attr or attr.get("aria-hidden") == "true":
        return True
    style = attr.get("style")
    return style is not None and _hiding_style(style)


@lru_cache(maxsize=1024)  # inlined CSS repeats the same few styles on every cell
def _hiding_style(style: str) -> bool:
    return "display:none" in style.replace(" ", "").lower()


def _span(attr: dict[str, str], name: str) -> int:
    value = attr.get(name)
    if value is None:
        return 1
    value = value.strip()
    return min(int(value), 1000) if value.isdigit() and int(value) > 0 else 1


def _one_line(text: str) -> str:
    if "\n" not in text and "\xa0" not in text:
        return text.strip()
    return " ".join(part.strip() for part in text.replace("\xa0", " ").split("\n") if part.strip())


def _same_target(text: str, href: str) -> bool:
    """Whether showing the link text alone already tells the reader where it goes."""

    def norm(value: str) -> str:
        value = value.strip().lower()
        for prefix in ("mailto:", "https://", "http://"):
            value = value.removeprefix(prefix)
        return value.rstrip("/")

    return norm(text) == norm(href)


def _width(text: str) -> int:
    """Display width: East Asian wide characters take two columns in a monospaced font."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


# A cell on the grid: (column, span, text, in a header row, width of the text). A tuple, not a
# dataclass: a big table has thousands and building a tuple is several times cheaper.
_Placed = tuple[int, int, str, bool, int]


def _place(rows: list[tuple[bool, list[_Cell]]]) -> list[list[_Placed]]:
    """Put cells on a grid, honouring colspan and rowspan (spanned-over slots stay empty)."""
    grid: list[list[_Placed]] = []
    carried: dict[int, int] = {}  # column -> rows still covered by a rowspan from above
    for is_header, cells in rows:
        covered = {col for col, left in carried.items() if left > 0} if carried else ()
        placed: list[_Placed] = []
        shown = False
        col = 0
        for cell in cells:
            while col in covered:
                col += 1
            text = _one_line(cell.text)
            placed.append((col, cell.colspan, text, is_header, _width(text)))
            shown = shown or bool(text)
            if cell.rowspan > 1:
                for c in range(col, col + cell.colspan):
                    carried[c] = cell.rowspan  # decremented below, this row included
            col += cell.colspan
        if carried:
            for c in list(carried):
                carried[c] -= 1
                if carried[c] <= 0:
                    del carried[c]
        if shown:
            grid.append(placed)
    return grid


def _format_rows(rows: list[tuple[bool, list[_Cell]]]) -> list[str]:
    """One line per row: cells padded to their column's width, two spaces apart."""
    grid = _place(rows)
    if not grid:
        return []
    ncols = max(row[-1][0] + row[-1][1] for row in grid)  # columns grow along a row
    widths = [0] * ncols
    spanning = []
    for row in grid:
        for column, span, _, _, width in row:
            if span != 1:
                spanning.append((column, span, width))
            elif width > widths[column]:
                widths[column] = width
    for column, span, width in spanning:  # widen the last spanned column when the cell is wider
        end = min(column + span, ncols)
        have = sum(widths[column:end]) + 2 * (end - column - 1)
        widths[end - 1] += max(0, width - have)
    numeric = _numeric_columns(grid, ncols)
    lines = []
    for row in grid:
        segments, col = [], 0
        for column, span, text, _, width in row:
            while col < column:  # a slot spanned over by a rowspan from above
                segments.append(" " * widths[col])
                col += 1
            if span == 1:
                fill = " " * (widths[col] - width)
                segments.append(fill + text if numeric[col] else text + fill)
            else:
                fill = " " * (sum(widths[col : col + span]) + 2 * (span - 1) - width)
                segments.append(text + fill)
            col += span
        lines.append("  ".join(segments).rstrip())  # empty slots at the end would be stripped
    return lines


def _numeric_columns(grid: list[list[_Placed]], ncols: int) -> list[bool]:
    """Columns whose body cells are all numbers are right-aligned, as pandas prints them."""
    seen = [False] * ncols
    numeric = [True] * ncols
    for row in grid:
        for column, span, text, header_row, _ in row:
            if header_row or span != 1 or not text:
                continue
            seen[column] = True
            numeric[column] = numeric[column] and bool(_NUMBER.match(text))
    return [s and n for s, n in zip(seen, numeric)]


_texts: dict[str, str] = {}


def text_alternative(html: str) -> str:
    """``html_to_text``, remembered for bodies repeated across a bulk send (same body, other
    recipients)."""
    text = _texts.get(html)
    if text is None:
        text = html_to_text(html)
        if len(html) < 200_000:
            if len(_texts) >= 64:
                _texts.clear()
            _texts[html] = text
    return text
