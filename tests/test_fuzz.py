"""Input safety: fuzzed composition (hypothesis), and CR/LF/NUL refused in every header and address.

For any input, composing gives either a message that parses back (``email.policy.default``) to
the same subject, display names, addresses, body and file names, or an exit-1 answer with one
clear sentence; never any other exception. Composition only, plus a few real sends.
"""

from __future__ import annotations

import email
import email.policy
import html as htmllib
import os
import re
import string
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import TmpData
from faults import FaultServer
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from smtp_magic import Response, SmtpMagic, send, send_many
from smtp_magic.api import build_message
from smtp_magic.errors import InvalidRequest, SmtpMagicError
from smtp_magic.mime import Composed
from smtp_magic.models import as_address_list
from smtp_magic.render import is_plain_text
from smtp_magic.server import CaptureServer

SETTINGS = SmtpMagic().update({"sender": "nb@example.test", "content_type": "text/plain",
                               "host": "127.0.0.1", "port": 1, "security": "none"})
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# -- strategies -------------------------------------------------------------------------------
BAD = "\r\n\0"
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# Unicode without control characters and line/paragraph separators (but with Cf, Zs, ...).
clean_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
# Text that sometimes carries CR, LF, NUL or another control character somewhere inside.
risky_text = st.one_of(
    clean_text, clean_text, clean_text, clean_text, any_text,
    st.tuples(any_text, st.sampled_from(["\r", "\n", "\r\n", "\0", "\r\nBcc: eve@evil.test"]),
              any_text).map("".join),
)
atext = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
local_part = st.one_of(
    st.text(st.sampled_from(atext), min_size=1, max_size=12),
    st.lists(st.text(st.sampled_from(string.ascii_lowercase + string.digits), min_size=1,
                     max_size=6), min_size=2, max_size=3).map(".".join),
    st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1, max_size=8),
)
label = st.text(st.sampled_from(string.ascii_lowercase + string.digits), min_size=1, max_size=10)
unicode_label = st.text(st.sampled_from("äöüßéçñøåλжй中文"), min_size=1, max_size=6)
domain = st.tuples(st.lists(st.one_of(label, unicode_label), min_size=1, max_size=2),
                   st.sampled_from(["test", "example", "org", "de"])).map(
    lambda t: ".".join([*t[0], t[1]]))
valid_addr = st.tuples(local_part, domain).map("@".join)
invalid_addr = st.one_of(
    any_text, st.just(""), st.just("no-at-sign"), st.just("two@@example.test"),
    st.just("a@b@c.test"), st.just("@example.test"), st.just("user@"), st.just("user@-x-.test"),
    st.tuples(local_part, st.sampled_from(["\r", "\n", "\0", " ", "<", ">"]), domain).map(
        lambda t: f"{t[0]}{t[1]}@{t[2]}"),
)
address = st.one_of(valid_addr, valid_addr, valid_addr, valid_addr, invalid_addr)
display_name = st.one_of(st.just(""), risky_text)
file_name = st.one_of(
    st.tuples(any_text, st.sampled_from([".txt", ".doc", ".pdf", ".csv", ".xlsx", ".odt", ""])
              ).map("".join),
    risky_text,
)


def quoted(name: str, addr: str) -> str:
    """``"Name" <addr>`` with the name as an RFC 5322 quoted string (UTF-8 allowed, RFC 6532)."""
    if not name:
        return addr
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{addr}>'


