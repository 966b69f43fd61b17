"""Tests of render: rich objects, templates and captured outputs as email-safe HTML."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import subprocess
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smtp_magic import _sanitize
from smtp_magic.errors import InvalidRequest, MissingDependency
from smtp_magic.htmltext import html_to_text
from smtp_magic.render import (
    Output,
    Rendered,
    attachment_from_object,
    email_document,
    markdown_to_html,
    outputs_from_captured,
    render_object,
    render_outputs,
    render_template,
)

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt

GMAIL_CLIP = 102_000  # bytes; Gmail clips an HTML part over "102 KB"
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


@pytest.fixture
def fig() -> Any:
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 3, 2])
    ax.set_title("Sales")
    yield figure
    plt.close(figure)


@pytest.fixture
def styled() -> Any:
    df = pd.DataFrame({"city": ["Oslo", "Lima", "Kyoto"], "temp": [3.0, 19.25, 12.5]})
    return df.style.highlight_max(subset=["temp"], color="yellow").format({"temp": "{:.2f}"})


def body_rows(html: str) -> int:
    tbody = html.split("<tbody>", 1)[1]
    return tbody.count("<tr")


def cids(html: str) -> set[str]:
    return set(re.findall(r'src="cid:([^"]+)"', html))


# -- DataFrames and Stylers -------------------------------------------------------------------


def test_dataframe_is_an_inline_styled_table() -> None:
    out = render_object(pd.DataFrame({"a": [1.5, 2.25], "b": ["x", "<y>"]}))
    assert out.html.startswith('<div style="overflow-x:auto') and "<table style=" in out.html
    # numbers right, text left
    assert re.search(r'<td style="[^"]*border:1px solid[^"]*padding[^"]*text-align:right[^"]*">1.50<',
                     out.html)
    assert re.search(r'<td style="[^"]*text-align:left">&lt;y&gt;<', out.html)
    assert "<style" not in out.html and "class=" not in out.html and 'border="' not in out.html
    assert "&lt;y&gt;" in out.html and ">1.50<" in out.html  # escaped, pandas' number format
    assert out.images == () and out.attachments == ()


def test_styler_highlight_survives_as_inline_style(styled: Any) -> None:
    html = email_document(render_object(styled).html)
    assert "<style" not in html.lower()
    cell = re.search(r"<td [^>]*>19\.25</td>", html)
    assert cell and "background-color: yellow" in cell.group(0)
    assert re.search(r"<td [^>]*>3\.00</td>", html)  # number formatting kept
    assert not re.search(r"<td [^>]*yellow[^>]*>(3\.00|12\.50)</td>", html)


def test_two_thousand_rows_fit_the_gmail_budget_and_attach_the_csv() -> None:
    df = pd.DataFrame(np.random.default_rng(1).normal(size=(2000, 6)), columns=list("abcdef"))
    out = render_object(df, name="df")
    html = email_document(out.html)
    assert len(html.encode()) <= GMAIL_CLIP
    shown = body_rows(out.html)
    assert 20 < shown < 2000
    assert (
        f"Showing the first {shown:,} of 2,000 rows; the full table is attached as df.csv."
        in out.html
    )
    (csv,) = out.attachments
    assert csv.filename == "df.csv" and csv.content_type == "text/csv"
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(csv.read())), df)


def test_the_html_part_stays_under_the_clip_once_encoded_for_smtp() -> None:
    """As compose sends it: 7-bit transfer encoding, so quoted-printable for long lines."""
    df = pd.DataFrame({"name": [f"Zoë {i}" for i in range(3000)], "value": np.arange(3000) / 7})
    html = email_document(render_object(df).html)
    msg = EmailMessage(policy=policy.SMTP.clone(cte_type="7bit"))
    msg.set_content(html_to_text(html))
    msg.add_alternative(html, subtype="html")
    part = message_from_bytes(msg.as_bytes(), policy=policy.SMTP).get_body(("html",))
    assert part is not None
    assert len(part.get_payload().encode()) <= GMAIL_CLIP
    assert part.get_content().replace("\r\n", "\n").rstrip("\n") == html.rstrip("\n")


def test_max_rows_and_max_bytes_limit_the_table() -> None:
    df = pd.DataFrame({"n": range(50)})
    assert body_rows(render_object(df, max_rows=10).html) == 10
    small = render_object(df, max_bytes=3000)
    assert len(small.html.encode()) <= 3000 + 200  # the note comes on top of the table
    assert small.attachments[0].filename == "table.csv"


def test_a_small_frame_is_complete_and_attaches_nothing() -> None:
    out = render_object(pd.DataFrame({"n": range(20)}))
    assert body_rows(out.html) == 20 and out.attachments == () and "Showing" not in out.html


def test_wide_frames_show_fifty_columns_and_attach_all() -> None:
    df = pd.DataFrame([list(range(80))], columns=[f"c{i}" for i in range(80)])
    out = render_object(df, name="wide")
    assert "Showing 50 of 80 columns; the full table is attached as wide.csv." in out.html
    assert pd.read_csv(io.BytesIO(out.attachments[0].read())).shape == (1, 80)


def wide_frame() -> Any:
    """Nine columns whose words and numbers cannot all stay whole on a 320 px screen."""
    return pd.DataFrame({"region": ["North-east", "South"], "<b>owner</b>": ["Ann", "Bo"],
                         **{f"revenue week {i}": [1234567.25, 7654321.5] for i in range(7)}})


def test_a_table_too_wide_for_a_phone_carries_its_narrow_screen_stack(styled: Any) -> None:
    html = email_document(render_object(wide_frame()).html)
    from smtp_magic._layout import NARROW_CSS
    from smtp_magic._sanitize import STYLE_BLOCK

    # The one <style>, in the head, adds the stack; everything else stays inline.
    head, body = html.split("</head>", 1)
    assert STYLE_BLOCK.findall(head) == [NARROW_CSS] and "<style" not in body
    assert '<table class="smx-stack" style="' in body
    # Each body cell opens with its column's name, hidden inline (shown by the media query
    # only), escaped as the header is.
    label = '<span class="smx-label" style="display:none;mso-hide:all">{}: </span>'
    assert label.format("region") + "North-east</td>" in body
    assert label.format("&lt;b&gt;owner&lt;/b&gt;") + "Ann</td>" in body
    assert body.count('class="smx-label"') == 2 * 9
    # The text part has no labels: a hidden span is not text.
    text = html_to_text(html)
    assert "region:" not in text and "North-east" in text and "1234567.25" in text
    # A table that fits keeps no class and adds no <style>.
    small = email_document(render_object(pd.DataFrame({"a": [1, 2]})).html)
    assert "<style" not in small and "smx-" not in small


def test_each_value_of_a_stack_is_named_by_its_own_column_past_spanning_index_cells() -> None:
    # An outer index level spans rows: the rows below it start one cell short.
    index = pd.MultiIndex.from_product([["North", "South"], ["Mon", "Tue"]],
                                       names=["region", "day"])
    df = pd.DataFrame({"revenue total": [1234567.5] * 4, "status of plan": ["on track"] * 4,
                       "manager name": ["Ann Lee"] * 4}, index=index)
    rows = re.findall(r"<tr>.*?</tr>", render_object(df).html, re.DOTALL)[-4:]
    named = [re.findall(r'class="smx-label"[^>]*>([^<]*): </span>([^<]*)<', r) for r in rows]
    assert [dict(r).get("day") for r in named] == ["Mon", "Tue", "Mon", "Tue"]
    assert [dict(r).get("region") for r in named] == ["North", None, "South", None]
    assert all(dict(r)["manager name"] == "Ann Lee" for r in named)
    assert all(dict(r)["revenue total"] == "1234567.5" for r in named)


def test_a_wide_styler_is_stacked_too_and_objects_keep_only_the_stack_classes() -> None:
    html = email_document(render_object(wide_frame().style.highlight_max(color="yellow")).html)
    assert "smx-stack" in html and html.count('class="smx-label"') == 2 * 9
    assert re.search(r'background-color: yellow[^"]*"><span class="smx-label"[^>]*>revenue '
                     r"week 0: </span>7654321", html)
    # An object's own classes still go; the two of the stack are all that an object keeps.
    foreign = ('<table class="x smx-stack"><tr><td><span class="smx-label">a</span>'
               '<span class="evil">b</span></td></tr></table>')
    cleaned = _sanitize.clean(foreign, "object")
    assert 'class="x' not in cleaned and 'class="evil"' not in cleaned
    assert '<span class="smx-label">a</span>' in cleaned


def test_series_and_styler_truncation() -> None:
    assert "<table" in render_object(pd.Series([1, 2], name="s")).html
    styler = pd.DataFrame({"x": range(500)}).style.highlight_max(color="red")
    out = render_object(styler, max_rows=30, name="st")
    assert body_rows(out.html) == 30 and "..." not in out.html  # pandas' trim row is dropped
    assert len(pd.read_csv(io.BytesIO(out.attachments[0].read()))) == 500


def test_pandas_notebook_html_from_a_captured_display_is_styled() -> None:
    df = pd.DataFrame({"a": [1, 2]})
    out = render_outputs(
        [Output("display", data={"text/html": df._repr_html_(), "text/plain": "x"})]
    )
    assert re.search(r'<td style="[^"]*border:1px solid', out.html)
    assert "<style" not in email_document(out.html)


# -- figures and images ----------------------------------------------------------------------


def test_figure_becomes_an_inline_png_referenced_by_cid(fig: Any) -> None:
    out = render_object(fig, name="fig")
    (image,) = out.images
    assert (
        image.subtype == "png" and image.data.startswith(b"\x89PNG") and image.filename == "fig.png"
    )
    assert cids(out.html) == {image.cid}
    assert "<" not in image.cid and image.cid.endswith("@smtp-magic")
    assert 'alt="Sales"' in out.html and "data:" not in out.html
    width = int.from_bytes(image.data[16:20], "big")
    assert f'width="{width}"' in out.html and 200 < width < 400  # ~100 dpi, tight bounding box


def test_axes_render_their_figure(fig: Any) -> None:
    out = render_object(fig.axes[0])
    assert len(out.images) == 1 and out.images[0].data.startswith(b"\x89PNG")


def test_ipython_image_and_repr_png_and_jpeg() -> None:
    from IPython.display import Image

    out = render_object(Image(PNG_1PX, width=120))
    assert out.images[0].data == PNG_1PX and 'width="120"' in out.html

    class Png:
        def _repr_png_(self) -> bytes:
            return PNG_1PX

    class Jpeg:
        def _repr_jpeg_(self) -> bytes:
            return b"\xff\xd8\xff\xe0fake-jpeg"

    assert render_object(Png()).images[0].subtype == "png"
    jpeg = render_object(Jpeg(), name="photo")
    assert jpeg.images[0].subtype == "jpeg" and jpeg.images[0].filename == "photo.jpg"
    assert cids(jpeg.html) == {jpeg.images[0].cid}


def test_html_repr_data_uris_become_inline_images_and_scripts_go() -> None:
    class Widgety:
        def _repr_html_(self) -> str:
            data = base64.b64encode(PNG_1PX).decode()
            return f'<div><img src="data:image/png;base64,{data}"><script>alert(1)</script></div>'

    out = render_object(Widgety())
    assert "data:" not in out.html and "<script" not in out.html
    assert cids(out.html) == {out.images[0].cid} and out.images[0].data == PNG_1PX


def test_html_needing_javascript_loses_to_an_image_of_the_same_object() -> None:
    class Plot:
        def _repr_html_(self) -> str:
            return "<div id=p></div><script>draw()</script>"

        def _repr_png_(self) -> bytes:
            return PNG_1PX

    assert render_object(Plot()).images


def test_svg_is_attached_when_it_cannot_be_rasterised() -> None:
    from IPython.display import SVG

    if importlib.util.find_spec("cairosvg") or importlib.util.find_spec("vl_convert"):
        pytest.skip("cairosvg or vl-convert rasterises SVG here")
    svg = SVG(
        '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
        '<rect width="4" height="4"/></svg>'
    )
    out = render_object(svg, name="logo")
    assert (
        out.attachments[0].filename == "logo.svg"
        and out.attachments[0].content_type == "image/svg+xml"
    )
    assert "logo.svg" in out.html and "<svg" not in out.html


# -- text reprs ----------------------------------------------------------------------------


def test_markdown_latex_json_and_plain_reprs() -> None:
    from IPython.display import JSON, Latex, Markdown

    assert "<strong>bold</strong>" in render_object(Markdown("**bold**")).html
    assert render_object(Latex(r"$x < y$")).html == "<pre>$x &lt; y$</pre>"
    assert '"a": 1' in render_object(JSON({"a": 1})).html
    assert render_object([1, "<b>"]).html == "<pre>[1, &#x27;&lt;b&gt;&#x27;]</pre>" or (
        render_object([1, "<b>"]).html == "<pre>[1, '&lt;b&gt;']</pre>"
    )
    assert render_object("a <b> string").html == "<pre>a &lt;b&gt; string</pre>"


def test_an_object_that_displays_itself_is_not_displayed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Self:
        def _ipython_display_(self) -> None:
            print("DISPLAYED")

        def _repr_html_(self) -> str:
            return "<b>self</b>"

    assert render_object(Self()).html == "<b>self</b>"
    assert "DISPLAYED" not in capsys.readouterr().out


def test_the_shell_formatter_and_its_registrations_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import IPython
    from IPython.core.formatters import DisplayFormatter

    class Thing:
        pass

    formatter = DisplayFormatter()
    formatter.formatters["text/html"].for_type(Thing, lambda obj: "<i>registered</i>")
    monkeypatch.setattr(
        IPython, "get_ipython", lambda: SimpleNamespace(display_formatter=formatter)
    )
    assert render_object(Thing()).html == "<i>registered</i>"


def test_a_terminal_shell_with_only_text_plain_still_gives_rich_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import IPython
    from IPython.core.formatters import DisplayFormatter
    from IPython.display import Image

    formatter = DisplayFormatter()
    formatter.active_types = ["text/plain"]
    monkeypatch.setattr(
        IPython, "get_ipython", lambda: SimpleNamespace(display_formatter=formatter)
    )
    assert render_object(Image(PNG_1PX)).images


def test_rendered_passes_through() -> None:
    done = Rendered("<p>x</p>")
    assert render_object(done) is done


# -- templates -------------------------------------------------------------------------------


def test_template_escapes_plain_values_and_inserts_rich_objects(fig: Any, styled: Any) -> None:
    ns = {"name": "<script>alert(1)</script>", "fig": fig, "st": styled, "n": 3}
    out = render_template("<p>Hi {{ name }}, {{ n }}</p>{{ st }}{{ fig }}{{ fig }}", ns)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out.html and "<script" not in out.html
    assert "background-color: yellow" in out.html
    assert len(out.images) == 1 and out.html.count(f"cid:{out.images[0].cid}") == 2
    assert out.images[0].filename == "fig.png" and out.text is None


def test_template_attachments_are_named_after_variables_and_unique() -> None:
    big = pd.DataFrame({"x": range(1000)})
    ns = {"sales": big, "other": pd.DataFrame({"y": range(1000)}), "_hidden": big}
    out = render_template("{{ sales }}{{ other }}", ns, max_rows=5)
    assert [a.filename for a in out.attachments] == ["sales.csv", "other.csv"]
    out = render_template("{{ a }}{{ b }}", {"a": big, "b": big.copy()}, max_rows=5)
    assert len({a.filename for a in out.attachments}) == 2


def test_template_budget_is_shared_by_its_objects() -> None:
    frames = {f"df{i}": pd.DataFrame(np.ones((1000, 6))) for i in range(3)}
    source = "".join(f"<h2>{k}</h2>{{{{ {k} }}}}" for k in frames)
    html = email_document(render_template(source, frames).html)
    assert len(html.encode()) <= GMAIL_CLIP


def test_undefined_variable_is_one_sentence_naming_it() -> None:
    with pytest.raises(InvalidRequest) as info:
        render_template("Hello {{ customer }}", {})
    assert str(info.value) == ("The template uses 'customer' on line 1, which is not defined in "
                               "the notebook.")


def test_template_syntax_error() -> None:
    with pytest.raises(InvalidRequest, match="syntax error on line 2"):
        render_template("ok\n{% if %}", {})


def test_plain_text_template_is_not_escaped() -> None:
    out = render_template("a < b: {{ x }}", {"x": "<tag> & co"}, "text/plain")
    assert out.html == "" and out.text == "a < b: <tag> & co"


def test_markdown_template(fig: Any) -> None:
    source = (
        "# Report for {{ who }}\n\n*Fine* and **bold**, [docs](https://example.org)\n\n"
        "- one\n- two\n\n{{ df }}\n\n{{ fig }}\n"
    )
    ns = {"who": "<Ann>", "df": pd.DataFrame({"a": [1]}), "fig": fig}
    out = render_template(source, ns, "text/markdown")
    assert "<h1>Report for &lt;Ann&gt;</h1>" in out.html
    assert "<em>Fine</em>" in out.html and "<strong>bold</strong>" in out.html
    assert '<a href="https://example.org">docs</a>' in out.html
    assert "<li>one</li>" in out.html
    assert "<table style=" in out.html and "<p><table" not in out.html
    assert cids(out.html) == {out.images[0].cid}


def test_unsupported_content_type() -> None:
    with pytest.raises(InvalidRequest, match="Unsupported content type"):
        render_template("x", {}, "application/pdf")


def test_missing_jinja_is_actionable(no_module: Any) -> None:
    no_module("jinja2")
    assert render_template("<p>nothing to fill in</p>", {}).html == "<p>nothing to fill in</p>"
    with pytest.raises(MissingDependency) as info:
        render_template("{{ x }}", {"x": 1})
    assert str(info.value) == "Templating a cell needs jinja2: pip install 'smtp-magic[all]'."


# -- markdown and the document -----------------------------------------------------------------


def test_markdown_to_html() -> None:
    html = markdown_to_html(
        "## Title\n\n_em_ `code`\n\n1. a\n2. b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n~~old~~\n"
    )
    for fragment in (
        "<h2>Title</h2>",
        "<em>em</em>",
        "<code>code</code>",
        "<ol>",
        "<td>1</td>",
        "<s>old</s>",
    ):
        assert fragment in html


def test_missing_markdown_it_is_actionable(no_module: Any) -> None:
    no_module("markdown_it")
    with pytest.raises(
        MissingDependency, match=r"A text/markdown body needs markdown-it-py: pip install"
    ):
        markdown_to_html("x")


def test_email_document_is_self_contained_inlined_and_idempotent() -> None:
    fragment = "<style>p.x{color:#123456}</style><p class='x'>Hi</p>" + markdown_to_html(
        "| a |\n|---|\n| 1 |"
    )
    doc = email_document(fragment, title="Q3 <report>")
    assert doc.lstrip().lower().startswith("<!doctype html>")
    assert (
        "<style" not in doc.lower() and "<script" not in doc.lower() and "<link" not in doc.lower()
    )
    assert 'style="color: #123456;"' in doc.replace("margin: 0 0 12px;", "")
    assert "max-width:720px" in doc and "-apple-system" in doc
    assert "<title>Q3 &lt;report&gt;</title>" in doc
    assert re.search(r'<td style="border: 1px solid #d0d7de', doc)  # the markdown table got borders
    assert not re.search(r"""(src|href)=["']https?:""", doc)
    assert email_document(doc) == doc


