"""pandas DataFrames, Series and Stylers as email-safe HTML tables and as attachment files."""

from __future__ import annotations

import copy as _copy
import html as _html_module
import importlib.util
import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from . import _sanitize
from ._budget import utf8_size
from ._kinds import PANDAS, kind_of
from ._layout import LABEL_CLASS, STACK_CLASS, email_document
from .errors import InvalidRequest, missing

__all__ = [
    "FRAME_EXTENSIONS",
    "FrameTable",
    "frame_file",
    "frame_table",
    "pandas_kind",
    "scrollable",
    "style_tables",
    "utf8_size",
]

log = logging.getLogger(__name__)

# Shown columns at most; the attached file has them all.
MAX_COLUMNS = 50
_SAMPLE_ROWS = 20
# Cells per chunk when writing CSV: pandas' default chunk makes the peak memory ~10x the file.
_CSV_CHUNK_CELLS = 2_000

# A cell longer than this is shortened in the email (the attached file has it whole).
MAX_CELL_CHARS = 1_000

# A phone's mail app may not scroll a wide table sideways (Gmail, Outlook and Yahoo on Android
# cannot reach what an overflow box hides), so a table must fit the screen by itself: its cells
# may break a word anywhere, which lets the browser narrow every column to the screen's width
# (a table lays out its columns between their narrowest and widest content). Inline only: this
# is what a client that drops the <style> block shows (Gmail with other accounts); the stack
# below is what the others show of a table too wide to read this way.
_CELL = ("border:1px solid #d0d7de;padding:3px 5px;overflow-wrap:anywhere;"
         "word-break:break-word")
_STYLES = {
    "table": (
        "border-collapse:collapse;border-spacing:0;margin:0 0 8px;font-size:12px;line-height:1.4;"
        "font-variant-numeric:tabular-nums;max-width:100%"
    ),
    # A grey that stays apart from the page when a dark-mode app darkens both.
    "thead th": _CELL + ";background:#eaeef2;font-weight:600",
    "th": _CELL + ";font-weight:600",
    "td": _CELL,
}
# A table too wide to read on a phone (its words and numbers whole) is also laid out for narrow
# screens as a stack: each row a block of "column: value" lines. The stack is ADDED by the
# media query of _layout.NARROW_CSS (Gmail with Google accounts, Apple Mail, Outlook and
# Samsung apps keep a <style> in the head); the labels are hidden inline, so a client that
# drops <style> (Gmail with other accounts) shows the wrapped table above, unchanged.
_LABEL = f'<span class="{LABEL_CLASS}" style="display:none;mso-hide:all">{{}}: </span>'
_TAG = re.compile(r"<(/?)(table|thead|tr|th|td)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>",
                  re.IGNORECASE)
