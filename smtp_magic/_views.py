"""What the magics display: tables, previews and captured mail, as HTML in notebooks and text in terminals."""

from __future__ import annotations

import base64
import html
import logging
import re
import struct
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any

from . import _theme
from .errors import SmtpMagicError

__all__ = ["Block", "Inbox", "Table", "estimate_height", "failure_error", "frame_document",
           "html_frame", "latest_failures", "message_frame", "message_images", "outbox_table",
           "size_text", "undelivered", "untrusted_fallback", "visible"]

log = logging.getLogger(__name__)


# Control characters in text we print (a received Subject, a server's reply, a cell of row
# data) would drive the terminal: ESC starts ANSI/OSC sequences (window title, screen clear,
# hyperlinks), CR overwrites the line, bidi overrides reorder it. They are shown as escapes.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069\u2028\u2029]")
_LINE_CONTROLS = re.compile("[\t\n" + _CONTROLS.pattern[1:])
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str, *, one_line: bool = False) -> str:
    """``text`` with its control characters shown as escapes (``\\x1b``); tab and newline
    stay unless ``one_line``."""
    return (_LINE_CONTROLS if one_line else _CONTROLS).sub(_escape_control, text)


def size_text(n: float) -> str:
    """A size in bytes as people read it, the one way every view shows sizes: binary units, as
    ``attachment_size`` counts (1 MB = 2**20 bytes); "65 B", "1.5 kB", "10 MB"."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


# A cell value this long without a space (a Message-ID, a path) may break anywhere: else it
# widens its column until the next columns (the reason of a failed send) leave the screen.
_LONG_TOKEN = 24


class Table:
    """Rows under headers: an HTML table in a notebook, aligned columns in a terminal.

    In HTML the title is the table's caption and every cell is left-aligned (JupyterLab aligns
    table cells right by default); colours are the front end's own, so the table follows its
    theme. ``note`` is a line under the title (e.g. how many rows were left out).
    """

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                 empty: str = "(nothing)", note: str = "") -> None:
        self.headers = tuple(headers)
        self.rows = [tuple("" if v is None else visible(str(v), one_line=True) for v in row)
                     for row in rows]
        self.title = visible(title)
        self.empty = empty
        self.note = visible(note)

    def _repr_html_(self) -> str:
        title = f"<b>{html.escape(self.title)}</b>" if self.title else ""
        if self.note:
            title += (f"<div style='font-weight:normal;color:{_theme.MUTED}'>"
                      f"{html.escape(self.note)}</div>")
        if not self.rows:
            return f"<div>{title}</div><div>{html.escape(self.empty)}</div>"
        cell = "text-align:left;vertical-align:top"
        caption = (f"<caption style='text-align:left;caption-side:top;padding:0 0 4px'>{title}"
                   "</caption>" if title else "")
        head = "".join(f"<th scope='col' style='{cell}'>{html.escape(h)}</th>"
                       for h in self.headers)
        def td(value: str) -> str:
            long = any(len(word) > _LONG_TOKEN for word in value.split())
            style = cell + (";word-break:break-all;min-width:10em" if long else "")
            return f"<td style='{style}'>{html.escape(value)}</td>"

        body = "".join("<tr>" + "".join(td(v) for v in row) + "</tr>" for row in self.rows)
        return (f"<table style='margin-left:0'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        if self.note:
            lines.append(self.note)
        if not self.rows:
            return "\n".join([*lines, self.empty])
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        for row in (self.headers, *self.rows):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        return "\n".join(lines)



def settings_table(settings: Any) -> Table:
    """The settings as a table (setting, value, where it came from), password masked: HTML in a
    notebook, aligned text in a terminal (``%smtp_config``, and how a notebook shows them)."""
    return Table(("setting", "value", "from"), settings.rows(), title="SmtpMagic settings")

# -- the outbox: this session's sends (SendRecords) and the messages kept on disk (OutboxEntries) --

def undelivered(entries: Sequence[Any], records: Sequence[Any]) -> list[Any]:
    """Kept messages (``entries``) that no send still pending among ``records`` is working on."""
    busy = {r.outbox_key for r in records if r.status == "pending" and r.outbox_key}
    return [e for e in entries if e.key not in busy]


def latest_failures(records: Sequence[Any]) -> list[Any]:
    """Failed sends among ``records``, unless a later send (a retry) of the same message succeeded."""
    latest: dict[Any, Any] = {}
    for record in records:
        latest[record.message_id or id(record)] = record
    return [r for r in latest.values() if r.status not in ("sent", "pending")]


def failure_error(failed: list[Any]) -> SmtpMagicError:
    """The error of the first failed send, saying how many failed when it is not the only one."""
    first = failed[0].response
    try:
        first.raise_for_status()
    except SmtpMagicError as exc:
        if len(failed) == 1:
            return exc
        return type(exc)(f"{len(failed)} messages failed; the first: {exc.message}")
    return SmtpMagicError(f"{len(failed)} messages failed.")


def outbox_table(records: Sequence[Any], entries: Sequence[Any], path: Any, limit: int) -> Table:
    """The session's sends (``records``) and the undelivered messages of earlier sessions
    (``entries`` of the outbox at ``path``), oldest first: the newest ``limit`` of them, under
    the counts of all of them."""
    rows = [(r.started, (r.status, r.subject, ", ".join(r.recipients), r.message_id or "",
                         r.reason)) for r in records]
    mine = {r.outbox_key for r in records if r.outbox_key}
    for entry in entries:
        if entry.key not in mine:
            rows.append((entry.created, (f"{entry.status} (earlier session)", entry.subject,
                                         ", ".join(entry.recipients), entry.message_id,
                                         entry.reason)))
    counts: dict[str, int] = {}
    for _, row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    note = ", ".join(f"{n} {status}" for status, n in counts.items())
    rows.sort(key=lambda r: r[0])  # oldest first (stable: a batch keeps its order)
    shown = rows[len(rows) - limit:] if len(rows) > limit else rows
    if len(shown) < len(rows):
        note += (f"; the newest {len(shown)} of {len(rows)} below "
                 f"(%smtp_outbox --limit {len(rows)} shows all)")
    return Table(("status", "subject", "to", "message id", "reason"), [r for _, r in shown],
                 title=f"Outbox ({path})", note=note,
                 empty="No sends in this session and nothing undelivered.")


class Block:
    """Ready-made HTML with its text form (previews)."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html, self.text = html_text, visible(text)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