def test_email_document_keeps_the_style_block_without_css_inline(no_module: Any) -> None:
    no_module("css_inline")
    doc = email_document("<p>Hi</p>")
    assert "<style>" in doc and "<p>Hi</p>" in doc


def test_plain_text_alternative_of_a_table_email(fig: Any) -> None:
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "sales": [1200.5, 3.25]})
    out = render_template(
        "<h1>Weekly</h1><p>See <a href='https://example.org/r'>report</a></p>{{ df }}{{ fig }}",
        {"df": df, "fig": fig},
    )
    text = html_to_text(email_document(out.html))
    assert not re.search(r"<[a-zA-Z/]", text)
    assert "Weekly" in text and "report (https://example.org/r)" in text and "Sales" in text
    lines = text.splitlines()
    assert "0  Oslo  1200.50" in lines and "1  Lima     3.25" in lines


# -- captured outputs --------------------------------------------------------------------------


def test_render_outputs_in_order() -> None:
    png = base64.b64encode(PNG_1PX).decode()  # as a kernel sends it
    outputs = [
        Output("stream", "stdout", "hello \x1b[31mred\x1b[0m\n"),
        Output("stream", "stdout", "10%\r100%\n"),
        Output("display", data={"image/png": png, "text/plain": "<Figure>"}),
        Output("display", data={"text/markdown": "**done**"}),
        Output("stream", "stderr", "careful\n"),
        Output("stream", "stdout", "<after>\n"),
    ]
    out = render_outputs(outputs)
    positions = [
        out.html.index(s)
        for s in ("hello red\n100%", "cid:", "<strong>done", "careful", "&lt;after&gt;")
    ]
    assert positions == sorted(positions)
    assert "\x1b" not in out.html and "10%" not in out.html
    assert out.images[0].data == PNG_1PX
    assert re.search(r'<pre style="[^"]*background[^"]*">careful</pre>', out.html)


