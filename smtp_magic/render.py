"""Rich objects, templates and captured outputs -> email-safe HTML, inline images, attachments."""

from __future__ import annotations

import base64
import contextvars
import functools
import html as _html
import importlib.util
import io
import json
import logging
import os
import re
import secrets
import struct
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any, Literal

from . import _tables
from ._layout import email_document
from .errors import InvalidRequest, missing
from .models import Attachment, InlineImage

if TYPE_CHECKING:
    from IPython.utils.capture import CapturedIO

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "Output",
    "Rendered",
    "attachment_from_object",
    "email_document",
    "markdown_to_html",
    "outputs_from_captured",
    "render_object",
    "render_outputs",
    "render_template",
]

log = logging.getLogger(__name__)

# Gmail clips an HTML part over 102 KB. The part is sent quoted-printable, which adds about 7 %
# to markup like ours, and the page layout adds ~3 KB: 90 KB of rendered HTML stays under.
DEFAULT_MAX_BYTES = 90_000
DEFAULT_MAX_ROWS = 200
# However crowded a template, each table may show a header and a few rows.
_MIN_OBJECT_BYTES = 2_000
_FIGURE_DPI = 100
_ERROR_LINES = 40


@dataclass(frozen=True)
class Rendered:
    """An HTML fragment (or document) with the inline images it references by ``cid:``
    and the attachments generated while rendering (e.g. the full CSV of a truncated table)."""

    html: str
    images: tuple[InlineImage, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    text: str | None = None

    def _repr_html_(self) -> str:
        return self.html


@dataclass(frozen=True)
class Output:
    """One output of a captured cell: a stream chunk, a MIME bundle on display, or an error."""

    kind: Literal["stream", "display", "error"]
    name: str = ""  # "stdout"/"stderr" for streams, the exception class for errors
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Output:
        """An error output with the exception's traceback."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(kind="error", name=type(exc).__name__, text=text)


@dataclass(frozen=True)
class _Options:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    name: str | None = None  # the variable name, for file names of images and attachments


# -- public entry points ---------------------------------------------------------------


def render_object(
    obj: Any, *, max_bytes: int | None = None, max_rows: int | None = None, name: str | None = None
) -> Rendered:
    """Render any object the way the notebook would show it, made email-safe.

    DataFrames, Series and Stylers become inline-styled tables (a table over ``max_bytes`` or
    ``max_rows`` shows its first rows and attaches the whole frame as CSV), matplotlib figures
    and PNG/JPEG reprs inline images, HTML/Markdown/LaTeX/plain reprs HTML. ``name`` (the
    variable's name) names generated files.
    """
    opts = _Options(
        max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        max_rows=DEFAULT_MAX_ROWS if max_rows is None else max_rows,
        name=name,
    )
    if isinstance(obj, Rendered):
        return obj
    if isinstance(obj, str):
        return _render_plain(obj, {}, opts)
    handler = _object_handler(obj)
    if handler is not None:
        return handler(obj, opts)
    data, metadata = _format(obj)
    return _render_bundle(data, metadata, opts)


def render_outputs(outputs: Iterable[Output], *, max_bytes: int | None = None) -> Rendered:
    """The outputs of a captured cell, in order, as one email body fragment.

    A stream too long for the size budget shows its first lines and is attached in full.
    """
    room = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    names = _UniqueNames()
    parts = []
    for output in _merge_streams(outputs):
        if output.kind == "stream":
            part = _render_stream(output, max(room // 2, _MIN_OBJECT_BYTES), names)
        elif output.kind == "error":
            part = _render_error(output)
        else:
            part = _render_bundle(output.data, output.metadata, _Options(max_bytes=room))
            share = max(room // 2, _MIN_OBJECT_BYTES)
            if _tables.utf8_size(part.html) > share:  # e.g. a DataFrame shown with max_rows raised
                part = _fit_display(part, output, share, names)
        room -= _tables.utf8_size(part.html)
        parts.append(part)
    return _concat(parts)


def outputs_from_captured(captured: CapturedIO) -> list[Output]:
    """Convert IPython's ``capture_output()`` result to outputs.

    CapturedIO keeps stdout, stderr and rich outputs apart, so their interleaving is lost:
    stdout comes first, then the displays in order, then stderr.
    """
    outputs = []
    if captured.stdout:
        outputs.append(Output(kind="stream", name="stdout", text=captured.stdout))
    for rich in captured.outputs:
        outputs.append(
            Output(kind="display", data=dict(rich.data), metadata=dict(rich.metadata or {}))
        )
    if captured.stderr:
        outputs.append(Output(kind="stream", name="stderr", text=captured.stderr))
    return outputs


def markdown_to_html(text: str) -> str:
    """CommonMark (plus tables and strikethrough) rendered to HTML with markdown-it-py."""
    return str(_markdown().render(text))


def attachment_from_object(
    obj: Any, filename: str | None = None, *, name: str | None = None
) -> Attachment:
    """A notebook value as an attachment; the file format follows the extension of ``filename``.

    DataFrames/Series/Stylers: .csv (default), .tsv, .xlsx, .parquet, .json, .html. matplotlib
    figures: .png (default), .pdf, .svg. bytes and str need a file name. Objects with a
    ``_repr_png_``/``_repr_jpeg_``/``_repr_svg_`` become that image. ``name`` is the variable's
    name, used for the default file name and in messages.
    """
    if isinstance(obj, Attachment):
        return (
            obj if filename is None else Attachment(filename, obj.data, obj.path, obj.content_type)
        )
    if isinstance(obj, os.PathLike):
        return Attachment.from_path(obj, filename)
    if isinstance(obj, (bytes, bytearray, memoryview, str)):
        if not filename:
            example = (
                f", e.g. {name}:{name}{'.txt' if isinstance(obj, str) else '.bin'}" if name else ""
            )
            raise InvalidRequest(f"Attaching {_label(name)} needs a file name{example}.")
        data = obj.encode("utf-8") if isinstance(obj, str) else bytes(obj)
        return Attachment.from_bytes(filename, data)
    if _tables.pandas_kind(obj):
        filename = filename or f"{name or 'data'}.csv"
        return Attachment.from_bytes(filename, _tables.frame_file(obj, filename))
    figure = _figure_of(obj)
    if figure is not None:
        filename = filename or f"{name or 'figure'}.png"
        return Attachment.from_bytes(filename, _figure_file(figure, filename))
    return _attachment_from_repr(obj, filename, name)


# -- the registries --------------------------------------------------------------------

_ObjectHandler = Callable[[Any, _Options], Rendered]
_MimeHandler = Callable[[Any, Mapping[str, Any], _Options], Rendered]
_OBJECT_HANDLERS: dict[tuple[str, str], _ObjectHandler] = {}
_MIME_HANDLERS: dict[str, _MimeHandler] = {}
# Richest email-safe form first. Email runs no JavaScript, so HTML that needs a script loses
# to an image of the same object (see _choose).
_PREFERENCE = (
    "text/html",
    "image/png",
    "image/jpeg",
    "image/gif",
    "text/markdown",
    "image/svg+xml",
    "text/latex",
    "application/json",
    "text/plain",
)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def _for_type(package: str, class_name: str) -> Callable[[_ObjectHandler], _ObjectHandler]:
    """Register a handler for a class by name, so its package need not be imported to look."""

    def register(func: _ObjectHandler) -> _ObjectHandler:
        _OBJECT_HANDLERS[(package, class_name)] = func
        return func

    return register


def _for_mime(*mime_types: str) -> Callable[[_MimeHandler], _MimeHandler]:
    def register(func: _MimeHandler) -> _MimeHandler:
        for mime in mime_types:
            _MIME_HANDLERS[mime] = func
        return func

    return register


def _object_handler(obj: Any) -> _ObjectHandler | None:
    for cls in type(obj).__mro__:
        package = cls.__module__.partition(".")[0]
        handler = _OBJECT_HANDLERS.get((package, cls.__name__))
        if handler is not None:
            return handler
    return None


def _render_bundle(
    data: Mapping[str, Any], metadata: Mapping[str, Any], opts: _Options
) -> Rendered:
    mime = _choose(data)
    if mime is None or (mime == "text/plain" and _WIDGET in data):
        return Rendered("")  # a widget's text is its repr, e.g. "IntSlider(value=3)": noise
    meta = metadata.get(mime, {}) if isinstance(metadata.get(mime), Mapping) else {}
    return _MIME_HANDLERS[mime](_joined(data[mime]), meta, opts)


def _choose(data: Mapping[str, Any]) -> str | None:
    has_image = any(mime in data for mime in _IMAGE_TYPES)
    for mime in _PREFERENCE:
        if mime not in data:
            continue
        if mime == "text/html" and has_image and _SCRIPT.search(_joined(data[mime])):
            continue
        return mime
    return None


def _joined(value: Any) -> Any:
    """nbformat stores text as a list of lines."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value


# -- IPython's display formatter ---------------------------------------------------------


def _format(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MIME bundle the notebook would show for ``obj``."""
    formatter = _shell_formatter()
    # format() lets an object with _ipython_display_ display itself (in the user's cell) and
    # returns nothing; the standalone formatter has that hook switched off.
    if formatter is None or _has_method(obj, "_ipython_display_"):
        formatter = _standalone_formatter()
    data, metadata = formatter.format(obj)
    return dict(data), dict(metadata)


def _shell_formatter() -> Any:
    """The running shell's formatter (it knows the user's registrations), if it is rich."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    formatter = shell.display_formatter
    # A terminal shell only activates text/plain.
    if not {"text/html", "image/png"} <= set(formatter.active_types):
        return None
    return formatter


@functools.lru_cache(maxsize=1)
def _standalone_formatter() -> Any:
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    formatter.ipython_display_formatter.enabled = False
    return formatter


def _has_method(obj: Any, name: str) -> bool:
    return callable(getattr(type(obj), name, None))


# -- pandas and matplotlib -------------------------------------------------------------


@_for_type("pandas", "DataFrame")
@_for_type("pandas", "Series")
@_for_type("pandas", "Styler")
def _render_frame(obj: Any, opts: _Options) -> Rendered:
    table = _tables.frame_table(obj, max_bytes=opts.max_bytes, max_rows=opts.max_rows)
    if not table.truncated:
        return Rendered(table.html)
    attachment = attachment_from_object(obj, f"{opts.name or 'table'}.csv")
    note = _note(table.note(attachment.filename))
    return Rendered(table.html + "\n" + note, attachments=(attachment,))


def _note(sentence: str) -> str:
    """The small grey line under a shortened table or output."""
    return f'<p style="margin:4px 0 12px;font-size:13px;color:#57606a">{_html.escape(sentence)}</p>'


@_for_type("matplotlib", "Figure")
@_for_type("matplotlib", "SubFigure")
@_for_type("matplotlib", "_AxesBase")
def _render_figure(obj: Any, opts: _Options) -> Rendered:
    figure = _figure_of(obj)
    png = _figure_file(figure, "figure.png", dpi=_FIGURE_DPI)
    return _image(png, "png", {}, opts, alt=_figure_title(figure) or "Figure")


def _figure_of(obj: Any) -> Any:
    """The top-level matplotlib Figure of a Figure, SubFigure or Axes; None for anything else."""
    if _object_handler(obj) is not _render_figure:
        return None
    figure = obj
    while getattr(figure, "figure", None) not in (None, figure):  # Axes/SubFigure -> parent
        figure = figure.figure
    return figure


def _figure_file(figure: Any, filename: str, dpi: int = 150) -> bytes:
    ext = os.path.splitext(filename)[1].lower().lstrip(".")
    if ext not in ("png", "pdf", "svg"):
        raise InvalidRequest(
            f"A figure can be attached as .png, .pdf or .svg, not as {filename!r}."
        )
    buf = io.BytesIO()
    figure.savefig(buf, format=ext, dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _figure_title(figure: Any) -> str:
    """A figure's suptitle, else its first axes' title: the image's alt text."""
    suptitle = getattr(figure, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        return str(suptitle.get_text())
    for axes in figure.get_axes():
        if axes.get_title():
            return str(axes.get_title())
    return ""


# -- MIME handlers -----------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b.*?(?:</script\s*>|$)", re.IGNORECASE | re.DOTALL)
_DATA_URI = re.compile(
    r"""(\bsrc\s*=\s*)(["'])data:image/(png|jpe?g|gif);base64,([A-Za-z0-9+/=\s]+)\2""",
    re.IGNORECASE,
)


@_for_mime("text/html")
def _render_html(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    html = _SCRIPT.sub("", data)  # clients drop scripts anyway; do not ship dead code
    if 'class="dataframe"' in html:
        html = _tables.style_tables(html)  # pandas' own notebook HTML (from a captured output)
    return _extract_data_uris(html, opts)


def _extract_data_uris(html: str, opts: _Options) -> Rendered:
    """Move embedded ``data:`` images into inline parts (Gmail blocks data: URIs)."""
    images: list[InlineImage] = []

    def to_cid(match: re.Match[str]) -> str:
        subtype = "jpeg" if match.group(3).lower().startswith("jp") else match.group(3).lower()
        image = _inline_image(base64.b64decode(match.group(4)), subtype, opts)
        images.append(image)
        return f"{match.group(1)}{match.group(2)}cid:{image.cid}{match.group(2)}"

    return Rendered(_DATA_URI.sub(to_cid, html), images=tuple(images))


@_for_mime("image/png", "image/jpeg", "image/gif")
def _render_bitmap(data: Any, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    raw = _image_bytes(data)
    subtype = _sniff_subtype(raw)
    return _image(raw, subtype, meta, opts, alt=opts.name or "Image")


@_for_mime("image/svg+xml")
def _render_svg(data: Any, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    svg = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if importlib.util.find_spec("cairosvg") is not None:
        import cairosvg

        return _image(cairosvg.svg2png(bytestring=svg), "png", meta, opts, alt=opts.name or "Image")
    # Most clients do not show SVG inline and nothing here can rasterise it: attach it.
    filename = f"{opts.name or 'image'}.svg"
    note = f"<p><em>The image is attached as {_html.escape(filename)}.</em></p>"
    return Rendered(note, attachments=(Attachment.from_bytes(filename, svg, "image/svg+xml"),))


@_for_mime("text/markdown")
def _render_markdown(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    return Rendered(markdown_to_html(data))


@_for_mime("text/latex", "text/plain")
def _render_plain(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    return Rendered(_pre(data))


@_for_mime("application/json")
def _render_json(data: Any, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    text = (
        data
        if isinstance(data, str)
        else json.dumps(data, indent=2, ensure_ascii=False, default=str)
    )
    return Rendered(_pre(text))


def _pre(text: str, style: str = "") -> str:
    attr = f' style="{style}"' if style else ""
    return f"<pre{attr}>{_html.escape(text, quote=False)}</pre>"


# -- images ----------------------------------------------------------------------------


def _image_bytes(data: Any) -> bytes:
    """IPython gives raw bytes; kernels and notebooks give base64 text."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return base64.b64decode(data)


def _sniff_subtype(raw: bytes) -> str:
    if raw.startswith(b"\x89PNG"):
        return "png"
    if raw.startswith(b"GIF8"):
        return "gif"
    return "jpeg"


def _inline_image(raw: bytes, subtype: str, opts: _Options) -> InlineImage:
    cid = make_msgid(domain="smtp-magic")[1:-1]
    ext = "jpg" if subtype == "jpeg" else subtype
    return InlineImage(cid=cid, data=raw, subtype=subtype, filename=f"{opts.name or 'image'}.{ext}")


def _image(
    raw: bytes, subtype: str, meta: Mapping[str, Any], opts: _Options, *, alt: str
) -> Rendered:
    image = _inline_image(raw, subtype, opts)
    width, height = meta.get("width"), meta.get("height")
    if width is None and subtype == "png" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
    size = ""
    if width:
        size += f' width="{int(width)}"'
    if height and width:
        size += f' height="{int(height)}"'
    tag = (
        f'<img src="cid:{image.cid}" alt="{_html.escape(alt)}"{size} '
        'style="display:block;max-width:100%;height:auto;border:0;margin:0 0 12px">'
    )
    return Rendered(tag, images=(image,))


def _label(name: str | None) -> str:
    return f"variable {name!r}" if name else "the value"


def _attachment_from_repr(obj: Any, filename: str | None, name: str | None) -> Attachment:
    for method, ext in (("_repr_png_", "png"), ("_repr_jpeg_", "jpg"), ("_repr_svg_", "svg")):
        if not _has_method(obj, method):
            continue
        data = getattr(obj, method)()
        if isinstance(data, tuple):  # (data, metadata)
            data = data[0]
        if data is None:
            continue
        raw = data.encode("utf-8") if ext == "svg" and isinstance(data, str) else _image_bytes(data)
        return Attachment.from_bytes(filename or f"{name or 'image'}.{ext}", raw)
    raise InvalidRequest(
        f"Cannot attach {_label(name)} of type {type(obj).__name__}: attach a DataFrame, a figure, "
        "an image, a file path, or bytes/str with a file name."
    )


# -- captured outputs ------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_STDERR_STYLE = "background:#fff5f5;color:#6e2b20"
_ERROR_STYLE = "background:#ffebe9;color:#82071e;border-left:4px solid #cf222e"


def _merge_streams(outputs: Iterable[Output]) -> Iterable[Output]:
    """Consecutive chunks of one stream are one block, as the notebook shows them."""
    pending: Output | None = None
    for output in outputs:
        if pending is not None and output.kind == "stream" and output.name == pending.name:
            pending = Output(kind="stream", name=pending.name, text=pending.text + output.text)
            continue
        if pending is not None:
            yield pending
            pending = None
        if output.kind == "stream":
            pending = output
        else:
            yield output
    if pending is not None:
        yield pending


def _terminal_text(text: str) -> str:
    """What a terminal would show: no colour codes, and a carriage return rewrites its line."""
    lines = _ANSI.sub("", text).replace("\r\n", "\n").split("\n")
    return "\n".join(next((s for s in reversed(line.split("\r")) if s), "") for line in lines)


def _render_stream(output: Output, max_bytes: int, names: _UniqueNames) -> Rendered:
    text = _terminal_text(output.text).rstrip("\n")
    if not text.strip():
        return Rendered("")
    style = _STDERR_STYLE if output.name == "stderr" else ""
    shown = _head_lines(text, max_bytes)
    if len(shown) == len(text):
        return Rendered(_pre(text, style))
    filename = names.unique(f"{output.name or 'output'}.txt")
    total, count = text.count("\n") + 1, shown.count("\n") + 1
    note = f"Showing the first {count:,} of {total:,} lines; the full output is attached as {filename}."
    return Rendered(
        _pre(shown, style) + "\n" + _note(note),
        attachments=(Attachment.from_bytes(filename, text),),
    )


_ROW = re.compile(r"<tr\b.*?</tr\s*>", re.IGNORECASE | re.DOTALL)


def _fit_display(part: Rendered, output: Output, max_bytes: int, names: _UniqueNames) -> Rendered:
    """A displayed output too big for its share of the budget: a table shows its first rows,
    anything else its first lines of text; the whole output is attached either way."""
    html = part.html
    lower = html.lower()
    start, end = lower.find("<tbody"), lower.rfind("</tbody>")
    rows = list(_ROW.finditer(html, start, end)) if 0 <= start < end else []
    if rows:
        head, tail = html[:rows[0].start()], html[rows[-1].end():]
        room = max_bytes - _tables.utf8_size(head) - _tables.utf8_size(tail) - 200
        kept = 0
        for row in rows:
            room -= _tables.utf8_size(row.group(0))
            if room < 0 and kept:
                break
            kept += 1
        filename = names.unique("table.html")
        original = _SCRIPT.sub("", str(_joined(output.data.get("text/html")) or html))
        note = (f"Showing the first {kept:,} of {len(rows):,} rows; the full table is attached "
                f"as {filename}.")
        shown = head + "".join(r.group(0) for r in rows[:kept]) + tail
        return Rendered(shown + "\n" + _note(note), part.images,
                        (*part.attachments, Attachment.from_bytes(filename, str(original))))
    text = _terminal_text(str(_joined(output.data.get("text/plain")) or ""))
    filename = names.unique("output.txt")
    shown_text = _head_lines(text, max_bytes) if text.strip() else ""
    note = f"This output is too large for an email; it is attached as {filename}."
    return Rendered((_pre(shown_text) + "\n" if shown_text else "") + _note(note), (),
                    (Attachment.from_bytes(filename, text or html),))


def _head_lines(text: str, max_bytes: int) -> str:
    """The longest run of whole first lines whose escaped HTML fits (a part of one, if need be)."""
    size, end = 0, 0
    for line in text.split("\n"):
        size += _tables.utf8_size(_html.escape(line, quote=False)) + 1
        if size > max_bytes:
            break
        end += len(line) + 1
    if end == 0:
        return text[: max_bytes // 2]  # one huge line (e.g. printed JSON)
    return text[: end - 1]


def _render_error(output: Output) -> Rendered:
    lines = _terminal_text(output.text).rstrip("\n").split("\n")
    if len(lines) > _ERROR_LINES:  # the end of a traceback is the part that explains it
        lines = ["…"] + lines[-_ERROR_LINES:]
    return Rendered(_pre("\n".join(lines), _ERROR_STYLE))


def _concat(parts: Iterable[Rendered]) -> Rendered:
    kept = [p for p in parts if p.html or p.images or p.attachments]
    return Rendered(
        html="\n".join(p.html for p in kept if p.html),
        images=tuple(i for p in kept for i in p.images),
        attachments=tuple(a for p in kept for a in p.attachments),
    )


# -- Markdown --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    if importlib.util.find_spec("markdown_it") is None:
        raise missing("markdown-it-py", "A text/markdown body")
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


# -- templates -------------------------------------------------------------------------

_TemplateKind = Literal["html", "plain", "markdown"]
_KINDS: dict[str, _TemplateKind] = {
    "text/html": "html",
    "multipart/alternative": "html",
    "text/plain": "plain",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
}
_RICH_METHODS = (
    "_repr_html_",
    "_repr_png_",
    "_repr_jpeg_",
    "_repr_svg_",
    "_repr_markdown_",
    "_repr_latex_",
    "_repr_mimebundle_",
)
_PLAIN_TYPES = (str, bytes, int, float, complex, bool, type(None))
_ACTIVE: contextvars.ContextVar[_Inserter | None] = contextvars.ContextVar(
    "smtp_magic_template", default=None
)


def render_template(
    source: str,
    namespace: Mapping[str, Any],
    content_type: str = "text/html",
    *,
    max_bytes: int | None = None,
    max_rows: int | None = None,
    template: str | os.PathLike[str] | None = None,
) -> Rendered:
    """Render a Jinja template with ``namespace`` as its variables.

    text/html: values are HTML-escaped, rich objects (DataFrames, figures, objects with rich
    reprs) go in rendered by :func:`render_object`. text/markdown: the same, then Markdown to
    HTML. text/plain: no escaping, objects as ``str()``; the result is in ``Rendered.text``.
    ``max_bytes`` is the size budget of the whole body, shared by its rich objects.

    ``template``: a template file that ``source`` extends (``{% extends %}`` is implied), so
    ``source`` fills the file's ``{% block %}``s and sets variables. ``{% include %}`` and
    ``{% extends %}`` find files in the template's folder (without ``template``: the current
    folder, i.e. the notebook's).
    """
    kind = _KINDS.get(content_type.lower().strip())
    if kind is None:
        raise InvalidRequest(
            f"Unsupported content type {content_type!r}: "
            "use text/html, text/plain or text/markdown."
        )
    inserter = _Inserter(namespace, max_rows)
    token = _ACTIVE.set(inserter if kind != "plain" else None)
    try:
        text = _run_template(source, kind, namespace, template)
    finally:
        _ACTIVE.reset(token)
    if kind == "plain":
        return Rendered("", text=text)
    if kind == "markdown":
        text = markdown_to_html(text)
    return inserter.finish(text, max_bytes or DEFAULT_MAX_BYTES)


def _run_template(source: str, kind: _TemplateKind, namespace: Mapping[str, Any],
                  template: str | os.PathLike[str] | None = None) -> str:
    jinja2 = _jinja()
    folder = os.getcwd()
    if template is not None:
        path = os.path.abspath(os.path.expanduser(os.fspath(template)))
        if not os.path.isfile(path):
            raise InvalidRequest(f"The template file {os.fspath(template)!r} does not exist.")
        folder = os.path.dirname(path)
        # The cell extends the file, on its own first line so line numbers stay the cell's.
        if not re.match(r"\s*\{%-?\s*extends\b", source):
            source = "{% extends " + json.dumps(os.path.basename(path)) + " %}" + source
    try:
        compiled = _compile(source, kind, folder)
        if template is not None:
            _check_child(source, kind, folder, os.fspath(template))
        return str(compiled.render(dict(namespace)))
    except jinja2.UndefinedError as exc:
        raise InvalidRequest(_undefined_message(str(exc), *_where(exc, folder))) from None
    except jinja2.TemplateSyntaxError as exc:
        who = _file_name(exc.filename, folder) if exc.filename else "The template"
        raise InvalidRequest(f"{who} has a syntax error on line {exc.lineno}: {exc.message}.") from None
    except jinja2.TemplateNotFound as exc:
        who, line = _where(exc, folder)
        raise InvalidRequest(f"{who} includes {exc.name!r}{_on(line)}, which is not a file in "
                             f"{folder}.") from None
    except jinja2.TemplateError as exc:
        who, line = _where(exc, folder)
        raise InvalidRequest(f"{who} cannot be rendered{_on(line)}: {exc}.") from None


def _check_child(source: str, kind: _TemplateKind, folder: str, name: str) -> None:
    """A cell that extends a template file shows only its blocks: text outside them would be
    lost without a word, so it is an error that names the blocks the file defines."""
    line = _loose_line(source, kind, folder)
    if line is not None:
        template = _environment(kind, folder).get_template(os.path.basename(name))
        blocks = ", ".join(template.blocks) or "none"
        raise InvalidRequest(
            f"With --template {name}, the cell's text must be inside a block of the template "
            f"({{% block NAME %}}...{{% endblock %}}; line {line} is outside one); "
            f"its blocks: {blocks}."
        )


@functools.lru_cache(maxsize=64)
def _loose_line(source: str, kind: _TemplateKind, folder: str) -> int | None:
    """The first line of ``source`` with output outside any block, or None."""
    from jinja2 import nodes

    tree = _environment(kind, folder).parse(source)
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            continue
        for child in node.nodes:
            if not isinstance(child, nodes.TemplateData):
                return int(child.lineno)
            if child.data.strip():  # the line of its first visible character
                blank = child.data[:len(child.data) - len(child.data.lstrip())]
                return int(child.lineno) + blank.count("\n")
    return None


def _file_name(filename: str, folder: str) -> str:
    shown = os.path.relpath(filename, folder) if filename.startswith(folder + os.sep) else filename
    return f"The template file {shown!r}"


def _on(line: int | None) -> str:
    return f" on line {line}" if line else ""


def _where(exc: BaseException, folder: str) -> tuple[str, int | None]:
    """Who ("The template file 'base.html'", or "The template" for the cell) and which line,
    from the innermost template line of ``exc``'s traceback (Jinja puts them there)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == "<template>" or (filename.startswith(folder + os.sep)
                                        and not filename.endswith(".py")):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return "The template", None
    filename, line = found
    return ("The template" if filename == "<template>" else _file_name(filename, folder)), line


def _undefined_message(detail: str, who: str = "The template", line: int | None = None) -> str:
    match = re.fullmatch(r"'(.+)' is undefined", detail)
    if match:
        return f"{who} uses {match.group(1)!r}{_on(line)}, which is not defined in the notebook."
    return f"{who} uses an undefined value{_on(line)}: {detail}."


def _jinja() -> Any:
    if importlib.util.find_spec("jinja2") is None:
        raise missing("jinja2", "Templating a cell")
    import jinja2

    return jinja2


@functools.lru_cache(maxsize=64)
def _compile(source: str, kind: _TemplateKind, folder: str) -> Any:
    """Compiled once per body: ``--each`` renders the same template for every row."""
    return _environment(kind, folder).from_string(source)


@functools.lru_cache(maxsize=16)
def _environment(kind: _TemplateKind, folder: str) -> Any:
    """The Jinja environment of a body type; ``{% include %}``/``{% extends %}`` find files in
    ``folder`` (re-read when they change)."""
    jinja2 = _jinja()
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=kind != "plain",
        undefined=jinja2.StrictUndefined,
        finalize=_finalize if kind != "plain" else None,
        keep_trailing_newline=True,
    )


def _finalize(value: Any) -> Any:
    """Jinja calls this on every ``{{ value }}``: rich objects go in rendered, the rest as is."""
    inserter = _ACTIVE.get()
    if inserter is None or not _is_rich(value):
        return value
    return inserter.insert(value)


def _is_rich(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return False
    if isinstance(value, Rendered) or _object_handler(value) is not None:
        return True
    return any(_has_method(value, m) for m in _RICH_METHODS)


class _Inserter:
    """The rich objects of one template run: placeholders first, rendered once the text is known.

    Rendering at the end lets the tables share the size budget: each gets an equal share of
    what the text and the other objects leave, smallest first so unused room passes on.
    """

    def __init__(self, namespace: Mapping[str, Any], max_rows: int | None) -> None:
        self._namespace = namespace
        self._max_rows = max_rows
        self._tokens: dict[int, tuple[str, Any]] = {}  # id -> (placeholder, object kept alive)
        self._names = _UniqueNames()
        # Letters and digits only, so Markdown leaves the placeholder alone.
        self._salt = "smtpmagic" + secrets.token_hex(6)

    def insert(self, value: Any) -> Any:
        from markupsafe import Markup

        if id(value) not in self._tokens:  # the same figure twice is one image
            self._tokens[id(value)] = (f"{self._salt}x{len(self._tokens)}x", value)
        return Markup(self._tokens[id(value)][0])

    def finish(self, text: str, max_bytes: int) -> Rendered:
        items = list(self._tokens.values())
        tables = sorted((i for i in items if _tables.pandas_kind(i[1])), key=lambda i: _cells(i[1]))
        others = [i for i in items if not _tables.pandas_kind(i[1])]
        rendered = {token: self._render(value, max_bytes) for token, value in others}
        room = (
            max_bytes
            - _tables.utf8_size(text)
            - sum(_tables.utf8_size(r.html) for r in rendered.values())
        )
        for left, (token, value) in zip(range(len(tables), 0, -1), tables):
            rendered[token] = self._render(value, max(room // left, _MIN_OBJECT_BYTES))
            room -= _tables.utf8_size(rendered[token].html)
        for token, part in rendered.items():  # a block alone in a paragraph replaces it
            text = text.replace(f"<p>{token}</p>", part.html).replace(token, part.html)
        parts = [rendered[token] for token, _ in items]
        return Rendered(
            text,
            tuple(i for p in parts for i in p.images),
            tuple(a for p in parts for a in p.attachments),
        )

    def _render(self, value: Any, max_bytes: int) -> Rendered:
        rendered = render_object(
            value, max_bytes=max_bytes, max_rows=self._max_rows, name=self._name_of(value)
        )
        return Rendered(
            rendered.html, rendered.images, tuple(map(self._unique, rendered.attachments))
        )

    def _name_of(self, value: Any) -> str | None:
        for key, candidate in self._namespace.items():
            if candidate is value and isinstance(key, str) and not key.startswith("_"):
                return key
        return None

    def _unique(self, attachment: Attachment) -> Attachment:
        filename = self._names.unique(attachment.filename)
        if filename == attachment.filename:
            return attachment
        return Attachment(filename, attachment.data, attachment.path, attachment.content_type)


class _UniqueNames:
    """File names for one message: a second ``df.csv`` becomes ``df-2.csv``."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def unique(self, filename: str) -> str:
        stem, ext = os.path.splitext(filename)
        candidate, n = filename, 1
        while candidate in self._used:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        self._used.add(candidate)
        return candidate


def _cells(frame: Any) -> int:
    shape: tuple[int, ...] = getattr(getattr(frame, "data", frame), "shape", (0,))
    return int(shape[0]) * (int(shape[1]) if len(shape) > 1 else 1)
