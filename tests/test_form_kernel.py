"""The compose form's options come from one declaration, and its Reply-To field, driven in a real
kernel the way a browser drives it (comm messages), reaches a real SMTP server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from traitlets import Enum

from smtp_magic import config
from smtp_magic.config import CONTENT_TYPES, SECURITY_MODES, SmtpMagic
from smtp_magic.models import MESSAGE_OPTIONS
from smtp_magic.server import CaptureServer
from smtp_magic.widgets import compose


def test_the_form_offers_the_values_the_traits_declare(smtp_server: CaptureServer) -> None:
    form = compose(settings=SmtpMagic(), namespace={})
    try:
        assert [v for _, v in form.security.options] == list(config.choices("security"))
        assert [v for _, v in form.content_type.options] == [
            t for t in config.choices("content_type") if t != "multipart/alternative"]
        # The address fields are the message options that take addresses, %%smtp_send's too.
        assert set(form.fields.addresses) == {o.dest for o in MESSAGE_OPTIONS
                                              if o.metavar == "ADDR"}
        assert form.reply_to.description == "Reply-To" and form.sender.description == "From"
    finally:
        form.close()


def test_a_value_added_to_a_trait_is_offered_by_the_form() -> None:
    class Wider(SmtpMagic):
        security = Enum((*SECURITY_MODES, "dane"), "auto").tag(config=True)
        content_type = Enum((*CONTENT_TYPES, "text/x-rst"), "text/html").tag(config=True)

    form = compose(settings=Wider(), namespace={})
    try:
        assert ("dane", "dane") in form.security.options  # no label of its own: its value
        assert [v for _, v in form.content_type.options][-1] == "text/x-rst"
        assert ("auto (465: TLS, else STARTTLS)", "auto") in form.security.options
    finally:
        form.close()


def test_reply_to_typed_in_the_form_in_a_kernel_arrives(
        smtp_server: CaptureServer, tmp_path: Path) -> None:
    from test_kernel import kernel_sending_to

    with kernel_sending_to(smtp_server, tmp_path) as (_, fe):  # type: ignore[arg-type]
        _, outputs = fe.run(
            "from smtp_magic.widgets import compose\n"
            "form = compose(namespace={})\n"
            "import json; print(json.dumps({n: getattr(form, n).model_id for n in "
            "('to', 'reply_to', 'subject', 'body', 'send_button')}))")
        (printed,) = [m for m in outputs if m["msg_type"] == "stream"]
        ids = json.loads(printed["content"]["text"])

        def front_end(comm: str, data: dict[str, Any]) -> None:
            """What the browser sends when the user types in a field or clicks a button."""
            fe.kc.shell_channel.send(fe.kc.session.msg(
                "comm_msg", {"comm_id": ids[comm], "data": data}))

        for field, value in (("to", "bob@example.test"), ("subject", "Answers please"),
                             ("reply_to", "Help Desk <help@example.test>"),
                             ("body", "Write back to the desk.")):
            front_end(field, {"method": "update", "state": {"value": value},
                              "buffer_paths": []})
        front_end("send_button", {"method": "custom", "content": {"event": "click"}})
        try:
            (got,) = smtp_server.wait_for(1, timeout=60)
        except TimeoutError:
            _, outputs = fe.run("print(form.status.value, form.to.value, form.subject.value)")
            raise AssertionError(json.dumps([m["content"] for m in outputs])) from None
        assert str(got.message["Reply-To"]) == "Help Desk <help@example.test>"
        assert got.message["Subject"] == "Answers please" and got.rcpt_to == ("bob@example.test",)
        assert "help@example.test" not in got.rcpt_to  # Reply-To is no recipient
        deadline = time.monotonic() + 30
        while True:  # the message is stored before the form hears the server's reply
            _, outputs = fe.run("print('busy' if form.sending else 'settled')")
            if "settled" in json.dumps([m["content"] for m in outputs]):
                break
            assert time.monotonic() < deadline, outputs
            time.sleep(0.1)
        _, outputs = fe.run("print(form.last_response.ok, form.reply_to.value)")
        assert "True Help Desk <help@example.test>" in json.dumps(
            [m["content"] for m in outputs])



def test_smtp_compose_and_smtp_send_take_their_options_from_the_same_tables(
        ip: Any, monkeypatch: Any) -> None:
    from smtp_magic import widgets
    from smtp_magic.magics import SmtpMagics

    def options(magic: Any) -> dict[str, Any]:
        return {a.dest: a for a in magic.parser._actions}

    compose_options = options(SmtpMagics.smtp_compose)
    send_options = options(SmtpMagics.smtp_send)
    for option in MESSAGE_OPTIONS:  # %smtp_compose prefills every field %%smtp_send has
        assert option.dest in compose_options and option.dest in send_options
    for found in (compose_options, send_options):
        assert tuple(found["content_type"].choices) == config.body_formats()
    made: list[Any] = []
    monkeypatch.setattr(widgets, "compose", lambda **kw: made.append(compose(**kw)) or made[-1])
    ip.run_line_magic("smtp_compose", "--to a@example.test --reply-to desk@example.test")
    (form,) = made
    assert form.reply_to.value == "desk@example.test" and form.to.value == "a@example.test"
    form.close()



def test_reply_to_is_checked_like_the_other_addresses_and_defaults_to_the_setting(
        smtp_server: CaptureServer) -> None:
    settings = SmtpMagic().update({"host": "127.0.0.1", "port": smtp_server.port,
                                   "security": "none", "sender": "form@example.test",
                                   "reply_to": "desk@example.test"})
    form = compose(settings=settings, to="bob@example.test", subject="Replies",
                   namespace={})
    try:
        assert form.reply_to.placeholder == "desk@example.test (from the settings)"
        form.reply_to.value = "not an address"
        assert form.send_button.disabled and "Reply-To address" in form.send_button.tooltip
        assert "smtp-magic-invalid" in form.reply_to._dom_classes
        form.send_button.click()  # refused by the form, nothing goes out
        assert smtp_server.count() == 0
        form.reply_to.value = "desk@example.test\r\nBcc: spy@example.test"  # no header injection
        assert form.send_button.disabled and "line break" in form.send_button.tooltip
        form.reply_to.value = ""  # empty: the setting's
        assert not form.send_button.disabled
        form.send_button.click()
        deadline = time.monotonic() + 10
        while form.sending:
            assert time.monotonic() < deadline, form.status.value
            time.sleep(0.02)
        (got,) = smtp_server.wait_for(1)
        assert str(got.message["Reply-To"]) == "desk@example.test"
    finally:
        form.close()