def test_error_output_is_a_short_red_traceback() -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("\x1b[1mbad value\x1b[0m")
        deep(n - 1)

    try:
        deep(60)
    except ValueError as exc:
        error = Output.from_exception(exc)
    html = render_outputs([error]).html
    assert html.startswith('<pre style="') and "color:#82071e" in html
    assert "ValueError: bad value" in html and "\x1b" not in html
    assert html.count("\n") <= 41


def test_a_long_stream_shows_its_head_and_is_attached_in_full() -> None:
    text = "".join(f"line {i} <x>\n" for i in range(20_000))
    out = render_outputs([Output("stream", "stdout", text), Output("stream", "stdout", "end\n")])
    assert len(out.html.encode()) <= 50_000
    (att,) = out.attachments
    assert att.filename == "stdout.txt" and att.read().decode() == text + "end"
    shown = out.html.count("\n")  # one per line shown: the last one precedes the note
    assert f"Showing the first {shown:,} of 20,001 lines" in out.html
    assert "line 0 &lt;x&gt;" in out.html and "end" not in out.html.split("<p")[0]


def test_progress_bars_and_widget_outputs() -> None:
    widget = {
        "application/vnd.jupyter.widget-view+json": {"model_id": "1"},
        "text/plain": "IntSlider()",
    }
    out = render_outputs(
        [
            Output("stream", "stderr", "  0%|\r 50%|#####\r100%|##########|\r"),
            Output("display", data=widget),
        ]
    )
    assert ">100%|##########|</pre>" in out.html and "50%" not in out.html
    assert "IntSlider" not in out.html


