"""Whole-notebook reports: a notebook executed by papermill, emailed by send-notebook, parsed on arrival."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import TmpData

from smtp_magic import send_notebook
from smtp_magic.server import CaptureServer

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
papermill = pytest.importorskip("papermill")

pytestmark = pytest.mark.kernel

GMAIL_CLIP = 102 * 1024
LINES = 20_000  # a cell that prints this many lines: too long for an email


def code(source: str, *tags: str) -> Any:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """report.ipynb run by papermill with week=12: (the output path, the returned NotebookNode)."""
    root = tmp_path_factory.mktemp("report")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Weekly report\n\nSales by *region*."),
        code("week = 1", "parameters"),
        code('print(f"week {week}: hello from the notebook")'),
        code('import pandas as pd\n'
             'df = pd.DataFrame({"region": ["north", "south"], "sales": [120, 80]})\ndf'),
        code("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\n"
             "ax.bar(df.region, df.sales)\nplt.show()"),
        code('print("only the output of this cell")', "remove-input"),
        code(f"for i in range({LINES}):\n    print('line', i)"),
        code('secret_step = "never shown"', "remove-cell"),
    ]
    source, out = root / "report.ipynb", root / "out.ipynb"
    nbformat.write(nb, source)
    result = papermill.execute_notebook(str(source), str(out), parameters={"week": 12},
                                        kernel_name="python3", progress_bar=False,
                                        cwd=str(root))
    return out, result


def run_cli(*args: str, cwd: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["exitcode"] == proc.returncode
    return proc.returncode, answer, proc.stderr


@pytest.fixture
def conn(smtp_server: CaptureServer, tmp_path: Path) -> Path:
    path = tmp_path / "conn.json"
    path.write_text(json.dumps({"target": "127.0.0.1", "port": smtp_server.port,
                                "security": "none", "from": "reports@example.test"}))
    return path


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_with_code_images_inline_and_a_long_output_attached(
        executed: tuple[Path, Any], conn: Path, smtp_server: CaptureServer,
        tmp_path: Path) -> None:
    out, _ = executed
    rc, answer, _ = run_cli("send-notebook", str(out), "--to", "team@example.test",
                            "--config", str(conn), cwd=tmp_path)
    assert rc == 0, answer
    (got,) = smtp_server.wait_for(1)
    msg = got.message
    assert msg["Subject"] == "Weekly report"  # the first heading
    assert msg["Message-ID"] == answer["message_id"]
    html = html_of(msg)
    # Code (with the parameters papermill injected) and outputs, in notebook order.
    marks = ["Weekly report", "week = 12", 'print(f"week {week}', "week 12: hello from the notebook",
             "north", "cid:", "only the output of this cell", "line 0"]
    at = [html.find(m) for m in marks]
    assert -1 not in at, list(zip(marks, at))
    assert at == sorted(at)
    assert 'print("only the output' not in html  # remove-input
    assert "secret_step" not in html  # remove-cell
    # The figure is an inline image referenced by cid, never a data: URI.
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    (image,) = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert image.get_payload(decode=True).startswith(b"\x89PNG")
    assert f'cid:{image["Content-ID"].strip("<>")}' in html and "data:image" not in html
    # Under Gmail's clipping size; the 20,000 lines are attached in full.
    assert len(html.encode()) < GMAIL_CLIP
    (stdout,) = [a for a in msg.iter_attachments() if a.get_filename() == "stdout.txt"]
    assert stdout.get_payload(decode=True).decode().count("\n") >= LINES - 1
    text = msg.get_body(("plain",)).get_content()
    assert "week 12: hello from the notebook" in text and "<" not in text.replace("<=", "")


def test_no_input_shows_outputs_only(executed: tuple[Path, Any], conn: Path,
                                     smtp_server: CaptureServer, tmp_path: Path) -> None:
    out, _ = executed
    rc, answer, _ = run_cli("send-notebook", str(out), "--to", "team@example.test", "--no-input",
                            "--subject", "Outputs only", "--reply-to", "desk@example.test",
                            "--config", str(conn), cwd=tmp_path)
    assert rc == 0, answer
    msg = smtp_server.wait_for(1)[0].message
    html = html_of(msg)
    assert msg["Subject"] == "Outputs only"
    assert msg["Reply-To"] == "desk@example.test"  # the option table shared with %%smtp_send
    assert "print(" not in html and "week = 12" not in html and "import pandas" not in html
    assert "Weekly report" in html  # Markdown stays, as nbconvert --no-input keeps it
    assert "week 12: hello from the notebook" in html and "north" in html and "cid:" in html


def test_attach_notebook_and_the_python_api(executed: tuple[Path, Any], conn: Path,
                                            smtp_server: CaptureServer, tmp_path: Path) -> None:
    out, node = executed
    rc, answer, _ = run_cli("send-notebook", str(out), "--to", "team@example.test",
                            "--attach-notebook", "--config", str(conn), cwd=tmp_path)
    assert rc == 0, answer
    # From a papermill pipeline in Python: the NotebookNode papermill returned.
    r = send_notebook(node, to="boss@example.test", subject="From papermill",
                      attach_notebook=True, no_input=True, config=str(conn))
    assert r.ok, r
    for got in smtp_server.wait_for(2):
        (nb_part,) = [a for a in got.message.iter_attachments()
                      if a.get_filename() == "out.ipynb"]
        assert nb_part.get_content_type() == "application/x-ipynb+json"
        back = nbformat.reads(nb_part.get_payload(decode=True).decode(), as_version=4)
        assert back.cells[0].source.startswith("# Weekly report")
        assert any("week 12: hello" in json.dumps(c.get("outputs", [])) for c in back.cells)


def test_unexecuted_and_missing_notebooks_are_exit_1(tmp_path: Path, conn: Path,
                                                     smtp_server: CaptureServer,
                                                     tmp_data: TmpData) -> None:
    fresh = tmp_path / "fresh.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [code("print(1)")]
    nbformat.write(nb, fresh)
    rc, answer, _ = run_cli("send-notebook", str(fresh), "--to", "a@example.test",
                            "--config", str(conn), cwd=tmp_path)
    assert rc == 1 and "has not been executed" in answer["message"] and "papermill" in answer["message"]
    rc, answer, _ = run_cli("send-notebook", str(tmp_path / "nope.ipynb"), "--to",
                            "a@example.test", "--config", str(conn), cwd=tmp_path)
    assert rc == 1 and answer["message"] == f"The notebook {str(tmp_path / 'nope.ipynb')!r} does not exist."
    (tmp_path / "broken.ipynb").write_text("{ not json")
    rc, answer, _ = run_cli("send-notebook", str(tmp_path / "broken.ipynb"), "--to",
                            "a@example.test", "--config", str(conn), cwd=tmp_path)
    assert rc == 1 and "cannot be read" in answer["message"] and "\n" not in answer["message"]
    assert smtp_server.count() == 0