_ATTR = re.compile(r"""([^\s=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")
# Once the CSS is inlined, ids and classes only cost bytes.
_SELECTOR_ATTRS = frozenset({"id", "class"})
_INDENT = re.compile(r"\n[ \t]+")
_ROW = re.compile(r"<tr\b[^>]*>(?:(?!</tr>).)*</tr>\s*", re.DOTALL | re.IGNORECASE)

_TABLE = re.compile(r"<table\b.*?</table\s*>", re.DOTALL | re.IGNORECASE)
_BODY = re.compile(r"<tbody\b.*?</tbody\s*>", re.DOTALL | re.IGNORECASE)
_CELL_TEXT = re.compile(r"<(td|th)\b([^>]*)>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_COLSPAN = re.compile(r"""colspan\s*=\s*["']?(\d+)""", re.IGNORECASE)
_ROWSPAN = re.compile(r"""rowspan\s*=\s*["']?(\d+)""", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+(\u2212]?[$€£¥]?\d[\d,._' ]*(?:[eE][-+]?\d+)?%?\)?$")
_NOT_A_NUMBER = frozenset({"", "nan", "<na>", "none", "nat", "inf", "-inf", "-", "\u2013"})
FRAME_EXTENSIONS = (".csv", ".tsv", ".xlsx", ".parquet", ".json", ".html")


def pandas_kind(obj: Any) -> str | None:
    """``"DataFrame"``, ``"Series"`` or ``"Styler"`` for pandas objects (pandas is not imported)."""
    kind = kind_of(obj)
    return kind if kind in PANDAS else None


def _data(obj: Any) -> Any:
    """The DataFrame behind a DataFrame, Series or Styler."""
    kind = pandas_kind(obj)
    if kind == "Styler":
        return obj.data
    if kind == "Series":
        return obj.to_frame()
    return obj


@dataclass(frozen=True)
class FrameTable:
    html: str
    shown_rows: int
    total_rows: int
    shown_columns: int
    total_columns: int
    shortened_cells: int = 0

    @property
    def truncated(self) -> bool:
        return (self.shown_rows < self.total_rows or self.shown_columns < self.total_columns
                or self.shortened_cells > 0)

    def note(self, filename: str) -> str:
        """The sentence above a truncated table, e.g. "Showing the first 120 of 2,000 rows; ..."."""
        parts = []
        if self.shown_rows < self.total_rows:
            parts.append(f"the first {self.shown_rows:,} of {self.total_rows:,} rows")
        if self.shown_columns < self.total_columns:
            parts.append(f"{self.shown_columns:,} of {self.total_columns:,} columns")
        sentence = f"Showing {' and '.join(parts)}" if parts else ""
        if self.shortened_cells:
            cells = ("1 long cell is" if self.shortened_cells == 1
                     else f"{self.shortened_cells:,} long cells are")
            sentence = (f"{sentence}; {cells} shortened" if sentence
                        else f"{cells[0].upper()}{cells[1:]} shortened")
        return f"{sentence}; the full table is attached as {filename}."


def frame_table(obj: Any, *, max_bytes: int, max_rows: int) -> FrameTable:
    """The largest head of the frame whose styled HTML fits ``max_bytes`` (and ``max_rows``)."""
    frame = _data(obj)
    total, ncols = len(frame), len(frame.columns)
    rows = _rows_within(obj, total, max_bytes, min(total, max(1, max_rows)))
    html, shortened = _table_html(obj, rows, total)
    while rows > 1 and utf8_size(html) > max_bytes:  # the estimate was short: scale down and retry
        rows = max(1, min(rows - 1, int(rows * max_bytes / utf8_size(html) * 0.97)))
        html, shortened = _table_html(obj, rows, total)
    return FrameTable(scrollable(html), rows, total, min(ncols, MAX_COLUMNS), ncols, shortened)


def scrollable(html: str) -> str:
    """A table in a box that scrolls sideways when it is wider than the screen (a phone), so
    the page around it keeps the screen's width and its text stays readable."""
    return f'<div style="overflow-x:auto;max-width:100%;margin:0 0 8px">{html}</div>'


def _rows_within(obj: Any, total: int, max_bytes: int, limit: int) -> int:
    """Estimate how many rows fit from the body of a small sample (size ~ fixed + rows * per_row).

    Rendering a big head only to measure it would cost more time and memory than the table,
    and a Styler recomputes its styles on every render.
    """
    if limit <= _SAMPLE_ROWS:
        return limit
    sample, _ = _table_html(obj, _SAMPLE_ROWS, total)
    lower = sample.lower()
    start, end = lower.find("<tbody"), lower.rfind("</tbody>")
    if start < 0 or end < start:
        return limit
    per_row = max(1.0, utf8_size(sample[start:end]) / _SAMPLE_ROWS)
    fixed = utf8_size(sample) - utf8_size(sample[start:end])
    return max(1, min(limit, int((max_bytes - fixed) / per_row * 0.98)))


def _table_html(obj: Any, rows: int, total: int) -> tuple[str, int]:
    """The first ``rows`` rows as an email table, and how many long cells it shortened."""
    shortened = 0
    if pandas_kind(obj) == "Styler":
        html = _styler_html(obj, rows, total)
    else:
        head, shortened = _short_cells(_data(obj).head(rows))
        html = style_tables(head.to_html(max_cols=MAX_COLUMNS, notebook=False))
    return _INDENT.sub("\n", html).strip(), shortened  # pretty-printing costs ~7 % of the budget


def _short_cells(frame: Any) -> tuple[Any, int]:
    """Text cells over MAX_CELL_CHARS cut to that length, with an ellipsis."""
    text_columns = [c for c, dtype in frame.dtypes.items() if dtype.kind in "OSU"
                    or str(dtype) == "string"]
    if not text_columns:
        return frame, 0
    long = {c: frame[c].map(lambda v: isinstance(v, str) and len(v) > MAX_CELL_CHARS)
            for c in text_columns}
    count = int(sum(int(mask.sum()) for mask in long.values()))
    if not count:
        return frame, 0
    frame = frame.copy()
    for column, mask in long.items():
        if mask.any():
            frame[column] = frame[column].map(
                lambda v: v[:MAX_CELL_CHARS] + "\u2026"
                if isinstance(v, str) and len(v) > MAX_CELL_CHARS else v)
    return frame, count


# A Styler's cell text is data, often untrusted, and Styler.to_html does not escape it (unlike
# DataFrame.to_html). The characters that make markup are swapped for private-use stand-ins in
# a copy of the data, and the stand-ins for entities in the HTML: every cell's text is escaped
# exactly once, whatever escape= the Styler has, while the HTML of its own formatters stays
# markup (and goes through the object allowlist, like every object's HTML). The stand-ins are
# private-use characters: one already in the data is shown as the character it stands for.
_STAND_INS = {"&": "\ue000", "<": "\ue001", ">": "\ue002", '"': "\ue003", "'": "\ue004"}
_TO_STAND_INS = str.maketrans(_STAND_INS)
_FROM_STAND_INS = str.maketrans({v: _html_module.escape(k) for k, v in _STAND_INS.items()})


def _escaped_cell(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate(_TO_STAND_INS)
    if value is None or isinstance(value, (int, float, complex, bytes)):
        return value
    text = str(value)
    return text.translate(_TO_STAND_INS) if text != text.translate(_TO_STAND_INS) else value


def _marked_up(labels: Any) -> bool:
    """Whether index or column labels hold characters that make markup."""
    for label in labels.to_flat_index():
        for part in label if isinstance(label, tuple) else (label,):
            if isinstance(part, str) and part != part.translate(_TO_STAND_INS):
                return True
    return False


def _escaped_styler(styler: Any) -> Any:
    frame = styler.data
    text_columns = [i for i, dtype in enumerate(frame.dtypes) if dtype.kind in "OSU"
                    or str(dtype) == "string"]
    labels = [axis for axis, labels in ((0, frame.index), (1, frame.columns))
              if _marked_up(labels)]
    if not text_columns and not labels:
        return styler
    copy = _copy.copy(styler)  # the user's formats, styles, hidden rows... on the copy
    if text_columns:
        escaped = frame.copy()
        for i in text_columns:
            escaped.isetitem(i, frame.iloc[:, i].astype(object).map(_escaped_cell))
        copy.data = escaped
    for axis in labels:  # labels name the styles' subsets: escaped when shown, not renamed
        copy.format_index(escape="html", axis=axis)
    return copy


def _styler_html(styler: Any, rows: int, total: int) -> str:
    # The styler computes its styles on the whole frame and renders only the first rows.
    html = _escaped_styler(styler).to_html(max_rows=rows, max_columns=MAX_COLUMNS)
    html = _sanitize.STYLE_BLOCK.sub(lambda m: (
        html[m.start():m.start(1)] + _sanitize.safe_stylesheet(m.group(1))
        + html[m.end(1):m.end()]), html)
    inlined = _inline_styler_css(html)
    if inlined is None:  # no inliner: keep the <style> block and the ids it refers to
        return _safe_styler_html(style_tables(html, drop_selectors=False))
    if rows < total:
        inlined = _ROW.sub(lambda m: "" if "row_trim" in m.group(0) else m.group(0), inlined)
    return _safe_styler_html(style_tables(inlined))


def _safe_styler_html(html: str) -> str:
    """The object allowlist over a Styler's HTML (its table attributes, captions and formatter
    output are anyone's), then the escaped cell text put back."""
    if "<style" in html.lower():  # kept for a client without an inliner's help: keep it whole
        # (a CSS escape like \3c in a string comes out of the tokenizer as "<": no such block)
        blocks = [b for b in _sanitize.STYLE_BLOCK.findall(html) if "<" not in b]
        body = _sanitize.clean(_sanitize.STYLE_BLOCK.sub("", html), "object")
        return ("".join(f"<style>{b}</style>" for b in blocks) + body).translate(
            _FROM_STAND_INS)
    return _sanitize.clean(html, "object").translate(_FROM_STAND_INS)


def _inline_styler_css(html: str) -> str | None:
    if importlib.util.find_spec("css_inline") is None:
        return None
    import css_inline

    try:
        return str(css_inline.inline_fragment(html, "", load_remote_stylesheets=False))
    except css_inline.InlineError:
        return None


def style_tables(html: str, *, drop_selectors: bool = True) -> str:
    """Give every table, th and td in ``html`` the email table style as inline CSS: borders,
    padding, and text columns aligned left, number columns right (as pandas prints them).

    Styles already on an element come last so they win (a Styler's highlights).
    """
    tables = [m.group(0) for m in _TABLE.finditer(html)]
    numeric = [_numeric_columns(t) for t in tables]
    whole = [_numbers_fit(t, n) for t, n in zip(tables, numeric)]
    # So many columns that one character each and the usual padding overflow a 320 px screen:
    # less padding (about 20 columns then fit at 320 px, 24 at 375; more need the stack).
    tight = [_columns(t) * (_CHAR + _PAD) > _NARROW for t in tables]
    labels = [_labels(t) if not _readable_on_phone(t, n) else None
              for t, n in zip(tables, numeric)]
    table, column, in_head = -1, 0, False
    # The column a cell stands in, for its label: past the cells above that span rows into
    # this one (an outer index level in pandas' HTML), which ``column`` does not count.
    place, carry, busy = 0, dict[int, int](), set[int]()

    def restyle(match: re.Match[str]) -> str:
        nonlocal table, column, in_head, place, carry, busy
        closing, tag, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if tag == "thead":
            in_head = not closing
            return match.group(0)
        if closing:
            return match.group(0)
        if tag == "tr":
            column = place = 0
            busy = {p for p, n in carry.items() if n > 0}
            carry = {p: n - 1 for p, n in carry.items() if n > 1}
            return match.group(0)
        if tag == "table":
            table += 1
            carry, busy = {}, set()
            stack = 0 <= table < len(labels) and labels[table] is not None
            return _with_style(tag, attrs, _STYLES["table"], drop_selectors,
                               STACK_CLASS if stack else "")
        span = _span(attrs)
        while place in busy:
            place += 1
        rows = _ROWSPAN.search(attrs)
        below = min(int(rows.group(1)), 100_000) - 1 if rows else 0
        for p in range(place, place + span) if below > 0 else ():
            carry[p] = below
        label = ""
        if not in_head and 0 <= table < len(labels) and labels[table]:
            label = labels[table].get(place, "")  # type: ignore[union-attr]
        place += span
        right = 0 <= table < len(numeric) and span == 1 and numeric[table].get(column, False)
        column += span
        key = "thead th" if tag == "th" and in_head else tag
        base = f"{_STYLES[key]};text-align:{'right' if right else 'left'}"
        if 0 <= table < len(tight) and tight[table]:
            base += ";padding:2px 1px"
        if right and tag == "td" and whole[table]:  # a number broken in two is misread
            base += ";overflow-wrap:normal;word-break:normal;white-space:nowrap"
        opening = _with_style(tag, attrs, base, drop_selectors)
        return opening + _LABEL.format(label) if label else opening

    return _TAG.sub(restyle, html)


def _span(attrs: str) -> int:
    match = _COLSPAN.search(attrs)
    return max(1, min(int(match.group(1)), 1000)) if match else 1


# The narrowest phone screen the tables are made for, less the page's margins, and what a
# character and a cell's padding and border take at the table's type size (about).
_NARROW = 296
_CHAR, _PAD = 7, 12


def _numbers_fit(table: str, numeric: dict[int, bool]) -> bool:
    """Whether the table fits a 320 px screen with its numbers kept whole (on one line each)
    and its other columns at least three characters wide; else numbers may wrap too."""
    widest: dict[int, int] = {}
    body = _BODY.search(table)
    for row in _ROW.findall(body.group(0) if body else table):
        column = 0
        for _tag, attrs, content in _CELL_TEXT.findall(row):
            if numeric.get(column):
                text = _html_module.unescape(re.sub(r"<[^>]*>", "", content)).strip()
                widest[column] = max(widest.get(column, 0), len(text))
            column += _span(attrs)
    others = max(0, _columns(table) - len(widest))
    need = sum(n * _CHAR + _PAD for n in widest.values()) + others * (3 * _CHAR + _PAD)
    return need <= _NARROW


# A column is readable when its header's words, its numbers and its words up to this many
# characters stay whole (a longer word may break anywhere, as a URL would).
_LONG_WORD = 12
_WORD = re.compile(r"[^\s\-/]+")


def _readable_on_phone(table: str, numeric: dict[int, bool]) -> bool:
    """Whether every column fits a 320 px screen with its words and numbers whole."""
    widest: dict[int, int] = {}
    for row in _ROW.findall(table):
        column = 0
        for _tag, attrs, content in _CELL_TEXT.findall(row):
            span = _span(attrs)
            if span == 1:
                text = _html_module.unescape(re.sub(r"<[^>]*>", "", content)).strip()
                longest = (len(text) if numeric.get(column) and _NUMBER.match(text)
                           else min(_LONG_WORD, max(map(len, _WORD.findall(text)), default=0)))
                widest[column] = max(widest.get(column, 0), longest)
            column += span
    need = sum(n * _CHAR + _PAD for n in widest.values())
    return need <= _NARROW


def _labels(table: str) -> dict[int, str]:
    """Column position -> its header's text (the levels of a MultiIndex joined with " / "),
    escaped, for the narrow-screen stack."""
    head = re.search(r"<thead\b.*?</thead\s*>", table, re.DOTALL | re.IGNORECASE)
    names: dict[int, list[str]] = {}
    for row in _ROW.findall(head.group(0) if head else ""):
        column = 0
        for _tag, attrs, content in _CELL_TEXT.findall(row):
            span = _span(attrs)
            text = " ".join(_html_module.unescape(re.sub(r"<[^>]*>", "", content)).split())
            for position in range(column, column + span) if text else ():
                names.setdefault(position, []).append(text)
            column += span
    return {c: _html_module.escape(" / ".join(parts), quote=False)
            for c, parts in names.items()}


def _columns(table: str) -> int:
    first = _ROW.search(table)
    return sum(_span(attrs) for _tag, attrs, _ in _CELL_TEXT.findall(first.group(0))) \
        if first else 0


def _numeric_columns(table: str) -> dict[int, bool]:
    """Column position -> whether every body cell there is a number (blank and NaN allowed)."""
    body = _BODY.search(table)
    seen: dict[int, bool] = {}
    for row in _ROW.findall(body.group(0) if body else table):
        column = 0
        for _tag, attrs, content in _CELL_TEXT.findall(row):
            span = _span(attrs)
            if span == 1:
                text = _html_module.unescape(re.sub(r"<[^>]*>", "", content)).strip()
                if text.lower() not in _NOT_A_NUMBER:
                    seen[column] = seen.get(column, True) and bool(_NUMBER.match(text))
            column += span
    return seen


def _with_style(tag: str, attrs: str, base: str, drop_selectors: bool,
                css_class: str = "") -> str:
    kept, own = [], ""
    for m in _ATTR.finditer(attrs):
        name = m.group(1).lower()
        value = m.group(2) or ""
        if name == "style":
            own = value.strip("\"'").strip()
        elif name == "class" and css_class and not drop_selectors:
            css_class = f"{value.strip(chr(34) + chr(39))} {css_class}".strip()
        elif name == "border" or (drop_selectors and name in _SELECTOR_ATTRS):
            continue  # the border attribute would fight the inline borders
        else:
            kept.append(m.group(0))
    style = base + (";" + own if own else "")
    if css_class:
        kept.append(f'class="{_html_module.escape(css_class)}"')
    return f"<{tag} " + " ".join(kept + [f'style="{style}"']) + ">"


# -- files -----------------------------------------------------------------------------


def frame_file(obj: Any, filename: str) -> bytes:
    """The frame (or a Styler's data) as a file whose format follows the extension."""
    ext = os.path.splitext(filename)[1].lower()
    writer = _WRITERS.get(ext)
    if writer is None:
        kinds = ", ".join(FRAME_EXTENSIONS[:-1]) + " or " + FRAME_EXTENSIONS[-1]
        raise InvalidRequest(f"A DataFrame can be attached as {kinds}, not as {filename!r}.")
    return writer(obj)


def _keep_index(frame: Any) -> bool:
    """A default 0..n-1 index carries no information; any other index is data."""
    index = frame.index
    return not (
        type(index).__name__ == "RangeIndex"
        and index.name is None
        and index.start == 0
        and index.step == 1
    )


def _csv(obj: Any, sep: str = ",") -> bytes:
    frame = _data(obj)
    buf = io.BytesIO()
    chunk = max(50, _CSV_CHUNK_CELLS // max(1, len(frame.columns)))
    frame.to_csv(buf, sep=sep, index=_keep_index(frame), encoding="utf-8", chunksize=chunk)
    return buf.getvalue()


def _tsv(obj: Any) -> bytes:
    return _csv(obj, sep="\t")


def _require(module: str, package: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise missing(package, purpose, extra="excel")  # openpyxl, its only caller


def _xlsx(obj: Any) -> bytes:
    _require("openpyxl", "openpyxl", "Attaching a DataFrame as .xlsx")
    buf = io.BytesIO()
    if pandas_kind(obj) == "Styler":
        obj.to_excel(buf, engine="openpyxl")  # keeps the styler's colours in the sheet
    else:
        frame = _data(obj)
        frame.to_excel(buf, engine="openpyxl", index=_keep_index(frame))
    return buf.getvalue()


def _parquet(obj: Any) -> bytes:
    if (
        importlib.util.find_spec("pyarrow") is None
        and importlib.util.find_spec("fastparquet") is None
    ):
        raise missing("pyarrow", "Attaching a DataFrame as .parquet", extra="parquet")
    buf = io.BytesIO()
    frame = _data(obj)
    frame.to_parquet(buf, index=None if _keep_index(frame) else False)
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    frame = _data(obj)
    if _keep_index(frame):
        frame = frame.reset_index()
    return str(frame.to_json(orient="records", date_format="iso", force_ascii=False)).encode(
        "utf-8"
    )


def _html(obj: Any) -> bytes:
    frame = _data(obj)
    table, _ = _table_html(obj, len(frame), len(frame))
    return email_document(table).encode("utf-8")


_WRITERS = {
    ".csv": _csv,
    ".tsv": _tsv,
    ".xlsx": _xlsx,
    ".parquet": _parquet,
    ".json": _json,
    ".html": _html,
    ".htm": _html,
}
