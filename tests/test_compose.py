"""Composition: MIME structure, addresses, headers, attachments, limits (no network)."""

from __future__ import annotations

import email
from email import policy

import pytest

from smtp_magic.config import SmtpMagic
from smtp_magic.errors import InvalidRequest
from smtp_magic.models import Attachment, InlineImage, SendRequest, mime_type_for
from smtp_magic.stages import prepare as compose

SETTINGS = SmtpMagic(sender="Reports <reports@example.test>").snapshot()


def parsed(request: SendRequest, settings=SETTINGS):
    composed = compose(request, settings)
    # Servers hand over raw bytes; SMTPUTF8 headers are UTF-8, so read them as text.
    text = composed.as_bytes().decode("utf-8").replace("\r\n", "\n")
    return composed, email.message_from_string(text, policy=policy.default)


def test_html_body_gets_a_plain_alternative_without_markup():
    body = "<h1>Sales</h1><p>Up <b>12%</b> &amp; rising, see <a href='https://x.test/r'>report</a>.</p>"
    _, msg = parsed(SendRequest(to="a@example.test", subject="S", body=body))
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    assert "<" not in text and "&amp;" not in text
    assert "Up 12% & rising" in text and "https://x.test/r" in text
    assert msg.get_body(("html",)).get_content().strip() == body


def test_plain_text_body_is_a_single_part():
    _, msg = parsed(SendRequest(to="a@example.test", subject="S", body="héllo\n", content_type="text/plain"))
    assert msg.get_content_type() == "text/plain" and msg.get_content() == "héllo\n"


def test_multipart_alternative_content_type_is_accepted():
    _, msg = parsed(SendRequest(to="a@example.test", subject="S", body="<p>x</p>",
                                content_type="multipart/alternative"))
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_inline_images_sit_in_multipart_related_next_to_the_html():
    img = InlineImage("chart1@smtp-magic", b"\x89PNG\r\n\x1a\nfake", "png")
    _, msg = parsed(SendRequest(to="a@example.test", subject="S",
                                body="<img src='cid:chart1@smtp-magic'>", inline_images=[img]))
    related = msg.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    image = related.get_payload()[1]
    assert image.get_content_type() == "image/png" and image["Content-ID"] == "<chart1@smtp-magic>"
    assert image.get_payload(decode=True) == img.data


@pytest.mark.parametrize("name, ctype", [
    ("Example.doc", "application/msword"),
    ("r.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("r.odt", "application/vnd.oasis.opendocument.text"),
    ("r.ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("r.xls", "application/vnd.ms-excel"),
    ("r.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("r.html", "text/html"), ("r.csv", "text/csv"), ("r.pdf", "application/pdf"),
    ("r.png", "image/png"), ("r.zip", "application/zip"), ("r.unknownext", "application/octet-stream"),
])
def test_attachment_types_follow_the_extension(name, ctype):
    assert mime_type_for(name) == ctype
    _, msg = parsed(SendRequest(to="a@example.test", subject="S", body="x",
                                attachments=[Attachment.from_bytes(name, b"\x00\x01data")]))
    (att,) = msg.iter_attachments()
    assert att.get_content_type() == ctype and att.get_filename() == name
    assert att.get_payload(decode=True) == b"\x00\x01data"


def test_unicode_file_names_use_rfc2231():
    _, msg = parsed(SendRequest(to="a@example.test", subject="S", body="x",
                                attachments=[Attachment.from_bytes("Bericht März €.csv", b"1,2")]))
    (att,) = msg.iter_attachments()
    assert att.get_filename() == "Bericht März €.csv"
    assert "filename*=utf-8''" in str(att["Content-Disposition"].defects or att.as_string())


def test_attachment_limit_is_checked_before_anything_else():
    small = SmtpMagic(attachment_size=0.001).snapshot()  # 1048 bytes
    with pytest.raises(InvalidRequest, match=r"'big.bin' is 0.0 MB, over the 0.001 MB limit"):
        compose(SendRequest(to="a@example.test", subject="S", body="x", sender="me@example.test",
                            attachments=[Attachment.from_bytes("big.bin", b"x" * 1049)]), small)


def test_missing_attachment_file_is_exit_1(tmp_path):
    with pytest.raises(InvalidRequest, match="does not exist"):
        Attachment.from_path(tmp_path / "nope.pdf")


def test_bcc_is_in_the_envelope_only_and_cc_in_the_headers():
    composed, msg = parsed(SendRequest(to=["a@example.test", "B <b@example.test>"], cc="c@example.test",
                                       bcc=["d@example.test"], subject="S", body="x"))
    assert composed.recipients == ("a@example.test", "b@example.test", "c@example.test", "d@example.test")
    assert msg["Bcc"] is None and b"d@example.test" not in composed.as_bytes()
    assert msg["Cc"] == "c@example.test"


def test_message_id_and_date_are_always_set():
    composed, msg = parsed(SendRequest(to="a@example.test", subject="S", body="x"))
    assert msg["Message-ID"] == composed.message_id and msg["Date"]
    assert composed.message_id.endswith("@example.test>")


def test_display_names_with_commas_and_unicode_survive():
    _, msg = parsed(SendRequest(to='"Smith, Jane" <jane@example.test>, Zoë <zoe@exämple.test>',
                                subject="Grüße", body="x"))
    names = [(a.display_name, a.addr_spec) for a in msg["To"].addresses]
    assert names == [("Smith, Jane", "jane@example.test"), ("Zoë", "zoe@xn--exmple-cua.test")]
    assert msg["Subject"] == "Grüße"


def test_unicode_local_part_needs_smtputf8():
    composed, msg = parsed(SendRequest(to="jürgen@example.test", subject="S", body="x"))
    assert composed.smtputf8 and msg["To"].addresses[0].username == "jürgen"


@pytest.mark.parametrize("field, value", [
    ("subject", "Hello\r\nBcc: victim@example.test"),
    ("subject", "nul\0byte"),
    ("to", "a@example.test\nBcc: victim@example.test"),
    ("cc", "c@example.test\r"),
    ("sender", "me@example.test\nX-Evil: 1"),
])
def test_header_injection_is_refused(field, value):
    fields = {"to": "a@example.test", "subject": "S", "body": "x", field: value}
    with pytest.raises(InvalidRequest, match="line break|NUL"):
        compose(SendRequest(**fields), SETTINGS)


@pytest.mark.parametrize("address", ["plainword", "a@b@c", "@example.test", "a@", "a b@example.test",
                                     "a@exa mple.test", "a@-bad-.test", ""])
def test_invalid_addresses_name_the_culprit(address):
    with pytest.raises(InvalidRequest) as info:
        compose(SendRequest(to=["ok@example.test", address] if address else [" "], subject="S"), SETTINGS)
    assert "not a valid email address" in str(info.value) or "no recipient" in str(info.value)


def test_missing_fields_and_sender():
    with pytest.raises(InvalidRequest, match="no recipient"):
        compose(SendRequest(to=(), subject="S"), SETTINGS)
    with pytest.raises(InvalidRequest, match="No sender address"):
        compose(SendRequest(to="a@example.test", subject="S"), SmtpMagic().snapshot())
    with pytest.raises(InvalidRequest, match="Unsupported content type 'image/png'"):
        compose(SendRequest(to="a@example.test", subject="S", content_type="image/png"), SETTINGS)


def test_username_is_the_default_sender():
    composed, _ = parsed(SendRequest(to="a@example.test", subject="S"),
                         SmtpMagic(username="me@example.test").snapshot())
    assert composed.sender == "me@example.test"
