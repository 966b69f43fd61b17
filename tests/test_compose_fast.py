"""The fast composition path writes the very bytes the email package writes for the message."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtp_magic import mime
from smtp_magic.config import SmtpMagic
from smtp_magic.errors import InvalidRequest
from smtp_magic.mime import POLICY, _simple_address, parse_address
from smtp_magic.models import Attachment, SendRequest
from smtp_magic.stages import prepare as compose

SETTINGS = SmtpMagic(sender="Reports <reports@example.test>").snapshot()
BOUNDARY = re.compile(rb"={15}\d{19}==")


def slow_and_fast(request: SendRequest) -> tuple[bytes, bytes]:
    composed = compose(request, SETTINGS)
    fast = composed.as_bytes()
    slow = composed.message.as_bytes(policy=POLICY)  # the EmailMessage, built on demand
    boundaries: dict[bytes, bytes] = {}

    def norm(data: bytes) -> bytes:
        boundaries.clear()
        return BOUNDARY.sub(lambda m: boundaries.setdefault(m.group(), b"B%d" % len(boundaries)),
                            data)

    return norm(slow), norm(fast)


printable = st.text(string.printable + "éü€ \u00a0", max_size=120)
names = st.from_regex(r"[A-Za-z0-9]{1,12}( [A-Za-z0-9]{1,12}){0,3}", fullmatch=True)
locals_ = st.from_regex(r"[a-z0-9]{1,10}([._+-][a-z0-9]{1,10}){0,2}", fullmatch=True)
domains = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    addr = f"{draw(locals_)}@{draw(domains)}"
    return f"{draw(names)} <{addr}>" if draw(st.booleans()) else addr


@settings(max_examples=300, deadline=None)
@given(
    to=st.lists(addresses(), min_size=1, max_size=4),
    cc=st.lists(addresses(), max_size=3),
    subject=printable,
    body=printable,
    plain=st.booleans(),
    header=st.none() | printable,
    attachment=st.none() | st.binary(max_size=300),
    filename=st.sampled_from(["a.csv", "report.pdf", "données.xlsx", "x" * 90 + ".txt",
                              "100% %b %s.csv"]),
)
def test_fast_bytes_equal_the_email_package_bytes(to, cc, subject, body, plain, header, attachment,
                                                  filename):
    request = SendRequest(
        to=to, cc=cc, subject=subject, body=body, content_type="text/plain" if plain else "text/html",
        headers={"X-Note": header} if header is not None else (),
        attachments=[Attachment.from_bytes(filename, attachment)] if attachment is not None else (),
    )
    try:
        slow, fast = slow_and_fast(request)
    except InvalidRequest:
        return
    assert fast == slow


def test_long_lines_encodings_and_streamed_attachments(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    for body in ["a" * 500, "é" * 300 + "\n" + "x" * 100, "line\r\nbreak\rhere\n", "<p>" + "z " * 999]:
        request = SendRequest(to="a@example.test", subject="S " * 50, body=body,
                              attachments=[Attachment.from_path(path)])
        slow, fast = slow_and_fast(request)
        assert fast == slow


@pytest.mark.parametrize("text", [
    "a@b.test", "  Bob <bob@example.test> ", "Bob Smith <b.s+tag@mail.example.test>",
    "x_y@example.test", "Ann <a@b-c.test>",
])
def test_simple_addresses_parse_like_the_header_parser(text):
    simple = _simple_address(text)
    assert simple is not None
    parsed = POLICY.header_factory("To", text).addresses[0]
    assert (simple.display_name, simple.username, simple.domain) == (
        parsed.display_name, parsed.username, parsed.domain)
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ['"Bob" <b@x.test>', "b@x_y.test", "a@-x.test", "J. Doe <j@x.test>"])
def test_other_addresses_go_through_the_header_parser(text):
    assert _simple_address(text) is None


TEXT_ATTACHMENTS = [
    b"a,b\n1,2\n", b"x,y\r\n3,4\r\n", b"no newline at the end", b"", b"--===============1==\nx\n",
    b"\n\n.\n..\nFrom me\n", b"a" * 998 + b"\n", b"a" * 999, b"bare\rcr\n", "Grüße\n".encode(),
    b"nul\x00byte\n", b"mixed\r\nends\n",
]


@pytest.mark.parametrize("data", TEXT_ATTACHMENTS)
@pytest.mark.parametrize("name", ["data.csv", "notes.txt", "page.html"])
def test_text_attachments_7bit_or_base64_same_bytes_both_ways(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    request = SendRequest(to="a@example.test", subject="S", body="<p>b</p>",
                          attachments=[Attachment.from_bytes(name, data), Attachment.from_path(path,
                                                                                     "again-" + name)])
    slow, fast = slow_and_fast(request)
    assert fast == slow


@settings(max_examples=150, deadline=None)
@given(data=st.text(string.printable, max_size=400).map(str.encode))
def test_any_ascii_text_attachment_same_bytes_both_ways(data):
    request = SendRequest(to="a@example.test", subject="S", body="b", content_type="text/plain",
                          attachments=[Attachment.from_bytes("t.csv", data)])
    slow, fast = slow_and_fast(request)
    assert fast == slow


def _through_the_parser(text: str) -> mime._Mailbox:
    address = mime._ascii_domain(parse_address(text))
    return mime._Mailbox(address, address.addr_spec, mime._address_value([address]),
                         address.username.isascii())


ADDRESS_LIKE = st.text("ab.-_@=?é!#+/", min_size=1, max_size=16) | st.from_regex(
    r"[a-z0-9!#+=?._-]{1,8}@([a-z0-9-]{0,64}\.){0,3}[a-z0-9-]{0,64}", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(ADDRESS_LIKE)
@example("a@" + "b" * 63 + ".test")
@example("a@" + "b" * 64 + ".test")
@example("a@-b.test")
@example("a@b-.test")
@example("a=?x@b.test")
@example("a@b.test.")
@example("x" * 200 + "@" + "b" * 50 + ".test")  # over 254 characters
@example("=?utf-8?q?x?=@b.test")  # an encoded word: the parser refuses it
def test_a_plain_address_is_what_the_header_parser_makes_of_it(text):
    """``user@host`` skips the parser: the same Address, addr_spec and header text, and the
    same refusals."""
    try:
        expected = _through_the_parser(text)
    except InvalidRequest:
        with pytest.raises(InvalidRequest):
            mime._mailbox.__wrapped__(text, "address")
        return
    assert mime._mailbox.__wrapped__(text, "address") == expected


def test_a_boundary_found_in_a_7bit_part_is_not_used():
    taken, other = "===============1111111111111111111==", "===============2222222222222222222=="
    offered = iter([taken, other])
    to = mime._mailboxes(("a@example.test",), "'to' address")
    sender = mime._mailbox("b@example.test", "sender")
    request = SendRequest(to=("a@example.test",), subject="S", body=f"--{taken}\nhello\n",
                          content_type="text/plain",
                          attachments=(Attachment.from_bytes("a.bin", b"\0" * 10),))
    parts = mime._render_fast(request, "text/plain", sender, to, [],
                              "Thu, 01 Jan 2026 00:00:00 +0000", "<x@example.test>", None,
                              new_boundary=lambda: next(offered), check=False)
    assert parts is not None
    data = b"".join(p if isinstance(p, bytes) else b"".join(p.chunks()) for p in parts)
    assert data.count(taken.encode()) == 1  # in the body only
    assert f'boundary="{other}"'.encode() in data
