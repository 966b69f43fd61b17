"""What the notebook shows around a message and a form, in words that stay true: the text of
an untrusted preview, a saved form without its kernel, a preview that no longer matches, sizes,
the inbox's count, and the form's words for a sign-in that fails or never answers."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from smtp_magic import _views
from smtp_magic.config import SmtpMagic
from smtp_magic.server import CaptureServer, count_messages
from smtp_magic.widgets import ComposeForm, compose


@pytest.fixture
def form(smtp_server: CaptureServer, tmp_data: Any) -> Iterator[ComposeForm]:
    settings = SmtpMagic().update({"host": "127.0.0.1", "port": smtp_server.port,
                                   "security": "none", "sender": "form@example.test",
                                   "timeout": 10})
    f = compose(settings=settings, namespace={})
    yield f
    f.close()


def wait(predicate: Any, what: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.02)


# -- the notebook -------------------------------------------------------------------------------
def test_a_saved_form_says_what_it_is_without_its_kernel(form: ComposeForm) -> None:
    bundle = form._repr_mimebundle_()
    plain = bundle["text/plain"]
    assert "Compose form" in plain and "run the cell again" in plain, plain
    assert "children" not in plain and "<style>" not in plain


def test_sending_clears_a_preview_of_what_was_typed_before(
        form: ComposeForm, smtp_server: CaptureServer) -> None:
    form.to.value, form.subject.value, form.body.value = "old@example.org", "Old", "first"
    form.preview_button.click()
    assert "Preview, nothing was sent" in form.preview.value
    assert form._preview_box.layout.display is None
    form.to.value, form.subject.value = "new@example.org", "New"  # edited after previewing
    form.send_button.click()
    wait(lambda: not form.sending, lambda: form.status.value)
    assert "Sent \u201cNew\u201d" in form.status.value
    assert form._preview_box.layout.display == "none"
    assert "old@example.org" not in form.preview.value and form.preview.value == ""
    assert smtp_server.messages()[0].rcpt_to == ("new@example.org",)


def test_the_settings_open_from_a_button_and_their_columns_wrap(form: ComposeForm) -> None:
    import ipywidgets as widgets

    panel = form.settings_panel
    assert isinstance(panel.toggle, widgets.ToggleButton)  # a <button>: Tab, Enter, Space
    assert panel.toggle.description == "Connection settings"
    assert panel.body.layout.display == "none" and not panel.opened
    panel.toggle.value = True
    assert panel.body.layout.display is None and panel.opened
    rows = [r for r in panel.body.children if isinstance(r, widgets.HBox)]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    assert form.host.layout.flex == "1 1 260px" and form.host.layout.width == "auto"


def test_one_size_formatter() -> None:
    assert _views.size_text(65) == "65 B"
    assert _views.size_text(1536) == "1.5 kB"
    assert _views.size_text(10 * 2**20) == "10.0 MB"


def test_the_preview_and_the_form_show_a_size_the_same_way(
        form: ComposeForm, tmp_path: Any) -> None:
    from smtp_magic import api
    from smtp_magic.preview import preview_html, preview_text

    path = tmp_path / "small.csv"
    path.write_bytes(b"x" * 65)
    form.attachments.add([str(path)])  # a path given as an attachment
    form.to.value = "a@example.org"
    form.attachments.render()
    assert "65 B" in form.attachment_list.value
    composed = api.build_message(form.request(), config=form.settings)
    assert "65 B" in preview_html(composed) and "65 B" in preview_text(composed)
    assert "kB" not in preview_text(composed)


def _message(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", f"No. {n}"
    msg.set_content("Hello,\n\nline two.\n")
    msg.add_alternative("<p>Hello,</p><p>line <b>two</b>.</p>", subtype="html")
    return msg


def test_the_inbox_says_how_many_of_how_many(tmp_path: Any) -> None:
    from smtp_magic.server import messages

    with CaptureServer(tmp_path / "mail") as server:
        import smtplib

        with smtplib.SMTP(server.host, server.port) as client:
            for n in range(5):
                client.send_message(_message(n))
        server.wait_for(5)
        shown = messages(server.maildir, limit=3)
        inbox = _views.Inbox(shown, str(server.maildir), total=count_messages(server.maildir))
    assert repr(inbox).startswith(f"3 of 5 messages (the newest) in {server.maildir}")
    assert "<b>3 of 5 messages (the newest)</b>" in inbox._repr_html_()
    everything = _views.Inbox(shown, "DIR", total=3)
    assert repr(everything).startswith("3 message(s) in DIR")


def test_untrusted_fallback_holds_the_text_part_and_how_to_trust() -> None:
    shown = _views.message_frame(_message(1))
    trusted, untrusted = shown.split("<div class='smtp-magic-untrusted'", 1)
    # a <style> (which the sanitiser removes) shows the frame and hides the text; without it
    # the inline styles hide the frame's box
    style = re.match(r"<style>(.*?)</style>", shown)
    assert style and ".smtp-magic-frame-box{display:block !important}" in style[1]
    assert ".smtp-magic-untrusted{display:none !important}" in style[1]
    assert "<div class='smtp-magic-frame-box' style='display:none'><div" in trusted
    assert "<iframe" in trusted and "<iframe" not in untrusted
    assert "Hello,\n\nline two." in untrusted and "Trust Notebook" in untrusted


def test_untrusted_fallback_of_an_html_only_message_is_its_text() -> None:
    msg = EmailMessage()
    msg["Subject"] = "html only"
    msg.set_content("<p>Only <b>HTML</b> &amp; more</p>", subtype="html")
    untrusted = _views.message_frame(msg).split("smtp-magic-untrusted", 1)[1]
    assert "Only HTML &amp; more" in untrusted


def test_the_outbox_table_lets_a_message_id_break() -> None:
    mid = "<179572832898.21867.16096065996337632739@example.org>"
    table = _views.Table(("status", "message id", "reason"), [("failed", mid, "refused")])
    cells = re.findall(r"<td style='([^']*)'>", table._repr_html_())
    assert "word-break:break-all" in cells[1]
    assert "word-break" not in cells[0] and "word-break" not in cells[2]


# -- plain words for a sign-in that fails or hangs ------------------------------------------------
def oauth_form(issuer: str, timeout: float) -> ComposeForm:
    pytest.importorskip("authlib")
    settings = SmtpMagic().update({
        "host": "127.0.0.1", "port": 587, "security": "starttls", "timeout": timeout,
        "oauth2_provider": issuer, "oauth2_client_id": "smtp-magic-test",
        "username": "me@example.test"})
    return compose(settings=settings, namespace={})


def test_an_unreachable_issuer_is_one_sentence_in_the_form(
        refused_port: int, tmp_data: Any) -> None:
    form = oauth_form(f"https://127.0.0.1:{refused_port}", timeout=5)
    try:
        form.sign_in_button.click()
        wait(lambda: not form.sign_in_button.disabled, lambda: form.settings_status.value)
        text = re.sub(r"<[^>]+>", "", form.settings_status.value)
        assert "Cannot reach the OAuth2 authorization server" in text, text
        assert "the connection was refused" in text, text
        for raw in ("HTTPSConnectionPool", "port=", "Max retries", "exit", "%smtp_config",
                    "smtp-magic ", "--"):
            assert raw not in text, (raw, text)
        assert text.rstrip().endswith(".") and text.count(". ") == 0, text  # one sentence
        assert form.cancel_sign_in.layout.display == "none"
    finally:
        form.close()


@contextlib.contextmanager
def silent_issuer() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_silent_issuer_can_be_cancelled(tmp_data: Any) -> None:
    with silent_issuer() as port:
        form = oauth_form(f"https://127.0.0.1:{port}", timeout=1)
        try:
            form.sign_in_button.click()
            assert "Starting the OAuth2 sign-in" in form.settings_status.value
            assert form.cancel_sign_in.layout.display is None  # offered while it waits
            form.cancel_sign_in.click()
            assert "Sign-in cancelled." in form.settings_status.value
            assert not form.sign_in_button.disabled
            assert form.cancel_sign_in.layout.display == "none"
            # The abandoned attempt times out meanwhile (its thread ends once its outcome is
            # handed to the form): not shown.
            wait(lambda: not any(t.name == "smtp-magic-sign-in" for t in threading.enumerate()),
                 lambda: "the abandoned sign-in to time out")
            assert "Sign-in cancelled." in form.settings_status.value
        finally:
            form.close()


def test_send_notebook_without_nbformat_names_the_small_extra(
        no_module: Any, tmp_path: Any) -> None:
    """Not [all] (hundreds of MB): [notebook] is what a plain install lacks."""
    from smtp_magic.errors import MissingDependency
    from smtp_magic.nbreport import read_notebook

    no_module("nbformat")
    with pytest.raises(MissingDependency) as info:
        read_notebook(tmp_path / "out.ipynb")
    assert info.value.message == ("Sending a notebook needs nbformat: "
                                  "pip install 'smtp-magic[notebook]'.")


def test_the_readme_logging_recipe_with_local_shows_no_capture_server_chatter(
        tmp_path: Any) -> None:
    """The README's recipe, as written, then a --local send, in a fresh IPython: the cell's
    stderr has the conversation (smtp_magic.conversation) but none of aiosmtpd's lines."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Logging", 1)[1]
    recipe = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert recipe and "basicConfig" in recipe[1], "the README's logging recipe moved"
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        f"ip.run_cell({recipe[1]!r})\n"
        "ip.run_line_magic('load_ext', 'smtp_magic')\n"
        "ip.run_line_magic('smtp_config', '--local')\n"
        "r = ip.run_cell('%%smtp_send --to a@example.org --subject Logged --sync\\nhi')\n"
        "assert r.success\n")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "IPYTHONDIR": str(tmp_path / "ipython"),
           "SMTP_MAGIC_CAPTURE_DIR": str(tmp_path / "capture")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "smtp_magic.conversation" in done.stderr  # the recipe works
    assert "mail.log" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize(("source", "expected"), [
    ("Hi\n{% if vip %}dear", ("The template has a syntax error on line 2: the template ends "
     "before its {% if %} is closed with {% endif %}.")),
    ("{% for r in rows %}{{ r }}", ("The template has a syntax error on line 1: the template "
     "ends before its {% for %} is closed with {% endfor %}.")),
    ("{% endif %}", ("The template has a syntax error on line 1: Encountered unknown tag "
     "'endif'.")),
])
def test_a_template_syntax_error_is_one_clean_sentence(source: str, expected: str) -> None:
    from smtp_magic.errors import InvalidRequest
    from smtp_magic.render import render_template

    with pytest.raises(InvalidRequest) as info:
        render_template(source, {}, "text/html")
    assert info.value.message == expected
    assert ".." not in info.value.message