# -- checks -----------------------------------------------------------------------------------
def one_sentence(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert message.endswith((".", "?")), message
    assert "Traceback" not in message and len(message) < 600, message


def parse_bytes(data: bytes) -> EmailMessage:
    # SMTPUTF8 messages carry raw UTF-8 headers (RFC 6532), which BytesParser would only
    # surrogate-escape: decode them as UTF-8 first, as a receiving client does.
    text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    msg = email.message_from_string(text, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parse(composed: Composed) -> EmailMessage:
    return parse_bytes(composed.as_bytes())


def body_parts(data: bytes) -> EmailMessage:
    """The message parsed from bytes: right for 8bit bodies (headers may be surrogate-escaped)."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def addr_spec(addr: str) -> str:
    """The address as it must travel: a Unicode domain IDNA-encoded, the local part kept."""
    local, _, dom = addr.rpartition("@")
    return f"{local}@{dom.encode('idna').decode('ascii')}" if not dom.isascii() else addr


def same_addr(got: str, sent: str) -> bool:
    """The address as sent; an input with white space or comments (CFWS) may come back in its
    canonical form (``a@ b.test`` is ``a@b.test``), which must then be a plain address."""
    if re.fullmatch(r"[^\s()\"\\]+", sent):
        return got == addr_spec(sent)
    return "@" in got and not any(c.isspace() or c in BAD for c in got)


def build(request: dict[str, Any]) -> Composed | str:
    """The composed message, or the exit-1 sentence; any other exception fails the test."""
    try:
        return build_message(request, config=SETTINGS)
    except InvalidRequest as exc:
        assert exc.exitcode == 1
        one_sentence(str(exc))
        return str(exc)


def same_text(got: str, sent: str) -> bool:
    """Header text is equal up to leading/trailing white space, which header syntax drops."""
    return str(got).strip() == sent.strip()


def same_file_name(got: str, sent: str) -> bool:
    """Equal as header text, except that the stdlib's reader (``email.utils.unquote``) takes a
    name wrapped in <...> for an angle-quoted value and strips the brackets: the header we
    write holds the name as given (``filename="<>"``); only reading it back loses them."""
    sent = sent.strip()
    if len(sent) >= 2 and sent.startswith("<") and sent.endswith(">"):
        sent = sent[1:-1]
    return same_text(got, sent)


def same_name(got: str, sent: str) -> bool:
    """Equal up to white space. A display name is a phrase: the email package writes ``"a  b"``
    as the words a b, so runs of white space may come back as one space; and its parser puts a
    space between two adjacent encoded words of a long non-ASCII name, which RFC 2047 says to
    drop (mail clients do; the header we write is right)."""
    return "".join(got.split()) == "".join(sent.split())


def normalize_body(text: str) -> str:
    """Line endings are the transport's business: compare bodies line by line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


# -- fuzzing composition ----------------------------------------------------------------------
@FUZZ
@given(subject=risky_text, name=display_name, addr=address, cc_name=display_name, cc=address,
       body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
       filename=file_name)
@example(subject="Grüße ✓ $5M {x}", name="Müller, Jörg", addr="jörg@exämple.de", cc_name="",
         cc="a@b.test", body="Zeile 1\n.\nFrom here\n", filename="Bericht Q3 – ü.xlsx")
@example(subject="x", name='"quoted" \\ back', addr="o'brien@example.test", cc_name="=?utf-8?q?x?=",
         cc="c@d.test", body="", filename="a\"b.txt")
def test_compose_round_trips_or_refuses(subject: str, name: str, addr: str, cc_name: str, cc: str,
                                        body: str, filename: str) -> None:
    request = {"to": [quoted(name, addr)], "cc": [quoted(cc_name, cc)], "subject": subject,
               "body": body, "content-type": "text/plain",
               "attachments": [(filename, b"\x00\x01 data \xff")]}
    outcome = build(request)
    fields_with_controls = [subject, name, addr, cc_name, cc, filename]
    event("refused: " + re.sub(r"'.*'", "'…'", outcome)[:60] if isinstance(outcome, str)
          else "round-tripped")
    if isinstance(outcome, str):
        return
    assert not any(c in f for f in fields_with_controls for c in BAD), "CR/LF/NUL accepted"
    msg, parts = parse(outcome), body_parts(outcome.as_bytes())
    assert same_text(msg["Subject"], subject)
    (to,) = msg["To"].addresses
    assert same_name(to.display_name, name) and same_addr(to.addr_spec, addr)
    cc_items = as_address_list(quoted(cc_name, cc))  # "" is no address; commas separate
    if not cc_items:
        assert msg["Cc"] is None
    else:
        assert len(msg["Cc"].addresses) == len(cc_items)
    if len(cc_items) == 1:
        (got_cc,) = msg["Cc"].addresses
        assert same_name(got_cc.display_name, cc_name) and same_addr(got_cc.addr_spec, cc)
    # The envelope holds exactly the addresses of the headers (Bcc aside).
    in_headers = [a.addr_spec for h in ("To", "Cc") if msg[h] for a in msg[h].addresses]
    assert outcome.recipients == tuple(dict.fromkeys(in_headers))
    for rcpt in outcome.recipients:
        assert not any(c.isspace() or c in BAD for c in rcpt), repr(rcpt)
    assert msg["Message-ID"] == outcome.message_id
    text = parts.get_body(("plain",))
    assert text is not None
    assert normalize_body(text.get_content()) == normalize_body(body)
    (att,) = list(msg.iter_attachments())
    assert same_file_name(att.get_filename() or "", filename)
    (att,) = list(parts.iter_attachments())
    assert att.get_payload(decode=True) == b"\x00\x01 data \xff"


@FUZZ
@given(subject=clean_text, name=clean_text, addr=valid_addr, cc_name=clean_text, cc=valid_addr,
       body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
       filename=clean_text.filter(lambda f: f.strip() != ""))
def test_clean_requests_always_round_trip(subject: str, name: str, addr: str, cc_name: str,
                                          cc: str, body: str, filename: str) -> None:
    """Valid addresses and text without control characters are never refused."""
    request = {"to": [quoted(name, addr)], "cc": [quoted(cc_name, cc)], "subject": subject,
               "body": body, "content-type": "text/plain",
               "attachments": [(filename, b"\x00\x01 data \xff")]}
    outcome = build(request)
    assert not isinstance(outcome, str), f"refused: {outcome}"
    msg, parts = parse(outcome), body_parts(outcome.as_bytes())
    assert same_text(msg["Subject"], subject)
    (to,) = msg["To"].addresses
    (got_cc,) = msg["Cc"].addresses
    assert same_name(to.display_name, name) and to.addr_spec == addr_spec(addr)
    assert same_name(got_cc.display_name, cc_name) and got_cc.addr_spec == addr_spec(cc)
    text = parts.get_body(("plain",))
    assert text is not None and normalize_body(text.get_content()) == normalize_body(body)
    (att,) = list(msg.iter_attachments())
    assert same_file_name(att.get_filename() or "", filename)
    (att,) = list(parts.iter_attachments())
    assert att.get_payload(decode=True) == b"\x00\x01 data \xff"


@FUZZ
@given(addr=valid_addr, name=st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                                     max_size=30))
def test_valid_addresses_are_accepted(addr: str, name: str) -> None:
    outcome = build({"to": quoted(name, addr), "subject": "s", "body": "b"})
    assert not isinstance(outcome, str), f"{quoted(name, addr)!r} was refused: {outcome}"
    (to,) = parse(outcome)["To"].addresses
    assert to.addr_spec == addr_spec(addr) and same_name(to.display_name, name)


@FUZZ
@given(addr=invalid_addr)
def test_invalid_addresses_are_exit_1_with_a_sentence(addr: str) -> None:
    assume("@" not in addr or any(c in addr for c in BAD + " <>") or addr.count("@") > 1
           or addr.startswith("@") or addr.endswith("@") or "-." in addr or ".-" in addr
           or "@-" in addr)
    outcome = build({"to": addr, "subject": "s", "body": "b"})
    if not isinstance(outcome, str):
        # The parser may read some odd strings as one valid address; then it must be that one.
        (to,) = parse(outcome)["To"].addresses
        assert "@" in to.addr_spec and not any(c in to.addr_spec for c in BAD)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=500),
       subject=any_text.filter(lambda s: not any(c in s for c in BAD)))