def test_outputs_from_captured() -> None:
    from IPython.utils.capture import CapturedIO

    # What capture_output() collects in a kernel; built by hand to need no running shell.
    captured = CapturedIO(
        io.StringIO("out\n"),
        io.StringIO("err\n"),
        [{"data": {"text/markdown": "*md*", "text/plain": "<Markdown>"}, "metadata": {}}],
    )
    outputs = outputs_from_captured(captured)
    assert [(o.kind, o.name) for o in outputs] == [
        ("stream", "stdout"),
        ("display", ""),
        ("stream", "stderr"),
    ]
    html = render_outputs(outputs).html
    assert "<pre>out</pre>" in html and "<em>md</em>" in html


# -- attachments ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "tsv", "xlsx", "parquet", "json"])
def test_dataframe_attachments_round_trip(ext: str) -> None:
    df = pd.DataFrame({"a": [1.5, 2.0], "b": ["é", "x"]})
    att = attachment_from_object(df, f"data.{ext}")
    assert att.filename == f"data.{ext}" and att.read()
    buf = io.BytesIO(att.read())
    back = {
        "csv": lambda: pd.read_csv(buf),
        "tsv": lambda: pd.read_csv(buf, sep="\t"),
        "xlsx": lambda: pd.read_excel(buf),
        "parquet": lambda: pd.read_parquet(buf),
        "json": lambda: pd.read_json(buf),
    }[ext]()
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


