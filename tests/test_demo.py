"""`smtp-magic demo`: runs a notebook against a fresh capture server and lists what arrived."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.kernel


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell("smtp_host = 'localhost'\nsmtp_port = 25")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "%load_ext smtp_magic\n"
            "%smtp_config --host {smtp_host} --port {smtp_port} --security none "
            "--from demo@example.test"
        ),
        nbformat.v4.new_code_cell(
            "%%smtp_send --to ann@example.test --subject 'Demo test' --attach notes.txt\n"
            "<p>Hello from the demo</p>"
        ),
    ]
    (path.parent / "notes.txt").write_text("attached")
    nbformat.write(nb, path)
    return path


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMTP_MAGIC_CAPTURE_DIR": str(tmp_path / "capture")}
    return subprocess.run([sys.executable, "-m", "smtp_magic", "demo", *args], capture_output=True,
                          check=False, text=True, env=env, cwd=tmp_path, timeout=300)


def test_demo_prints_what_arrived_and_where(tmp_path):
    notebook = _notebook(tmp_path / "tiny.ipynb")
    run = _demo(tmp_path, "--notebook", str(notebook), "--output", str(tmp_path / "out.ipynb"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Delivered 1 message(s) to the capture server" in run.stdout
    assert "Subject:     Demo test" in run.stdout
    assert "Attachments: notes.txt (text/plain)" in run.stdout
    (eml,) = (tmp_path / "capture" / "new").glob("*.eml")
    assert f"File:        {eml}" in run.stdout
    assert (tmp_path / "out.ipynb").is_file()


def test_demo_with_a_missing_notebook_says_so_in_one_line(tmp_path):
    run = _demo(tmp_path, "--notebook", str(tmp_path / "nope.ipynb"))
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "does not exist" in run.stderr
