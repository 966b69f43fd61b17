"""The Python API against a real SMTP server: send, send_many, the seed's connector, the outbox."""

from __future__ import annotations

import asyncio
import json

import pytest

import smtp_magic
from smtp_magic import Attachment, SendRequest, SmtpMagic
from smtp_magic.api import load_settings, request_from_dict
from smtp_magic.errors import InvalidRequest
from smtp_magic.outbox import Outbox, history


@pytest.fixture
def cfg(smtp_server):
    return {"target": smtp_server.host, "port": smtp_server.port, "from": "Reports <reports@example.test>",
            "security": "none"}


def test_send_delivers_html_with_text_alternative_and_attachments(smtp_server, cfg, tmp_path):
    (tmp_path / "numbers.csv").write_text("a,b\n1,2\n")
    r = smtp_magic.send(["ann@example.test", "bob@example.test"], "Q3 numbers",
                        "<p>Revenue is <b>up</b>.</p>", cc="cat@example.test", bcc="dan@example.test",
                        attachments=[tmp_path / "numbers.csv", ("notes.txt", b"hello")], config=cfg)
    assert (r.exitcode, r.message, r.result) == (0, "", "sent")
    assert r.get("result") == "sent" and r["exitcode"] == 0
    (got,) = smtp_server.wait_for(1)
    assert sorted(got.rcpt_to) == ["ann@example.test", "bob@example.test", "cat@example.test",
                                   "dan@example.test"]
    msg = got.message
    assert msg["Message-ID"] == r.message_id and msg["Bcc"] is None
    assert msg.get_body(("plain",)).get_content().strip() == "Revenue is up."
    names = {a.get_filename(): (a.get_content_type(), a["Content-Transfer-Encoding"],
                                a.get_payload(decode=True)) for a in msg.iter_attachments()}
    # ASCII text travels as text (7bit, lines as CRLF: MIME's canonical form), not base64
    assert names == {"numbers.csv": ("text/csv", "7bit", b"a,b\r\n1,2\r\n"),
                     "notes.txt": ("text/plain", "7bit", b"hello")}


@pytest.mark.parametrize("ctype, check", [
    ("text/plain", lambda m: m.get_content_type() == "text/plain" and "**bold**" in m.get_content()),
    ("text/markdown", lambda m: "<strong>bold</strong>" in m.get_body(("html",)).get_content()
     and "<" not in m.get_body(("plain",)).get_content()),
])
def test_body_types(smtp_server, cfg, ctype, check):
    r = smtp_magic.send("ann@example.test", "types", "Some **bold** text", content_type=ctype, config=cfg)
    assert r.ok, r.message
    assert check(smtp_server.wait_for(1)[0].message)


def test_blocking_send_works_inside_a_running_event_loop(smtp_server, cfg):
    async def cell():  # what a notebook cell is: code running inside the kernel's loop
        return smtp_magic.send("ann@example.test", "from a loop", "x", config=cfg)

    assert asyncio.run(cell()).ok
    assert smtp_server.wait_for(1)[0].subject == "from a loop"


async def test_send_async(smtp_server, cfg):
    r = await smtp_magic.send_async("ann@example.test", "async", "x", config=cfg)
    assert r.ok and smtp_server.wait_for(1)[0].message["Message-ID"] == r.message_id


def test_connector_in_the_seed_style(smtp_server, cfg, tmp_path):
    (tmp_path / "Sample.txt").write_text("sample")
    conn = smtp_magic.connector({"target": smtp_server.host, "port": smtp_server.port, "security": "none"})
    response = (conn.set("action", "send").set("from", "email_test@example.test")
                .set("to", ["suzan@example.test", "kelly@example.test"]).set("subject", "Testing")
                .set("body", "Hi, this is a test mail").set("cc", ["richard@example.test"])
                .set("bcc", ["henry@example.test"]).set("attachments", [str(tmp_path / "Sample.txt")])
                .set("content-type", "text/plain").sync())
    assert response.exitcode == 0 and response.get("result") == "sent"
    got = smtp_server.wait_for(1)[0]
    assert len(got.rcpt_to) == 4 and got.message["Bcc"] is None
    with pytest.raises(InvalidRequest, match="did you mean 'subject'"):
        conn.set("subjct", "x")


