"""The compose form in a real browser: JupyterLab 4 + Debian's chromium driven by Playwright.

The test starts JupyterLab on 127.0.0.1 (isolated config/data/runtime dirs), opens a notebook it
generated, runs the cell that shows ``smtp_magic.compose()``, fills the form like a user, sends to
a real SMTP server (a CaptureServer with AUTH in this process, so the typed password is used to
log in), saves the notebook with widget state and checks the password is not in the file.
The screenshot goes to the test's temp dir; ``SHOT=docs/compose-form.png`` refreshes the README's.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
USER, PASSWORD = "alice", "Tr0ub4dor-" + secrets.token_hex(6)  # unique: searched for in the file
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.2f}s] {msg}", flush=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("SMTP_MAGIC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test is required (SMTP_MAGIC_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def die_with_pytest(cmd: list[str]) -> list[str]:
    """Kill the server if pytest itself is killed, so no run leaves one behind (Linux).

    KILL, not TERM: a JupyterLab still starting up was seen to hang on SIGTERM. Its kernel
    exits by itself once its parent is gone (ipykernel's parent poller).
    """
    setpriv = shutil.which("setpriv")  # util-linux; the death signal survives its exec
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()  # our own child, by its PID
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SETTINGS_CELL = """\
import smtp_magic
smtp_magic.current().update({{
    "host": "127.0.0.1", "port": {port}, "security": "none", "username": "{user}",
    "allow_plaintext_auth": True, "sender": "lab@example.test", "timeout": 10,
}})
"""
FORM_CELL = """\
import pandas as pd
sales = pd.DataFrame({"region": ["north", "south"], "total": [1200, 950]})
smtp_magic.compose(body="Hello,\\n\\nthis week's **numbers** are attached.",
                   content_type="text/markdown")
"""


def make_notebook(path: Path, smtp_port: int) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETTINGS_CELL.format(port=smtp_port, user=USER)),
                nbformat.v4.new_code_cell(FORM_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        log(f"chromium {b.version} launched")
        yield b
        b.close()


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureServer]:
    """A real SMTP server in this process that requires AUTH (plaintext, on loopback)."""
    server = CaptureServer(tmp_path_factory.mktemp("capture"), users={USER: PASSWORD},
                           require_auth=True)
    with server:
        yield server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, smtp: CaptureServer
        ) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("lab")
    make_notebook(d / "compose.ipynb", smtp.port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.update(
        # every Jupyter/IPython dir isolated: the host's config and workspaces stay out
        JUPYTER_CONFIG_DIR=str(d / ".jcfg"), JUPYTER_DATA_DIR=str(d / ".jdata"),
        JUPYTER_RUNTIME_DIR=str(d / ".jrun"), IPYTHONDIR=str(d / ".ipy"),
        JUPYTER_PLATFORM_DIRS="1", XDG_DATA_HOME=str(d / ".xdg"),
        SMTP_MAGIC_OUTBOX=str(d / "outbox"), SMTP_MAGIC_CAPTURE_DIR=str(d / "capture"),
    )
    labconfig = d / ".jcfg" / "labconfig"
    labconfig.mkdir(parents=True)
    # JupyterLab 4's "official Jupyter news?" toast would cover the page.
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # ... and widget state is saved with the notebook (jupyterlab-manager's saveState), so the
    # saved file holds every widget's state: the place a password would leak to.
    widget_settings = (d / ".jcfg" / "lab" / "user-settings" / "@jupyter-widgets"
                       / "jupyterlab-manager")
    widget_settings.mkdir(parents=True)
    (widget_settings / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))

    port, token = free_port(), secrets.token_hex(16)
    log("starting jupyter lab")
    with open(d / "lab.log", "w") as logfile:
        proc = subprocess.Popen(die_with_pytest(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             f"--IdentityProvider.token={token}", f"--port={port}", "--ip=127.0.0.1",
             f"--ServerApp.root_dir={d}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]),
            env=env, stdout=logfile, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        log("jupyter lab answers")
        yield f"http://127.0.0.1:{port}/lab/tree/compose.ipynb?token={token}", d
    finally:
        stop(proc)
        log("jupyter lab stopped")


def test_compose_form_in_jupyterlab(browser: Any, lab: tuple[str, Path],
                                    smtp: CaptureServer) -> None:
    from playwright.sync_api import expect

    url, d = lab
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    try:
        page.goto(url)
        # 'idle' shows once before the kernel is connected; the debugger button is enabled
        # only after the kernel_info reply (JupyterLab's Galata waits the same way).
        page.wait_for_function("""() => {
            const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
            const b = document.querySelector('.jp-DebuggerBugButton');
            return s && s.getAttribute('data-status') === 'idle'
                && b && b.getAttribute('aria-disabled') === 'false';
        }""", timeout=60_000)
        log("kernel ready")
        run = page.locator(".jp-NotebookPanel-toolbar "
                           "[data-command='notebook:run-cell-and-select-next']")
        run.click()  # the settings cell
        run.click()  # the form cell
        to = page.get_by_placeholder("alice@example.org, Bob <bob@example.org>")
        to.wait_for(timeout=60_000)
        log("form rendered")

        to.fill("bob@")
        expect(page.get_by_text("The To address 'bob@' is not a valid email address.")
               ).to_be_visible()  # flagged as you type
        to.fill("Bob <bob@example.org>")
        expect(page.get_by_text("is not a valid email address")).to_have_count(0)
        page.get_by_placeholder("What is it about?").fill("Numbers from the lab")

        page.get_by_text("Connection settings").click()
        password = page.get_by_placeholder("type, then Enter")
        password.fill(PASSWORD)
        password.press("Enter")
        expect(page.get_by_text("Password set")).to_be_visible()
        expect(password).to_have_value("")  # cleared by the kernel, in the browser too

        csv = b"region,total\nnorth,10\nsouth,20\n"
        # ipywidgets 8 keeps the FileUpload's <input type=file> out of the DOM and clicks it
        # from the button: take the file chooser that click opens, as a user would.
        with page.expect_file_chooser() as chooser:
            page.locator("button.widget-upload").click()
        chooser.value.set_files(
            files=[{"name": "numbers.csv", "mimeType": "text/csv", "buffer": csv}])
        expect(page.get_by_text("numbers.csv")).to_be_visible()
        page.locator(".widget-select-multiple select").select_option(
            label="sales  \u2014 DataFrame 2\u00d72")
        expect(page.get_by_text("sales.csv")).to_be_visible()
        log("form filled")

        page.locator(".jp-OutputArea-output button.widget-button",
                     has_text=re.compile(r"^\s*Send$")).click()
        expect(page.get_by_text("Sent \u201cNumbers from the lab\u201d to 1 recipient")
               ).to_be_visible(timeout=20_000)
        log("form shows the Message-ID")
        (got,) = smtp.messages()
        msg = got.message
        assert msg["Subject"] == "Numbers from the lab"
        assert msg["To"] == "Bob <bob@example.org>" and got.rcpt_to == ("bob@example.org",)
        html_part = msg.get_body(("html",))
        assert html_part is not None and "<strong>numbers</strong>" in html_part.get_content()
        atts = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
        assert set(atts) == {"numbers.csv", "sales.csv"}
        # text attachments travel 7bit: their lines arrive as CRLF, MIME's canonical text form
        assert atts["numbers.csv"].replace("\r\n", "\n").encode() == csv
        assert "north" in atts["sales.csv"]

        page.locator(".jp-Notebook").click(position={"x": 5, "y": 5})  # focus, command mode
        shot = Path(os.environ.get("SHOT", d / "compose-form.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".jp-Cell").nth(1).screenshot(path=str(shot))
        log(f"screenshot {shot}")

        saved = d / "compose.ipynb"
        before = saved.stat().st_mtime_ns
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 15
        while saved.stat().st_mtime_ns == before:
            assert time.monotonic() < deadline, "the notebook was not saved"
            time.sleep(0.1)
        text = saved.read_text()
        log("notebook saved")
        state = json.loads(text)["metadata"]["widgets"][
            "application/vnd.jupyter.widget-state+json"]["state"]
        models = {m["model_name"] for m in state.values()}
        assert {"PasswordModel", "FileUploadModel", "TextModel"} <= models  # state was saved
        assert "Bob <bob@example.org>" in text  # ... with the form's values
        assert PASSWORD not in text
    finally:
        page.close()
