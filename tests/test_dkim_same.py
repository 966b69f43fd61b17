"""The streaming signer's DKIM-Signature is byte for byte dkimpy's own ``dkim.sign`` of the
whole message, over many varied messages: tabs and runs of spaces, trailing spaces, empty lines
at the end, a last line without its line end, LF line ends, folded and long headers, a header
twice, header lists with a name twice, a domain long enough to be cut when folded, cut into
random chunks; Ed25519, RSA through OpenSSL and dkimpy's own RSA."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dkim import _ed_seed, make_keys

from smtp_magic import Mailer, SmtpMagic, _dkim
from smtp_magic.delivery import MemoryTransport
from smtp_magic.errors import ConfigError

DOMAIN = "example.test"
LONG_DOMAIN = "a-rather-long-subdomain-name-for-folding-the-d-tag-somewhere." + DOMAIN
NOW = 1_796_600_000.0

HEADER_LISTS = [
    ("From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"),
    ("From", "To", "Subject"),
    ("From", "to", "from", "Subject", "subject"),  # names twice: dkimpy signs two fields each
    ("From", "X-A-Custom-Header-Name-Long-Enough-To-Be-Cut-By-The-Fold-Of-H", "Subject"),
    ("From", "X-Missing", "Subject", "X-Tab"),
]
VALUES = [b"plain", b"two  spaces", b"tab\there", b" leading", b"trailing  ", b"\t",
          b"=?utf-8?q?caf=C3=A9?=", b"a;b=c", b"x" * 120, b"caf\xc3\xa9 (SMTPUTF8)", b""]
LINES = [b"", b"", b"text", b"two  spaces  inside", b"trailing ", b"trailing\t \t", b" ",
         b"\t", b"\ttab\tinside\t", b"=3D=20", b"y" * 200, b"a \t b", b"   lead",
         b"bare\rCR \r", b"8 bit caf\xc3\xa9  "]


def _value(rng: random.Random) -> bytes:
    out = b" " + b"".join(rng.choice(VALUES) for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.3:  # folded over more lines
        out += rng.choice([b"\r\n ", b"\r\n\t", b"\r\n  "]) + rng.choice(VALUES[:6])
    return out


def message(rng: random.Random, domain: str) -> bytes:
    fields = [(b"From", b" News <news@" + domain.encode() + b">"),
              (b"To", _value(rng) + b" <ann@example.org>")]
    for name in rng.sample([b"Subject", b"Cc", b"Date", b"X-Tab", b"Subject", b"To",
                            b"X-Long", b"Message-ID", b"Content-Type"], rng.randint(1, 7)):
        value = b" " + b"z" * 900 if name == b"X-Long" else _value(rng)
        fields.append((name, value))
    rng.shuffle(fields)
    head = b"".join(name + b":" + value + b"\r\n" for name, value in fields)
    lines = [rng.choice(LINES) for _ in range(rng.randint(0, 30))]
    body = b"".join(line + b"\r\n" for line in lines) + b"\r\n" * rng.choice([0, 0, 1, 3])
    if rng.random() < 0.1:
        body += b"no line end  at the end \t"
    raw = head + (b"" if rng.random() < 0.03 else b"\r\n" + body)
    if rng.random() < 0.15:  # LF line ends: dkimpy reads them as CRLF
        raw = raw.replace(b"\r\n", b"\n")
    return raw


def chunks(rng: random.Random, raw: bytes) -> list[bytes]:
    cuts = sorted(rng.randint(0, len(raw)) for _ in range(rng.randint(0, 5)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_keys(tmp_path_factory.mktemp("dkim-same"))


@pytest.mark.parametrize(("algorithm", "count"), [("ed", 600), ("rsa", 150), ("pure rsa", 12)])
def test_signatures_are_dkimpys_byte_for_byte(keys: dict[str, Any], algorithm: str, count: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    key = keys["rsa" if "rsa" in algorithm else "ed"]
    if algorithm == "pure rsa":
        monkeypatch.setattr(_dkim, "_openssl_rsa", lambda der: None)
        monkeypatch.setattr(_dkim, "_keys", {})
    private = _ed_seed(key) if algorithm == "ed" else key.path.read_bytes()
    rng = random.Random(f"dkim-same-{algorithm}")
    for i in range(count):
        domain = LONG_DOMAIN if i % 7 == 3 else DOMAIN
        settings = SmtpMagic().update({"dkim_domain": domain, "dkim_selector": "s1",
                                       "dkim_key": str(key.path)}).snapshot()
        names = HEADER_LISTS[i % len(HEADER_LISTS)]
        signer = _dkim.Signer(domain, "s1", _dkim.load_key(settings), names)
        if "rsa" in algorithm:
            assert (signer.key._fast is None) == (algorithm == "pure rsa")
        raw = message(rng, domain)
        ours = signer.sign(chunks(rng, raw))
        present = {line.split(b":")[0].lower() for line in raw.split(b"\n\n")[0].split(b"\r\n\r\n")[0]
                   .replace(b"\r\n", b"\n").split(b"\n") if line[:1] not in (b" ", b"\t")}
        include = [n.lower().encode() for n in names if n.lower().encode() in present]
        expected = dkim.sign(raw, b"s1", domain.encode(), private,
                             canonicalize=(b"relaxed", b"relaxed"),
                             signature_algorithm=b"ed25519-sha256" if algorithm == "ed"
                             else b"rsa-sha256", include_headers=include)
        assert ours == expected, (i, raw)
        if i % 50 == 0:  # the settings' way (signer_for, the module function) signs the same
            assert _dkim.sign(raw, settings, domain) == expected


def test_a_replaced_key_file_signs_the_next_message(keys: dict[str, Any], tmp_path: Path) -> None:
    """The signer is kept between messages, but a key file replaced on disk (a key rotation)
    signs the very next message of the same Mailer."""
    path = tmp_path / "key.pem"
    path.write_bytes(keys["ed"].path.read_bytes())
    memory = MemoryTransport()
    config = {"sender": "news@" + DOMAIN, "dkim_domain": DOMAIN, "dkim_selector": "s1",
              "dkim_key": str(path)}
    settings = SmtpMagic().update(config).snapshot()
    first = _dkim.signer_for(settings, DOMAIN)
    assert first is not None and _dkim.signer_for(settings, DOMAIN) is first  # kept
    with Mailer(config, transport=memory) as mailer:
        rows = [{"to": f"u{i}@example.org", "subject": "s", "body": "b"} for i in range(3)]
        assert [r.exitcode for r in mailer.send_many(rows)] == [0] * 3
        path.write_bytes(keys["rsa"].path.read_bytes())
        assert mailer.send("u@example.org", "s", "b").exitcode == 0
    sent = [m.data for m in memory.messages]
    assert all(dkim.verify(raw, dnsfunc=keys["ed"].dns()) for raw in sent[:3])
    assert b"a=rsa-sha256" in sent[3] and dkim.verify(sent[3], dnsfunc=keys["rsa"].dns())


@pytest.mark.parametrize("line", [b"From", b"Subject", b"X Space: y", b": no name", b"Caf\xc3\xa9: x"])
def test_a_line_that_is_not_a_field_is_refused_however_often_its_name_was_seen(
        keys: dict[str, Any], line: bytes) -> None:
    settings = SmtpMagic().update({"dkim_domain": DOMAIN, "dkim_selector": "s1",
                                   "dkim_key": str(keys["ed"].path)}).snapshot()
    good = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"
    assert _dkim.sign(good, settings, DOMAIN)
    with pytest.raises(ConfigError, match="not a header field"):
        _dkim.sign(b"From: a@example.test\r\n" + line + b"\r\n\r\nbody\r\n", settings, DOMAIN)


class _Kept:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, chunk: bytes) -> None:
        self.parts.append(chunk)


@given(raw=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"x: y", b"="]),
                    max_size=30).map(b"".join),
       cuts=st.lists(st.integers(0, 120), max_size=4))
@settings(max_examples=500, deadline=None)
def test_the_header_ends_at_the_first_empty_line(raw: bytes, cuts: list[int]) -> None:
    """Cut anywhere, with LF or CRLF line ends (or both): the header block is everything up to
    the first line end followed by another, the body everything after them."""
    found = re.search(rb"\r?\n\r?\n", raw)
    head = raw if found is None else raw[:found.start() + (2 if raw[found.start()] == 13 else 1)]
    body = b"" if found is None else raw[found.end():]
    ends = sorted(c for c in cuts if c <= len(raw))
    kept = _Kept()
    assert _dkim.split_header([raw[a:b] for a, b in zip([0, *ends], [*ends, len(raw)])],
                              kept) == head  # type: ignore[arg-type]
    assert b"".join(kept.parts) == body
