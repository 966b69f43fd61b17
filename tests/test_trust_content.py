"""Issue 19, content and views: what one DataFrame column, one received message or one SVG
controls cannot load anything, run anything or drive a terminal. Each case is sent to a real
SMTP server (aiosmtpd) and the message that arrived is checked; a beacon HTTP server on
127.0.0.1 records any fetch and must stay silent."""

from __future__ import annotations

import io
import re
import smtplib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import run_cell, shown_text
from IPython.core.error import UsageError
from test_cli_seed import run_cli, write

from smtp_magic import _sanitize
from smtp_magic.server import CaptureServer

if TYPE_CHECKING:
    from conftest import Beacon, TestingShell

pd = pytest.importorskip("pandas")


def loads_from(html: str, url: str) -> bool:
    """Whether ``html`` would fetch from ``url`` (an attribute or CSS pointing there; the URL
    shown as text is fine)."""
    attribute = re.compile(rf"""(?:src|href|background|srcset|poster|data|action)\s*=\s*"""
                           rf"""["']?\s*{re.escape(url)}|url\(\s*["']?\s*{re.escape(url)}""",
                           re.IGNORECASE)
    return any(attribute.search(tag) for tag in re.findall(r"<[a-zA-Z][^>]*>", html))


def html_of(server: CaptureServer, n: int = 1) -> list[str]:
    return [str(m.message.get_body(("html",)).get_content()) for m in server.wait_for(n)]


def sent_html(ip: TestingShell, server: CaptureServer, obj: Any) -> str:
    """The HTML part of a message whose body is ``{{ obj }}``, sent by the magic."""
    ip.user_ns["obj"] = obj
    run_cell(ip, "%%smtp_send --to a@example.test --subject Object\n<p>Here:</p>{{ obj }}")
    (html,) = html_of(server)
    return html


def text_of(server: CaptureServer, n: int = 1) -> list[str]:
    return [str(m.message.get_body(("plain",)).get_content()) for m in server.wait_for(n)]


# -- CSS: read by a tokenizer --------------------------------------------------------------------

LOADING = [
    "background:url(http://B/a.png)",
    r"background:u\72l(http://B/escaped.png)",
    r"background:\75\72\6c(http://B/all-escaped.png)",
    "background:URL( 'http://B/upper.png' )",
    "background-image:image-set('http://B/set.png' 1x)",
    "background-image:-webkit-image-set(url(http://B/wk.png) 1x)",
    "background-image:image('http://B/image.png')",
    "background-image:cross-fade(url(http://B/a.png), url(http://B/b.png), 50%)",
    "background-image:element(#x)",
    "border-image:url(http://B/border.png) 30 round",
    "border-image-source:url(http://B/bis.png)",
    "mask-image:url(http://B/mask.png)",
    "-webkit-mask-box-image:url(http://B/wmask.png)",
    "list-style:square url(http://B/list.png)",
    "cursor:url(http://B/cursor.cur), auto",
    "content:url(http://B/content.png)",
    "--x:url(http://B/var.png)",
    "behavior:url(http://B/x.htc)",
    "width:expression(alert(1))",
    "background:src('http://B/src.png')",
    "background:url(http://B/a.png",  # unterminated: a browser still reads it to the end
]


@pytest.mark.parametrize("css", LOADING)
def test_every_declaration_that_can_load_goes_and_the_styling_stays(css: str) -> None:
    style = f"color:#c00;{css};background-color:yellow;border:1px solid red"
    kept = _sanitize.safe_style(style)
    assert "B/" not in kept and "(#x)" not in kept and "expression" not in kept, kept
    assert kept.startswith("color:#c00")
    if css.count("(") == css.count(")"):  # else the URL runs to the end, as in a browser
        assert "background-color:yellow" in kept.replace(" ", "")
        assert "border:1px solid red" in kept


def test_a_stylesheet_keeps_only_rules_that_cannot_load() -> None:
    css = ("@import url(http://B/import.css); @import 'http://B/import2.css';"
           "@font-face{font-family:x;src:url(http://B/font.woff)}"
           r"td{color:navy;background:u\72l(http://B/td.png)}"
           "@media screen{th{background-image:image-set('http://B/th.png' 1x);font-weight:bold}}"
           "@namespace x url(http://B/ns);")
    kept = _sanitize.safe_stylesheet(css)
    assert "B/" not in kept and "@import" not in kept and "@font-face" not in kept
    assert "td{color:navy}" in kept and "font-weight:bold" in kept