def test_connector_run_async_and_call(smtp_server, cfg):
    conn = smtp_magic.connector(cfg).set("to", "ann@example.test").set("subject", "later").set("body", "x")
    handle = conn.run_async()
    assert handle.result(timeout=10).ok

    async def awaited():
        return await conn.run_async()

    assert asyncio.run(awaited()).ok
    r = conn.call({"action": "send", "to": "bob@example.test", "subject": "called", "body": "x"})
    assert r.ok
    assert {m.subject for m in smtp_server.wait_for(3)} == {"later", "called"}


def test_send_many_keeps_order_and_reports_invalid_requests_without_stopping(smtp_server, cfg):
    requests = [{"to": f"user{i}@example.test", "subject": f"n{i}", "body": "<p>x</p>"} for i in range(20)]
    requests.insert(5, {"to": "not-an-address", "subject": "bad"})
    responses = smtp_magic.send_many(requests, config=cfg)
    assert [r.exitcode for r in responses] == [0] * 5 + [1] + [0] * 15
    assert "not-an-address" in responses[5].message
    got = smtp_server.wait_for(20)
    assert sorted(m.subject for m in got) == sorted(f"n{i}" for i in range(20))
    ids = {r.message_id for r in responses if r.ok}
    assert ids == {m.message["Message-ID"] for m in got}


def test_invalid_request_opens_no_connection_and_keeps_nothing(smtp_server, cfg, tmp_data):
    r = smtp_magic.send("ann@example.test", "S\r\nBcc: x@example.test", "x", config=cfg)
    assert r.exitcode == 1 and "line break" in r.message
    r = smtp_magic.send("ann@example.test", "S", attachments=["/nonexistent/file.pdf"], config=cfg)
    assert r.exitcode == 1 and "does not exist" in r.message
    assert smtp_server.count() == 0 and len(Outbox()) == 0


def test_failed_send_is_kept_and_retry_delivers_the_same_message(smtp_server, cfg, refused_port, tmp_data):
    r = smtp_magic.send("ann@example.test", "kept", "x", config={**cfg, "port": refused_port})
    assert r.exitcode == 2 and "refused" in r.message
    (entry,) = Outbox().entries()
    assert entry.status == "failed" and entry.message_id == r.message_id and entry.exitcode == 2
    (again,) = smtp_magic.retry_outbox(config=cfg)
    assert again.ok and again.message_id == r.message_id
    assert smtp_server.wait_for(1)[0].message["Message-ID"] == r.message_id
    assert len(Outbox()) == 0


def test_request_from_dict_refuses_unknown_keys():
    with pytest.raises(InvalidRequest, match="did you mean 'subject'"):
        request_from_dict({"to": "a@example.test", "subjet": "x"})
    with pytest.raises(InvalidRequest, match="only action is 'send'"):
        request_from_dict({"action": "receive", "to": "a@example.test", "subject": "x"})
    request, overrides = request_from_dict({"to": "a@example.test", "subject": "x", "port": 465,
                                            "password": "pw"})
    assert isinstance(request, SendRequest) and overrides == {"port": 465, "password": "pw"}


def test_load_settings_accepts_objects_dicts_and_files(tmp_path):
    s = SmtpMagic(host="obj.example.test")
    assert load_settings(s) is s
    assert load_settings({"target": "dict.example.test"}).host == "dict.example.test"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"target": "file.example.test", "port": 2525}))
    assert (load_settings(str(path)).host, load_settings(path).port) == ("file.example.test", 2525)


def test_response_renders_in_a_notebook():
    ok = smtp_magic.Response(0, message_id="<a@b>", elapsed=0.25)
    assert "sent in 0.25 s" in ok._repr_html_()
    bad = smtp_magic.Response(5, message="Delivered to 1, refused for 1.", refused={"x@y.z": (550, "no")})
    assert "x@y.z" in bad._repr_html_() and json.loads(bad.to_json())["refused"] == {"x@y.z": [550, "no"]}


