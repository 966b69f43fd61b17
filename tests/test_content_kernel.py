"""Issue 12 in a real kernel run headless (nbclient, as papermill and nbval run notebooks):
--capture mails what the notebook shows at the end, charts become images, a raising repr
leaves no error output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernels import kernel_environment
from nbclient import NotebookClient

from smtp_magic.server import CaptureServer

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
pytestmark = pytest.mark.kernel

CELLS = [
    "%load_ext smtp_magic",
    "%smtp_config --host 127.0.0.1 --port {port} --security none --from nb@example.test",
    # a live display, a progress loop, stderr and a warning
    ("%%smtp_send --to a@example.test --subject Live --capture\n"
     "import sys, time, warnings\n"
     "from IPython.display import display, clear_output, Markdown\n"
     "status = display(Markdown('status: **starting**'), display_id=True)\n"
     "for i in range(4):\n"
     "    clear_output(wait=True)\n"
     "    print(f'step {i} of 3')\n"
     "done = display(Markdown('result: pending'), display_id=True)\n"
     "done.update(Markdown('result: **42**'))\n"
     "print('disk almost full', file=sys.stderr)\n"
     "warnings.warn('rates are estimated')\n"),
    # charts displayed in the kernel (their JavaScript MIME types) become images
    ("%%smtp_send --to a@example.test --subject Charts --capture\n"
     "import altair as alt, pandas as pd, plotly.graph_objects as go\n"
     "alt.Chart(pd.DataFrame({'x': [1, 2], 'y': [2, 1]})).mark_bar().encode(x='x:O', y='y')"
     ".properties(title='Altair bars').display()\n"
     "go.Figure(go.Bar(x=['a', 'b'], y=[1, 2]), layout={'title': 'Plotly bars'}).show()\n"),
    # a repr that raises: a fallback and a note, never a traceback
    ("class Broken:\n"
     "    def _repr_html_(self):\n"
     "        raise ValueError('no html today')\n"
     "    def __repr__(self):\n"
     "        return 'Broken()'\n"
     "report = Broken()"),
    "%%smtp_send --to a@example.test --subject Fallback\n<p>Report:</p>{{ report }}",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    pytest.importorskip("kaleido")
    root = tmp_path_factory.mktemp("content-kernel")
    with CaptureServer(root / "mail") as server:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c.replace("{port}", str(server.port)))
                    for c in CELLS]
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(root)}}).execute(
            env=kernel_environment(root))
        yield nb, {m.subject: m.message for m in server.wait_for(3)}


def html_of(msg: Any) -> str:
    return str(msg.get_body(("html",)).get_content())


def test_capture_mails_the_final_state_with_stderr_and_warnings_marked(run: Any) -> None:
    _, messages = run
    html = html_of(messages["Live"])
    for stale in ("step 0", "step 2", "starting", "pending"):
        assert stale not in html, stale
    assert "step 3 of 3" in html and "result: <strong>42</strong>" in html
    assert "\u26a0 stderr (with warnings)" in html
    assert "disk almost full" in html and "UserWarning: rates are estimated" in html
    text = messages["Live"].get_body(("plain",)).get_content()
    assert "\u26a0 stderr (with warnings)" in text and "rates are estimated" in text


def test_charts_displayed_in_a_kernel_arrive_as_images(run: Any) -> None:
    _, messages = run
    msg = messages["Charts"]
    html = html_of(msg)
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 2
    assert all(p.get_payload(decode=True).startswith(b"\x89PNG") for p in images)
    assert 'alt="Altair bars"' in html and 'alt="Plotly bars"' in html
    assert sorted(p.get_filename() for p in images) == ["altair-bars.png", "plotly-bars.png"]
    assert "<script" not in html.lower()


def test_a_raising_repr_leaves_no_error_output(run: Any) -> None:
    nb, messages = run
    cell = next(c for c in nb.cells if "--subject Fallback" in c.source)
    outputs = json.dumps(cell.outputs)
    assert all(o.output_type != "error" for o in cell.outputs)
    assert "Traceback" not in outputs and "ValueError" in outputs  # named in the status line
    assert "variable 'report' was sent as text: its _repr_html_ raised ValueError" in outputs
    assert "Broken()" in html_of(messages["Fallback"])
    assert all(o.output_type != "error" for c in nb.cells for o in c.get("outputs", []))


def test_the_notebook_saves(run: Any, tmp_path: Path) -> None:
    nb, _ = run
    nbformat.write(nb, tmp_path / "executed.ipynb")  # nothing unserialisable in the outputs