class Hostile:
    """An object whose HTML (a <style> block and style attributes) tries every way to fetch."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _repr_html_(self) -> str:
        u = self.url
        return (f"<style>@import url({u}/import.css); p.x{{color:#c00;"
                rf"background:u\72l({u}/block.png)}} td{{border-image:url({u}/bi.png) 30}}</style>"
                f"<p class='x' style=\"background-image:-webkit-image-set(url({u}/wk.png) 1x);"
                f"font-weight:bold\">Revenue</p>"
                f"<table><tr><td style='mask-image:url({u}/mask.png);background-color:#ff0'>"
                "42</td></tr></table>")


def test_an_objects_css_arrives_without_anything_that_loads(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon
) -> None:
    html = sent_html(ip, to_server, Hostile(beacon.url))
    assert beacon.url not in html and "url(" not in html and "@import" not in html
    assert "color:#c00" in html.replace(" ", "")  # the <style> rule, inlined
    assert "font-weight:bold" in html.replace(" ", "")
    assert "background-color:#ff0" in html.replace(" ", "")


# -- Styler ------------------------------------------------------------------------------------

def hostile_styler(url: str) -> Any:
    frame = pd.DataFrame({
        "name": [f"<iframe src='{url}/iframe'></iframe>", f"<img src='{url}/cell.png'>",
                 "<script>alert(1)</script>", "Tom & Jerry <b>bold</b>"],
        "sales": [3, 9, 5, 1],
    })
    return (frame.style
            .set_table_attributes(f'background="{url}/table.png" onmouseover="alert(1)"')
            .set_table_styles([{"selector": "td",
                                "props": rf"background-image:u\72l({url}/td.png);color:navy"}])
            .highlight_max(subset=["sales"], color="yellow")
            .format({"sales": "{:d} units"}))


def test_a_styler_from_untrusted_strings_arrives_escaped_and_inert(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon
) -> None:
    html = sent_html(ip, to_server, hostile_styler(beacon.url))
    assert not loads_from(html, beacon.url)
    for markup in ("<iframe", "<img", "<script", "<b>", "onmouseover", "background="):
        assert markup not in html, markup
    # cell text escaped as DataFrame.to_html escapes it: shown as typed
    assert "&lt;iframe src=" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;" in html
    # the Styler's own formatting and highlight still arrive
    assert "9 units" in html and "background-color: yellow" in html and "color: navy" in html
    (text,) = text_of(to_server)
    assert "<script>alert(1)</script>" in text and "Tom & Jerry <b>bold</b>" in text


def test_a_styler_attached_as_html_is_inert(beacon: Beacon) -> None:
    from smtp_magic.render import attachment_from_object

    data = attachment_from_object(hostile_styler(beacon.url), "table.html").data
    page = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    assert not loads_from(page, beacon.url) and "<iframe" not in page and "&lt;iframe" in page


# -- SVG -> PNG --------------------------------------------------------------------------------

RED = (255, 0, 0)


def red_pixels(png: bytes, blue: bool = False) -> int:
    from PIL import Image

    data = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    if blue:
        return sum(1 for i in range(0, len(data), 3)
                   if data[i] < 60 and data[i + 1] < 60 and data[i + 2] > 200)
    return sum(1 for i in range(0, len(data), 3)
               if data[i] > 200 and data[i + 1] < 60 and data[i + 2] < 60)


@pytest.fixture
def secret_png(tmp_path: Path) -> Path:
    """A local file that must never reach a message: a red picture."""
    from PIL import Image

    path = tmp_path / "secret.png"
    Image.new("RGB", (40, 40), RED).save(path)
    return path


def hostile_svg(url: str, secret: Path) -> str:
    return f"""<?xml version="1.0"?>
