"""The compose form without a browser: fill it, click, and check what a real SMTP server got."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets
import pytest
from ipywidgets.embed import embed_data

from smtp_magic import config as config_module
from smtp_magic.config import SmtpMagic
from smtp_magic.models import Response
from smtp_magic.server import CaptureServer
from smtp_magic.widgets import ComposeForm, attachable_variables, compose


def upload_value(name: str, data: bytes, mime: str = "application/octet-stream"
                 ) -> tuple[dict[str, Any], ...]:
    """What ipywidgets 8's FileUpload holds after the browser sent one file."""
    return ({"name": name, "type": mime, "size": len(data), "content": memoryview(data),
             "last_modified": dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)},)


def body(msg: Any, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def last(form: ComposeForm) -> Response:
    assert form.last_response is not None, form.status.value
    return form.last_response


def wait_until_done(form: ComposeForm, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while form.sending:
        assert time.monotonic() < deadline, f"still sending: {form.status.value}"
        time.sleep(0.02)


@pytest.fixture
def settings(smtp_server: CaptureServer, tmp_data: Any) -> SmtpMagic:
    return SmtpMagic().update({
        "host": "127.0.0.1", "port": smtp_server.port, "security": "none",
        "sender": "form@example.test", "timeout": 10,
    })


@pytest.fixture
def form(settings: SmtpMagic) -> Iterator[ComposeForm]:
    f = compose(settings=settings, namespace={})
    yield f
    f.close()


def test_compose_returns_a_box_with_a_send_button(form: ComposeForm) -> None:
    assert isinstance(form, widgets.Box)
    assert "Send" in form.send_button.description
    assert form.settings_panel in form.children
    assert not form.send_button.disabled


def test_send_delivers_to_the_real_server(form: ComposeForm, smtp_server: CaptureServer) -> None:
    payload = bytes(range(256)) * 40
    form.to.value = "bob@example.org, Carol <carol@example.org>"
    form.cc.value = "dave@example.org"
    form.bcc.value = "eve@example.org"
    form.subject.value = "Weekly numbers"
    form.content_type.value = "text/plain"
    form.body.value = "Hello from the form"
    form.upload.value = upload_value("numbers.bin", payload)
    assert "numbers.bin" in form.attachment_list.value and "10.0 kB" in form.attachment_list.value

    form.send_button.click()
    assert form.send_button.disabled and "Sending" in form.status.value  # progress, at once
    wait_until_done(form)

    assert form.last_response is not None and form.last_response.ok, form.status.value
    assert html.unescape(form.status.value).count(last(form).message_id or "?") == 1
    assert not form.send_button.disabled and form.send_button.description == "Send"
    (got,) = smtp_server.messages()
    msg = got.message
    assert msg["Subject"] == "Weekly numbers"
    assert msg["To"] == "bob@example.org, Carol <carol@example.org>"
    assert msg["Cc"] == "dave@example.org" and msg["Bcc"] is None
    assert set(got.rcpt_to) == {"bob@example.org", "carol@example.org", "dave@example.org",
                                "eve@example.org"}
    assert msg["Message-ID"] == form.last_response.message_id
    assert body(msg, "plain").strip() == "Hello from the form"
    (att,) = msg.iter_attachments()
    assert att.get_filename() == "numbers.bin" and att.get_content() == payload
    assert "Sent \u201cWeekly numbers\u201d to 4 recipients" in form.status.value

    # The form stays usable: a second send goes out too.
    form.subject.value = "Second"
    form.upload.value = ()
    form.send_button.click()
    wait_until_done(form)
    assert last(form).ok and smtp_server.count() == 2
    assert {m.subject for m in smtp_server.messages()} == {"Weekly numbers", "Second"}


def test_html_body_gets_a_text_alternative(form: ComposeForm, smtp_server: CaptureServer) -> None:
    form.to.value = "bob@example.org"
    form.subject.value = "html"
    form.body.value = "<p>Hi <b>Bob</b></p>"
    assert form.content_type.value == "text/html"  # the settings' default content type
    form.send_button.click()
    wait_until_done(form)
    msg = smtp_server.messages()[0].message
    assert "<b>Bob</b>" in body(msg, "html")
    assert "Hi Bob" in body(msg, "plain")


def test_failure_shows_the_reason_and_keeps_the_form_usable(
    settings: SmtpMagic, refused_port: int
) -> None:
    settings.port = refused_port
    form = compose(settings=settings, to="bob@example.org", subject="s", namespace={})
    assert form.port.value == refused_port
    form.send_button.click()
    wait_until_done(form)
    assert form.last_response is not None and form.last_response.exitcode == 2
    assert "Not sent: " in form.status.value and "exit" not in form.status.value
    assert form.last_response.message.split()[0] in form.status.value
    assert not form.send_button.disabled
    form.close()


def test_invalid_address_is_flagged_as_you_type_and_nothing_is_sent(
    form: ComposeForm, smtp_server: CaptureServer
) -> None:
    flag = form._flags["cc"]
    form.to.value = "bob@example.org"
    form.cc.value = "carol@example.org, bob@"
    assert "&#x27;bob@&#x27; is not a valid email address" in flag.value
    assert flag.layout.display != "none" and form.send_button.disabled
    assert "bob@" in form.send_button.tooltip

    form.send_button.click()  # a click from code still runs the handler: it must refuse
    # The handler refuses before it submits anything: not sending when the click returns.
    assert not form.sending and "Nothing was sent" in form.status.value
    assert smtp_server.count() == 0

    form.cc.value = "carol@example.org"
    assert flag.value == "" and flag.layout.display == "none" and not form.send_button.disabled


def test_missing_recipient_is_reported(form: ComposeForm, smtp_server: CaptureServer) -> None:
    form.subject.value = "nobody"
    form.send_button.click()
    assert "no recipient" in form.status.value and not form.sending
    assert smtp_server.count() == 0


def test_attachment_over_the_limit_blocks_send(form: ComposeForm,
                                               smtp_server: CaptureServer) -> None:
    form.settings.attachment_size = 0.001  # 1 kB
    form.to.value = "bob@example.org"
    form.upload.value = upload_value("big.bin", b"x" * 2000)
    assert "over the 1.0 kB limit" in form.attachment_list.value
    assert form.send_button.disabled and "big.bin" in form.send_button.tooltip
    form.send_button.click()  # refused in the handler: not sending when the click returns
    assert not form.sending
    assert "over the 1.0 kB limit" in form.status.value and smtp_server.count() == 0

    form.settings.attachment_size = 1  # raising the limit lifts the block
    assert "over the" not in form.attachment_list.value and not form.send_button.disabled


def test_preview_shows_the_message_and_sends_nothing(
    form: ComposeForm, smtp_server: CaptureServer
) -> None:
    form.to.value = "bob@example.org"
    form.subject.value = "Preview me"
    form.content_type.value = "text/markdown"
    form.body.value = "# Title\n\nSome *text*"
    form.upload.value = upload_value("a.csv", b"a,b\n1,2\n", "text/csv")
    form.preview_button.click()
    assert "Preview, nothing was sent" in form.preview.value
    assert "Preview me" in form.preview.value and "a.csv" in form.preview.value
    # Markdown rendered and laid out like a cell's (in srcdoc, so escaped)
    assert re.search(r"&lt;h1\b[^<]*?&gt;Title&lt;/h1&gt;", form.preview.value)
    assert "max-width:720px" in form.preview.value
    assert form._preview_box.layout.display is None
    assert not form.sending and smtp_server.count() == 0  # the preview is made in the click
    form.close_preview.click()
    assert form._preview_box.layout.display == "none"


def test_settings_are_linked_both_ways(form: ComposeForm, settings: SmtpMagic) -> None:
    settings.port = 2526
    settings.host = "mail.example.org"
    settings.security = "starttls"
    settings.username = "alice@example.org"
    settings.timeout = 12.5
    assert (form.port.value, form.host.value, form.security.value, form.username.value,
            form.timeout.value) == (2526, "mail.example.org", "starttls", "alice@example.org", 12.5)

    form.port.value = 587
    form.host.value = "smtp.example.net"
    form.security.value = "tls"
    form.username.value = "bob"
    form.timeout.value = 5
    assert (settings.port, settings.host, settings.security, settings.username,
            settings.timeout) == (587, "smtp.example.net", "tls", "bob", 5)
    form.username.value = ""
    assert settings.username is None


def test_invalid_setting_is_shown_not_raised(form: ComposeForm, settings: SmtpMagic) -> None:
    old = settings.port
    form.port.value = 0  # must not raise out of the widget callback
    assert settings.port == old
    assert "port must be between 1 and 65535" in form.settings_status.value
    form.host.value = "bad host"
    assert "is not a host name" in form.settings_status.value
    form.port.value = 2525
    form.host.value = "ok.example.org"
    assert settings.port == 2525 and form.settings_status.value == ""


def test_password_moves_into_the_settings_and_leaves_widget_state(
    form: ComposeForm, settings: SmtpMagic
) -> None:
    assert "No password" in form.password_hint.value
    form.password.value = "hunter2-very-secret"
    assert form.password.value == ""
    assert settings.password is not None and settings.password.reveal() == "hunter2-very-secret"
    assert "Password set" in form.password_hint.value
    # Everything a saved notebook would store about every widget (ipywidgets' embed state).
    state = json.dumps(embed_data(views=[form])["manager_state"], default=str)
    assert "hunter2" not in state
    assert "hunter2" not in repr(settings) and "hunter2" not in form.password_hint.value


def test_typed_password_is_used_to_log_in(plain_auth_server: CaptureServer, tmp_data: Any) -> None:
    settings = SmtpMagic().update({
        "host": "127.0.0.1", "port": plain_auth_server.port, "security": "none",
        "username": "alice", "allow_plaintext_auth": True, "sender": "alice@example.test",
    })
    form = compose(settings=settings, to="bob@example.org", subject="login", namespace={})
    form.send_button.click()
    wait_until_done(form)
    assert not last(form).ok and plain_auth_server.count() == 0  # no password yet
    form.password.value = "s3cret-pw"  # conftest's AUTH user
    assert form.password.value == ""
    form.send_button.click()
    wait_until_done(form)
    assert last(form).ok, form.status.value
    assert plain_auth_server.count() == 1
    form.close()


def test_check_connection_reports_the_server(form: ComposeForm, smtp_server: CaptureServer) -> None:
    form.check_button.click()
    deadline = time.monotonic() + 10
    while form.check_button.disabled:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert form.last_report and form.last_report[0].startswith("Connected to 127.0.0.1")
    assert "Connected to 127.0.0.1" in form.settings_status.value
    assert smtp_server.count() == 0


def test_check_connection_shows_the_error(form: ComposeForm, refused_port: int) -> None:
    form.port.value = refused_port
    form.check_button.click()
    deadline = time.monotonic() + 10
    while form.check_button.disabled:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert form.last_report is None and "\u2718" in form.settings_status.value


def test_prefill(settings: SmtpMagic, tmp_path: Any) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    form = compose(settings=settings, to=["a@example.org", "b@example.org"], cc="c@example.org",
                   subject="S", body="B", content_type="text/plain",
                   attachments=[str(path), ("raw.bin", b"\0\1")], namespace={})
    assert form.to.value == "a@example.org, b@example.org" and form.cc.value == "c@example.org"
    assert (form.subject.value, form.body.value) == ("S", "B")
    assert form.content_type.value == "text/plain"
    request = form.request()
    assert [a.filename for a in request.attachments] == ["notes.txt", "raw.bin"]
    assert "notes.txt" in form.attachment_list.value and "5 B" in form.attachment_list.value
    form.close()
    with pytest.raises(TypeError):
        compose(settings=settings, too="x@example.org")  # type: ignore[call-arg]


def test_unknown_prefilled_attachment_is_flagged(settings: SmtpMagic) -> None:
    form = compose(settings=settings, to="a@example.org", attachments="no_such_thing",
                   namespace={})
    assert "neither a notebook variable nor a file" in form.attachment_list.value
    assert form.send_button.disabled
    form.close()


class _FakeFrame:
    shape = (3, 2)


_FakeFrame.__module__ = "pandas.core.frame"
_FakeFrame.__name__ = "DataFrame"


def test_variables_found_by_type_name_without_importing_pandas() -> None:
    ns = {"df": _FakeFrame(), "x": 1, "_hidden": _FakeFrame(), "Out": {}}
    assert attachable_variables(ns) == [("df  \u2014 DataFrame 3\u00d72", "df")]


def test_dataframe_and_figure_variables_are_attached(
    settings: SmtpMagic, smtp_server: CaptureServer
) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    sales = pd.DataFrame({"region": ["north", "south"], "total": [10, 20]})
    fig = Figure()
    fig.subplots().plot([1, 2, 3])
    ns: dict[str, Any] = {"sales": sales}
    form = compose(settings=settings, to="bob@example.org", subject="vars", namespace=ns,
                   attachments=["sales"])
    assert form.variables.value == ("sales",)
    assert "sales.csv" in form.attachment_list.value
    ns["fig"] = fig  # made after the form: the refresh button finds it
    form.refresh_variables.click()
    assert [v for _, v in form.variables.options] == ["fig", "sales"]
    form.variables.value = ("fig", "sales")
    assert "fig.png" in form.attachment_list.value
    form.send_button.click()
    wait_until_done(form)
    assert last(form).ok, form.status.value
    atts = {a.get_filename(): a for a in smtp_server.messages()[0].message.iter_attachments()}
    assert set(atts) == {"sales.csv", "fig.png"}
    assert "north" in atts["sales.csv"].get_content()
    assert atts["fig.png"].get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    form.close()


def test_default_settings_are_the_current_ones(tmp_data: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shared = SmtpMagic()
    monkeypatch.setattr(config_module, "_current", shared)
    form = compose(namespace={})
    assert form.settings is shared
    shared.update({"port": 2600})  # what %smtp_config --port 2600 does
    assert form.port.value == 2600
    form.close()


def test_close_unlinks_from_the_settings(settings: SmtpMagic) -> None:
    form = compose(settings=settings, namespace={})
    form.close()
    settings.port = 2999
    assert form.port.value != 2999


def test_smtp_config_magic_and_form_share_settings(ip: Any) -> None:
    form = compose(namespace={})
    ip.run_line_magic("smtp_config", "--port 2601 --host mail.example.org")
    assert (form.port.value, form.host.value) == (2601, "mail.example.org")
    form.port.value = 2602
    assert config_module.current() is form.settings and form.settings.port == 2602
    ip.run_line_magic("config", "SmtpMagic.port = 2603")
    assert form.port.value == 2603
    form.close()


def test_the_field_shows_the_setting_as_stored(form: ComposeForm, settings: SmtpMagic) -> None:
    form.username.value = "  alice@example.org  "
    assert settings.username == "alice@example.org"
    assert form.username.value == "alice@example.org"  # what the settings hold, not the typing
    settings.update({"port": 2700})  # what %smtp_config --port 2700 does
    assert form.port.value == 2700 and form.settings_status.value == ""


def test_a_refused_value_then_a_change_of_the_setting_clears_the_report(
    form: ComposeForm, settings: SmtpMagic
) -> None:
    form.port.value = 70000
    assert "port must be between 1 and 65535" in form.settings_status.value
    assert 'role="alert"' in form.settings_status.value  # announced by screen readers
    settings.port = 2525  # e.g. %smtp_config --port 2525: the form follows and the error goes
    assert form.port.value == 2525 and form.settings_status.value == ""


def test_the_body_has_a_label_and_the_status_is_a_live_region(form: ComposeForm) -> None:
    assert form.body.description == "Body"  # the textarea's <label>
    assert 'role="status"' in form.status.value and 'aria-live="polite"' in form.status.value
    form.send_button.click()  # no recipient
    assert 'role="alert"' in form.status.value and "no recipient" in form.status.value


def test_an_invalid_address_marks_its_field(form: ComposeForm) -> None:
    form.to.value = "bob@"
    assert "smtp-magic-invalid" in form.to._dom_classes
    form.to.value = "bob@example.org"
    assert "smtp-magic-invalid" not in form.to._dom_classes


def test_preview_lists_what_sanitising_removed(form: ComposeForm,
                                               smtp_server: CaptureServer) -> None:
    form.to.value = "bob@example.org"
    form.subject.value = "Careful"
    form.body.value = "<p onclick=\"alert(1)\">Hi</p><script>alert(2)</script>"
    form.preview_button.click()
    assert "Removed before sending:" in form.preview.value, form.preview.value
    assert form.removed and all(what in form.preview.value for what in
                                (html.escape(r, quote=False) for r in form.removed))
    assert smtp_server.count() == 0
