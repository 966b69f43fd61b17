"""DKIM signing and one-click unsubscribe, checked by independent verifiers: dkimpy's
``dkim.verify`` and OpenDKIM (a milter on the private Postfix, scripts/postfix-up.sh)."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import smtplib
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from conftest import Postfix
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_magic import SmtpMagic, send, send_many
from smtp_magic._dkim import BodyHash, _parse_headers, _relaxed
from smtp_magic.api import build_message
from smtp_magic.server import CaptureServer

DOMAIN = "example.test"
SENDER = "news@example.test"


@dataclass(frozen=True)
class Key:
    path: Path
    record: bytes  # the DNS TXT record that publishes its public half

    def dns(self, selector: str = "s1", domain: str = DOMAIN) -> Callable[..., bytes | None]:
        """A ``dnsfunc`` for dkim.verify that knows only this key's record."""
        name = f"{selector}._domainkey.{domain}.".encode()

        def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
            return self.record if qname == name else None
        return lookup


def make_key(directory: Path, name: str, *openssl_args: str, ed25519: bool = False) -> Key:
    path = directory / f"{name}.pem"
    command, *rest = openssl_args
    subprocess.run(["openssl", command, "-out", str(path), *rest], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    if ed25519:
        return Key(path, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]))
    return Key(path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    return make_keys(tmp_path_factory.mktemp("dkim-keys"))


def make_keys(d: Path) -> dict[str, Key]:
    """RSA 2048 (PKCS#8), RSA 1024 (PKCS#1), a too short RSA 512, and Ed25519 keys in ``d``."""
    return {
        "rsa": make_key(d, "rsa", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048"),
        "rsa1024": make_key(d, "rsa1024", "genrsa", "-traditional", "1024"),  # PKCS#1 PEM
        "rsa512": make_key(d, "rsa512", "genrsa", "512"),
        "ed": make_key(d, "ed", "genpkey", "-algorithm", "ED25519", ed25519=True),
    }


def signing(key: Key, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"sender": SENDER, "dkim_domain": DOMAIN, "dkim_selector": "s1",
                               "dkim_key": str(key.path), **extra})


def signature(raw: bytes) -> dict[str, str]:
    """The tags of the message's DKIM-Signature."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    found = re.search(r"^DKIM-Signature:(.*?)(?=^\S)", head + "\r\nX:", re.MULTILINE | re.DOTALL)
    assert found, head
    value = re.sub(r"\s+", "", found.group(1))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


# -- the signed headers are read and canonicalised as dkimpy does ----------------------------------

VALUE = st.lists(st.sampled_from([b"a", b"b c", b" ", b"\t", b"  x  ", b"\r\n ", b"\r\n\t",
                                  b"=?utf-8?q?x?=", b";", b""]), max_size=12).map(b"".join)
HEADERS = st.lists(st.tuples(st.sampled_from([b"From", b"to", b"Subject", b"X-A", b"Subject"]),
                             VALUE), min_size=1, max_size=6)


@given(fields=HEADERS)
@settings(max_examples=300, deadline=None)
def test_headers_are_parsed_and_canonicalised_as_dkimpy_does(
        fields: list[tuple[bytes, bytes]]) -> None:
    """Folded lines, runs of spaces and tabs, repeated names: the fields and their relaxed form
    are dkimpy's own (``rfc822_parse``, ``Relaxed.canonicalize_headers``)."""
    from dkim import rfc822_parse
    from dkim.canonicalization import Relaxed

    head = b"".join(name + b":" + value + b"\r\n" for name, value in fields)
    ours = _parse_headers(head)
    theirs = rfc822_parse(head + b"\r\n")[0]
    assert [tuple(f) for f in theirs] == ours
    assert [(n.lower().rstrip(), _relaxed(v) + b"\r\n") for n, v in ours] == \
        [tuple(f) for f in Relaxed.canonicalize_headers(theirs)]


# -- the body hash over chunks is dkimpy's ---------------------------------------------------------

LINES = st.lists(st.sampled_from([b"a", b"b c", b" ", b"\t", b"  x  ", b"\r\n", b"\n", b"\r",
                                  b"\r\n\r\n", b"=", b""]), max_size=40).map(b"".join)


@given(body=LINES, cuts=st.lists(st.integers(0, 400), max_size=6))
@settings(max_examples=400, deadline=None)
def test_streamed_body_hash_is_dkimpys(body: bytes, cuts: list[int]) -> None:
    """Cut anywhere (inside a CRLF, a run of spaces, trailing empty lines), the hash of the body
    fed in chunks is sha256 of dkimpy's relaxed canonical body."""
    # dkimpy reads the body with LF or CRLF line ends (rfc822_parse): so does BodyHash.
    expected = hashlib.sha256(Relaxed.canonicalize_body(
        b"\r\n".join(re.split(b"\r?\n", body)))).digest()
    h = BodyHash()
    last = 0
    for cut in sorted(c for c in cuts if c <= len(body)):
        h.update(body[last:cut])
        last = cut
    h.update(body[last:])
    assert h.digest() == expected


@pytest.mark.parametrize("shortcuts", ["fast composer", "EmailMessage"])
@pytest.mark.parametrize("algorithm", ["rsa", "ed", "rsa1024"])
def test_signature_is_dkimpys_and_verifies(keys: dict[str, Key], algorithm: str, shortcuts: str,
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both composers, a streamed attachment: the DKIM-Signature is byte for byte the one
    dkimpy's own ``dkim.sign`` makes of the whole message (RSA signatures are deterministic,
    so OpenSSL's RSA gives dkimpy's bytes), dkim.verify accepts the message, and one changed
    body byte or signed header fails it."""
    if shortcuts == "EmailMessage":
        monkeypatch.setenv("SMTP_MAGIC_NO_SHORTCUTS", "1")
    monkeypatch.setattr(time, "time", lambda: 1_796_600_000.0)  # t= in both signatures
    key = keys[algorithm]
    att = tmp_path / "data.bin"
    att.write_bytes(random.Random(1).randbytes(300_000))
    composed = build_message(
        {"to": "Ann Example <ann@example.org>", "cc": "cc@example.org", "subject": "Numbers  ",
         "body": "<p>Hello   there\t</p>\n\n\n", "attachments": [str(att)],
         "unsubscribe": "https://example.test/u?id=7"}, config=signing(key))
    raw = composed.as_bytes()
    tags = signature(raw)
    header, unsigned = re.match(rb"(DKIM-Signature:.*?\r\n)(?=\S)(.*)", raw, re.DOTALL).groups()
    ed = algorithm == "ed"
    expected = dkim.sign(unsigned, b"s1", DOMAIN.encode(),
                         _ed_seed(key) if ed else key.path.read_bytes(),
                         canonicalize=(b"relaxed", b"relaxed"),
                         signature_algorithm=b"ed25519-sha256" if ed else b"rsa-sha256",
                         include_headers=[h.encode() for h in tags["h"].split(":")])
    assert header == expected
    assert tags["a"] == ("ed25519-sha256" if ed else "rsa-sha256")
    assert tags["c"] == "relaxed/relaxed" and tags["d"] == DOMAIN and tags["s"] == "s1"
    assert tags["h"].split(":") == ["from", "to", "cc", "subject", "date", "message-id",
                                    "mime-version", "content-type", "list-unsubscribe",
                                    "list-unsubscribe-post"]
    monkeypatch.undo()
    assert dkim.verify(raw, dnsfunc=key.dns())
    body_at = raw.index(b"Hello")
    assert not dkim.verify(raw[:body_at] + b"J" + raw[body_at + 1:], dnsfunc=key.dns())
    assert not dkim.verify(raw.replace(b"Subject: Numbers", b"Subject: Numberz"), dnsfunc=key.dns())
    assert not dkim.verify(raw.replace(b"u?id=7", b"u?id=8"), dnsfunc=key.dns())


def _ed_seed(key: Key) -> bytes:
    der = subprocess.run(["openssl", "pkey", "-in", str(key.path), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der[-32:])


def test_streamed_attachment_is_hashed_without_loading_it(keys: dict[str, Key],
                                                          tmp_path: Path) -> None:
    """An 8 MB attachment from a file is signed reading it a block at a time: signing costs
    hardly more memory than sending it (which streams it too), far less than the file."""
    att = tmp_path / "big.bin"
    att.write_bytes(random.Random(2).randbytes(8 << 20))
    request = {"to": "a@example.org", "subject": "big", "body": "<p>x</p>",
               "attachments": [str(att)]}
    config = signing(keys["ed"])
    build_message({"to": "a@example.org", "subject": "warm-up", "body": "x"}, config=config)

    def peak(work: Callable[[], Any]) -> int:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    unsigned = build_message(request, config={"sender": SENDER})
    streaming = peak(lambda: [len(c) for c in unsigned.chunks()])  # what sending it holds
    composed: list[Any] = []
    signing_peak = peak(lambda: composed.append(build_message(request, config=config)))
    assert signing_peak < streaming + (1 << 20), (signing_peak, streaming)
    assert signing_peak < (8 << 20) * 0.6, f"signing held {signing_peak >> 20} MB"
    assert dkim.verify(composed[0].as_bytes(), dnsfunc=keys["ed"].dns())


# -- refused before connecting, in one sentence ------------------------------------------------------

@pytest.mark.parametrize(("change", "words"), [
    ({"dkim_key": "/nonexistent/key.pem"}, "cannot be read"),
    ({"dkim_key": "/dev/zero"}, "too large to be a private key"),
    ({"dkim_key": "/tmp"}, "cannot be read: Is a directory"),
    ({"dkim_key": None}, "needs a private key"),
    ({"dkim_selector": None}, "needs dkim_selector"),
    ({"dkim_domain": "other.test"}, "does not align with dkim_domain"),
    ({"sender": "news@example.test.evil.org"}, "does not align"),
])
def test_bad_settings_are_exit_1_before_connecting(keys: dict[str, Key], refused_port: int,
                                                   change: dict[str, Any], words: str) -> None:
    config = signing(keys["rsa"], host="127.0.0.1", port=refused_port, **change)
    r = send("a@example.org", "hi", "body", config=config)
    assert r.exitcode == 1, r  # 2 would mean it tried to connect
    assert words in r.message and r.message.count(". ") == 0, r.message
    assert re.search(r"dkim_\w+", r.message), "the message names the setting to change"


@pytest.mark.parametrize(("setting", "value"), [
    ("dkim_selector", "s1\r\nBcc: victim@example.org"), ("dkim_selector", "s 1"),
    ("dkim_domain", "example.test; x=y"), ("dkim_domain", "exa\nmple.test")])
def test_dkim_names_cannot_inject(setting: str, value: str) -> None:
    from smtp_magic.errors import ConfigError

    with pytest.raises(ConfigError, match=f"Invalid value .* for setting '{setting}'"):
        SmtpMagic().update({setting: value})


@pytest.mark.parametrize(("headers", "words"), [("To, Subject", "From must be signed"),
                                                ("From, Bcc", "'Bcc' cannot be signed")])
def test_dkim_headers_are_checked_when_set(headers: str, words: str) -> None:
    from smtp_magic.errors import ConfigError

    with pytest.raises(ConfigError, match=f"setting 'dkim_headers'.*{words}"):
        SmtpMagic().update({"dkim_headers": headers})
    assert SmtpMagic().update({"dkim_headers": "from:to  subject"}).dkim_headers == \
        "from, to, subject"


@pytest.mark.parametrize(("content", "words"), [
    (b"not a key", "is not a PEM private key"),
    (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
     "is encrypted"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
     "neither an RSA nor an Ed25519 private key"),
])
def test_unusable_key_files(keys: dict[str, Key], tmp_path: Path, content: bytes, words: str,
                            refused_port: int) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    r = send("a@example.org", "hi", "body", config=signing(
        keys["rsa"], dkim_key=str(path), host="127.0.0.1", port=refused_port))
    assert r.exitcode == 1 and words in r.message, r.message


def test_short_rsa_key_is_refused_and_1024_accepted(keys: dict[str, Key], refused_port: int) -> None:
    r = send("a@example.org", "hi", "body",
             config=signing(keys["rsa512"], host="127.0.0.1", port=refused_port))
    assert r.exitcode == 1 and "512 bits" in r.message and "2048-bit" in r.message, r.message
    raw = build_message({"to": "a@example.org", "subject": "hi", "body": "x"},
                        config=signing(keys["rsa1024"])).as_bytes()
    assert dkim.verify(raw, dnsfunc=keys["rsa1024"].dns())


def test_subdomain_sender_aligns(keys: dict[str, Key]) -> None:
    raw = build_message({"to": "a@example.org", "subject": "hi", "body": "x"},
                        config=signing(keys["ed"], sender="Team <team@mail.EXAMPLE.test>")).as_bytes()
    assert signature(raw)["d"] == DOMAIN
    assert dkim.verify(raw, dnsfunc=keys["ed"].dns())


def test_missing_extra_is_actionable(keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch,
                                     refused_port: int) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dkim", None)  # import dkim raises ImportError
    r = send("a@example.org", "hi", "body",
             config=signing(keys["rsa"], host="127.0.0.1", port=refused_port))
    assert r.exitcode == 1
    assert r.message == "DKIM signing (dkim_domain) needs dkimpy: pip install 'smtp-magic[dkim]'."


def test_ed25519_without_pynacl_is_actionable(keys: dict[str, Key], refused_port: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from smtp_magic import _dkim

    monkeypatch.setitem(sys.modules, "nacl", None)
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    monkeypatch.setattr(_dkim, "_keys", {})
    r = send("a@example.org", "hi", "body",
             config=signing(keys["ed"], host="127.0.0.1", port=refused_port))
    assert r.exitcode == 1
    assert r.message == ("DKIM signing with an Ed25519 key needs pynacl: "
                         "pip install 'smtp-magic[dkim]'.")


def test_cli_request_with_unsubscribe_is_signed(keys: dict[str, Key], smtp_server: CaptureServer,
                                                tmp_path: Path) -> None:
    import json
    import sys

    conn, req = tmp_path / "conn.json", tmp_path / "req.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": smtp_server.port,
                                "security": "none", "dkim_domain": DOMAIN,
                                "dkim_selector": "s1", "dkim_key": str(keys["rsa"].path)}))
    req.write_text(json.dumps({"to": "a@example.org", "from": SENDER, "subject": "CLI",
                               "body": "hi", "unsubscribe": "https://example.test/u/9"}))
    run = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config", str(conn),
                          "--request", str(req)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    (m,) = smtp_server.wait_for(1)
    assert m.message["List-Unsubscribe"] == "<https://example.test/u/9>"
    assert dkim.verify(m.path.read_bytes(), dnsfunc=keys["rsa"].dns())


def test_key_from_the_keyring(keys: dict[str, Key], memory_keyring: dict[tuple[str, str], str]
                              ) -> None:
    memory_keyring[("smtp-magic", "dkim:s1._domainkey.example.test")] = keys["ed"].path.read_text()
    raw = build_message({"to": "a@example.org", "subject": "hi", "body": "x"},
                        config=signing(keys["ed"], dkim_key="keyring")).as_bytes()
    assert dkim.verify(raw, dnsfunc=keys["ed"].dns())
    r = send("a@example.org", "hi", "x", config=signing(keys["ed"], dkim_key="keyring",
                                                          dkim_selector="other"))
    assert r.exitcode == 1 and "keyring has no DKIM key 'dkim:other._domainkey" in r.message


def test_unsigned_without_dkim_domain() -> None:
    raw = build_message({"to": "a@example.org", "subject": "hi", "body": "x", "from": SENDER}
                        ).as_bytes()
    assert b"DKIM-Signature" not in raw


# -- one-click unsubscribe ---------------------------------------------------------------------------

def test_unsubscribe_headers(smtp_server: CaptureServer) -> None:
    config = {"host": smtp_server.host, "port": smtp_server.port, "security": "none",
              "sender": SENDER, "unsubscribe_mailto": "leave@example.test"}
    r = send_many([{"to": "a@example.org", "subject": "hi", "body": "x",
                    "unsubscribe": "https://example.test/u/1"},
                   {"to": "b@example.org", "subject": "hi", "body": "x"}], config=config)
    assert [x.exitcode for x in r] == [0, 0]
    by_to = {str(m.message["To"]): m.message for m in smtp_server.wait_for(2)}
    one, two = by_to["a@example.org"], by_to["b@example.org"]
    assert one["List-Unsubscribe"] == "<https://example.test/u/1>, <mailto:leave@example.test>"
    assert one["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert two["List-Unsubscribe"] == "<mailto:leave@example.test>"  # no one-click without https
    assert two["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(("url", "words"), [
    ("http://example.test/u", "must be https"),
    ("mailto:x@example.test", "must be https"),
    ("https://example.test/u\r\nBcc: victim@example.org", "is not a URL"),
    ("https://exa mple.test/u", "is not a URL"),
    ("https://example.test/<u>", "is not a URL"),
    ("https://example.test/désabonner", "must be ASCII"),
    ("https://example.test/" + "x" * 990, "must be at most 976 characters"),
])
def test_unsubscribe_url_is_checked(url: str, words: str, refused_port: int) -> None:
    r = send_many([{"to": "a@example.org", "subject": "hi", "body": "x", "unsubscribe": url}],
                  config={"host": "127.0.0.1", "port": refused_port, "sender": SENDER})[0]
    assert r.exitcode == 1 and words in r.message, r.message


def test_a_long_unsubscribe_link_stays_whole(keys: dict[str, Key]) -> None:
    """A link with a long token stays one URL on its line (the email package would fold it into
    RFC 2047 encoded words, which receivers do not decode there), and it is signed."""
    url = "https://example.test/unsubscribe?token=" + "a1B2c3D4" * 40
    raw = build_message({"to": "a@example.org", "subject": "x", "body": "y", "unsubscribe": url},
                        config=signing(keys["ed"], unsubscribe_mailto="u@example.test")
                        ).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert f"\r\nList-Unsubscribe: <{url}>,\r\n <mailto:u@example.test>\r\n".encode() in head
    assert b"=?" not in head
    assert dkim.verify(raw, dnsfunc=keys["ed"].dns())


def test_unsubscribe_and_a_custom_list_unsubscribe_header_conflict(refused_port: int) -> None:
    r = send_many([{"to": "a@example.org", "subject": "hi", "body": "x",
                    "unsubscribe": "https://example.test/u",
                    "headers": {"List-Unsubscribe": "<https://other.test/>"}}],
                  config={"host": "127.0.0.1", "port": refused_port, "sender": SENDER})[0]
    assert r.exitcode == 1 and "leave it out of 'headers'" in r.message


# -- OpenDKIM on the private Postfix: the messages that arrived verify, tampered ones do not --------

def _opendkim(postfix: Postfix) -> tuple[int, Path]:
    if postfix.dkim_port is None or postfix.dkim_keys is None:
        if os.environ.get("SMTP_MAGIC_REQUIRE_POSTFIX") == "1":
            pytest.fail("OpenDKIM is required: install opendkim (scripts/test.sh does)")
        pytest.skip("opendkim is not installed (no POSTFIX_DKIM_PORT)")
    return postfix.dkim_port, postfix.dkim_keys


def _results(msg: Any) -> str:
    return " ".join(str(v) for v in msg.get_all("Authentication-Results", []))


def _published(keys: Path, selector: str) -> Callable[..., bytes | None]:
    """dkim.verify's DNS: the records OpenDKIM reads (its TestPublicKeys file)."""
    records = dict(line.split(" ", 1) for line in
                   (keys.parent / "keys.txt").read_text().splitlines() if line)

    def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
        found = records.get(qname.decode().rstrip("."))
        return found.encode() if found else None
    return lookup


@pytest.mark.postfix
@pytest.mark.parametrize("size", ["small", "streamed"])
@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_arrived_messages_verify_with_opendkim_and_dkimpy(postfix: Postfix, selector: str,
                                                          size: str, tmp_path: Path) -> None:
    """A text attachment (7bit), or a 3 MB binary one: hashed as it streams, then sent from the
    outbox journal in pieces, it arrives with a signature both verifiers accept."""
    port, keys = _opendkim(postfix)
    att = tmp_path / ("report.csv" if size == "small" else "data.bin")
    if size == "small":
        att.write_text("a,b\n1,2\n" * 5000)
    else:
        att.write_bytes(random.Random(3).randbytes(3 << 20))
    config = {"host": postfix.host, "port": port, "security": "none", "sender": SENDER,
              "dkim_domain": DOMAIN, "dkim_selector": selector,
              "dkim_key": str(keys / f"{selector}.pem"), "timeout": 20}
    r = send_many([{"to": "a@example.test", "subject": f"signed {selector} {size}",
                    "body": "<p>Hi</p>",
                    "attachments": [str(att)], "unsubscribe": "https://example.test/u?r=1"}],
                  config=config)[0]
    assert r.exitcode == 0, r
    msg = postfix.wait_for(r.message_id)
    algorithm = "rsa-sha256" if selector == "rsa" else "ed25519-sha256"
    assert re.search(rf"dkim=pass .*header.a={algorithm} header.s={selector}", _results(msg)), \
        _results(msg)
    raw = _raw(postfix, r.message_id)
    assert dkim.verify(raw, dnsfunc=_published(keys, selector))


@pytest.mark.postfix
@pytest.mark.parametrize("tamper", ["a signed header", "a body byte"])
@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_tampered_messages_fail_opendkim(postfix: Postfix, selector: str, tamper: str) -> None:
    """A signed message changed on the way (one byte) arrives with dkim=fail from OpenDKIM."""
    port, keys = _opendkim(postfix)
    composed = build_message({"to": "a@example.test", "subject": f"tampered {selector}",
                              "body": "Pay 100 EUR.", "content_type": "text/plain"},
                             config=SmtpMagic().update({
                                 "sender": SENDER, "dkim_domain": DOMAIN,
                                 "dkim_selector": selector,
                                 "dkim_key": str(keys / f"{selector}.pem")}))
    raw = composed.as_bytes()
    if tamper == "a signed header":
        raw = raw.replace(b"Subject: tampered", b"Subject: Tampered")
    else:
        raw = raw.replace(b"Pay 100", b"Pay 900")
    with smtplib.SMTP(postfix.host, port, timeout=20) as smtp:
        smtp.sendmail(SENDER, ["a@example.test"], raw)
    msg = postfix.wait_for(composed.message_id)
    assert "dkim=fail" in _results(msg), _results(msg)
    assert not dkim.verify(_raw(postfix, composed.message_id), dnsfunc=_published(keys, selector))


def _raw(postfix: Postfix, message_id: str | None) -> bytes:
    for sub in ("new", "cur"):
        for path in (postfix.maildir / sub).glob("*"):
            data = path.read_bytes()
            if message_id and message_id.encode() in data.split(b"\n\n", 1)[0]:
                return data
    raise AssertionError(f"{message_id} not in {postfix.maildir}")


# -- the magics ----------------------------------------------------------------------------------------

def test_magic_each_unsubscribe_per_row_and_signed(ip: Any, to_server: CaptureServer,
                                                   keys: dict[str, Key]) -> None:
    """%smtp_config sets the DKIM settings; --unsubscribe is a Jinja template rendered per row
    (or {}-expanded); every message arrives signed, both List-Unsubscribe headers in h=."""
    ip.run_cell(f"%smtp_config --dkim-domain example.test --dkim-selector s1 "
                f"--dkim-key {keys['ed'].path}")
    ip.user_ns["people"] = [{"to": "a@example.org", "id": "a 1"}, {"to": "b@example.org", "id": 2}]
    ip.run_cell('%%smtp_send --sync --each people --to {to} --subject Hi '
                '--unsubscribe "https://example.test/u?id={{ id|urlencode }}"\nHello {{ id }}')
    ip.user_ns["ids"] = [{"to": "c@example.org", "id": "c3"}]
    ip.run_cell('%%smtp_send --sync --each ids --to {to} --subject Again '
                '--unsubscribe https://example.test/v/{id}\nHello')
    got = {}
    for m in to_server.wait_for(3):
        raw = m.path.read_bytes()
        assert dkim.verify(raw, dnsfunc=keys["ed"].dns()), raw[:800]
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signature(raw)["h"].split(":"))
        got[m.rcpt_to[0]] = m.message["List-Unsubscribe"]
    assert got == {"a@example.org": "<https://example.test/u?id=a%201>",
                   "b@example.org": "<https://example.test/u?id=2>",
                   "c@example.org": "<https://example.test/v/c3>"}