<?xml-stylesheet href="{url}/pi.css"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     width="120" height="80" xml:base="{url}/">
  <style>@import url({url}/import.css); .b {{ fill: url({url}/fill.svg#p) }}</style>
  <defs><linearGradient id="g"><stop offset="0" stop-color="#00f"/>
    <stop offset="1" stop-color="#00f"/></linearGradient></defs>
  <rect width="120" height="80" fill="url(#g)"/>
  <image href="{url}/intranet.png" width="40" height="40"/>
  <image xlink:href="{secret.as_uri()}" x="40" width="40" height="40"/>
  <image href="{secret}" x="80" width="40" height="40"/>
  <use href="{url}/sprite.svg#icon"/>
  <rect class="b" style="fill:url({url}/style.svg#p)" y="40" width="40" height="40"/>
  <foreignObject width="10" height="10"><img xmlns="http://www.w3.org/1999/xhtml"
    src="{url}/fo.png"/></foreignObject>
</svg>"""


def test_an_svg_is_rasterised_without_fetching_or_reading_anything(
    beacon: Beacon, secret_png: Path
) -> None:
    pytest.importorskip("vl_convert")
    from smtp_magic._charts import svg_png

    png = svg_png(hostile_svg(beacon.url, secret_png).encode("utf-8"))
    assert png is not None
    assert beacon.settle() == []
    assert red_pixels(png) == 0, "the local file was drawn into the picture"
    assert red_pixels(png, blue=True) > 1000  # the drawing itself (url(#g)) is still there


def test_an_svg_with_entities_is_not_rasterised(tmp_path: Path) -> None:
    from smtp_magic._charts import svg_png

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    svg = (f'<!DOCTYPE svg [<!ENTITY s SYSTEM "{secret.as_uri()}">]>'
           '<svg xmlns="http://www.w3.org/2000/svg"><text>&s;</text></svg>')
    assert svg_png(svg.encode()) is None


def test_a_displayed_svg_arrives_without_the_intranet_or_the_file(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon, secret_png: Path
) -> None:
    pytest.importorskip("vl_convert")
    ip.user_ns["drawing"] = hostile_svg(beacon.url, secret_png)
    run_cell(ip, "%%smtp_send --to a@example.test --subject SVG --capture\n"
                 "from IPython.display import SVG, display\ndisplay(SVG(drawing))")
    (captured,) = to_server.wait_for(1)
    images = [p.get_payload(decode=True) for p in captured.message.walk()
              if p.get_content_type() == "image/png"]
    assert len(images) == 1 and red_pixels(images[0]) == 0
    assert beacon.settle() == []


# -- Markdown bodies: substituted values are text ---------------------------------------------

ROWS = [
    {"email": "a@example.test", "name": "![x](BEACON/pixel.png)"},
    {"email": "b@example.test", "name": "[click](http://evil.test/) <img src=BEACON/raw.png>"},
    {"email": "c@example.test", "name": "<BEACON/auto> **loud** # not a heading"},
]


@pytest.mark.parametrize("content_type", ["text/markdown", "text/html", "text/plain"])
def test_row_values_are_text_in_every_body_type(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon, content_type: str
) -> None:
    rows = [{k: v.replace("BEACON", beacon.url) for k, v in row.items()} for row in ROWS]
    ip.user_ns["rows"] = pd.DataFrame(rows)
    ip.user_ns["df"] = pd.DataFrame({"kept": ["a rich table"]})
    run_cell(ip, f"%%smtp_send --each rows --to {{email}} --subject Hi "
                 f"--content-type {content_type}\n"
                 "Hello {{ name }}, see [the report](https://example.test/r).\n\n{{ df }}\n")
    messages = {m.rcpt_to[0]: m.message for m in to_server.wait_for(3)}
    for row in rows:
        msg = messages[row["email"]]
        html_part = msg.get_body(("html",))
        text = str(msg.get_body(("plain",)).get_content())
        assert row["name"] in text, (row["name"], text)  # as typed, in the text part
        if html_part is None:
            assert content_type == "text/plain"
            continue
        html = str(html_part.get_content())
        assert "<img" not in html and not loads_from(html, beacon.url), html
        assert 'href="http://evil.test' not in html and "<strong>loud" not in html
        assert "<h1" not in html
        assert "a rich table" in html and "<table" in html  # {{ df }} still a table
        if content_type == "text/markdown":
            assert re.search(r'<a href="https://example.test/r"[^>]*>the report</a>', html)
    assert beacon.settle() == []


# -- terminal escapes ---------------------------------------------------------------------------

ESC_SUBJECT = "Invoice \x1b]0;pwned\x07\x1b[2J\x9b31m"


def test_control_characters_in_row_data_are_refused_in_headers(
    ip: TestingShell, to_server: CaptureServer
) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"email": ["a@example.test", "b@example.test"],
                                       "subject": ["fine", ESC_SUBJECT]})
    with pytest.raises(UsageError) as caught:
        ip.run_cell("%%smtp_send --each rows --to {email} --subject {subject}\nHello",
                    store_history=False).raise_error()
    message = str(caught.value)
    assert message.startswith("Row 1: The subject contains the control character U+001B (ESC)")
    assert "\n" not in message and "\x1b" not in message
    assert to_server.count() == 0  # nothing was sent, not even row 0


@pytest.mark.parametrize("field", ["subject", "from", "to"])
def test_the_cli_refuses_control_characters_in_headers(
    smtp_server: CaptureServer, tmp_path: Path, field: str
) -> None:
    request = {"to": ["bob@example.test"], "subject": "CLI", "body": "<p>Hello</p>",
               "from": "nb@example.test"}
    request[field] = ("Bob\x1b[2J <bob@example.test>" if field != "subject" else ESC_SUBJECT)
    if field == "to":
        request["to"] = [request["to"]]
    conn = write(tmp_path / "conn.json", {"target": "127.0.0.1", "port": smtp_server.port,
                                          "security": "none"})
    rc, answer, _ = run_cli("send", "--config", str(conn), "--request",
                            str(write(tmp_path / "req.json", request)), cwd=tmp_path)
    assert rc == 1 and "control character U+001B (ESC)" in answer["message"], answer
    assert "\x1b" not in answer["message"]
    assert smtp_server.count() == 0


def test_the_inbox_text_view_shows_control_characters_escaped(
    ip: TestingShell, smtp_server: CaptureServer
) -> None:
    raw = (b"From: =?utf-8?q?Mallory_=1B]8;;http://evil.test=07?= <m@attacker.test>\r\n"
           b"To: you@example.test\r\n"
           b"Subject: Report \x1b]0;owned\x07\x1b[2J done\r\n"
           b"\r\nbody\r\n")
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail("m@attacker.test", ["you@example.test"], raw)
    smtp_server.wait_for(1)
    shown = shown_text(run_cell(ip, "%smtp_inbox"))
    assert "\x1b" not in shown and "\x07" not in shown
    assert r"Report \x1b]0;owned\x07\x1b[2J done" in shown
    assert r"Mallory \x1b]8;;http://evil.test\x07" in shown


def test_a_chart_of_row_data_draws_without_fetching(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon
) -> None:
    """An Altair image mark whose URLs come from a column, and a chart whose data is a URL:
    neither is fetched (vl-convert's PNG export would fetch both)."""
    pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    run_cell(ip, "import altair as alt, pandas as pd\n"
                 f"pics = pd.DataFrame({{'x': [1, 2], 'u': ['{beacon.url}/mark.png', "
                 f"'{beacon.url}/mark2.png']}})\n"
                 "chart = alt.Chart(pics).mark_image(width=20, height=20).encode(x='x:Q', url='u')\n"
                 f"remote = alt.Chart('{beacon.url}/data.csv').mark_point().encode(x='a:Q')")
    run_cell(ip, "%%smtp_send --to a@example.test --subject Chart\n{{ chart }}")
    (captured,) = to_server.wait_for(1)
    assert any(p.get_content_type() == "image/png" for p in captured.message.walk())
    with pytest.raises(UsageError, match=r"its data is loaded from http://127\.0\.0\.1:\d+/data"
                                         r"\.csv, and nothing is fetched"):
        ip.run_cell("%%smtp_send --to a@example.test --subject Remote\n{{ remote }}",
                    store_history=False).raise_error()
    assert beacon.settle() == []


def test_no_markdown_construct_comes_from_a_value() -> None:
    from smtp_magic.render import render_template

    value = ("# head\n- item\n* star\n1. one\n2) two\ntext\n===\n> quote\n---\n"
             "**bold** _em_ ~~gone~~ `code` <b>x</b> &amp; | a | b |\n|---|---|\n"
             "[ref]: http://evil.test/\n```\nfence\n```\n![x](http://evil.test/p.png)")
    html = render_template("Dear {{ v }}\n\nSee [the report]({{ url }}).", {
        "v": value, "url": "https://my-site.example/q3-report.html?x=1&y=2"},
        "text/markdown").html
    for tag in ("<h1", "<h2", "<ul", "<ol", "<li", "<hr", "<blockquote", "<strong", "<em",
                "<del", "<s>", "<code", "<pre", "<b>", "<table", "<img"):
        assert tag not in html, tag
    assert html.count("<a ") == 1
    assert '<a href="https://my-site.example/q3-report.html?x=1&amp;y=2">the report</a>' in html
    from smtp_magic.htmltext import html_to_text

    shown = " ".join(html_to_text(html).split())
    assert " ".join(value.split()) in shown  # every character as typed


def test_styler_labels_from_data_are_escaped_too(
    ip: TestingShell, to_server: CaptureServer
) -> None:
    frame = pd.DataFrame({"<i>sales</i>": [3, 9]}, index=["<b>north</b>", "south & east"])
    html = sent_html(ip, to_server,
                     frame.style.highlight_max(subset=["<i>sales</i>"], color="yellow"))
    assert "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;north&lt;/b&gt;" in html and "&lt;i&gt;sales&lt;/i&gt;" in html
    assert "south &amp; east" in html and "background-color: yellow" in html


def test_a_servers_reply_with_escapes_is_shown_not_obeyed(
    ip: TestingShell, fault_server: Any
) -> None:
    from smtp_magic import config

    server = fault_server(greeting=(554, "5.7.1 go away \x1b]0;pwned\x07\x1b[2J"))
    config.current().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                             "sender": "nb@example.test"})
    shown = ""
    for cell in ("%smtp_config --check",
                 "%%smtp_send --to a@example.test --subject x --sync\nHello"):
        try:  # the test shell raises what a notebook would show
            captured = run_cell(ip, cell)
            shown += shown_text(captured) + captured.stderr
        except Exception as exc:  # noqa: BLE001 - shown as IPython shows it
            render = getattr(exc, "_render_traceback_", None)
            shown += "\n".join(render()) if render else f"{type(exc).__name__}: {exc}"
    assert shown.count("go away") == 2, shown
    assert "\x1b]0" not in shown and "\x1b[2J" not in shown and r"\x1b]0;pwned\x07" in shown


def test_a_plotly_figure_with_a_remote_image_is_refused_before_anything_is_fetched(
    ip: TestingShell, to_server: CaptureServer, beacon: Beacon
) -> None:
    pytest.importorskip("plotly")
    pytest.importorskip("kaleido")
    run_cell(ip, "import plotly.graph_objects as go\n"
                 "fig = go.Figure(go.Bar(x=['a'], y=[1]))\n"
                 f"fig.add_layout_image(source='{beacon.url}/logo.png', x=0, y=1, sizex=1, "
                 "sizey=1, xref='paper', yref='paper')")
    with pytest.raises(UsageError, match=r"it shows an image from http://127\.0\.0\.1:\d+/logo"
                                         r"\.png, and nothing is fetched"):
        ip.run_cell("%%smtp_send --to a@example.test --subject Plotly\n{{ fig }}",
                    store_history=False).raise_error()
    assert beacon.settle() == [] and to_server.count() == 0


def test_filtered_values_stay_text_in_markdown_and_only_safe_is_markup() -> None:
    from smtp_magic.render import render_template

    values = {"a": "![x](http://evil.test/p.png)", "many": ["[c](http://evil.test/)", "*x*"],
              "md": "**bold** [ok](https://ok.test/)"}
    html = render_template("{{ a|e }} {{ many|join(', ') }} {{ a|replace('x', 'y') }} "
                           "{{ a|upper }} {{ '%s'|format(a) }}\n\n{{ md|safe }}",
                           values, "text/markdown").html
    assert "<img" not in html and "evil.test/\"" not in html and "<em>" not in html
    assert '<strong>bold</strong> <a href="https://ok.test/">ok</a>' in html


@pytest.mark.parametrize("prefix", ["<!-- <head> -->", "<title><head></title>",
                                    "<!DOCTYPE html><html><head>", "text <p title='<html>'>"])
def test_the_frame_document_starts_with_its_policy(prefix: str) -> None:
    import html as html_module

    from smtp_magic._views import html_frame

    document = prefix + "<meta http-equiv=refresh content='0;url=http://evil.test/'><p>Hi</p>"
    for remote, img in ((False, "img-src data:;"), (True, "img-src data: http: https:;")):
        frame = html_frame(document, remote_images=remote)
        srcdoc = html_module.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))  # type: ignore[union-attr]
        assert srcdoc.startswith('<meta http-equiv="Content-Security-Policy" content="'
                                 "default-src 'none'; " + img)
        assert "<meta http-equiv=refresh" not in srcdoc and "<x-meta http-equiv=refresh" in srcdoc


def test_a_styler_without_the_inliner_keeps_only_a_safe_style_block(
    beacon: Beacon, no_module: Any
) -> None:
    from smtp_magic.render import render_object

    no_module("css_inline")
    styler = hostile_styler(beacon.url).set_table_styles(
        [{"selector": "th", "props": r'color:red;content:"\3c /style><img src=x>"'}],
        overwrite=False)
    html = render_object(styler).html
    assert not loads_from(html, beacon.url) and "url(" not in html
    assert "<img" not in html and "<iframe" not in html and "&lt;iframe" in html
    assert "<style" in html  # the highlights, for clients that read it