def test_dataframe_attachment_defaults_and_html(styled: Any) -> None:
    assert attachment_from_object(pd.DataFrame({"a": [1]}), name="sales").filename == "sales.csv"
    assert attachment_from_object(pd.DataFrame({"a": [1]})).filename == "data.csv"
    html = attachment_from_object(styled, "t.html").read().decode()
    assert "background-color: yellow" in html and "<style" not in html
    assert attachment_from_object(styled, "t.xlsx").read().startswith(b"PK")


def test_a_meaningful_index_is_kept() -> None:
    df = pd.DataFrame({"v": [1, 2]}, index=pd.Index(["x", "y"], name="key"))
    assert attachment_from_object(df).read().decode().splitlines()[:2] == ["key,v", "x,1"]


@pytest.mark.parametrize(
    ("ext", "magic"), [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")]
)
def test_figure_attachments(fig: Any, ext: str, magic: bytes) -> None:
    att = attachment_from_object(fig, None if ext == "png" else f"chart.{ext}", name="fig")
    assert att.read().startswith(magic)
    assert att.filename == ("fig.png" if ext == "png" else f"chart.{ext}")


def test_bytes_str_and_other_values() -> None:
    assert attachment_from_object(b"\x00\x01", "blob.bin").read() == b"\x00\x01"
    assert attachment_from_object("héllo", "note.txt").read() == "héllo".encode()
    with pytest.raises(
        InvalidRequest,
        match=r"^Attaching variable 'payload' needs a file name, e.g. payload:payload.bin.$",
    ):
        attachment_from_object(b"x", name="payload")
    with pytest.raises(InvalidRequest, match="'obj' of type object"):
        attachment_from_object(object(), name="obj")
    with pytest.raises(InvalidRequest, match=r"as \.csv, .* not as 'x\.doc'"):
        attachment_from_object(pd.DataFrame(), "x.doc")
    with pytest.raises(InvalidRequest, match=r"\.png, \.pdf or \.svg"):
        attachment_from_object(plt.figure(), "x.gif")
    plt.close("all")


def test_objects_with_an_image_repr_attach_as_that_image(tmp_path: Path) -> None:
    from IPython.display import Image

    att = attachment_from_object(Image(PNG_1PX), name="logo")
    assert att.filename == "logo.png" and att.read() == PNG_1PX
    path = tmp_path / "r.txt"
    path.write_text("x")
    assert attachment_from_object(path).filename == "r.txt"


@pytest.mark.parametrize(
    ("module", "ext", "message"),
    [
        (
            "openpyxl",
            "xlsx",
            "Attaching a DataFrame as .xlsx needs openpyxl: pip install 'smtp-magic[excel]'.",
        ),
        (
            "pyarrow",
            "parquet",
            "Attaching a DataFrame as .parquet needs pyarrow: pip install 'smtp-magic[parquet]'.",
        ),
    ],
)
def test_missing_file_format_dependencies(
    no_module: Any, module: str, ext: str, message: str
) -> None:
    no_module(module, "fastparquet")
    with pytest.raises(MissingDependency) as info:
        attachment_from_object(pd.DataFrame({"a": [1]}), f"x.{ext}")
    assert str(info.value) == message


# -- layering ------------------------------------------------------------------------------


def _imported_after(code: str, modules: set[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(set({sorted(modules)!r}) & set(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parent.parent)
    return eval(result.stdout)


def test_importing_render_imports_no_optional_library() -> None:
    heavy = {"pandas", "matplotlib", "jinja2", "css_inline", "markdown_it", "numpy", "ipywidgets"}
    assert _imported_after("import smtp_magic.render, smtp_magic.htmltext", heavy) == []


def test_rendering_a_plain_object_does_not_import_pandas_or_matplotlib() -> None:
    code = ("from smtp_magic.render import render_object, email_document\n"
            "email_document(render_object([1, 2]).html)")
    assert _imported_after(code, {"pandas", "matplotlib", "jinja2"}) == []


# -- delivered through a real SMTP server ------------------------------------------------------


def _send_and_receive(server: Any, rendered: Rendered, subject: str) -> Any:
    from smtp_magic import SendRequest, send_many

    request = SendRequest(
        to=("ann@example.test",),
        subject=subject,
        sender="reports@example.test",
        body=email_document(rendered.html, title=subject),
        content_type="text/html",
        inline_images=rendered.images,
        attachments=rendered.attachments,
    )
    config = {"target": server.host, "port": server.port, "security": "none"}
    (response,) = send_many([request], config=config)
    assert response.ok, response.message
    (got,) = server.wait_for(1)
    return got.message


def test_a_report_as_it_arrives_at_a_server(smtp_server: Any, fig: Any, styled: Any) -> None:
    big = pd.DataFrame(np.random.default_rng(2).normal(size=(2000, 5)), columns=list("abcde"))
    source = "<h1>Report</h1><p>Highlights:</p>{{ styled }}<p>All rows:</p>{{ big }}{{ fig }}"
    rendered = render_template(source, {"styled": styled, "big": big, "fig": fig})
    msg = _send_and_receive(smtp_server, rendered, "Report")

    html_part = msg.get_body(("html",))
    html = html_part.get_content()
    assert len(html_part.get_payload().encode()) <= GMAIL_CLIP  # as transferred, encoded
    # Inline CSS only, but for the <style> that adds the narrow-screen stack of wide tables.
    from smtp_magic._layout import NARROW_CSS
    from smtp_magic._sanitize import STYLE_BLOCK

    assert STYLE_BLOCK.findall(html) == [NARROW_CSS] and "data:" not in html
    assert re.search(r'<td style="[^"]*background-color: yellow[^"]*">(<span[^>]*>[^<]*</span>)?'
                     r'19\.25</td>', html)

    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    (png,) = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert png["Content-ID"].strip("<>") in cids(html)
    assert png.get_payload(decode=True) == rendered.images[0].data

    (csv,) = [a for a in msg.iter_attachments() if a.get_filename() == "big.csv"]
    back = pd.read_csv(io.BytesIO(csv.get_payload(decode=True)))
    pd.testing.assert_frame_equal(back, big)

    text = msg.get_body(("plain",)).get_content()
    assert not re.search(r"</?[a-zA-Z][^>]*>|&[a-z]+;", text)
    lines = text.splitlines()
    start = lines.index("   city    temp")
    assert ["0  Oslo    3.00", "1  Lima   19.25", "2  Kyoto  12.50"] == lines[start + 1:start + 4]
    assert lines[:2] == ["Report", "======"]
    assert "Showing the first" in text and "big.csv" in text


def test_a_markdown_body_as_it_arrives(smtp_server: Any) -> None:
    source = (
        "# Hello {{ who }}\n\nSome *emphasis*, a [link](https://example.org).\n\n- one\n- two\n"
    )
    msg = _send_and_receive(
        smtp_server, render_template(source, {"who": "Ann"}, "text/markdown"), "md"
    )
    html = msg.get_body(("html",)).get_content()
    assert "Hello Ann</h1>" in html and "emphasis</em>" in html and "one</li>" in html
    assert 'href="https://example.org"' in html
    text = msg.get_body(("plain",)).get_content()
    assert "link (https://example.org)" in text and "- one" in text
