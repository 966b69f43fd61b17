"""The sender check (%smtp_config --check --deliverability, smtp-magic check --deliverability)
against a real DNS server on 127.0.0.1 (dnslib), never the internet."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from test_dkim import Key, make_keys

from smtp_magic import SmtpMagic, check_deliverability
from smtp_magic.errors import SmtpMagicError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    return make_keys(tmp_path_factory.mktemp("dkim-keys"))


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from ``records``: name -> [(type, value)]; everything else is NXDOMAIN."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.asked: list[str] = []

    def add(self, name: str, rtype: str, value: str) -> None:
        self.records.setdefault(name.rstrip(".").lower(), []).append((rtype, value))

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.asked.append(f"{qname} {qtype}")
        found = self.records.get(qname)
        if found is None:
            reply.header.rcode = 3  # NXDOMAIN
        for rtype, value in found or ():
            if rtype != qtype:
                continue
            if rtype == "TXT":  # strings of at most 255 characters, as DNS stores them
                data = TXT([value[i:i + 255].encode() for i in range(0, len(value), 255)])
            else:
                data = A(value)
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, rtype), rdata=data, ttl=60))
        return reply


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Zone]:
    """A DNS server (UDP and TCP) on 127.0.0.1 answering from a Zone; $SMTP_MAGIC_RESOLVER
    points the check at it."""
    resolver = Zone()
    for _ in range(20):  # a free UDP port whose TCP twin is free too
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=_Quiet())
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=_Quiet())
            break
        except OSError:
            udp.server.server_close()
    udp.start_thread()
    tcp.start_thread()
    monkeypatch.setenv("SMTP_MAGIC_RESOLVER", f"127.0.0.1:{port}")
    try:
        yield resolver
    finally:
        udp.stop()
        tcp.stop()
        udp.server.server_close()
        tcp.server.server_close()


class _Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def good_zone(zone: Zone, key: Key, relay: str = "192.0.2.25") -> None:
    zone.add("example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("example.test", "TXT", "google-site-verification=abc")
    zone.add("s1._domainkey.example.test", "TXT", key.record.decode())
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.test")
    zone.add("smtp.example.test", "A", relay)


def settings(key: Key, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "smtp.example.test", "sender": "News <news@example.test>",
                               "dkim_domain": "example.test", "dkim_selector": "s1",
                               "dkim_key": str(key.path), **extra})


@pytest.mark.parametrize("algorithm", ["rsa", "ed"])
def test_everything_in_place(zone: Zone, keys: dict[str, Key], algorithm: str) -> None:
    good_zone(zone, keys[algorithm])
    report = check_deliverability(settings(keys[algorithm]))
    text = "\n".join(report.lines())
    assert report.ok, text
    assert "SPF: ok - the relay smtp.example.test (192.0.2.25) may send for example.test" in text
    assert "matches the private key" in text
    assert "DMARC: ok - policy p=reject at _dmarc.example.test; DMARC will pass through DKIM " \
           "and SPF" in text
    assert "s1._domainkey.example.test TXT" in zone.asked  # it really asked the DNS server
    html = report._repr_html_()
    assert "<table" in html and "matches the private key" in html


def test_problems_in_plain_words(zone: Zone, keys: dict[str, Key]) -> None:
    """The published key is another one, SPF leaves the relay out with ~all, DMARC rejects."""
    zone.add("example.test", "TXT", "v=spf1 include:_spf.provider.test ~all")
    zone.add("_spf.provider.test", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    zone.add("s1._domainkey.example.test", "TXT", keys["ed"].record.decode())
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    report = check_deliverability(settings(keys["rsa"], host="203.0.113.9"))
    lines = report.lines()
    assert not report.ok
    assert lines[1] == ("SPF: PROBLEM - the relay 203.0.113.9 (203.0.113.9) is not allowed (~all "
                        "in example.test's SPF): mail is likely marked as spam; add it to the "
                        "SPF record.")
    assert "does NOT match the private key" in lines[2]
    assert lines[3] == ("DMARC: PROBLEM - policy p=reject at _dmarc.example.test, and neither "
                        "SPF nor DKIM will pass aligned: messages will be rejected.")


def test_nothing_published(zone: Zone, keys: dict[str, Key]) -> None:
    zone.add("smtp.example.test", "A", "192.0.2.25")
    text = "\n".join(check_deliverability(settings(keys["rsa"])).lines())
    assert "no SPF record at example.test" in text
    assert "no public key at s1._domainkey.example.test" in text
    assert "no DMARC record at _dmarc.example.test" in text


def test_include_and_parent_dmarc_and_unsigned(zone: Zone, keys: dict[str, Key]) -> None:
    """SPF through include:, DMARC from the parent domain (sp=), no DKIM configured."""
    zone.add("mail.example.test", "TXT", "v=spf1 include:_spf.provider.test -all")
    zone.add("_spf.provider.test", "TXT", "v=spf1 a:out.provider.test -all")
    zone.add("out.provider.test", "A", "192.0.2.7")
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    report = check_deliverability({"host": "192.0.2.7", "sender": "a@mail.example.test"})
    lines = report.lines()
    assert lines[1].startswith("SPF: ok - the relay 192.0.2.7 (192.0.2.7) may send for "
                               "mail.example.test (include:_spf.provider.test")
    assert lines[2].startswith("DKIM: PROBLEM - messages are not signed (dkim_domain is not set)")
    assert lines[3].startswith("DMARC: ok - policy p=quarantine at _dmarc.example.test (the "
                               "parent domain's); DMARC will pass through SPF")
    assert "Without DKIM, forwarded mail will fail it." in lines[3]


def test_unreachable_dns_is_one_sentence(monkeypatch: pytest.MonkeyPatch, keys: dict[str, Key],
                                         refused_port: int) -> None:
    monkeypatch.setenv("SMTP_MAGIC_RESOLVER", f"127.0.0.1:{refused_port}")
    with pytest.raises(SmtpMagicError) as info:
        check_deliverability(settings(keys["rsa"], timeout=1))
    assert info.value.exitcode == 2 and "DNS" in info.value.message


def test_magic(zone: Zone, keys: dict[str, Key], ip: Any) -> None:
    from IPython.core.error import UsageError
    from IPython.utils.capture import capture_output

    good_zone(zone, keys["ed"])
    ip.run_cell(f"%smtp_config --host smtp.example.test --from news@example.test "
                f"--dkim-domain example.test --dkim-selector s1 --dkim-key {keys['ed'].path}")
    with capture_output() as out:
        ip.run_cell("%smtp_config --check --deliverability")
    assert "Verdict: receivers can authenticate this mail" in out.stdout, out.stdout
    assert keys["ed"].path.read_text().splitlines()[1] not in out.stdout
    with pytest.raises(UsageError, match="--deliverability goes with --check"):
        ip.run_cell("%smtp_config --deliverability")


def test_cli(zone: Zone, keys: dict[str, Key], tmp_path: Path) -> None:
    good_zone(zone, keys["rsa"])
    conf = tmp_path / "conn.json"
    conf.write_text(json.dumps({"target": "smtp.example.test", "from": "news@example.test",
                                "dkim_domain": "example.test", "dkim_selector": "s1",
                                "dkim_key": str(keys["rsa"].path)}))
    run = subprocess.run([sys.executable, "-m", "smtp_magic", "check", "--deliverability",
                          "--config", str(conf)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert run.returncode == 0, run.stderr
    assert "DKIM: ok - the key published at s1._domainkey.example.test matches the private " \
           "key (rsa-sha256, 2048 bits)" in run.stdout
    assert "BEGIN" not in run.stdout + run.stderr


# -- the README's Deliverability section, as written --------------------------------------------------

def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Deliverability\n", 1)[1].split("\n## ", 1)[0]


def _blocks(section: str, kind: str) -> list[list[str]]:
    return [block.strip("\n").splitlines() for block in
            re.findall(rf"^```{kind}\n(.*?)^```", section, re.MULTILINE | re.DOTALL)]


@pytest.mark.parametrize("algorithm", ["RSA", "ED25519"])
def test_readme_deliverability_commands(zone: Zone, ip: Any, tmp_path: Path,
                                        algorithm: str) -> None:
    """The README's commands make a key, print its DNS record, set up signing and check it:
    the record they print is the one the check finds to match the key."""
    from IPython.utils.capture import capture_output

    keygen, records = _blocks(_readme_section(), "shell")[:2]
    (make,) = [line for line in keygen if f"-algorithm {algorithm} " in line]
    echo = [line for line in records if line.startswith("echo")][0 if algorithm == "RSA" else 1]
    for command in (make.split("#")[0], keygen[-1], echo):
        run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0, f"{command}: {run.stderr}"
    record = run.stdout.strip()
    assert record.startswith("v=DKIM1; k=" + ("rsa" if algorithm == "RSA" else "ed25519"))
    zone.add("mail2026._domainkey.example.org", "TXT", record)
    zone.add("example.org", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("_dmarc.example.org", "TXT", "v=DMARC1; p=none; rua=mailto:dmarc@example.org")
    (configure,), check = _blocks(_readme_section(), "text")[:2]
    key = tmp_path / "dkim-private.pem"
    ip.run_cell(configure.replace("~/keys/dkim-private.pem", str(key))
                + " --host 127.0.0.1 --from news@example.org")
    with capture_output() as out:
        ip.run_cell(check[0])
    assert "DKIM: ok - the key published at mail2026._domainkey.example.org matches" in out.stdout
    assert "Verdict: receivers can authenticate this mail" in out.stdout, out.stdout
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"host": "127.0.0.1", "from": "news@example.org",
                                "dkim_domain": "example.org", "dkim_selector": "mail2026",
                                "dkim_key": str(key)}))
    argv = shlex.split(check[1].removeprefix("$ "))
    cli = subprocess.run([sys.executable, "-m", "smtp_magic", *argv[1:]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cli.returncode == 0 and "DKIM: ok" in cli.stdout, cli.stdout + cli.stderr


def test_spf_loops_and_garbage_are_permerror(zone: Zone, keys: dict[str, Key]) -> None:
    """A redirect loop, an include loop, a bad address: a broken SPF record, not a hang or a
    traceback."""
    zone.add("example.test", "TXT", "v=spf1 redirect=loop.example.test")
    zone.add("loop.example.test", "TXT", "v=spf1 include:example.test redirect=example.test")
    zone.add("mail.example.test", "TXT", "v=spf1 ip4:999.1.2.3 -all")
    for sender in ("news@example.test", "news@mail.example.test"):
        report = check_deliverability(settings(keys["ed"], host="192.0.2.1", sender=sender,
                                               dkim_domain=None))
        assert report.lines()[1].startswith("SPF: PROBLEM - the SPF record is broken ("), \
            report.lines()
