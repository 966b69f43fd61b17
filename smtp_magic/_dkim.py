"""The DKIM signing stage: the final message bytes (or chunks) -> a DKIM-Signature header."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from ._shortcuts import dkim_blank_signature, dkim_fold, dkim_gen_header, dkim_select_headers
from .config import ConnectionSettings
from .errors import ConfigError, missing

__all__ = ["BodyHash", "DkimKey", "Signer", "check_alignment", "load_key", "sign", "signer_for"]

log = logging.getLogger(__name__)
KEYRING_SERVICE = "smtp-magic"
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # + the raw 32-byte private key
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_NEVER_SIGNED = {"bcc", "dkim-signature", "return-path", "received"}


def _dkim() -> Any:
    """dkimpy, or the actionable error (with pynacl for Ed25519 and dnspython, in the dkim extra)."""
    try:
        import dkim
    except ImportError:
        raise missing("dkimpy", "DKIM signing (dkim_domain)", "dkim") from None
    return dkim


# -- the body hash, a chunk at a time ------------------------------------------------------------

# dkimpy's [\t ]+ -> " " (for a last line without its line end), matching only the runs it
# changes (text is full of single spaces, which it would rewrite one by one).
_WSP = re.compile(rb"\t[\t ]*| [\t ]+")
_LINE_END = re.compile(rb"\r?\n")


class BodyHash:
    """The relaxed body hash (RFC 6376 §3.4.4) of a body given in any number of chunks: the
    same bytes dkimpy's ``Relaxed.canonicalize_body`` hashes, without holding the body whole.

    Whole lines are canonicalised a block at a time by dkimpy's rules; empty lines are held
    back until a line with content follows (empty lines at the end do not count).
    """

    __slots__ = ("_empty", "_hash", "_tail")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._tail = b""  # an incomplete last line
        self._empty = 0  # empty lines held back

    def update(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        if end:
            self._lines(data if end == len(data) else data[:end])

    def _lines(self, block: bytes) -> None:
        # As dkimpy reads a message: LF or CRLF ends a line, and lines end in CRLF. A block
        # with nothing to change (base64) is only scanned, never copied.
        if block.count(b"\n") != block.count(b"\r\n"):
            block = _LINE_END.sub(b"\r\n", block)
        # dkimpy's "[\t ]+\r\n" -> CRLF, then "[\t ]+" -> " ", made with bytes.replace (a scan
        # in C, where the expressions cost ~10 ns a byte even when nothing matches): tabs become
        # spaces, each pass halves every run of spaces, then a space left before CRLF goes.
        if b"\t" in block:
            block = block.replace(b"\t", b" ")
        while b"  " in block:
            block = block.replace(b"  ", b" ")
        if b" \r\n" in block:
            block = block.replace(b" \r\n", b"\r\n")
        end = len(block)
        while end >= 2 and block.endswith(b"\r\n", 0, end) and (
                end == 2 or block.endswith(b"\r\n", 0, end - 2)):
            end -= 2  # an empty line at the end of the block
        if end == 0 or (end == 2 and block.startswith(b"\r\n")):
            self._empty += len(block) // 2
            return
        if self._empty:
            self._hash.update(b"\r\n" * self._empty)
        self._hash.update(memoryview(block)[:end])
        self._empty = (len(block) - end) // 2

    def digest(self) -> bytes:
        if self._tail:  # a last line without its line end: dkimpy compresses its spaces (but
            # keeps trailing ones) and adds the CRLF. Never the case for a MIME message.
            tail, self._tail = _WSP.sub(b" ", self._tail), b""
            self._hash.update(b"\r\n" * self._empty + tail + b"\r\n")
            self._empty = 0
        return self._hash.digest()


def split_header(chunks: Iterable[bytes], body: BodyHash) -> bytes:
    """Feed the body of the message in ``chunks`` to ``body``; return its header block."""
    head = b""
    it = iter(chunks)
    for chunk in it:
        head = head + chunk if head else chunk
        # The first line end followed by another (LF or CRLF each): the header ends after the
        # first. Bare LFs are looked for only up to the first CRLF CRLF (where a MIME header ends).
        stop = head.find(b"\r\n\r\n")
        stop = len(head) if stop < 0 else stop + 4
        lf, crlf = head.find(b"\n\n", 0, stop), head.find(b"\n\r\n", 0, stop)
        if lf < 0 and crlf < 0:
            continue
        end = crlf if lf < 0 or 0 <= crlf < lf else lf
        body.update(head[end + (2 if end == crlf else 1) + 1:])
        head = head[:end + 1]
        for rest in it:
            body.update(rest)
        return head
    return head  # no body at all


# -- keys ----------------------------------------------------------------------------------------

class DkimKey:
    """A parsed private key; never shows itself (repr, str, pickle). ``_fast`` signs an RSA
    digest through OpenSSL (``cryptography``) when it is installed: the same bytes as dkimpy's
    pure-Python RSA (PKCS#1 v1.5 is deterministic), ten times sooner."""

    __slots__ = ("_fast", "_key", "algorithm", "bits")

    def __init__(self, algorithm: str, key: Any, bits: int, fast: Any = None) -> None:
        self.algorithm, self._key, self.bits, self._fast = algorithm, key, bits, fast

    def __repr__(self) -> str:
        return f"DkimKey({self.algorithm}, {self.bits} bits, ********)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a DKIM key cannot be pickled")

    def public_matches(self, record: str) -> bool:
        """Whether a published DKIM TXT record (``v=DKIM1; k=...; p=...``) holds this key's
        public half."""
        tags = {k.strip(): v.strip() for k, _, v in
                (t.partition("=") for t in record.split(";")) if k.strip()}
        p = "".join(tags.get("p", "").split())
        if not p:
            return False
        try:
            raw = base64.b64decode(p)
        except (binascii.Error, ValueError):
            return False
        if self.algorithm == "ed25519-sha256":
            return bool(raw == bytes(self._key.verify_key))
        from dkim.crypto import parse_public_key

        try:
            public = parse_public_key(raw)
        except Exception:  # noqa: BLE001 - any garbage in DNS is "does not match"
            return False
        return bool(public["modulus"] == self._key["modulus"]
                    and public["publicExponent"] == self._key["publicExponent"])


