"""The message as the recipient reads it (issue 23): typed notes with a <word> in them, one
attachment per table, bodies sent without templating, images marked in the text part. Each
case is sent through the magics or the API to a real SMTP server and read back on arrival."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import pytest
from conftest import NOTEBOOK_SENDER, run_cell, shown_text
from test_content import arrived, attachments, images, parts

import smtp_magic
from smtp_magic.server import CaptureServer

if TYPE_CHECKING:
    from conftest import TestingShell

pd = pytest.importorskip("pandas")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def api_config(server: CaptureServer) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": server.port, "security": "none"}


# -- a typed note with a <word> in it ------------------------------------------------------------

NOTE = ("Hi <your-name>,\n\nThe figures are <attached>:\n- orders\n- returns\n\n"
        "Remember: a < b and b > c.\nAnn")


def assert_note_kept(html: str, text: str) -> None:
    assert "Hi &lt;your-name&gt;," in html and "The figures are &lt;attached&gt;:<br>" in html
    assert "- orders<br>\n- returns</p>" in html  # the list lines stay lines
    assert "a &lt; b and b &gt; c.<br>\nAnn</p>" in html
    assert len(re.findall(r"<p\b", html.split("max-width:720px")[1])) >= 3  # paragraphs kept
    assert text.strip() == NOTE  # the text part is the note as typed, <word>s included


def test_a_typed_note_with_a_word_in_angle_brackets_stays_text(
        ip: TestingShell, to_server: CaptureServer) -> None:
    shown = run_cell(ip, f"%%smtp_send --to a@example.test --subject note\n{NOTE}")
    assert "sent in" in shown_text(shown)
    html, text, _ = parts(arrived(to_server)[0])
    assert_note_kept(html, text)


def test_the_api_keeps_a_word_in_angle_brackets(smtp_server: CaptureServer) -> None:
    r = smtp_magic.send("a@example.test", "note", NOTE, sender=NOTEBOOK_SENDER,
                        config=api_config(smtp_server))
    assert r.ok, r.message
    html, text, _ = parts(arrived(smtp_server)[0])
    assert_note_kept(html, text)


def test_real_html_is_still_html(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.run_cell("%%smtp_send --to a@example.test --subject html\n"
                "<p>Dear <b>team</b>,</p>\n<ul><li>one</li>\n<li>two</li></ul>")
    html, text, _ = parts(arrived(to_server)[0])
    assert "<b>team</b>" in html and "&lt;b&gt;" not in html and "<li" in html
    assert "Dear team," in text and "- one" in text


# -- the whole table attached once ---------------------------------------------------------------

def test_an_explicit_attachment_replaces_the_automatic_one(
        ip: TestingShell, to_server: CaptureServer) -> None:
    big = pd.DataFrame({"day": range(3000), "orders": range(3000), "note": ["ok"] * 3000})
    ip.user_ns["big"] = big
    ip.run_cell("%%smtp_send --to a@example.test --subject big --attach big:full.csv\n"
                "<p>The orders:</p>\n{{ big }}")
    msg = arrived(to_server)[0]
    atts = attachments(msg)
    assert list(atts) == ["full.csv"], list(atts)  # one CSV, the one the sender named
    assert pd.read_csv(io.BytesIO(atts["full.csv"].get_payload(decode=True))).shape == (3000, 3)
    html, _, _ = parts(msg)
    assert re.search(r"Showing the first [\d,]+ of 3,000 rows; the full table is attached as "
                     r"full\.csv\.", html)


def test_an_explicit_xlsx_is_the_only_copy(ip: TestingShell, to_server: CaptureServer) -> None:
    pytest.importorskip("openpyxl")
    ip.user_ns["big"] = pd.DataFrame({"day": range(3000)})
    ip.run_cell("%%smtp_send --to a@example.test --subject big --attach big:summary.xlsx\n"
                "{{ big }}")  # attached as .xlsx: named in the note, no CSV besides
    msg = arrived(to_server)[0]
    assert list(attachments(msg)) == ["summary.xlsx"]
    assert "the full table is attached as summary.xlsx." in parts(msg)[0]


# -- no templating -------------------------------------------------------------------------------

VUE = '<div id="app">\n  <p>{{ message }}</p>\n  <p>{% raw %}</p>\n</div>'


def test_no_template_sends_the_cell_as_written(ip: TestingShell,
                                               to_server: CaptureServer) -> None:
    shown = run_cell(ip, f"%%smtp_send --to a@example.test --subject vue --no-template\n{VUE}")
    assert "sent in" in shown_text(shown), shown_text(shown)
    html, text, _ = parts(arrived(to_server)[0])
    assert re.search(r"<p[^>]*>\{\{ message \}\}</p>", html)
    assert re.search(r"<p[^>]*>\{% raw %\}</p>", html)
    assert "{{ message }}" in text and "{% raw %}" in text


def test_no_template_keeps_a_typed_note_literal(ip: TestingShell,
                                                to_server: CaptureServer) -> None:
    ip.run_cell("%%smtp_send --to a@example.test --subject hb --no-template\n"
                "Write {{name}} where the name goes.\nSecond line <here>.")
    html, text, _ = parts(arrived(to_server)[0])
    assert "Write {{name}} where the name goes.<br>\nSecond line &lt;here&gt;." in html
    assert text.strip() == "Write {{name}} where the name goes.\nSecond line <here>."


def test_without_no_template_jinja_runs(ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["message"] = "filled in"
    ip.run_cell(f"%%smtp_send --to a@example.test --subject vue\n{VUE.replace('{% raw %}', '')}")
    html, _, _ = parts(arrived(to_server)[0])
    assert re.search(r"<p[^>]*>filled in</p>", html) and "{{" not in html


def test_no_template_with_capture_is_refused(ip: TestingShell, to_server: CaptureServer) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--no-template and --capture do not go together"):
        ip.run_cell_magic("smtp_send", "--to a@example.test --subject x --no-template --capture",
                          "print(1)")
    assert to_server.count() == 0


def test_the_request_key_template_false(smtp_server: CaptureServer) -> None:
    conn = smtp_magic.connector({"target": "127.0.0.1", "port": smtp_server.port,
                                 "security": "none"})
    request = {"to": "a@example.test", "from": NOTEBOOK_SENDER, "subject": "vue",
               "body": VUE, "template": False}
    r = conn.call(request)
    assert r.exitcode == 0, r.message
    html, _, _ = parts(arrived(smtp_server)[0])
    assert re.search(r"<p[^>]*>\{\{ message \}\}</p>", html)
    refused = conn.call({**request, "template": True})
    assert refused.exitcode == 1 and "'template' can only be false" in refused.message


# -- images in the text part ---------------------------------------------------------------------

def test_images_are_marked_in_the_text_part(ip: TestingShell, to_server: CaptureServer) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 3, 2])
    ax.set_title("Orders per day")
    bare, ax2 = plt.subplots(figsize=(3, 2))
    ax2.plot([1, 2])
    ax2.set_xlabel("day")
    ax2.set_ylabel("returns")
    ip.user_ns.update(fig=fig, bare=bare)
    ip.run_cell("%%smtp_send --to a@example.test --subject figs\n"
                "<p>Orders:</p>{{ fig }}<p>Returns:</p>{{ bare }}")
    plt.close("all")
    msg = arrived(to_server)[0]
    html, text, _ = parts(msg)
    assert len(images(msg)) == 2
    assert 'alt="Orders per day"' in html and 'alt="returns by day"' in html
    assert "[image: Orders per day]" in text and "[image: returns by day]" in text


# -- an Altair chart saved as HTML (a notebook run headless) --------------------------------------

def altair_notebook(chart: object) -> object:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("chart", execution_count=4, outputs=[
        nbformat.v4.new_output("display_data", data={
            "text/html": chart.to_html(),  # type: ignore[attr-defined]
            "text/plain": "alt.Chart(...)"})])]
    return nb


def test_a_standalone_altair_page_in_a_notebook_is_drawn(smtp_server: CaptureServer) -> None:
    alt = pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    chart = alt.Chart(pd.DataFrame({"x": [1, 2], "y": [2, 1]})).mark_bar().encode(
        x="x:O", y="y").properties(title="Orders per day")  # to_html(): `var spec = {...}`
    r = smtp_magic.send_notebook(altair_notebook(chart), "a@example.test", subject="chart",
                                 sender=NOTEBOOK_SENDER, config=api_config(smtp_server))
    assert r.ok, r.message
    msg = arrived(smtp_server)[0]
    (png,) = images(msg)
    assert png.get_filename() == "orders-per-day.png"
    assert png.get_payload(decode=True).startswith(b"\x89PNG")


def test_a_notebook_chart_with_remote_data_is_refused_without_fetching(
        smtp_server: CaptureServer) -> None:
    alt = pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    chart = alt.Chart("http://127.0.0.1:9/orders.csv").mark_bar().encode(x="x:O", y="y:Q")
    r = smtp_magic.send_notebook(altair_notebook(chart), "a@example.test", subject="chart",
                                 sender=NOTEBOOK_SENDER, config=api_config(smtp_server))
    assert r.exitcode == 1
    assert r.message.startswith("Cannot email output 1 of cell [4]: its data is loaded from "
                                "http://127.0.0.1:9/orders.csv, and nothing is fetched"), r.message
    assert smtp_server.count() == 0


def test_a_notebook_figure_shown_by_its_variable_is_named_by_it(
        smtp_server: CaptureServer) -> None:
    import base64

    import nbformat
    from test_content import PNG_1PX

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([1, 2])\nfig",
                                          execution_count=2, outputs=[
        nbformat.v4.new_output("execute_result", execution_count=2, data={
            "image/png": base64.b64encode(PNG_1PX).decode(),
            "text/plain": "<Figure size 640x480 with 1 Axes>"})])]
    r = smtp_magic.send_notebook(nb, "a@example.test", subject="fig", sender=NOTEBOOK_SENDER,
                                 config=api_config(smtp_server))
    assert r.ok, r.message
    msg = arrived(smtp_server)[0]
    html, text, _ = parts(msg)
    assert 'alt="fig"' in html and "[image: fig]" in text
    assert [p.get_filename() for p in images(msg)] == ["fig.png"]
