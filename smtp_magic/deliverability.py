"""The sender check: what a receiving provider will conclude from the From domain's DNS (SPF,
DKIM, DMARC), looked up with dnspython."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ConnectionSettings
from .errors import ConfigError, ConnectFailed, SmtpMagicError, missing

__all__ = ["RESOLVER_ENV", "DeliverabilityReport", "Finding", "check_sender"]

log = logging.getLogger(__name__)

# The DNS server(s) to ask instead of the system's (tests: a local server), e.g.
# "127.0.0.1:5353" or "192.0.2.1, 192.0.2.2".
RESOLVER_ENV = "SMTP_MAGIC_RESOLVER"
_MAX_SPF_LOOKUPS = 10  # RFC 7208 §4.6.4


@dataclass(frozen=True)
class Finding:
    topic: str  # SPF, DKIM, DMARC
    ok: bool
    text: str


@dataclass
class DeliverabilityReport:
    """What a receiving provider will conclude, in plain words (``lines()``)."""

    domain: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def lines(self) -> list[str]:
        out = [f"Sender domain: {self.domain}"]
        out += [f"{f.topic}: {'ok' if f.ok else 'PROBLEM'} - {f.text}" for f in self.findings]
        out.append("Verdict: " + (
            "receivers can authenticate this mail (SPF, DKIM and DMARC in place)." if self.ok
            else "fix the PROBLEM lines, or large providers (Gmail, Yahoo, Microsoft) will put "
                 "bulk mail from this domain in spam or reject it."))
        return out

    def _repr_html_(self) -> str:
        from ._views import Table

        rows = [(f.topic, "ok" if f.ok else "PROBLEM", f.text) for f in self.findings]
        return str(Table(("check", "result", "what a receiver concludes"), rows,
                         title=f"Deliverability of {self.domain}")._repr_html_())


# -- DNS ---------------------------------------------------------------------------------------

class _Dns:
    """TXT and address look-ups through dnspython; the resolver from $SMTP_MAGIC_RESOLVER."""

    def __init__(self, timeout: float) -> None:
        try:
            import dns.exception
            import dns.resolver
        except ImportError:
            raise missing("dnspython", "The deliverability check", "dkim") from None
        self._dns = dns
        configured = os.environ.get(RESOLVER_ENV, "").strip()
        if configured:
            resolver = dns.resolver.Resolver(configure=False)
            servers, port = [], 53
            for item in (i.strip() for i in configured.split(",") if i.strip()):
                if item.count(":") == 1:  # host:port (an IPv6 address has more colons)
                    item, number = item.split(":")
                    port = int(number)
                servers.append(item)
            resolver.nameservers, resolver.port = servers, port
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = timeout
        self.resolver = resolver
        self.lookups = 0

    def query(self, name: str, rdtype: str) -> list[Any]:
        dns = self._dns
        log.debug("DNS %s %s", name, rdtype)
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise ConnectFailed(f"The DNS server did not answer for {name} ({rdtype}) in time; "
                                f"check the network or {RESOLVER_ENV}.") from None
        except dns.exception.DNSException as exc:
            raise ConnectFailed(f"The DNS look-up of {name} ({rdtype}) failed: {exc}.") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.query(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        return [r.address for rdtype in ("A", "AAAA") for r in self.query(name, rdtype)]


# -- SPF (RFC 7208), the common mechanisms ----------------------------------------------------

def _spf_record(dns: _Dns, domain: str) -> list[str]:
    return [t for t in dns.txt(domain) if t.lower().startswith("v=spf1") and
            (len(t) == 6 or t[6] == " ")]


def _spf(dns: _Dns, domain: str, ips: list[Any], depth: int = 0) -> tuple[str, str]:
    """(result, the mechanism that decided) for the relay's addresses ``ips``: pass, fail,
    softfail, neutral, none or permerror."""
    records = _spf_record(dns, domain)
    if not records:
        return "none", f"no SPF record at {domain}"
    if len(records) > 1:
        return "permerror", f"{domain} publishes {len(records)} SPF records (only one is allowed)"
    redirect = None
    for term in records[0].split()[1:]:
        qualifier = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}.get(term[0])
        mech = term[1:] if qualifier else term
        qualifier = qualifier or "pass"
        name, _, arg = mech.partition(":")
        name, _, cidr = name.partition("/")
        name = name.lower()
        if name.startswith("redirect="):
            redirect = mech.split("=", 1)[1]
            continue
        if "=" in name:  # exp= and unknown modifiers
            continue
        matched = False
        if name == "all":
            matched = True
        elif name in ("ip4", "ip6"):
            try:
                net = ipaddress.ip_network(arg, strict=False)
            except ValueError:
                return "permerror", f"{term!r} in {domain}'s SPF is not an address"
            matched = any(ip.version == net.version and ip in net for ip in ips)
        elif name in ("a", "mx", "include", "exists", "ptr"):
            dns.lookups += 1
            if dns.lookups > _MAX_SPF_LOOKUPS:
                return "permerror", f"more than {_MAX_SPF_LOOKUPS} DNS look-ups in {domain}'s SPF"
            target = arg or domain
            if name == "include":
                result, why = _spf(dns, target, ips, depth + 1)
                if result == "permerror" or result == "none":
                    return "permerror", f"include:{target} is broken ({why})"
                matched = result == "pass"
            elif name in ("a", "mx"):
                hosts = [target] if name == "a" else [
                    str(r.exchange).rstrip(".") for r in dns.query(target, "MX")]
                for host in hosts:
                    for addr in dns.addresses(host):
                        try:
                            net = ipaddress.ip_network(f"{addr}/{cidr}" if cidr else addr,
                                                       strict=False)
                        except ValueError:
                            return "permerror", f"{term!r} in {domain}'s SPF is malformed"
                        matched = matched or any(ip.version == net.version and ip in net
                                                 for ip in ips)
            else:  # exists/ptr: rarely used, not evaluated here
                continue
        if matched:
            return qualifier, f"{term} in {domain}'s SPF"
    if redirect:
        dns.lookups += 1  # redirect= counts too (RFC 7208 §4.6.4), which also ends loops
        if dns.lookups > _MAX_SPF_LOOKUPS:
            return "permerror", f"more than {_MAX_SPF_LOOKUPS} DNS look-ups in {domain}'s SPF"
        return _spf(dns, redirect, ips, depth + 1)
    return "neutral", f"nothing in {domain}'s SPF matches"


# -- DMARC (RFC 7489) --------------------------------------------------------------------------

def _tags(record: str) -> dict[str, str]:
    return {k.strip().lower(): v.strip() for k, _, v in
            (t.partition("=") for t in record.split(";")) if k.strip()}


def _dmarc(dns: _Dns, domain: str) -> tuple[str, dict[str, str]] | None:
    """(where, tags) of the DMARC policy for ``domain``: its own, else its organisational
    domain's (approximated by the parent domains, up to two labels)."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        name = ".".join(labels[i:])
        found = [t for t in dns.txt(f"_dmarc.{name}") if t.lower().startswith("v=dmarc1")]
        if found:
            return name, _tags(found[0])
    return None