def test_attachment_objects_pass_through(smtp_server, cfg):
    att = Attachment.from_bytes("report.xlsx", b"PK\x03\x04")
    assert smtp_magic.send("ann@example.test", "xlsx", "x", attachments=[att], config=cfg).ok
    (part,) = smtp_server.wait_for(1)[0].message.iter_attachments()
    assert part.get_content_type().endswith("spreadsheetml.sheet")


def test_unicode_addresses_arrive_readable(smtp_server, cfg):
    r = smtp_magic.send("Jürgen <jürgen@example.test>", "Grüße", "<p>x</p>", config=cfg)
    assert r.ok, r.message
    (got,) = smtp_server.wait_for(1)
    assert got.rcpt_to == ("jürgen@example.test",)
    assert got.subject == "Grüße" and got.message["To"].addresses[0].username == "jürgen"


def test_credential_failures_are_responses_not_exceptions(fault_server, tmp_data, no_keyring):
    server = fault_server()
    keyring_cfg = {"target": "127.0.0.1", "port": server.port, "security": "none",
                   "username": "u@example.test", "use_keyring": True}
    env_cfg = {**keyring_cfg, "use_keyring": False, "password_env": "NOT_SET_ANYWHERE"}
    for cfg in (keyring_cfg, env_cfg):
        history.clear()
        r = smtp_magic.send("ann@example.test", "S", "x", config=cfg)
        assert r.exitcode == 1 and not r.ok
        (r2,) = smtp_magic.send_many([{"to": "ann@example.test", "subject": "S"}], config=cfg)
        assert r2.exitcode == 1
        conn = smtp_magic.connector(cfg).set("to", "ann@example.test").set("subject", "S")
        assert conn.sync().exitcode == 1 and conn.run_async().result(10).exitcode == 1
        assert conn.call({"to": "ann@example.test", "subject": "S"}).exitcode == 1
        assert [rec.status for rec in history.records()] == ["failed"] * 5  # none left pending
    assert r.message == "The environment variable 'NOT_SET_ANYWHERE' that should hold the " \
                        "password is not set."
    keyring_failure = smtp_magic.send("ann@example.test", "S", "x", config=keyring_cfg)
    assert keyring_failure.message.startswith("No system keyring is available")
    assert server.connections == 0 and len(Outbox()) == 0


def test_retry_with_a_credential_failure_returns_responses_and_keeps_the_messages(
    smtp_server, cfg, refused_port, tmp_data, no_keyring
):
    r = smtp_magic.send("ann@example.test", "kept", "x", config={**cfg, "port": refused_port})
    assert r.exitcode == 2
    (again,) = smtp_magic.retry_outbox(config={**cfg, "password_env": "SMTP_MAGIC_NOT_SET"})
    assert again.exitcode == 1 and again.message_id == r.message_id
    assert "'SMTP_MAGIC_NOT_SET'" in again.message and "not set" in again.message
    (entry,) = Outbox().entries()
    assert entry.message_id == r.message_id and smtp_server.count() == 0


def test_interrupted_while_preparing_leaves_no_trace(smtp_server, cfg, tmp_data, monkeypatch):
    """^C while a batch is composed and journaled: nothing was sent, so nothing stays behind
    (no pending record for --wait, nothing in the outbox to resend)."""
    from smtp_magic import _destinations, api

    calls = []

    def interrupted_second_time(settings):
        calls.append(settings)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_destinations, "resolve_password", interrupted_second_time)
    requests = [{"to": "a@example.test", "subject": "one"},
                {"to": "b@example.test", "subject": "two", "timeout": 5}]  # a second group
    with pytest.raises(KeyboardInterrupt):
        api.prepare_many(requests, config=cfg)
    assert len(calls) == 2 and history.records() == [] and len(Outbox()) == 0
    assert smtp_server.count() == 0