# -- message HTML, shown inert ------------------------------------------------------------------
#
# Message HTML is untrusted (anyone who reaches the capture server's port can send some), so
# every view puts it in an iframe with an empty ``sandbox``: no script, event handler or
# ``javascript:`` URL in it runs, and it gets an opaque origin (it cannot reach the notebook's
# page, cookies or kernel). A Content-Security-Policy in the frame says the same again, for a
# front end that drops the attribute. ``cid:`` images are inlined as data: URIs for the view only.
#
# The frame's height cannot follow its content: no script may run inside it, and a script in
# the notebook cannot read an opaque-origin frame (allow-same-origin would give the message the
# notebook's origin). So the height is estimated from the text and the images, and the frame
# sits in a box the reader can resize (drag its corner) when the estimate is off.

FRAME_WIDTH = 800  # px: the width the height estimate assumes (a JupyterLab output area)
_MIN_HEIGHT, _MAX_HEIGHT = 60, 1000
_LINE_HEIGHT, _CHARS_PER_LINE, _PADDING = 21, 95, 24
_ROW_EXTRA = 7  # a table row (one text line) is taller than a line of text: cell padding
# The policy of the frame: nothing loads but data: images (the inlined cid: parts) and the
# message's own inline styles; remote images only when the reader asks for them.
_POLICY = "default-src 'none'; img-src {img}; style-src 'unsafe-inline'; font-src data:"
# Elements that act from where they stand and no policy covers: a meta refresh navigates the
# frame, <base> redirects relative links, <link> prefetches. Renamed, they are unknown, inert
# elements (the text around them stays as it was).
_INERT = re.compile(r"<(/?)(meta|link|base)(?=[\s/>])", re.IGNORECASE)
_REMOTE = re.compile(r"""(?:src|srcset|background|poster)\s*=\s*["']?\s*https?:|url\(\s*["']?\s*https?:""",
                     re.IGNORECASE)  # only to tell the reader what was not loaded