def _aligned(mode: str, domain: str, other: str) -> bool:
    domain, other = domain.lower().rstrip("."), other.lower().rstrip(".")
    if mode == "s":
        return domain == other
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


# -- the report ----------------------------------------------------------------------------------

def check_sender(settings: ConnectionSettings, from_domain: str,
                 load_key: Callable[[ConnectionSettings], Any]) -> DeliverabilityReport:
    """Look up SPF, DKIM and DMARC for ``from_domain`` and say what a receiver will conclude
    about mail these settings send. Raises ConnectFailed when DNS cannot be asked."""
    dns = _Dns(min(float(settings.timeout), 10.0))
    report = DeliverabilityReport(from_domain)
    add = report.findings.append

    # SPF: is the relay (the host we connect to) allowed to send for the envelope domain?
    relay = settings.host
    try:
        ips = [ipaddress.ip_address(relay)]
    except ValueError:
        ips = [ipaddress.ip_address(a) for a in dns.addresses(relay)]
    shown = ", ".join(map(str, ips)) or "no address"
    result, why = _spf(dns, from_domain, ips) if ips else ("none", f"{relay} has no address")
    spf_pass = result == "pass"
    texts = {
        "pass": f"the relay {relay} ({shown}) may send for {from_domain} ({why}).",
        "none": f"{why}: receivers cannot tell which servers may send for {from_domain}; "
                "publish one (v=spf1 ... -all) that includes the relay.",
        "permerror": f"the SPF record is broken ({why}); receivers treat it as no SPF at all.",
        "fail": f"the relay {relay} ({shown}) is NOT allowed ({why}): mail is likely rejected; "
                "add it to the SPF record.",
        "softfail": f"the relay {relay} ({shown}) is not allowed ({why}): mail is likely marked "
                    "as spam; add it to the SPF record.",
        "neutral": f"the SPF record does not cover the relay {relay} ({shown}; {why}); add it "
                   "(e.g. ip4:ADDRESS or include: the provider's SPF).",
    }
    add(Finding("SPF", spf_pass, texts[result] + (
        " (Checked with the address you connect to; a relay that sends from other addresses "
        "needs those in SPF.)" if spf_pass else "")))

    # DKIM: the published key against the private key.
    dkim_pass = False
    if not settings.dkim_domain:
        add(Finding("DKIM", False, "messages are not signed (dkim_domain is not set): Gmail and "
                    "Yahoo require DKIM for bulk senders; set dkim_domain, dkim_selector and "
                    "dkim_key."))
    elif not settings.dkim_selector:
        add(Finding("DKIM", False, "dkim_selector is not set, so there is no key to look up."))
    else:
        name = f"{settings.dkim_selector}._domainkey.{settings.dkim_domain}"
        records = [t for t in dns.txt(name) if "p=" in t]
        if not records:
            add(Finding("DKIM", False, f"no public key at {name}: every signature will fail; "
                        "publish the TXT record v=DKIM1; k=...; p=... (see the README)."))
        else:
            tags = _tags(records[0])
            key = None
            problem = ""
            try:
                key = load_key(settings)
            except SmtpMagicError as exc:
                problem = exc.message
            if not tags.get("p"):
                add(Finding("DKIM", False, f"the key at {name} is revoked (empty p=)."))
            elif key is None:
                add(Finding("DKIM", False, f"a key is published at {name}, but the private key "
                            f"cannot be used: {problem}"))
            elif not key.public_matches(records[0]):
                add(Finding("DKIM", False, f"the key published at {name} does NOT match the "
                            "private key (dkim_key): every signature will fail; publish the "
                            "public half of this key."))
            else:
                testing = " It is marked as testing (t=y): remove t=y when done." if "y" in \
                    tags.get("t", "").split(":") else ""
                dkim_pass = _aligned("r", from_domain, settings.dkim_domain)
                add(Finding("DKIM", True, f"the key published at {name} matches the private key "
                            f"({key.algorithm}, {key.bits} bits); signatures will verify.{testing}"))

    # DMARC: the policy, and whether SPF or DKIM will pass aligned with From.
    found = _dmarc(dns, from_domain)
    if found is None:
        add(Finding("DMARC", False, f"no DMARC record at _dmarc.{from_domain}: Gmail and Yahoo "
                    "require one for bulk senders; start with v=DMARC1; p=none; "
                    f"rua=mailto:dmarc@{from_domain}"))
        return report
    where, tags = found
    policy = tags.get("p", "none")
    if where != from_domain:  # a subdomain: the parent's sp= when it has one
        policy = tags.get("sp", policy)
    adkim = tags.get("adkim", "r").lower()
    dkim_aligned = dkim_pass and _aligned(adkim, from_domain, settings.dkim_domain or "")
    # The envelope sender is the From address: SPF is aligned in strict mode (aspf=s) too.
    spf_aligned = spf_pass
    passes = [n for n, ok in (("DKIM", dkim_aligned), ("SPF", spf_aligned)) if ok]
    source = f"_dmarc.{where}" + ("" if where == from_domain else " (the parent domain's)")
    if passes:
        add(Finding("DMARC", True, f"policy p={policy} at {source}; DMARC will pass through "
                    f"{' and '.join(passes)} aligned with the From domain."
                    + ("" if dkim_aligned else " Without DKIM, forwarded mail will fail it.")))
    else:
        fate = {"reject": "rejected", "quarantine": "put in spam"}.get(policy, "accepted but "
                                                                      "unauthenticated")
        why = ("strict DKIM alignment (adkim=s) needs dkim_domain equal to the From domain"
               if dkim_pass and adkim == "s" else "neither SPF nor DKIM will pass aligned")
        add(Finding("DMARC", False, f"policy p={policy} at {source}, and {why}: messages will "
                    f"be {fate}."))
    return report


def sender_domain(settings: ConnectionSettings) -> str:
    """The From domain these settings send with (sender, else an address username)."""
    address = settings.sender or (settings.username if "@" in (settings.username or "") else "")
    if not address:
        raise ConfigError("The deliverability check needs the sender address: set it with "
                          "%smtp_config --from ADDR (or the sender setting).")
    found = re.search(r"@([^\s>]+)>?\s*$", address)
    if found is None:
        raise ConfigError(f"The sender {address!r} has no domain.")
    return found.group(1).rstrip(".").lower()