def test_html_bodies_round_trip(body: str, subject: str) -> None:
    outcome = build({"to": "a@example.test", "subject": subject, "body": body,
                     "content-type": "text/html"})
    if isinstance(outcome, str):  # a line break of any kind (VT, NEL, U+2028...), or ESC...
        controls = any(c != "\t" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in subject)
        assert len(f"x{subject}x".splitlines()) > 1 or controls, outcome
        assert ("line break" in outcome or "control character" in outcome) and "subject" in outcome
        return
    msg = body_parts(outcome.as_bytes())
    html = msg.get_body(("html",))
    assert html is not None
    text = msg.get_body(("plain",))
    assert text is not None
    if body.strip() and is_plain_text(body):
        # Typed as text: laid out in paragraphs; the words arrive as typed, in order.
        assert text.get_content().replace("\xad", "").split() == body.replace("\xad", "").split()
    else:
        assert normalize_body(html.get_content()) == normalize_body(body)


# -- CR / LF / NUL in every header and envelope address ---------------------------------------------
FIELDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "to": lambda bad: {"to": f"bob@example.test{bad}"},
    "to-display-name": lambda bad: {"to": f'"Bob{bad}Bcc: eve@evil.test" <bob@example.test>'},
    "to-list-item": lambda bad: {"to": ["ok@example.test", f"bob{bad}@example.test"]},
    "cc": lambda bad: {"cc": [f"carol@example.test{bad}"]},
    "bcc": lambda bad: {"bcc": [f"{bad}dave@example.test"]},
    "from": lambda bad: {"from": f"nb@example.test{bad}"},
    "from-display-name": lambda bad: {"from": f'"NB{bad}" <nb@example.test>'},
    "subject": lambda bad: {"subject": f"Hello{bad}Bcc: eve@evil.test"},
    "subject-end": lambda bad: {"subject": f"Hello{bad}"},
    "attachment-name": lambda bad: {"attachments": [(f"a{bad}b.txt", b"x")]},
    "extra-header": lambda bad: {"headers": {"X-Campaign": f"q3{bad}Bcc: eve@evil.test"}},
}


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\0", "\x1b]0;x\x07", "\x9b", "\x7f"],
                         ids=["CR", "LF", "CRLF", "NUL", "ESC-OSC", "CSI-C1", "DEL"])