_CID = re.compile(r"cid:([^\"'\s<>)]+)", re.IGNORECASE)
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ROW = re.compile(r"<tr\b", re.IGNORECASE)
_ATTR = re.compile(r"""\b(width|height|src)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)


def message_images(msg: EmailMessage) -> dict[str, tuple[str, bytes]]:
    """Content-ID (without <>) -> (content type, bytes) of every image part of ``msg``."""
    out = {}
    for part in msg.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_maintype() == "image":
            payload = part.get_payload(decode=True)
            out[str(cid).strip().strip("<>")] = (
                part.get_content_type(), payload if isinstance(payload, bytes) else b"")
    return out


def message_frame(msg: EmailMessage, *, remote_images: bool = False) -> str:
    """The body of ``msg`` for a notebook: its HTML in an inert frame, else its text."""
    part = msg.get_body(("html", "plain"))
    if part is None:
        return "<i>(no body)</i>"
    content = part.get_content()
    if part.get_content_subtype() != "html":
        return f"<pre style='white-space:pre-wrap'>{html.escape(content)}</pre>"
    return untrusted_fallback(
        html_frame(content, message_images(msg), remote_images=remote_images),
        _text_of(msg, content))


# A notebook opened untrusted (someone else's, a fresh JupyterLab) has its HTML outputs
# sanitised: the frame goes, and its box would stay behind, empty. The sanitiser removes
# ``<style>`` elements and keeps inline styles and classes, so a ``<style>`` tells the two cases
# apart: when trusted it shows the frame (hidden by its inline style) and hides the text; when
# sanitised only the inline styles are left, and the message's text part shows, with how to see
# the HTML.
UNTRUSTED_HINT = ("This notebook is not trusted, so the message's HTML is not shown; its text "
                  "part is below. To see the HTML, trust the notebook (in JupyterLab: the "
                  "command palette, \u201cTrust Notebook\u201d) and open it again.")
_FALLBACK_CHARS = 20_000
_TRUSTED_STYLE = ("<style>.smtp-magic-frame-box{display:block !important}"
                  ".smtp-magic-untrusted{display:none !important}</style>")


def untrusted_fallback(frame: str, text: str) -> str:
    """``frame`` for a trusted notebook; ``text`` and a hint where the notebook is untrusted."""
    if len(text) > _FALLBACK_CHARS:
        text = text[:_FALLBACK_CHARS].rstrip() + "\n\u2026"
    return (f"{_TRUSTED_STYLE}<div class='smtp-magic-frame-box' style='display:none'>{frame}</div>"
            "<div class='smtp-magic-untrusted'>"
            f"<div style='font-style:italic'>{html.escape(UNTRUSTED_HINT)}</div>"
            "<pre style='white-space:pre-wrap;margin:4px 0;padding:4px 8px;"
            f"border-left:3px solid {_theme.BORDER}'>{html.escape(text)}</pre></div>")


def _text_of(msg: EmailMessage, html_content: str) -> str:
    """The message's text part, else its HTML as text."""
    part = msg.get_body(("plain",))
    if part is not None:
        return str(part.get_content())
    from .htmltext import html_to_text

    return html_to_text(html_content)


def frame_document(document: str, images: Mapping[str, tuple[str, bytes]] | None = None, *,
                   remote_images: bool = False) -> str:
    """The document an inert frame shows: the Content-Security-Policy as its very first bytes
    (the parser meets nothing before it, whatever ``document`` starts with: a comment, a
    ``<title>``, text), then ``document`` with its ``cid:`` images inlined as data: URIs and its
    <meta>/<link>/<base> elements made inert. Remote images load only with ``remote_images``,
    as a mail client blocks them until the reader asks (they tell the sender it was read)."""
    images = images or {}

    def inline(match: re.Match[str]) -> str:
        found = images.get(urllib.parse.unquote(match.group(1)))
        if found is None:
            return match.group(0)
        ctype, data = found
        return f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"

    policy = _POLICY.format(img="data: http: https:" if remote_images else "data:")
    return (f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            '<meta name="referrer" content="no-referrer">'
            '<meta http-equiv="x-dns-prefetch-control" content="off">'
            + _INERT.sub(r"<\1x-\2", _CID.sub(inline, document)))


def html_frame(document: str, images: Mapping[str, tuple[str, bytes]] | None = None, *,
               remote_images: bool = False) -> str:
    """``document`` (untrusted email HTML) in a sandboxed iframe (see :func:`frame_document`),
    its height estimated; the box around it can be resized by the reader."""
    height = estimate_height(document, images)
    shown = frame_document(document, images, remote_images=remote_images)
    blocked = "" if remote_images or not _REMOTE.search(document) else (
        f"<div style='font-size:12px;color:{_theme.MUTED}'>Remote images are not loaded "
        "(they tell the sender the message was opened); %smtp_inbox --remote-images "
        "loads them.</div>")
    return (blocked + f"<div class='smtp-magic-message' style='resize:vertical;overflow:hidden;"
            f"height:{height}px;min-height:{_MIN_HEIGHT}px;border:1px solid {_theme.BORDER}'>"
            f"<iframe sandbox=\"\" referrerpolicy=\"no-referrer\" title=\"Message body\" "
            f"srcdoc=\"{html.escape(shown, quote=True)}\" "
            "style='display:block;width:100%;height:100%;border:0;background:white'></iframe></div>")


def estimate_height(document: str, images: Mapping[str, tuple[str, bytes]] | None = None) -> int:
    """Roughly how tall ``document`` renders at FRAME_WIDTH px, in px (text lines + images)."""
    from .htmltext import html_to_text

    images = images or {}
    lines = sum(max(1, -(-len(line) // _CHARS_PER_LINE))
                for line in html_to_text(document).splitlines())
    height = lines * _LINE_HEIGHT + _PADDING + len(_ROW.findall(document)) * _ROW_EXTRA
    for tag in _IMG.findall(document):
        attrs = {m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or ""
                 for m in _ATTR.finditer(tag)}
        src = attrs.get("src", "")
        found = images.get(urllib.parse.unquote(src[4:])) if src[:4].lower() == "cid:" else None
        size = _image_size(found[1]) if found else None
        width = _number(attrs.get("width")) or (size[0] if size else None)
        tall = _number(attrs.get("height")) or (size[1] if size else None)
        if tall is None:
            tall = 150  # a remote image of unknown size
        elif width and width > FRAME_WIDTH:
            tall = tall * FRAME_WIDTH // width  # email images scale down to the width
        height += tall
    return max(_MIN_HEIGHT, min(_MAX_HEIGHT, height))


def _number(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)(?:px)?\s*$", value or "")
    return int(match.group(1)) if match else None


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF or JPEG header; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])  # type: ignore[return-value]
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])  # type: ignore[return-value]
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                tall, wide = struct.unpack(">HH", data[i + 5:i + 9])
                return wide, tall
            i += 2 + length
    return None