def test_magic_refusals_name_settable_settings(ip: Any, to_server: CaptureServer,
                                               keys: dict[str, Key]) -> None:
    from IPython.core.error import UsageError

    ip.run_cell("%smtp_config --dkim-domain other.test --dkim-selector s1 "
                f"--dkim-key {keys['rsa'].path}")
    with pytest.raises(UsageError, match="does not align with dkim_domain 'other.test'"):
        ip.run_cell("%%smtp_send --to a@example.org --subject x\nbody")
    with pytest.raises(UsageError, match="must be https"):
        ip.run_cell("%%smtp_send --to a@example.org --subject x --unsubscribe http://x.test/\nb")
    assert to_server.messages() == []


def test_rsa_without_cryptography_is_dkimpys_own(keys: dict[str, Key],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cryptography installed, dkimpy's pure-Python RSA signs (slower, same result)."""
    from smtp_magic import _dkim

    monkeypatch.setattr(_dkim, "_openssl_rsa", lambda der: None)
    monkeypatch.setattr(_dkim, "_keys", {})
    config = signing(keys["rsa"])
    assert _dkim.load_key(config.snapshot())._fast is None
    raw = build_message({"to": "a@example.org", "subject": "hi", "body": "x"},
                        config=config).as_bytes()
    assert dkim.verify(raw, dnsfunc=keys["rsa"].dns())


# -- a 10,000-row signed merge -------------------------------------------------------------------------

def test_ten_thousand_signed_messages_all_verify(keys: dict[str, Key], tmp_path: Path) -> None:
    """A 10,000-row merge (send_many from a generator, each row its own body and unsubscribe
    link) to the capture server: 10,000 messages arrive and every one verifies with dkimpy."""
    count = 10_000
    key = keys["ed"]
    lookup = key.dns()
    with CaptureServer(tmp_path / "merge") as server:
        config = signing(key, host=server.host, port=server.port, security="none", timeout=120)
        rows = ({"to": f"user{i}@example.org", "subject": f"Your numbers {i}",
                 "body": f"<p>Dear user {i},</p><p>you owe {i * 3} EUR.</p>",
                 "unsubscribe": f"https://example.test/u?id={i}"} for i in range(count))
        responses = send_many(rows, config=config)
        assert [r.exitcode for r in responses] == [0] * count
        paths = [p for sub in ("new", "cur") for p in (tmp_path / "merge" / sub).iterdir()]
    assert len(paths) == count
    failed = [p for p in paths if not dkim.verify(p.read_bytes(), dnsfunc=lookup)]
    assert failed == [], f"{len(failed)} of {count} do not verify, e.g. {failed[0]}"