@pytest.mark.parametrize("field", FIELDS.keys())
def test_control_characters_refused_everywhere(fault_server: Callable[..., FaultServer],
                                               tmp_data: TmpData, field: str, bad: str) -> None:
    request = {"to": "bob@example.test", "subject": "s", "body": "b", **FIELDS[field](bad)}
    outcome = build(request)
    assert isinstance(outcome, str), f"{field} with {bad!r} was accepted"
    # And through send(): exit 1, one sentence, nothing sent, no connection opened.
    server = fault_server()
    cfg = SETTINGS.copy().update({"port": server.port})
    (r,) = send_many([request], config=cfg)
    assert r.exitcode == 1, r
    one_sentence(r.message)
    assert server.connections == 0 and server.count() == 0


# -- a few real sends of fuzzed messages ---------------------------------------------------------
@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureServer]:
    root = tmp_path_factory.mktemp("fuzz-send")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("SMTP_"):
                mp.delenv(name)
        mp.setenv("SMTP_MAGIC_OUTBOX", str(root / "outbox"))
        with CaptureServer(root / "capture") as server:
            yield server


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(subject=any_text.filter(lambda s: not any(c in s for c in BAD)),
       name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
       addr=valid_addr, body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
       filename=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                        max_size=20))
def test_fuzzed_messages_arrive_intact(capture: CaptureServer, subject: str, name: str,
                                       addr: str, body: str, filename: str) -> None:
    cfg = SETTINGS.copy().update({"port": capture.port})
    r: Response = send(quoted(name, addr), subject, body, content_type="text/plain",
                       attachments=[(filename, b"payload")], config=cfg, timeout=10)
    if r.exitcode == 1:
        one_sentence(r.message)
        return
    assert r.exitcode == 0, r
    got = next(m for m in capture.wait_for(1) if m.message_id == r.message_id)
    data = got.path.read_bytes()
    msg, parts = parse_bytes(data), body_parts(data)
    assert same_text(msg["Subject"], subject)
    (to,) = msg["To"].addresses
    assert same_name(to.display_name, name) and to.addr_spec == addr_spec(addr)
    assert msg["X-RcptTo"] == addr_spec(addr)
    text = parts.get_body(("plain",))
    assert text is not None and normalize_body(text.get_content()) == normalize_body(body)
    (att,) = list(msg.iter_attachments())
    assert same_file_name(att.get_filename() or "", filename)
    (att,) = list(parts.iter_attachments())
    assert att.get_payload(decode=True) == b"payload"


