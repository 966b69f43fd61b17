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
from dataclasses import dataclass, field, replace
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any, Literal

from . import _budget, _charts, _sanitize, _tables
from ._budget import is_plain_text
from ._kinds import CHARTS, FIGURES, PANDAS, kind_of, title_of
from ._layout import email_document, text_to_html
from ._layout import with_notes as _with_notes
from ._names import UniqueNames
from ._names import slug as _slug
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
    "cell_paths",
    "email_body",
    "email_document",
    "is_plain_text",
    "markdown_to_html",
    "outputs_from_captured",
    "render_object",
    "render_outputs",
    "render_template",
    "text_to_html",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = _budget.DEFAULT_MAX_BYTES
# What the page layout and the inlined CSS add around a body: the budget of a template's or a
# captured cell's content is what is left, so that the whole document fits DEFAULT_MAX_BYTES.
_LAYOUT_ROOM = 6_000
DEFAULT_MAX_ROWS = 200
# However crowded a template, each table may show a header and a few rows.
_MIN_OBJECT_BYTES = 2_000
_FIGURE_DPI = 100
_ERROR_LINES = 40


@dataclass(frozen=True)
class Rendered:
    """An HTML fragment (or document) with the inline images it references by ``cid:``
    and the attachments generated while rendering (e.g. the full CSV of a truncated table).

    ``warnings`` are sentences for the sender (an object that fell back to a simpler form),
    ``removed`` what sanitising took out (listed by ``--preview``), ``top_notes`` sentences a
    recipient must read first (what was shortened and where the whole is): :func:`email_body`
    puts them at the top of the message.
    """

    html: str
    images: tuple[InlineImage, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    text: str | None = None
    warnings: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    top_notes: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        from ._views import html_frame  # shown inert, as every view of message HTML

        return html_frame(self.html, {i.cid: (f"image/{i.subtype}", i.data) for i in self.images})


@dataclass(frozen=True)
class Output:
    """One output of a captured cell: a stream chunk, a MIME bundle on display, or an error.

    ``title`` and ``variable`` say what the notebook called a displayed object (a figure's
    title, the name it has in the notebook): they name its image and give its alt text.
    ``cell`` is how the notebook names the cell it came from ("cell [5]"), for messages and
    alt text; empty for the cell being sent.
    """

    kind: Literal["stream", "display", "error"]
    name: str = ""  # "stdout"/"stderr" for streams, the exception class for errors
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""
    variable: str = ""
    source: Any = field(default=None, repr=False, compare=False)  # the displayed object
    cell: str = ""

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
    title: str | None = None  # a figure's or chart's title: alt text and image file name
    label: str | None = None  # how messages name the object, e.g. "output 2 of the cell"
    names: UniqueNames | None = None  # file names already used in this message
    attached_as: str | None = None  # the file the sender attaches this object as themselves
    drawn: bool = False  # a matplotlib figure's image (from a notebook): made opaque

    @property
    def who(self) -> str:
        return self.label or _label(self.name)

    def unique(self, filename: str) -> str:
        return self.names.unique(filename) if self.names is not None else filename


# -- public entry points ---------------------------------------------------------------


def render_object(
    obj: Any, *, max_bytes: int | None = None, max_rows: int | None = None, name: str | None = None
) -> Rendered:
    """Render any object the way the notebook would show it, made email-safe.

    DataFrames, Series and Stylers become inline-styled tables (a table over ``max_bytes`` or
    ``max_rows`` shows its first rows and attaches the whole frame as CSV), matplotlib figures
    and PNG/JPEG reprs inline images, Altair/Plotly/Bokeh charts static images, HTML/Markdown/
    LaTeX/plain reprs sanitised HTML. ``name`` (the variable's name) names generated files.
    Raises InvalidRequest for what email cannot show (a chart without its image exporter).
    """
    opts = _Options(
        max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        max_rows=DEFAULT_MAX_ROWS if max_rows is None else max_rows,
        name=name,
        title=title_of(obj) or None,
        names=UniqueNames(),
    )
    return _render(obj, opts)


def _render(obj: Any, opts: _Options) -> Rendered:
    if isinstance(obj, Rendered):
        return obj
    if isinstance(obj, str):
        return _render_plain(obj, {}, opts)
    handler = _OBJECT_HANDLERS.get(kind_of(obj) or "")
    if handler is not None:
        return handler(obj, opts)
    data, metadata, failures = _format(obj)
    rendered = _render_bundle(data, metadata, opts)
    if not failures:
        return rendered
    shown = _describe_form(data, rendered)
    warnings = tuple(
        f"{opts.who} was sent as {shown}: its {method} raised {type(exc).__name__}"
        + (f" ({_short(str(exc))})" if str(exc).strip() else "")
        for method, exc in failures
    )
    return replace(rendered, warnings=rendered.warnings + warnings)


def render_outputs(outputs: Iterable[Output], *, max_bytes: int | None = None) -> Rendered:
    """The outputs of a captured cell, in order, as one email body fragment.

    A stream too long for the size budget shows its first lines and is attached in full;
    stderr (warnings included) is marked as such.
    """
    room = DEFAULT_MAX_BYTES - _LAYOUT_ROOM if max_bytes is None else max_bytes
    names = UniqueNames()
    parts = []
    numbers: dict[str, int] = {}  # outputs so far, per cell
    for output in _merge_streams(outputs):
        number = numbers[output.cell] = numbers.get(output.cell, 0) + 1
        if output.kind == "stream":
            part = _render_stream(output, max(room // 2, _MIN_OBJECT_BYTES), names)
        elif output.kind == "error":
            part = _render_error(output)
        else:
            label = (f"variable {output.variable!r}" + (f" in {output.cell}" if output.cell else "")
                     if output.variable else f"output {number} of {output.cell or 'the cell'}")
            # A figure's title says more than the loop variable it was drawn with.
            opts = _Options(max_bytes=max(room, _MIN_OBJECT_BYTES),
                            name=None if output.title else output.variable or None,
                            title=output.title or None, label=label, names=names)
            data = {mime: _joined(value) for mime, value in output.data.items()}
            if _from_source(output.source, data):
                part = _render(output.source, opts)  # the object is here: render it ourselves
            else:
                part = _render_bundle(data, output.metadata, opts)
        room -= _tables.utf8_size(part.html)
        parts.append(part)
    return _concat(parts)


def _from_source(source: Any, data: Mapping[str, Any]) -> bool:
    """Whether a captured output is better rendered from its object than from its bundle: a
    chart drawn by JavaScript, or a figure or table the front end got only as text."""
    kind = kind_of(source)
    if kind in CHARTS:
        return _needs_javascript(data)
    if kind in FIGURES:
        return not any(mime in data for mime in _IMAGE_TYPES)
    if kind in PANDAS:
        return "text/html" not in data
    return False


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


def email_body(
    rendered: Rendered, *, title: str | None = None, max_bytes: int | None = None
) -> Rendered:
    """The email's HTML document: ``rendered`` in the email layout, within the size budget.

    The notes of ``rendered.top_notes`` open the message. A document over ``max_bytes``
    (default: what stays under Gmail's clipping once encoded) is cut at a sensible boundary
    (after a paragraph, a table row, a line) with a note at the top saying so, and the whole
    message is attached as an HTML file (images embedded). Inline images the shortened
    message no longer shows are dropped.
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    fragment = rendered.html
    notes = list(rendered.top_notes)
    document, filename = _budget.shorten(
        fragment, notes, functools.partial(email_document, title=title), limit=limit,
        title=title, taken=[att.filename for att in rendered.attachments])
    if filename is None:
        return replace(rendered, html=document, top_notes=())
    full = email_document(_with_notes(fragment, notes), title=title)
    for image in rendered.images:  # the attached page shows its images on its own
        uri = f"data:image/{image.subtype};base64,{base64.b64encode(image.data).decode()}"
        full = full.replace(f"cid:{image.cid}", uri)
    return replace(
        rendered,
        html=document,
        images=tuple(i for i in rendered.images if f"cid:{i.cid}" in document),
        attachments=(*rendered.attachments, Attachment.from_bytes(filename, full, "text/html")),
        top_notes=(),
    )


def attachment_from_object(
    obj: Any, filename: str | None = None, *, name: str | None = None
) -> Attachment:
    """A notebook value as an attachment; the file format follows the extension of ``filename``.

    DataFrames/Series/Stylers: .csv (default), .tsv, .xlsx, .parquet, .json, .html. matplotlib
    figures: .png (default), .pdf, .svg. Altair/Plotly/Bokeh charts: .png. bytes and str need a
    file name. Objects with a ``_repr_png_``/``_repr_jpeg_``/``_repr_svg_`` become that image.
    ``name`` is the variable's name, used for the default file name and in messages.
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
    kind = kind_of(obj)
    if kind in PANDAS:
        filename = filename or f"{name or 'data'}.csv"
        return Attachment.from_bytes(filename, _tables.frame_file(obj, filename))
    if kind in FIGURES:
        filename = filename or f"{name or 'figure'}.png"
        return Attachment.from_bytes(filename, _figure_file(_figure_of(obj), filename))
    if kind in CHARTS:
        filename = filename or f"{name or _slug(title_of(obj)) or 'chart'}.png"
        if not filename.lower().endswith(".png"):
            raise InvalidRequest(f"A chart can be attached as .png, not as {filename!r}.")
        return Attachment.from_bytes(filename, _CHART_EXPORTS[kind](obj, _label(name)))
    return _attachment_from_repr(obj, filename, name)


# -- the registries --------------------------------------------------------------------

_ObjectHandler = Callable[[Any, _Options], Rendered]
_MimeHandler = Callable[[Any, Mapping[str, Any], _Options], Rendered]
_OBJECT_HANDLERS: dict[str, _ObjectHandler] = {}  # by _kinds.kind_of
_MIME_HANDLERS: dict[str, _MimeHandler] = {}
# Richest email-safe form first.
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
_PLOTLY = "application/vnd.plotly.v1+json"
# MIME types whose presence means the notebook draws the output with JavaScript.
_SCRIPTED = re.compile(
    r"application/(?:vnd\.(?:plotly|vegalite|vega|bokehjs_exec|bokehjs_load)\b.*|javascript)"
)
_VEGA = re.compile(r"application/vnd\.(vegalite|vega)\.v\d+\+json")


def _for_kind(*kinds: str) -> Callable[[_ObjectHandler], _ObjectHandler]:
    """Register a handler for objects of a kind (see _kinds: matched by class names)."""

    def register(func: _ObjectHandler) -> _ObjectHandler:
        for kind in kinds:
            _OBJECT_HANDLERS[kind] = func
        return func

    return register


def _for_mime(*mime_types: str) -> Callable[[_MimeHandler], _MimeHandler]:
    def register(func: _MimeHandler) -> _MimeHandler:
        for mime in mime_types:
            _MIME_HANDLERS[mime] = func
        return func

    return register


def _render_bundle(
    data: Mapping[str, Any], metadata: Mapping[str, Any], opts: _Options
) -> Rendered:
    data = {mime: _joined(value) for mime, value in data.items()}
    if _needs_javascript(data):
        return _render_scripted(data, metadata, opts)
    mime = _choose(data)
    if mime is None or (mime == "text/plain" and _WIDGET in data):
        return Rendered("")  # a widget's text is its repr, e.g. "IntSlider(value=3)": noise
    if str(data.get("text/plain", "")).startswith("<Figure size"):  # matplotlib's, as shown
        opts = replace(opts, drawn=True)
    return _MIME_HANDLERS[mime](data[mime], _meta(metadata, mime), opts)


def _meta(metadata: Mapping[str, Any], mime: str) -> Mapping[str, Any]:
    meta = metadata.get(mime)
    return meta if isinstance(meta, Mapping) else {}


def _choose(data: Mapping[str, Any]) -> str | None:
    return next((mime for mime in _PREFERENCE if mime in data), None)


def _needs_javascript(data: Mapping[str, Any]) -> bool:
    """Whether the notebook draws this output with a script: a JavaScript-only MIME type, or
    HTML whose only content is a script (Plotly, Altair, Bokeh and the like)."""
    html = data.get("text/html")
    if isinstance(html, str) and not _SCRIPT.search(html):
        return False  # HTML that stands on its own
    scripted = any(_SCRIPTED.match(mime) for mime in data)
    if isinstance(html, str):
        return scripted or not _visible(html)
    return scripted and not any(mime in data for mime in _PREFERENCE if mime != "text/plain")


def _visible(html: str) -> bool:
    """Whether HTML shows anything without running its scripts: text, an image, a table."""
    body = _HIDDEN_BLOCKS.sub("", html)
    if re.search(r"<(?:img|svg|table|video|picture|object)\b", body, re.IGNORECASE):
        return True
    return bool(_html.unescape(re.sub(r"<[^>]*>", "", body)).strip())


def _render_scripted(
    data: Mapping[str, Any], metadata: Mapping[str, Any], opts: _Options
) -> Rendered:
    """An output drawn by JavaScript: its own image, or a static export, or a clear error."""
    for mime in _IMAGE_TYPES:
        if mime in data:
            return _render_bitmap(data[mime], _meta(metadata, mime), opts)
    for mime, value in data.items():
        match = _VEGA.fullmatch(mime)
        if match:
            opts = replace(opts, title=opts.title or _vega_title(value) or None)
            png = _charts.vega_png(value, opts.who, vega_lite=match.group(1) == "vegalite")
            return _image(png, "png", {"scale": _charts.SCALE}, opts,
                          alt=opts.title or opts.name or "Chart", drawn=True)
    if _PLOTLY in data:
        opts = replace(opts, title=opts.title or _plotly_title(data[_PLOTLY]) or None)
        png = _charts.plotly_png(data[_PLOTLY], opts.who)
        return _image(png, "png", {"scale": _charts.SCALE}, opts,
                      alt=opts.title or opts.name or "Chart", drawn=True)
    if "image/svg+xml" in data:
        return _render_svg(data["image/svg+xml"], _meta(metadata, "image/svg+xml"), opts)
    embedded = _embedded_vega(data.get("text/html"))
    if embedded is not None:  # Altair's HTML output, e.g. from a notebook run headless
        spec, lite = embedded
        opts = replace(opts, title=opts.title or _vega_title(spec) or None)
        png = _charts.vega_png(spec, opts.who, vega_lite=lite)
        return _image(png, "png", {"scale": _charts.SCALE}, opts,
                      alt=opts.title or opts.name or "Chart", drawn=True)
    if any(mime.startswith("application/vnd.bokehjs") for mime in data):
        raise _charts.missing_bokeh(opts.who)
    raise InvalidRequest(
        f"Cannot email {opts.who}: it is drawn by JavaScript, which email cannot run, and has "
        "no image form; display it as an image (IPython.display.Image) or attach it as a file."
    )


# Where Altair's HTML renderer puts the chart's specification: the argument of the function that
# embeds it, `})({...spec...}, {"mode": "vega-lite"})`, or `var spec = {...};` in older versions.
_EMBED_SPEC = re.compile(r"\}\)\(\s*(?=\{)|\bvar\s+spec\s*=\s*(?=\{)")
_EMBED_MODE = re.compile(r'"mode"\s*:\s*"(vega-lite|vega)"')


def _embedded_vega(html: Any) -> tuple[dict[str, Any], bool] | None:
    """(the Vega-Lite or Vega spec, whether it is Vega-Lite) inside vegaEmbed HTML, or None."""
    if not isinstance(html, str) or "vegaEmbed" not in html:
        return None
    decoder = json.JSONDecoder()
    for match in _EMBED_SPEC.finditer(html):
        try:
            spec, end = decoder.raw_decode(html, match.end())
        except ValueError:
            continue
        if not isinstance(spec, dict):
            continue
        schema = str(spec.get("$schema", ""))
        mode = _EMBED_MODE.search(html, end)
        if "vega-lite" in schema or (mode is not None and mode.group(1) == "vega-lite"):
            return spec, True
        if "/vega/" in schema or mode is not None:
            return spec, False
    return None


def _vega_title(spec: Any) -> str:
    title = spec.get("title") if isinstance(spec, Mapping) else None
    if isinstance(title, Mapping):
        title = title.get("text")
    return title if isinstance(title, str) else ""


def _plotly_title(spec: Any) -> str:
    layout = spec.get("layout") if isinstance(spec, Mapping) else None
    title = layout.get("title") if isinstance(layout, Mapping) else None
    if isinstance(title, Mapping):
        title = title.get("text")
    return title if isinstance(title, str) else ""


def _joined(value: Any) -> Any:
    """nbformat stores text as a list of lines."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value


def _describe_form(data: Mapping[str, Any], rendered: Rendered) -> str:
    if rendered.images:
        return "an image"
    mime = _choose(data)
    return {"text/html": "HTML", "text/markdown": "Markdown"}.get(mime or "", "text")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- IPython's display formatter ---------------------------------------------------------


def _format(obj: Any) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, BaseException]]]:
    """The MIME bundle the notebook would show for ``obj``, and the repr methods that raised.

    IPython's own ``format()`` prints the traceback of a raising ``_repr_html_`` into the cell
    (an error output beside a sent message): the formatters are asked one by one here, through
    their public lookup, and a failure only leaves its type out.
    """
    from IPython.utils.dir2 import get_real_method

    display = _shell_formatter() or _standalone_formatter()
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    failures: list[tuple[str, BaseException]] = []

    def ask(formatter: Any, **kwargs: Any) -> Any:
        if not getattr(formatter, "enabled", True):
            return None
        try:
            try:
                printer = formatter.lookup(obj)
            except KeyError:
                method = get_real_method(obj, formatter.print_method)
                return None if method is None else method(**kwargs)
            return printer(obj)
        except NotImplementedError:
            return None
        except Exception as exc:  # noqa: BLE001 - a broken repr falls back to the next form
            failures.append((str(formatter.print_method), exc))
            return None

    bundle = ask(display.mimebundle_formatter, include=None, exclude=None)
    if isinstance(bundle, tuple) and len(bundle) == 2:
        bundle, bundle_meta = bundle
        if isinstance(bundle_meta, Mapping):
            metadata.update(bundle_meta)
    if isinstance(bundle, Mapping):
        data.update(bundle)
    for mime, formatter in display.formatters.items():
        if mime in data:
            continue
        value = _plain_text(obj, failures) if mime == "text/plain" else ask(formatter)
        if isinstance(value, tuple) and len(value) == 2:
            value, meta = value
            if isinstance(meta, Mapping):
                metadata[mime] = meta
        if value is not None:
            data[mime] = value
    return data, metadata, failures


def _plain_text(obj: Any, failures: list[tuple[str, BaseException]]) -> str:
    from IPython.lib.pretty import pretty

    try:
        return str(pretty(obj))
    except Exception as exc:  # noqa: BLE001
        failures.append(("__repr__", exc))
        return object.__repr__(obj)


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

    return DisplayFormatter()


def _has_method(obj: Any, name: str) -> bool:
    return callable(getattr(type(obj), name, None))


# -- pandas, matplotlib and the JavaScript charts ------------------------------------------


@_for_kind(*PANDAS)
def _render_frame(obj: Any, opts: _Options) -> Rendered:
    table = _tables.frame_table(obj, max_bytes=opts.max_bytes, max_rows=opts.max_rows)
    if not table.truncated:
        return Rendered(table.html)
    if opts.attached_as:  # the sender attaches the whole frame: name that file, add no copy
        return Rendered(_note(table.note(opts.attached_as)) + "\n" + table.html)
    filename = opts.unique(f"{opts.name or 'table'}.csv")
    attachment = attachment_from_object(obj, filename)
    return Rendered(_note(table.note(attachment.filename)) + "\n" + table.html,
                    attachments=(attachment,))


def _note(sentence: str) -> str:
    """The small grey line above a shortened table or output."""
    return f'<p style="margin:0 0 4px;font-size:13px;color:#57606a">{_html.escape(sentence)}</p>'


@_for_kind(*FIGURES)
def _render_figure(obj: Any, opts: _Options) -> Rendered:
    figure = _figure_of(obj)
    png = _figure_file(figure, "figure.png", dpi=_FIGURE_DPI)
    title = _figure_title(figure)
    return _image(png, "png", {}, opts, drawn=True,
                  alt=title or _axes_description(figure) or opts.name or _unnamed(opts))


def _axes_description(figure: Any) -> str:
    """"orders by day" from the first axes' labels, for a figure without a title."""
    try:
        for axes in figure.get_axes():
            x, y = axes.get_xlabel().strip(), axes.get_ylabel().strip()
            if x and y:
                return f"{y} by {x}"
            if x or y:
                return x or y
    except Exception:  # noqa: BLE001 - alt text is a nicety; a broken figure has none
        return ""
    return ""


@_for_kind(*CHARTS)
def _render_chart(obj: Any, opts: _Options) -> Rendered:
    png = _CHART_EXPORTS[kind_of(obj) or ""](obj, opts.who)
    return _image(png, "png", {"scale": _charts.SCALE}, opts, drawn=True,
                  alt=opts.title or title_of(obj) or opts.name or "Chart")


_CHART_EXPORTS: dict[str, Callable[[Any, str], bytes]] = {
    "Altair chart": _charts.altair_png,
    "Plotly figure": _charts.plotly_png,
    "Bokeh plot": _charts.bokeh_png,
}


def _figure_of(obj: Any) -> Any:
    """The top-level matplotlib Figure of a Figure, SubFigure or Axes; None for anything else."""
    if kind_of(obj) not in FIGURES:
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
    return title_of(figure)


# -- MIME handlers -----------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b.*?(?:</script\s*>|$)", re.IGNORECASE | re.DOTALL)
_HIDDEN_BLOCKS = re.compile(r"<(script|style|template)\b.*?(?:</\1\s*>|$)",
                            re.IGNORECASE | re.DOTALL)
_DATA_URI = re.compile(
    r"""(\bsrc\s*=\s*)(["'])data:image/(png|jpe?g|gif);base64,([A-Za-z0-9+/=\s]+)\2""",
    re.IGNORECASE,
)
_PANDAS_STYLE = re.compile(r"<style\s+scoped\s*>.*?</style\s*>", re.IGNORECASE | re.DOTALL)


@_for_mime("text/html")
def _render_html(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    """HTML from an object or a captured output: its styles kept to itself, then sanitised."""
    html = data
    if 'class="dataframe"' in html:  # pandas' own notebook HTML (from a captured output)
        html = _tables.scrollable(_tables.style_tables(_PANDAS_STYLE.sub("", html)))
    html, lost = _sanitize.scope_styles(html)
    rendered = _extract_data_uris(html, opts)
    removed = _sanitize.removals(rendered.html, "object")
    if lost:
        removed.append("its <style> block (css-inline is not installed to apply it)")
    return replace(
        rendered,
        html=_sanitize.clean(rendered.html, "object"),
        removed=tuple(f"{what} from {opts.who}" for what in removed),
    )


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
    return _image(raw, subtype, meta, opts, alt=opts.title or opts.name or _unnamed(opts),
                  drawn=opts.drawn)


@_for_mime("image/svg+xml")
def _render_svg(data: Any, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    svg = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    png = _charts.svg_png(svg)
    if png is not None:
        return _image(png, "png", {**meta, "scale": _charts.SCALE}, opts,
                      alt=opts.title or opts.name or _unnamed(opts))
    # Most clients do not show SVG inline and nothing here can rasterise it: attach it.
    filename = opts.unique(f"{_file_stem(opts, 'image')}.svg")
    note = f"<p><em>The image is attached as {_html.escape(filename)}.</em></p>"
    return Rendered(note, attachments=(Attachment.from_bytes(filename, svg, "image/svg+xml"),))


@_for_mime("text/markdown")
def _render_markdown(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    return _render_html(markdown_to_html(data), meta, opts)


@_for_mime("text/latex", "text/plain")
def _render_plain(data: str, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    return _text_block(str(data), opts)


@_for_mime("application/json")
def _render_json(data: Any, meta: Mapping[str, Any], opts: _Options) -> Rendered:
    text = (
        data
        if isinstance(data, str)
        else json.dumps(data, indent=2, ensure_ascii=False, default=str)
    )
    return _text_block(text, opts)


def _text_block(text: str, opts: _Options, style: str = "") -> Rendered:
    """Text in a ``<pre>``; over the budget, its first lines with a note and the whole attached."""
    html = _pre(text, style)
    if _tables.utf8_size(html) <= max(opts.max_bytes, _MIN_OBJECT_BYTES):
        return Rendered(html)
    shown = _escaped_head(text, max(opts.max_bytes, _MIN_OBJECT_BYTES) - 400)
    filename = opts.unique(f"{_file_stem(opts, 'text')}.txt")
    total, count = text.count("\n") + 1, shown.count("\n") + 1
    what = f"the first {count:,} of {total:,} lines" if total > 1 else (
        f"the first {len(shown):,} of {len(text):,} characters")
    note = f"Showing {what}; the full text is attached as {filename}."
    return Rendered(
        _note(note) + "\n" + _pre(shown, style),
        attachments=(Attachment.from_bytes(filename, text, "text/plain"),),
    )


def _escaped_head(text: str, max_bytes: int) -> str:
    """The head of ``text`` (whole lines, else words) whose HTML-escaped form fits."""
    room = max_bytes
    shown = _budget.head_text(text, room)
    for _ in range(6):
        size = _tables.utf8_size(_html.escape(shown, quote=False))
        if size <= max_bytes or room < 100:
            break
        room = int(room * max_bytes / size * 0.98)
        shown = _budget.head_text(text, room)
    return shown


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


def _file_stem(opts: _Options, default: str) -> str:
    return opts.name or _slug(opts.title or "") or default


def _inline_image(raw: bytes, subtype: str, opts: _Options) -> InlineImage:
    cid = make_msgid(domain="smtp-magic")[1:-1]
    ext = "jpg" if subtype == "jpeg" else subtype
    filename = opts.unique(f"{_file_stem(opts, 'image')}.{ext}")
    return InlineImage(cid=cid, data=raw, subtype=subtype, filename=filename)


def _on_white(png: bytes) -> bytes:
    """A PNG with transparent parts, put on white (needs Pillow, which matplotlib brings): a
    dark-mode mail app shows a transparent image on black, and a chart's black text vanishes."""
    colour_type = png[25] if len(png) > 25 else 0
    if colour_type not in (4, 6) and not (colour_type == 3 and b"tRNS" in png[:4096]):
        return png  # no alpha channel: opaque already
    if importlib.util.find_spec("PIL") is None:
        return png  # the <img>'s white background stands in where the client honours it
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(png)).convert("RGBA")
        if image.getchannel("A").getextrema()[0] == 255:
            return png
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image)
        out = io.BytesIO()
        flat.convert("RGB").save(out, format="PNG", optimize=True)
    except Exception:  # noqa: BLE001 - a PNG Pillow cannot read is sent as it came
        return png
    return out.getvalue()


def _image(
    raw: bytes, subtype: str, meta: Mapping[str, Any], opts: _Options, *, alt: str,
    drawn: bool = False,
) -> Rendered:
    """``drawn``: a picture this package drew (a figure, a chart): made opaque. Images given
    as images are sent as they are, on the <img>'s white background."""
    if drawn and subtype == "png":
        raw = _on_white(raw)
    image = _inline_image(raw, subtype, opts)
    width, height = meta.get("width"), meta.get("height")
    if width is None and subtype == "png" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
        scale = meta.get("scale") or 1
        width, height = width / scale, height / scale
    size = ""
    if width:
        size += f' width="{int(width)}"'
    if height and width:
        size += f' height="{int(height)}"'
    tag = (
        f'<img src="cid:{image.cid}" alt="{_html.escape(alt)}"{size} '
        # An opaque background: a dark-mode app would show a transparent image on black.
        'style="display:block;max-width:100%;height:auto;border:0;margin:0 0 12px;'
        'background:#ffffff">'
    )
    return Rendered(tag, images=(image,))


def _unnamed(opts: _Options) -> str:
    """The alt text of an image with neither title nor name: where it comes from."""
    return f"{opts.label[:1].upper()}{opts.label[1:]}" if opts.label else "Image"


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
_STDERR_STYLE = "background:#fff5f5;color:#6e2b20;border-left:4px solid #d1242f"
_STDERR_LABEL = "margin:0;font-size:12px;font-weight:600;color:#82071e"
_ERROR_STYLE = "background:#ffebe9;color:#82071e;border-left:4px solid #cf222e"
_WARNING = re.compile(r"^(?:\S.*?:\d+|.*?, line \d+): \w*Warning: ", re.MULTILINE)


# A file name of a notebook cell as the kernel compiled it: ipykernel's temporary file
# (/tmp/ipykernel_<pid>/<hash>.py), or IPython's <ipython-input-<n>-<hash>>; then its line.
_CELL_FILE = re.compile(
    r"""(?P<q>["']?)(?P<path>(?:[A-Za-z]:)?[^\s"'<>]*?ipykernel_\d+[\\/](?P<hash>\d+)\.py"""
    r"""|<ipython-input-(?P<count>\d+)-[0-9a-f]+>)(?P=q)(?::(?P<line>\d+)|,\s+line\s+(?P<line2>\d+))""")


def cell_paths(text: str, where: Callable[[str, str], tuple[str, int] | None]) -> str:
    """``text`` (a warning, a traceback) with the kernel's file names of cells replaced by the
    cells' names: ``/tmp/ipykernel_7/123.py:4`` becomes ``cell [5], line 4``.

    ``where(path, hash)`` gives (the cell's name, lines to add), or None for a cell it does
    not know ("a notebook cell")."""
    if "ipykernel_" not in text and "<ipython-input-" not in text:
        return text

    def name(match: re.Match[str]) -> str:
        line = int(match.group("line") or match.group("line2"))
        if match.group("count"):
            found: tuple[str, int] | None = (f"cell [{match.group('count')}]", 0)
        else:
            found = where(match.group("path"), match.group("hash"))
        cell, offset = found or ("a notebook cell", 0)
        return f"{cell}, line {line + offset}"

    return _CELL_FILE.sub(name, text)


def _merge_streams(outputs: Iterable[Output]) -> Iterable[Output]:
    """Consecutive chunks of one stream of one cell are one block, as the notebook shows them."""
    pending: Output | None = None
    for output in outputs:
        if (pending is not None and output.kind == "stream" and output.name == pending.name
                and output.cell == pending.cell):
            pending = replace(pending, text=pending.text + output.text)
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


def _render_stream(output: Output, max_bytes: int, names: UniqueNames) -> Rendered:
    text = _terminal_text(output.text).rstrip("\n")
    if not text.strip():
        return Rendered("")
    stderr = output.name == "stderr"
    opts = _Options(max_bytes=max_bytes, name=output.name or "output", names=names)
    block = _text_block(text, opts, _STDERR_STYLE if stderr else "")
    if not stderr:
        return block
    label = "\u26a0 stderr" + (" (with warnings)" if _WARNING.search(text) else "")
    return replace(block, html=f'<p style="{_STDERR_LABEL}">{label}</p>\n{block.html}')


def _render_error(output: Output) -> Rendered:
    lines = _terminal_text(output.text).rstrip("\n").split("\n")
    if len(lines) > _ERROR_LINES:  # the end of a traceback is the part that explains it
        lines = ["…"] + lines[-_ERROR_LINES:]
    return Rendered(_pre("\n".join(lines), _ERROR_STYLE))


def _concat(parts: Iterable[Rendered]) -> Rendered:
    kept = [p for p in parts if p.html or p.images or p.attachments or p.warnings]
    return Rendered(
        html="\n".join(p.html for p in kept if p.html),
        images=tuple(i for p in kept for i in p.images),
        attachments=tuple(a for p in kept for a in p.attachments),
        warnings=tuple(w for p in kept for w in p.warnings),
        removed=tuple(r for p in kept for r in p.removed),
        top_notes=tuple(n for p in kept for n in p.top_notes),
    )


# -- Markdown --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    if importlib.util.find_spec("markdown_it") is None:
        raise missing("markdown-it-py", "A text/markdown body")
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


# -- templates -------------------------------------------------------------------------

_TemplateKind = Literal["html", "text", "plain", "markdown"]
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
# A string this long is placed by the budget like a table (shortened and attached if need be).
_BIG_TEXT = 20_000
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
    jinja: bool = True,
    attached: Iterable[tuple[Any, str]] = (),
) -> Rendered:
    """Render a Jinja template with ``namespace`` as its variables.

    text/html: values are HTML-escaped, rich objects (DataFrames, figures, objects with rich
    reprs) go in rendered by :func:`render_object`; a body without any markup is text: its
    paragraphs and line breaks are kept and ``<``/``&`` shown as typed. text/markdown: the
    same, then Markdown to HTML. text/plain: no escaping, objects as ``str()``; the result is
    in ``Rendered.text``. ``max_bytes`` is the size budget of the whole body, shared by its
    rich objects. The template's own markup keeps everything but scripts, event handlers and
    script URLs; HTML from objects is sanitised more strictly (see ``Rendered.removed``).

    ``template``: a template file that ``source`` extends (``{% extends %}`` is implied), so
    ``source`` fills the file's ``{% block %}``s and sets variables. ``{% include %}`` and
    ``{% extends %}`` find files in the template's folder (without ``template``: the current
    folder, i.e. the notebook's).

    ``attached``: (object, file name) pairs the sender attaches themselves: a table of one
    of these objects that is too big to show whole names that file instead of attaching its
    own copy.

    ``jinja=False``: ``source`` is not a template; it is used as written (``{{``/``{%`` arrive
    literally, e.g. a Vue or Handlebars snippet), and laid out and sanitised as above.
    """
    if not jinja and template is not None:
        raise InvalidRequest("A template file needs templating: leave out --no-template "
                             "(template=False) or the template file.")
    kind = _KINDS.get(content_type.lower().strip())
    if kind is None:
        raise InvalidRequest(
            f"Unsupported content type {content_type!r}: "
            "use text/html, text/plain or text/markdown."
        )
    # A body typed as text is shown as typed; one that pulls in template files is markup.
    if kind == "html" and template is None and not (jinja and _USES_FILES.search(source)) \
            and is_plain_text(source, jinja=jinja):
        kind = "text"
    inserter = _Inserter(namespace, max_rows, text=kind == "text", markdown=kind == "markdown",
                         attached=attached)
    token = _ACTIVE.set(inserter if kind != "plain" else None)
    try:
        if not jinja:  # as written
            text = _html.escape(source, quote=False) if kind == "text" else source
        else:
            text = _run_template(source, kind, namespace, template)
    finally:
        _ACTIVE.reset(token)
    if kind == "plain":
        return Rendered("", text=text)
    if kind == "markdown":
        text = markdown_to_html(text)
    elif kind == "text":
        text = text_to_html(text)
    return inserter.finish(text, max_bytes or DEFAULT_MAX_BYTES - _LAYOUT_ROOM)


def _run_template(source: str, kind: _TemplateKind, namespace: Mapping[str, Any],
                  template: str | os.PathLike[str] | None = None) -> str:
    if template is None and not any(mark in source for mark in ("{{", "{%", "{#")):
        # Nothing to fill in (what Jinja would give back, without needing it installed).
        return _html.escape(source, quote=False) if kind == "text" else source
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
        raise InvalidRequest(f"{who} has a syntax error on line {exc.lineno}: "
                             f"{_syntax_reason(exc.message or '')}.") from None
    except jinja2.TemplateNotFound as exc:
        who, line = _where(exc, folder)
        raise InvalidRequest(f"{who} includes {exc.name!r}{_on(line)}, which is not a file in "
                             f"{folder}.") from None
    except jinja2.TemplateError as exc:
        who, line = _where(exc, folder)
        raise InvalidRequest(f"{who} cannot be rendered{_on(line)}: {exc}.") from None


_UNCLOSED = re.compile(r"Unexpected end of template\..*The innermost block that needs to be "
                       r"closed is '(\w+)'", re.DOTALL)


def _syntax_reason(message: str) -> str:
    """Jinja's description of a syntax error as one clause: no sentences strung together, no
    full stop of its own (``'if'..``)."""
    unclosed = _UNCLOSED.search(message)
    if unclosed:
        tag = unclosed.group(1)
        return f"the template ends before its {{% {tag} %}} is closed with {{% end{tag} %}}"
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+", message.strip()) if p.strip()]
    return "; ".join(p.rstrip(".") for p in parts) or "Jinja could not read it"


_USES_FILES = re.compile(r"\{%-?\s*(?:include|extends|import|from)\b")


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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=kind != "plain",
        undefined=jinja2.StrictUndefined,
        finalize=_finalize if kind != "plain" else None,
        keep_trailing_newline=True,
        extensions=[_escape_text_extension()] if kind == "text" else [],
    )
    if kind == "markdown":  # |safe is the one way to put Markdown in from a value
        env.filters["safe"] = _markdown_safe()
    return env


@functools.lru_cache(maxsize=1)
def _markdown_safe() -> Any:
    """The ``|safe`` filter of a Markdown body: its result is Markup of a class of its own, so
    the Markup that other filters make (``|e``, ``|join``, ``|replace`` escape HTML only) can
    still be told apart and have their Markdown escaped."""
    from markupsafe import Markup

    class Safe(Markup):
        __slots__ = ()

    def safe(value: Any) -> Any:
        return Safe(value)

    return safe


@functools.lru_cache(maxsize=1)
def _escape_text_extension() -> type:
    """A Jinja extension that escapes the template's own text: a body typed as text shows
    ``<`` and ``&`` as typed (values are escaped by autoescape already)."""
    from jinja2.ext import Extension
    from jinja2.lexer import Token
    from markupsafe import escape

    class EscapeText(Extension):
        def filter_stream(self, stream: Any) -> Iterable[Any]:
            for token in stream:
                if token.type == "data":
                    yield Token(token.lineno, "data", str(escape(token.value)))
                else:
                    yield token

    return EscapeText


def _finalize(value: Any) -> Any:
    """Jinja calls this on every ``{{ value }}``: rich objects go in rendered, the rest as is
    (HTML-escaped by autoescape; in a Markdown body, Markdown-escaped too)."""
    inserter = _ACTIVE.get()
    if inserter is None:
        return value
    if isinstance(value, str):
        if len(value) > _BIG_TEXT and not hasattr(value, "__html__"):
            return inserter.insert(value)
        return inserter.text_value(value)
    if not _is_rich(value):
        return inserter.text_value(value)
    return inserter.insert(value)


# In a Markdown body a value is text: what makes Markdown inline (emphasis, code, links, images,
# tables, strikethrough) is backslash-escaped everywhere, what makes a block (heading, list,
# rule) at the start of a line, and &, <, > become entities. So a row's ``![x](http://...)``,
# ``[click](...)``, ``<http://...>`` or ``<img>`` arrives as those characters, not as an image,
# a link or markup; ``:``, ``/``, ``.`` and ``-`` stay as they are, so a value that is a URL in
# the template's own link (``[report]({{ url }})``) or HTML attribute keeps working.
_MARKDOWN_SYNTAX = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})
_MARKDOWN_INLINE = str.maketrans({
    **{c: "\\" + c for c in "\\`*_[]|~"}, "&": "&amp;", "<": "&lt;", ">": "&gt;",
})
_MARKDOWN_BLOCK = re.compile(r"^([ \t]*)(\d*)([#+=\-]|(?<=\d)[.)])", re.MULTILINE)


def _markdown_text(value: str) -> str:
    return _MARKDOWN_BLOCK.sub(r"\1\2\\\3", value.translate(_MARKDOWN_INLINE))


def _is_rich(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return False
    if isinstance(value, Rendered) or kind_of(value) is not None:
        return True
    return any(_has_method(value, m) for m in _RICH_METHODS)


class _Inserter:
    """The rich objects of one template run: placeholders first, rendered once the text is known.

    Rendering at the end lets the tables share the size budget: each gets an equal share of
    what the text and the other objects leave, smallest first so unused room passes on.
    """

    def __init__(self, namespace: Mapping[str, Any], max_rows: int | None, *, text: bool = False,
                 markdown: bool = False, attached: Iterable[tuple[Any, str]] = ()) -> None:
        self._namespace = namespace
        self._markdown = markdown
        # id -> (the file the sender attaches it as, the object kept alive)
        self._attached = {id(obj): (filename, obj) for obj, filename in attached}
        self._max_rows = max_rows
        self._text = text  # the body was typed as text: a long string keeps its line breaks
        self._tokens: dict[int, tuple[str, Any]] = {}  # id -> (placeholder, object kept alive)
        self._names = UniqueNames()
        # Letters and digits only, so Markdown and the sanitiser leave the placeholder alone.
        self._salt = "smtpmagic" + secrets.token_hex(6)

    def text_value(self, value: Any) -> Any:
        """A plain value as the body shows text (Markup, the template's ``|safe``, as is)."""
        if not self._markdown or value is None:
            return value
        from markupsafe import Markup

        if type(value) is Markup:  # HTML-escaped by a filter (|e, |join...), Markdown still live
            return Markup(_MARKDOWN_BLOCK.sub(r"\1\2\\\3", str(value).translate(_MARKDOWN_SYNTAX)))
        if hasattr(value, "__html__"):  # |safe, or an object that gives its own HTML
            return value
        return Markup(_markdown_text(str(value)))

    def insert(self, value: Any) -> Any:
        from markupsafe import Markup

        if id(value) not in self._tokens:  # the same figure twice is one image
            self._tokens[id(value)] = (f"{self._salt}x{len(self._tokens)}x", value)
        return Markup(self._tokens[id(value)][0])

    def finish(self, text: str, max_bytes: int) -> Rendered:
        removed = tuple(f"{what} from the template" for what in
                        _sanitize.removals(text, "user"))
        text = _sanitize.clean_document(text)  # the user's markup: theirs, minus scripts
        items = list(self._tokens.values())
        sized = sorted((i for i in items if _budgeted(i[1])), key=lambda i: _cells(i[1]))
        others = [i for i in items if not _budgeted(i[1])]
        rendered = {token: self._render(value, max_bytes) for token, value in others}
        room = (
            max_bytes
            - _tables.utf8_size(text)
            - sum(_tables.utf8_size(r.html) for r in rendered.values())
        )
        for left, (token, value) in zip(range(len(sized), 0, -1), sized):
            rendered[token] = self._render(value, max(room // left, _MIN_OBJECT_BYTES))
            room -= _tables.utf8_size(rendered[token].html)
        for token, part in rendered.items():  # a block alone in a paragraph replaces it
            text = text.replace(f"<p>{token}</p>", part.html).replace(token, part.html)
        parts = [rendered[token] for token, _ in items]
        merged = _concat(parts)
        return replace(merged, html=text, removed=removed + merged.removed)

    def _render(self, value: Any, max_bytes: int) -> Rendered:
        name = self._name_of(value)
        if isinstance(value, str):
            return self._render_string(value, max_bytes, name)
        opts = _Options(max_bytes=max_bytes,
                        max_rows=DEFAULT_MAX_ROWS if self._max_rows is None else self._max_rows,
                        name=name, title=title_of(value) or None, names=self._names,
                        attached_as=self._attached.get(id(value), (None,))[0])
        return _render(value, opts)

    def _render_string(self, value: str, max_bytes: int, name: str | None) -> Rendered:
        """A long string inline, as Jinja would put it; cut short (and attached) if need be."""
        shown = value
        if _tables.utf8_size(_html.escape(value, quote=False)) > max_bytes:
            shown = _escaped_head(value, max_bytes) + " \u2026"
        html = _html.escape(shown, quote=False)
        if self._text:
            html = html.replace("\n", "<br>\n")
        if shown is value:
            return Rendered(html)
        own = self._attached.get(id(value), (None,))[0]  # the sender attaches it themselves
        filename = own or self._names.unique(f"{name or 'text'}.txt")
        note = (f"{_label(name).capitalize()} is shortened here ({len(shown):,} of "
                f"{len(value):,} characters); the full text is attached as {filename}.")
        files = () if own else (Attachment.from_bytes(filename, value, "text/plain"),)
        return Rendered(html, attachments=files, top_notes=(note,))

    def _name_of(self, value: Any) -> str | None:
        for key, candidate in self._namespace.items():
            if candidate is value and isinstance(key, str) and not key.startswith("_"):
                return key
        return None


def _budgeted(value: Any) -> bool:
    """Objects that take what room is left (tables, long strings), rather than a fixed size."""
    return isinstance(value, str) or kind_of(value) in PANDAS





def _cells(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    shape: tuple[int, ...] = getattr(getattr(value, "data", value), "shape", (0,))
    return int(shape[0]) * (int(shape[1]) if len(shape) > 1 else 1)


def render_option(option: str, source: str, namespace: Mapping[str, Any]) -> str:
    """An option's value as a Jinja template (``--unsubscribe "https://x.test/u?id={{ id }}"``)
    rendered with ``namespace``, as text (no HTML escaping; ``|urlencode`` for URL parts)."""
    jinja2 = _jinja()
    try:
        return str(_option_environment().from_string(source).render(dict(namespace)))
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"{option} {source!r} cannot be rendered: {exc}.") from None


@functools.lru_cache(maxsize=1)
def _option_environment() -> Any:
    jinja2 = _jinja()
    return jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
