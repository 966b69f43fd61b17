"""Fast unit tests of the data layer (models) and the outbox, no server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smtp_magic.errors import ExitCode, InvalidRequest, PartiallyRefused
from smtp_magic.models import Attachment, Response, SendRequest, as_address_list, mime_type_for
from smtp_magic.outbox import Outbox, SendLog, SendRecord


# -- models -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("a@example.org", ("a@example.org",)),
        ("a@example.org, b@example.org; c@example.org", ("a@example.org", "b@example.org",
                                                         "c@example.org")),
        ('"Doe, Jane" <jane@example.org>, b@example.org', ('"Doe, Jane" <jane@example.org>',
                                                           "b@example.org")),
        ('"Say \\"hi\\", Bob" <bob@example.org>', ('"Say \\"hi\\", Bob" <bob@example.org>',)),
        (["a@example.org", "b@example.org, c@example.org"], ("a@example.org", "b@example.org",
                                                            "c@example.org")),
        (" , ;", ()),
    ],
    ids=["none", "one", "commas-and-semicolons", "quoted-comma", "escaped-quote", "list", "empty"],
)
def test_address_lists(value: object, expected: tuple[str, ...]) -> None:
    assert as_address_list(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a@example.org\r\nBcc: x@y.z", "a@example.org\n", "a@b\0"])
def test_address_lists_refuse_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="line break|NUL"):
        as_address_list(bad)
    with pytest.raises(InvalidRequest, match="not a string"):
        as_address_list([3])  # type: ignore[list-item]


def test_requests_normalise_addresses_and_keep_headers_in_order() -> None:
    r = SendRequest(to="a@example.org, b@example.org", subject="s", cc=["c@example.org"],
                    bcc="d@example.org", headers={"X-One": "1", "X-Two": "2"})
    assert r.recipients == ("a@example.org", "b@example.org", "c@example.org", "d@example.org")
    assert r.headers == (("X-One", "1"), ("X-Two", "2"))
    assert r.replace(subject="t").subject == "t" and r.subject == "s"


def test_attachments_from_bytes_and_paths(tmp_path: Path) -> None:
    a = Attachment.from_bytes("notes.txt", "héllo")
    assert (a.read(), a.size, a.content_type) == ("héllo".encode(), 6, "text/plain")
    assert "héllo" not in repr(a)  # the data is not in the repr
    f = tmp_path / "sheet.ods"
    f.write_bytes(b"PK")
    b = Attachment.from_path(f)
    assert (b.filename, b.size, b.maintype, b.subtype) == (
        "sheet.ods", 2, "application", "vnd.oasis.opendocument.spreadsheet")
    f.unlink()
    with pytest.raises(InvalidRequest, match="cannot be read"):
        b.read()
    with pytest.raises(InvalidRequest, match="does not exist"):
        Attachment.from_path(tmp_path / "missing.pdf")
    with pytest.raises(InvalidRequest, match="either data or a path"):
        Attachment("x.bin")


@pytest.mark.parametrize(("name", "mime"), [
    ("a.DOCX", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("b.odt", "application/vnd.oasis.opendocument.text"), ("c.unknownext", "application/octet-stream"),
    ("d.csv", "text/csv"), ("e.tar.gz", "application/gzip"),
])
def test_mime_types_do_not_depend_on_the_host(name: str, mime: str) -> None:
    assert mime_type_for(name) == mime


def test_responses() -> None:
    ok = Response(exitcode=0, message_id="<1@x>", elapsed=0.1234, accepted=("a@x.org",))
    assert ok.ok and ok.result == "sent" and ok.get("result") == "sent" and ok["exitcode"] == 0
    assert ok.get("nope", 5) == 5 and ok.raise_for_status() is ok
    assert json.loads(ok.to_json())["elapsed"] == 0.123
    with pytest.raises(KeyError):
        ok["nope"]
    partial = Response(exitcode=5, message="Refused for 1.", refused={"b@x.org": (550, "no")})
    assert partial.exitcode is ExitCode.PARTIAL and not partial.ok
    assert json.loads(partial.to_json())["refused"] == {"b@x.org": [550, "no"]}
    with pytest.raises(PartiallyRefused) as info:
        partial.raise_for_status()
    assert info.value.refused == {"b@x.org": (550, "no")}
    assert "✔" in ok._repr_html_() and "⚠" in partial._repr_html_()  # partly sent: a warning
    assert str(Response(exitcode=130, message="x")).startswith("exit 130")  # not an ExitCode


# -- outbox -------------------------------------------------------------------------------------
def test_outbox_keeps_fails_and_forgets(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "box")
    assert box.entries() == [] and len(box) == 0
    entry = box.add(b"Subject: hi\r\n\r\nbody\r\n", sender="a@x.org", recipients=("b@x.org",),
                    message_id="<1@x>", subject="hi")
    assert [e.status for e in box] == ["pending"]
    assert box.read(entry.key) == b"Subject: hi\r\n\r\nbody\r\n"
    failed = box.mark_failed(entry, Response(exitcode=7, message="Deferred."))
    (again,) = Outbox(tmp_path / "box").entries()  # another process sees the same
    assert (again.status, again.exitcode, again.reason) == ("failed", 7, "Deferred.")
    assert again.key == failed.key
    assert box.clear() == 1 and box.entries() == []


def test_outbox_batch_is_invisible_until_committed_and_gone_when_settled(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "box")
    batch = box.batch()
    entries = [batch.add([b"m%d\r\n" % i], sender="a@x.org", recipients=("b@x.org",),
                         message_id=f"<{i}@x>", subject=f"s{i}")[0] for i in range(3)]
    assert box.entries() == []  # not durable yet: nobody may retry it
    batch.commit()
    assert [e.message_id for e in box.entries()] == ["<0@x>", "<1@x>", "<2@x>"]
    box.remove(entries[0].key)
    box.mark_failed(entries[1], Response(exitcode=4, message="Refused."))
    box.remove(entries[2].key)
    batch.close()
    (left,) = box.entries()
    assert (left.message_id, left.status, left.exitcode) == ("<1@x>", "failed", 4)
    assert box.read(left.key) == b"m1\r\n"


def test_send_log_records_outcomes() -> None:
    log = SendLog()
    record = log.add(SendRecord("s", ("a@x.org",), "<1@x>"))
    assert record.status == "pending" and record.reason == ""
    record.finish(Response(exitcode=2, message="Could not connect."))
    assert record.to_dict()["status"] == "failed" and record.to_dict()["exitcode"] == 2
    log.clear()
    assert log.records() == []


def test_send_log_takes_a_windows_records_in_order_and_hears_them_finish() -> None:
    log = SendLog()
    first = log.add(SendRecord("a", ("a@x.org",), "<1@x>"))
    window = [SendRecord(s, ("b@x.org",), None) for s in "bcd"]
    log.add_all(window)
    assert [r.subject for r in log.records()] == ["a", "b", "c", "d"]
    assert [r.subject for r in log.pending()] == ["a", "b", "c", "d"]
    for record in (first, *window):
        record.finish(Response(exitcode=0))
    assert log.wait(timeout=1) == []  # finishing a record of the window wakes the waiters