class Inbox:
    """Messages of the capture server, newest first, each in a collapsible block."""

    def __init__(self, messages: Sequence[Any], where: str, total: int | None = None, *,
                 remote_images: bool = False) -> None:
        self.messages = list(messages)
        self.where = where
        self.total = len(self.messages) if total is None else max(total, len(self.messages))
        self.remote_images = remote_images

    def _count(self) -> str:
        """ "3 message(s)", or "3 of 600 messages" when only the newest are shown."""
        n = len(self.messages)
        if self.total > n:
            return f"{n} of {self.total} messages (the newest)"
        return f"{n} message(s)"

    @staticmethod
    def _head(captured: Any) -> tuple[str, str, str, str]:
        msg = captured.message
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(captured.received))
        to = ", ".join(captured.rcpt_to) or str(msg.get("To", ""))
        # Anyone who reaches the capture server writes these: shown, never obeyed.
        return (when, visible(str(msg.get("From", captured.mail_from)), one_line=True),
                visible(to, one_line=True), visible(str(msg.get("Subject", "")), one_line=True))

    def _repr_html_(self) -> str:
        if not self.messages:
            return f"<div>No messages in {html.escape(self.where)}.</div>"
        blocks = []
        for captured in self.messages:
            when, sender, to, subject = map(html.escape, self._head(captured))
            files = [visible(p.get_filename() or "(unnamed)", one_line=True)
                     for p in captured.message.iter_attachments()]
            attached = (f"<div>Attachments: {html.escape(', '.join(files))}</div>" if files else "")
            blocks.append(
                f"<details><summary><b>{subject or '(no subject)'}</b> &mdash; {sender} &rarr; "
                f"{to} <span style='color:{_theme.MUTED}'>{when}</span></summary>"
                f"{message_frame(captured.message, remote_images=self.remote_images)}"
                f"{attached}</details>"
            )
        return (f"<div><b>{self._count()}</b> in {html.escape(self.where)}</div>"
                + "".join(blocks))

    def __repr__(self) -> str:
        if not self.messages:
            return f"No messages in {self.where}."
        lines = [f"{self._count()} in {self.where}"]
        for captured in self.messages:
            when, sender, to, subject = self._head(captured)
            lines.append(f"{when}  {sender} -> {to}  {subject}")
        return "\n".join(lines)