def test_never_another_exception_for_wrong_types() -> None:
    for request in ({"to": 5, "subject": "s"}, {"to": "a@example.test", "subject": 5},
                    {"to": "a@example.test", "subject": "s", "body": b"bytes"},
                    {"to": ["a@example.test", None], "subject": "s"},
                    {"to": "a@example.test", "subject": "s", "attachments": [42]},
                    {"to": "a@example.test", "subject": "s", "cc": {"x": 1}},
                    {"to": "a@example.test", "subject": None},
                    {"to": "a@example.test", "subject": "s", "attachments": 42},
                    {"to": "a@example.test", "subject": "s", "attachments": [("a.txt", 5)]},
                    {"to": "a@example.test", "subject": "s", "headers": 42},
                    {"to": "a@example.test", "subject": "s", "headers": [5]},
                    {"to": "a@example.test", "subject": "s", "headers": {"X-A": 5}},
                    {"to": "a@example.test", "subject": "s", "content-type": 5},
                    {"to": "a@example.test", "subject": "s", "content-type": "image/png"},
                    {"to": "a@example.test", "subject": "s", "from": 5},
                    {"to": "a@example.test", "subject": "Line\u2028separator"},
                    {"to": "a@example.test", "subject": "s", "action": "delete"}):
        try:
            outcome = build(request)
        except SmtpMagicError as exc:  # pragma: no cover - build() catches InvalidRequest
            pytest.fail(f"{request}: {exc!r}")
        assert isinstance(outcome, str), request


# -- values from data: --each rows are escaped in HTML and cannot inject headers ---------------------
NASTY = ['<script>alert("x")</script>', "Tom & Jerry <tj@example.test>", "\"quoted\" 'single'",
         "{{ 7 * 7 }} {% raw %}", "$HOME {name}", "Zoë ✓ \u202e", "</p><img src=x onerror=alert(1)>"]


def test_each_row_values_are_html_escaped(ip: Any, smtp_server: CaptureServer) -> None:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                          "--security none --from nb@example.test")
    rows = [{"email": f"row{i}@example.test", "name": name} for i, name in enumerate(NASTY)]
    ip.user_ns["rows"] = rows
    result = ip.run_cell("%%smtp_send --each rows --to {email} --subject 'For {name}'\n"
                             "<p>Dear {{ name }}, this is for {{ email }}.</p>")
    assert result.success, result.error_in_exec
    got = {m.rcpt_to[0]: m for m in smtp_server.wait_for(len(rows))}
    for row in rows:
        msg = parse_bytes(got[row["email"]].path.read_bytes())
        html = body_parts(got[row["email"]].path.read_bytes()).get_body(("html",))
        assert html is not None
        content = html.get_content()
        # No markup from the data survived as markup; as text it is all there, unevaluated
        # (no Jinja, no $/{} expansion inside values).
        assert "<script" not in content and "<img" not in content and "<tj@" not in content
        assert f"Dear {row['name']}," in htmllib.unescape(content), content
        assert same_text(msg["Subject"], f"For {row['name']}")  # headers are text, not HTML
        assert [a.addr_spec for a in msg["To"].addresses] == [row["email"]]


@pytest.mark.parametrize("bad", ["\r\nBcc: eve@evil.test", "\nX-Evil: 1", "\0"])
def test_each_row_cannot_inject_headers_and_nothing_is_sent(ip: Any,
                                                            smtp_server: CaptureServer,
                                                            bad: str) -> None:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                          "--security none --from nb@example.test")
    ip.user_ns["rows"] = [{"email": "ok@example.test", "name": "Ok"},
                              {"email": f"row@example.test{bad}", "name": "Bad"},
                              {"email": "also-ok@example.test", "name": f"Name{bad}"}]
    with pytest.raises(UsageError) as info:
        ip.run_cell("%%smtp_send --each rows --to {email} --subject 'For {name}'\n"
                    "<p>{{ name }}</p>")
    error = str(info.value)
    assert "Row 1" in error and "\n" not in error.strip()
    assert smtp_server.count() == 0  # every row is checked before the first is sent
    # A send that follows is delivered alone: none of the refused rows was on its way.
    ip.run_cell("%%smtp_send --to after@example.test --subject After\n<p>x</p>")
    assert [m.subject for m in smtp_server.wait_for(1)] == ["After"]
