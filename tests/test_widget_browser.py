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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import jupyter_lab, log, wait_kernel_ready, write_notebook

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "alice", "Tr0ub4dor-" + secrets.token_hex(6)  # unique: searched for in the file


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
    write_notebook(d / "compose.ipynb", [SETTINGS_CELL.format(port=smtp.port, user=USER),
                                          FORM_CELL])
    # Widget state is saved with the notebook (jupyterlab-manager's saveState), so the saved
    # file holds every widget's state: the place a password would leak to.
    widget_settings = (d / ".jcfg" / "lab" / "user-settings" / "@jupyter-widgets"
                       / "jupyterlab-manager")
    widget_settings.mkdir(parents=True)
    (widget_settings / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    with jupyter_lab(d) as (base, token):
        yield f"{base}/lab/tree/compose.ipynb?token={token}", d


def test_compose_form_in_jupyterlab(browser: Any, lab: tuple[str, Path],
                                    smtp: CaptureServer) -> None:
    from playwright.sync_api import expect

    url, d = lab
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    try:
        page.goto(url)
        wait_kernel_ready(page)
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
