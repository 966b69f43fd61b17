"""Issue 23 in a real kernel run headless (nbclient, as papermill and nbval run notebooks): a
notebook holding an Altair chart (HTML + vegaEmbed only) is emailed by send-notebook with the
chart as an image; figures get alt text from their code; warnings name cells, not the kernel's
temporary files; errors name cells as the notebook does."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernels import kernel_environment
from nbclient import NotebookClient

import smtp_magic
from smtp_magic.server import CaptureServer

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.kernel

CELLS = [
    "# Orders\n\nThis week's orders.",
    # [1]: helpers that warn (line 3 and line 6 of this cell)
    ("import warnings\ndef load():\n    warnings.warn('rates are estimated')\n    return 1\n"
     "def fetch():\n    warnings.warn('the feed is late')\n    return 2"),
    # [2]: an Altair chart, shown as the notebook shows it headless: HTML + vegaEmbed only
    ("import altair as alt, pandas as pd\n"
     "alt.Chart(pd.DataFrame({'day': [1, 2, 3], 'orders': [3, 1, 2]})).mark_bar()"
     ".encode(x='day:O', y='orders').properties(title='Orders per day')"),
    # [3]: a figure without a title, its axes labelled, drawn without a background
    ("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\n"
     "fig.patch.set_alpha(0); ax.patch.set_alpha(0)\n"
     "ax.plot([1, 3, 2])\nax.set_xlabel('day')\nax.set_ylabel('returns')\nplt.show()"),
    # [4]: a warning from the helper cell
    "load()",
    "%load_ext smtp_magic",
    "%smtp_config --host 127.0.0.1 --port {port} --security none --from nb@example.test",
    # [7]: --capture in the kernel: its own warning (body line 3 = cell line 4) and a helper's
    ("%%smtp_send --to a@example.test --subject Warned --capture\n"
     "import warnings\nprint('start')\nwarnings.warn('own warning')\nfetch()"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    root = tmp_path_factory.mktemp("message-kernel")
    with CaptureServer(root / "mail") as server:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(CELLS[0])] + [
            nbformat.v4.new_code_cell(c.replace("{port}", str(server.port))) for c in CELLS[1:]]
        env = kernel_environment(root)
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(root)}}).execute(env=env)
        path = root / "orders.ipynb"
        nbformat.write(nb, path)
        (warned,) = server.wait_for(1)
        conn = root / "conn.json"
        conn.write_text(json.dumps({"target": "127.0.0.1", "port": server.port,
                                    "security": "none", "from": "reports@example.test"}))
        proc = subprocess.run(
            [sys.executable, "-m", "smtp_magic", "send-notebook", str(path), "--to",
             "team@example.test", "--config", str(conn)],
            cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
            check=False)
        sent = ([m.message for m in server.wait_for(2) if m.subject != "Warned"]
                if proc.returncode == 0 else [])
        yield nb, warned.message, proc, sent


def body(msg: Any, kind: str) -> str:
    return str(msg.get_body((kind,)).get_content())


def test_the_altair_output_is_html_and_script_only(run: Any) -> None:
    nb, *_ = run
    (out,) = nb.cells[2].outputs
    assert set(out["data"]) == {"text/html", "text/plain"} and "vegaEmbed" in out["data"][
        "text/html"]  # the case of the issue: no vega-lite MIME type, no image


def test_send_notebook_draws_the_embedded_chart(run: Any) -> None:
    _, _, proc, sent = run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (msg,) = sent
    html, text = body(msg, "html"), body(msg, "plain")
    pngs = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == 2
    chart = next(p for p in pngs if p.get_filename() == "orders-per-day.png")
    data = chart.get_payload(decode=True)
    assert data.startswith(b"\x89PNG") and int.from_bytes(data[16:20], "big") > 200
    assert f'cid:{chart["Content-ID"].strip("<>")}' in html
    assert 'alt="Orders per day"' in html and "<script" not in html.lower()
    # The figure without a title is described by its axes, never "Image"; it arrives opaque.
    assert 'alt="returns by day"' in html and 'alt="Image"' not in html
    figure = next(p for p in pngs if p.get_filename() == "returns-by-day.png")
    alpha = Image.open(io.BytesIO(figure.get_payload(decode=True))).convert("RGBA").getchannel("A")
    assert alpha.getextrema() == (255, 255)
    assert "[image: Orders per day]" in text and "[image: returns by day]" in text


def test_warnings_in_a_sent_notebook_name_the_cell(run: Any) -> None:
    _, _, proc, sent = run
    assert sent, proc.stdout
    html, text = body(sent[0], "html"), body(sent[0], "plain")
    assert "cell [1], line 3: UserWarning: rates are estimated" in text
    assert "cell [1], line 3: UserWarning: rates are estimated" in html
    assert "ipykernel_" not in html and "ipykernel_" not in text


def test_warnings_in_a_captured_cell_name_the_cell(run: Any) -> None:
    _, warned, _, _ = run
    text = body(warned, "plain")
    assert "\u26a0 stderr (with warnings)" in text
    assert "cell [7], line 4: UserWarning: own warning" in text  # the notebook's line numbers
    assert "cell [1], line 6: UserWarning: the feed is late" in text
    assert "ipykernel_" not in text and "ipykernel_" not in body(warned, "html")


def test_an_output_email_cannot_show_is_named_by_its_cell(tmp_path: Path,
                                                          smtp_server: CaptureServer) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('a')\nprint('b')", execution_count=3,
                                          outputs=[nbformat.v4.new_output("stream", text="a\n")]),
                nbformat.v4.new_code_cell("widget()", execution_count=5, outputs=[
                    nbformat.v4.new_output("stream", text="drawing\n"),
                    nbformat.v4.new_output("display_data", data={
                        "application/javascript": "draw()", "text/plain": "<Widget>"})])]
    r = smtp_magic.send_notebook(nb, "a@example.test", config={
        "host": "127.0.0.1", "port": smtp_server.port, "security": "none",
        "sender": "reports@example.test"})
    assert r.exitcode == 1
    assert "Cannot email output 2 of cell [5]: it is drawn by JavaScript" in r.message
    assert smtp_server.count() == 0