def _parse_pem(pem: bytes, where: str) -> DkimKey:
    dkim = _dkim()
    found = _PEM.search(pem.replace(b"\r\n", b"\n"))
    if found is None:
        raise ConfigError(f"The DKIM key {where} is not a PEM private key (dkim_key).")
    kind = found.group(1).decode()
    if "ENCRYPTED" in kind or b"Proc-Type" in found.group(2):
        raise ConfigError(f"The DKIM key {where} is encrypted; give an unencrypted PEM key "
                          "(keep it readable by you only) (dkim_key).")
    try:
        der = base64.b64decode(b"".join(found.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"The DKIM key {where} is not valid PEM (dkim_key).") from None
    if der.startswith(_ED25519_PKCS8) and len(der) == len(_ED25519_PKCS8) + 32:
        try:
            import nacl.signing
        except ImportError:
            raise missing("pynacl", "DKIM signing with an Ed25519 key", "dkim") from None
        return DkimKey("ed25519-sha256", nacl.signing.SigningKey(der[-32:]), 256)
    from dkim.crypto import UnparsableKeyError, parse_private_key

    try:
        key = parse_private_key(der)
    except (UnparsableKeyError, dkim.DKIMException, IndexError, ValueError, TypeError):
        raise ConfigError(f"The DKIM key {where} is neither an RSA nor an Ed25519 private key "
                          "(dkim_key).") from None
    bits = int(key["modulus"]).bit_length()
    if bits < 1024:
        raise ConfigError(f"The DKIM key {where} is RSA with {bits} bits; receivers ignore "
                          "keys under 1024 bits: make a 2048-bit key (dkim_key).")
    return DkimKey("rsa-sha256", key, bits, _openssl_rsa(der))


class _Signature:
    __slots__ = ("signature",)

    def __init__(self, signature: bytes) -> None:
        self.signature = signature


class _OpenSslRsa:
    """An RSA key with the interface dkimpy uses for Ed25519 keys: ``sign(digest).signature``."""

    __slots__ = ("_key", "_pad", "_prehashed")

    def __init__(self, key: Any, pad: Any, prehashed: Any) -> None:
        self._key, self._pad, self._prehashed = key, pad, prehashed

    def __repr__(self) -> str:
        return "_OpenSslRsa(********)"

    def sign(self, digest: bytes) -> _Signature:
        return _Signature(self._key.sign(digest, self._pad, self._prehashed))


def _openssl_rsa(der: bytes) -> _OpenSslRsa | None:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    except ImportError:
        return None
    try:
        try:
            key = serialization.load_der_private_key(der, password=None)
        except ValueError:  # PKCS#1 ("BEGIN RSA PRIVATE KEY")
            key = serialization.load_pem_private_key(
                b"-----BEGIN RSA PRIVATE KEY-----\n" + base64.encodebytes(der)
                + b"-----END RSA PRIVATE KEY-----\n", password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    return _OpenSslRsa(key, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


_keys: dict[tuple[Any, ...], tuple[float, DkimKey]] = {}
_keys_lock = threading.Lock()
_KEYRING_TTL = 60.0
_MAX_KEY_FILE = 64 * 1024


def keyring_user(domain: str, selector: str) -> str:
    """The keyring entry of a DKIM key: ``dkim:SELECTOR._domainkey.DOMAIN``."""
    return f"dkim:{selector}._domainkey.{domain}"


def load_key(settings: ConnectionSettings) -> DkimKey:
    """The private key of ``dkim_key``: a PEM file, or ``keyring`` for the system keyring's
    entry ``dkim:SELECTOR._domainkey.DOMAIN`` (service ``smtp-magic``). Parsed once per file
    version; its text is never kept nor shown."""
    source = (settings.dkim_key or "").strip()
    if not source:
        raise ConfigError("DKIM signing (dkim_domain) needs a private key: set dkim_key to the "
                          "path of a PEM file, or to keyring.")
    if source.lower() == "keyring":
        user = keyring_user(settings.dkim_domain, settings.dkim_selector)
        cache_key: tuple[Any, ...] = ("keyring", user)
        with _keys_lock:
            cached = _keys.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < _KEYRING_TTL:
            return cached[1]
        from .credentials import _keyring, _keyring_error

        keyring = _keyring("Reading the DKIM key from the system keyring")
        try:
            pem = keyring.get_password(KEYRING_SERVICE, user)
        except Exception as exc:  # noqa: BLE001 - a backend's own error, in one sentence
            raise _keyring_error(exc) from None
        if not pem:
            raise ConfigError(f"The keyring has no DKIM key {user!r} (service "
                              f"{KEYRING_SERVICE!r}); store the PEM text there, or set dkim_key "
                              "to the key file's path.")
        key = _parse_pem(pem.encode("utf-8", "replace"), f"in the keyring entry {user!r}")
        with _keys_lock:
            _keys[cache_key] = (time.monotonic(), key)
        return key
    path = os.path.expanduser(source)
    try:
        st = os.stat(path)
        cache_key = ("file", path, st.st_mtime_ns, st.st_size, st.st_ino)
        with _keys_lock:
            cached = _keys.get(cache_key)
        if cached is not None:
            return cached[1]
        with open(path, "rb") as f:  # a key is a few KB: never read a device or a huge file
            pem = f.read(_MAX_KEY_FILE + 1)
        if len(pem) > _MAX_KEY_FILE:
            raise ConfigError(f"The DKIM key {source!r} is too large to be a private key "
                              "(dkim_key).")
    except OSError as exc:
        raise ConfigError(f"The DKIM key {source!r} cannot be read: "
                          f"{exc.strerror or exc} (dkim_key).") from None
    key = _parse_pem(pem, repr(source))
    log.debug("DKIM key %s read: %s, %d bits", source, key.algorithm, key.bits)
    with _keys_lock:
        if len(_keys) > 16:
            _keys.clear()
        _keys[cache_key] = (time.monotonic(), key)
    return key


# -- signing -------------------------------------------------------------------------------------

def _domain(value: str) -> str:
    value = value.strip().rstrip(".").lower()
    try:
        return value.encode("idna").decode("ascii") if not value.isascii() else value
    except UnicodeError:
        raise ConfigError(f"dkim_domain {value!r} is not a valid domain name.") from None


def check_alignment(from_domain: str, dkim_domain: str) -> None:
    """DMARC alignment (relaxed): the From domain is ``dkim_domain`` or one of its subdomains."""
    sender, signer = _domain(from_domain), _domain(dkim_domain)
    if sender != signer and not sender.endswith("." + signer):
        raise ConfigError(
            f"The From address's domain {sender!r} does not align with dkim_domain {signer!r}: "
            "receivers check DMARC alignment, so sign with the From domain (or a parent of it).")


@functools.lru_cache(maxsize=16)
def header_names(value: str) -> tuple[str, ...]:
    """The ``dkim_headers`` setting as a tuple of names (commas or colons between them)."""
    names = tuple(dict.fromkeys(n.strip() for n in re.split(r"[,:\s]+", value) if n.strip()))
    for name in names:
        if not _HEADER_NAME.match(name):
            raise ConfigError(f"dkim_headers: {name!r} is not a header name.")
        if name.lower() in _NEVER_SIGNED:
            raise ConfigError(f"dkim_headers: {name} must not be signed.")
    if "from" not in {n.lower() for n in names}:
        raise ConfigError("dkim_headers must include From (RFC 6376 requires it).")
    return names


class Signer:
    """Signs messages for one domain, selector, key and header list."""

    __slots__ = ("_h", "_names", "_once", "_prefix", "domain", "headers", "key", "selector")

    def __init__(self, domain: str, selector: str, key: DkimKey, headers: tuple[str, ...]) -> None:
        _dkim()  # dkimpy, or the actionable error
        self.domain, self.selector, self.key = _domain(domain), selector.strip(), key
        self.headers = headers
        self._names = tuple(n.lower().encode() for n in headers)  # as h= lists them
        self._once = len(set(self._names)) == len(self._names)  # no name twice in h=
        self._prefix: bytes | None = None  # "v=1; ...; t=", made on the first message
        # h= of each list of present names -> (its value, whether the signature header can be
        # hashed without folding it: see _hashed_header)
        self._h: dict[tuple[bytes, ...], tuple[bytes, bool]] = {}

    def __repr__(self) -> str:
        return f"Signer(d={self.domain}, s={self.selector}, a={self.key.algorithm})"

    def sign(self, chunks: Iterable[bytes]) -> bytes:
        """The ``DKIM-Signature: ...\\r\\n`` header for the message in ``chunks`` (relaxed/
        relaxed): the body hashed as it streams by, the header as dkimpy's ``gen_header`` makes
        it (its fields, folding and order), the signed headers canonicalised here."""
        body = BodyHash()
        headers = _parse_headers(split_header(chunks, body))
        if self._once:  # the last field of each name, as dkimpy's select_headers takes it
            last = {field[0].lower(): field for field in headers}
            include = tuple(n for n in self._names if n in last)
            selected = [last[n] for n in include]
        else:
            present = {name.lower() for name, _ in headers}
            include = tuple(n for n in self._names if n in present)
            selected = dkim_select_headers(headers, include)
        if b"from" not in include:
            raise ConfigError("The message has no From header to sign.")
        prefix = self._prefix or self._make_prefix()
        h, unfolded = self._h.get(include) or self._h_tag(include, prefix)
        t, bh = str(int(time.time())).encode("ascii"), base64.b64encode(body.digest())
        key = self.key._fast or self.key._key
        if self.key.algorithm == "rsa-sha256" and self.key._fast is None:  # pure-Python RSA
            domain = self.domain.encode("ascii")
            fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"),
                      (b"d", domain), (b"i", b"@" + domain), (b"q", b"dns/txt"),
                      (b"s", self.selector.encode("ascii")), (b"t", t), (b"h", h), (b"bh", bh),
                      (b"b", b"0" * 60)]  # folds b= onto its own line, as dkimpy does
            return _SIGNATURE + b": " + dkim_gen_header(headers, fields, include, _SIGNATURE, key)
        # "v=1; ...; b=", the fields in dkimpy's order
        value = b"".join((prefix, t, b"; h=", h, b"; bh=", bh, b"; b="))
        # What dkimpy's gen_header hashes: the signed headers (the last unused one of each name,
        # bottom up), then this header with an empty b= and no line end; all relaxed.
        hashed = [name.lower().rstrip() + b":" + _relaxed(text) + b"\r\n"
                  for name, text in selected]
        hashed.append(b"dkim-signature:" + (value if unfolded else _hashed_header(value)))
        signature = bytes(key.sign(hashlib.sha256(b"".join(hashed)).digest()).signature)
        return _SIGNATURE + b": " + dkim_fold(value + base64.b64encode(signature) + b"\r\n",
                                             len(_SIGNATURE))

    def _make_prefix(self) -> bytes:
        domain = self.domain.encode("ascii")
        self._prefix = b"".join((
            b"v=1; a=", self.key.algorithm.encode(), b"; c=relaxed/relaxed; d=", domain,
            b"; i=@", domain, b"; q=dns/txt; s=", self.selector.encode("ascii"), b"; t="))
        return self._prefix

    def _h_tag(self, include: tuple[bytes, ...], prefix: bytes) -> tuple[bytes, bool]:
        """h= for the names ``include``, and whether the header up to its empty b= is hashed as
        it stands: when dkimpy's fold only turns spaces into folds there (every word shorter
        than its first line, so no word is cut) and its b= expression finds no other b= tag,
        unfolding it gives it back, and it holds nothing else relaxed canonicalisation
        changes. Else each message's header is folded and emptied as dkimpy does."""
        h = b" : ".join(include)
        sample = prefix + b"1796600000; h=" + h + b"; bh=" + b"A" * 43 + b"=; b="
        unfolded = (not any(c in sample for c in (b"\r", b"\n", b"\t", b"  "))
                    and max(map(len, sample.split(b" "))) < _FIRST_LINE
                    and dkim_blank_signature(sample[:-2]) == sample[:-2]
                    and _hashed_header(sample) == sample)
        if len(self._h) > 64:
            self._h.clear()
        self._h[include] = (h, unfolded)
        return h, unfolded


def _hashed_header(value: bytes) -> bytes:
    """The DKIM-Signature value ``value`` (ending in an empty ``b=``) as dkimpy's gen_header
    hashes it: folded with its b= holding 60 characters, the b= emptied again, relaxed."""
    folded = dkim_fold(value + b"0" * 60, len(_SIGNATURE))
    return _relaxed(b" " + dkim_blank_signature(folded))


_SIGNATURE = b"DKIM-Signature"
_FIRST_LINE = 72 - len(_SIGNATURE)  # what dkimpy's fold keeps on the header's first line
_FOLDED_WSP = re.compile(rb"[\t ]+")


def _relaxed(value: bytes) -> bytes:
    """A header value in relaxed canonical form (RFC 6376 §3.4.2), as dkimpy's Relaxed makes it:
    unfolded, each run of spaces and tabs one space, no space at either end."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _FOLDED_WSP.sub(b" ", value)
    return value.strip()


def _parse_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value) of each header field, as dkimpy's ``rfc822_parse`` reads them: a line
    starting with a space or tab continues the field before it, and every line keeps its CRLF."""
    out: list[tuple[bytes, bytes]] = []
    lines = head.split(b"\r\n") if head.count(b"\n") == head.count(b"\r\n") else \
        _LINE_END.split(head)
    for line in lines:
        if not line:
            continue
        if line[0] in (9, 32) and out:
            out[-1] = (out[-1][0], out[-1][1] + line + b"\r\n")
            continue
        name, colon, value = line.partition(b":")
        if not colon or name not in _FIELD_NAMES:
            if not colon or not name or not _FIELD_NAME.fullmatch(name):
                raise ConfigError("The message has a header line that is not a header field.")
            if len(_FIELD_NAMES) < 256:
                _FIELD_NAMES.add(name)
        out.append((name, value + b"\r\n"))
    return out


_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_FIELD_NAMES: set[bytes] = set()  # names seen valid (all but a message's custom ones repeat)


# Signers kept between messages, by (dkim_domain, dkim_selector, header names): the signing
# stage asks for one per message. The key is still looked up for every message (one stat of the
# key file, or the keyring's cache): a key file replaced on disk signs the very next message, and
# a kept signer whose key is no longer the current one is made again.
_signers: dict[tuple[str, str, tuple[str, ...]], Signer] = {}


def signer_for(settings: ConnectionSettings, from_domain: str) -> Signer | None:
    """The signer the settings ask for (None when ``dkim_domain`` is not set); every problem is
    a ConfigError (exit 1) before anything is sent."""
    if not settings.dkim_domain:
        return None
    if not settings.dkim_selector:
        raise ConfigError("DKIM signing (dkim_domain) needs dkim_selector, the name of the key's "
                          "DNS record (SELECTOR._domainkey.DOMAIN).")
    _aligned(from_domain, settings.dkim_domain)
    _dkim()
    key = load_key(settings)
    cache_key = (settings.dkim_domain, settings.dkim_selector, header_names(settings.dkim_headers))
    signer = _signers.get(cache_key)
    if signer is None or signer.key is not key:
        signer = Signer(*cache_key[:2], key, cache_key[2])
        with _keys_lock:
            if len(_signers) > 16:
                _signers.clear()
            _signers[cache_key] = signer
    return signer


_aligned = functools.lru_cache(maxsize=64)(check_alignment)  # (a refusal is not kept)


def sign(data: bytes | Iterable[bytes], settings: ConnectionSettings, from_domain: str
         ) -> bytes | None:
    """The DKIM-Signature header for the final message ``data`` (bytes or chunks), or None
    when the settings do not ask for signing."""
    signer = signer_for(settings, from_domain)
    return None if signer is None else signer.sign((data,) if isinstance(data, bytes) else data)

