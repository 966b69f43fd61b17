"""SendRequest -> a validated email.message.EmailMessage and its SMTP envelope."""

from __future__ import annotations

import binascii
import functools
import logging
import operator
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, NamedTuple

from . import _shortcuts
from ._names import unique_attachments
from .config import MB, ConnectionSettings
from .errors import InvalidRequest
from .models import Attachment, SendRequest, as_address_list

__all__ = ["Composed", "check_header_value", "compose", "parse_address"]

log = logging.getLogger(__name__)

# 7bit transfer encodings make the message safe for any server; SMTPUTF8 only when an
# address needs it (a non-ASCII local part).
POLICY = email_policy.SMTP.clone(cte_type="7bit")
POLICY_UTF8 = email_policy.SMTPUTF8

_DOMAIN_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$", re.UNICODE)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers the composer (or a feature) owns; extra headers may not replace them. Each with what
# to use instead, for the one-sentence refusal.
_RESERVED = {
    "from": "give 'from' (--from) or the sender setting", "to": "give 'to'",
    "cc": "give 'cc'", "bcc": "give 'bcc' (Bcc recipients are never written in the headers)",
    "subject": "give 'subject'", "date": "it is set when the message is made",
    "message-id": "it is made for each message", "mime-version": "the body sets it",
    "content-type": "give 'content_type'", "content-transfer-encoding": "the body sets it",
    "dkim-signature": "the dkim_domain, dkim_selector and dkim_key settings sign the message",
}


class Composed:
    """A message ready to send: the MIME message plus the SMTP envelope.

    ``message`` is the ``EmailMessage``. For bulk sends the bytes are produced without it
    (see ``_render_fast``), and it is then built only when something asks for it (a preview).
    """

    __slots__ = (
        "_build",
        "_message",
        "_parts",
        "message_id",
        "recipients",
        "sender",
        "smtputf8",
        "subject",
    )

    def __init__(
        self, message: EmailMessage | None, sender: str, recipients: tuple[str, ...],
        message_id: str, smtputf8: bool, *, subject: str | None = None,
        parts: list[bytes | _Base64Body] | None = None,
        build: Callable[[], EmailMessage] | None = None,
    ) -> None:
        if message is None and build is None:
            raise ValueError("Composed needs a message or a way to build it")
        self._message, self._build, self._parts = message, build, parts
        self.sender, self.recipients = sender, tuple(recipients)
        self.message_id, self.smtputf8 = message_id, smtputf8
        self.subject = subject if subject is not None else str(message["Subject"] or "")  # type: ignore[index]

    @property
    def message(self) -> EmailMessage:
        if self._message is None:
            assert self._build is not None
            self._message = self._build()
        return self._message

    def __repr__(self) -> str:
        return (f"Composed(sender={self.sender!r}, recipients={self.recipients!r}, "
                f"message_id={self.message_id!r}, subject={self.subject!r})")

    def chunks(self) -> Iterator[bytes]:
        """The message as it goes on the wire, a piece at a time (attachments are read and
        base64-encoded as they are needed, never held whole)."""
        if self._parts is None:
            yield self.message.as_bytes(policy=POLICY_UTF8 if self.smtputf8 else POLICY)
            return
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from part.chunks()

    def as_bytes(self) -> bytes:
        return b"".join(self.chunks())

    def measure(self) -> tuple[bytes, int]:
        """The header block (up to its empty line) and the size of ``chunks()``, without
        encoding the attachments (their base64 size follows from their size); a message the
        email package builds is flattened for it."""
        if self._parts is None:
            flat = self.message.as_bytes(policy=POLICY_UTF8 if self.smtputf8 else POLICY)
            return _head_of(flat), len(flat)
        head = b""
        size, in_head = 0, True
        for part in self._parts:
            if isinstance(part, bytes):
                size += len(part)
                if in_head:  # a few parts at most: a DKIM-Signature, then the rest of the head
                    head += part
                    in_head = head.find(b"\r\n\r\n") < 0
            else:
                size += part.size()
                in_head = False  # an attachment's body is never in the header block
        return _head_of(head), size

    def add_header(self, make: Callable[[Iterator[bytes]], bytes]) -> Composed:
        """The message with the header ``make(chunks)`` returns (a whole folded field,
        CRLF-ended) in front: how the signing stage adds its DKIM-Signature over exactly the
        bytes that are then sent."""
        if self._parts is None:
            self._parts = [self.message.as_bytes(policy=POLICY_UTF8 if self.smtputf8 else POLICY)]
        self._parts = [make(self.chunks()), *self._parts]
        return self


# CR and LF, plus what str.splitlines() also breaks at (VT, FF, FS, GS, RS, NEL, U+2028/9):
# the email package refuses all of them in headers, with a message about CR/LF only.
_NOT_IN_HEADERS = re.compile("[\0\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# The other control characters (C0 but tab, DEL, C1): ESC starts the ANSI/OSC sequences a
# terminal obeys (window title, screen clear) when a client prints the header.
_CONTROLS = re.compile("[\x01-\x08\x0e-\x1f\x7f-\x9f]")
_REFUSED_IN_HEADERS = re.compile(f"{_NOT_IN_HEADERS.pattern}|{_CONTROLS.pattern}")


def check_header_value(field: str, value: str) -> str:
    """Refuse line breaks, NUL and other control characters in a header value: they would
    inject headers, or drive the terminal of whoever prints it."""
    if not _REFUSED_IN_HEADERS.search(value):  # nearly every value: one search
        return value
    if _NOT_IN_HEADERS.search(value):
        kind = "a NUL character" if "\0" in value else "a line break"
        raise InvalidRequest(f"The {field} contains {kind}, which is not allowed in a header.")
    control = _CONTROLS.search(value)
    if control:
        code = ord(control.group(0))
        name = " (ESC)" if code == 0x1B else ""
        raise InvalidRequest(f"The {field} contains the control character U+{code:04X}{name}, "
                             "which is not allowed in a header.")
    return value


def parse_address(text: str, field: str = "address") -> Address:
    """Parse one address (``"Name <user@host>"`` or ``user@host``); raise InvalidRequest if bad."""
    if not isinstance(text, str):
        raise InvalidRequest(f"The {field} {text!r} is not a string.")
    return _parse_address(text, field)


# A bulk send parses the same sender (and often the same Cc) for every message. Address objects
# are immutable; errors are not cached, so each bad address still gets its own message.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str, field: str) -> Address:
    check_header_value(f"{field} {text.strip()[:60]!r}", text)
    simple = _simple_address(text)
    if simple is not None:
        return simple
    try:
        header = email_policy.default.header_factory("To", text)
        addresses = header.addresses
        defects = [d for d in header.defects if type(d).__name__ != "NonASCIILocalPartDefect"]
    except Exception:  # noqa: BLE001 - the stdlib parser raises assorted errors on garbage
        addresses, defects = (), [None]
    if len(addresses) != 1 or defects or not _valid_addr_spec(addresses[0]):
        hint = "; separate several addresses with commas" if len(addresses) > 1 else ""
        raise InvalidRequest(f"The {field} {text.strip()!r} is not a valid email address{hint}.")
    return addresses[0]


def _simple_address(text: str) -> Address | None:
    """``user@host`` or ``Name <user@host>`` in their plainest forms, without the header parser
    (which costs ~60 us an address); the parser handles everything else."""
    text = text.strip()
    name = ""
    if text.endswith(">"):
        named = _SIMPLE_NAME.match(text)
        if named is None:
            return None
        name, text = named.groups()
    found = _SIMPLE_ADDR.match(text)
    if found is None or "=?" in text or "=?" in name:
        return None
    addr = Address(name, found.group(1), found.group(2))
    return addr if _valid_addr_spec(addr) else None


def _valid_addr_spec(addr: Address) -> bool:
    if not addr.username or not addr.domain or len(addr.addr_spec) > 254:
        return False
    if addr.domain.startswith("[") and addr.domain.endswith("]"):
        return True  # address literal, e.g. [127.0.0.1]
    labels = addr.domain.rstrip(".").split(".")
    return all(_DOMAIN_LABEL.match(label) and "_" not in label for label in labels)


def _ascii_domain(addr: Address) -> Address:
    """IDNA-encode a Unicode domain so the address works without SMTPUTF8."""
    if addr.domain.isascii():
        return addr
    try:
        domain = addr.domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidRequest(f"The domain of {addr.addr_spec!r} is not a valid domain name.") from None
    return Address(addr.display_name, addr.username, domain)


class _Mailbox(NamedTuple):
    """An address as the composer uses it, worked out once per address text: the Address (its
    domain IDNA-encoded), its addr_spec, its text in a header when that is just its plain form
    (None: the policy folds it), and whether its local part is ASCII (else: SMTPUTF8)."""

    address: Address
    spec: str
    header: str | None
    ascii_local: bool


_ASCII_LOCAL = operator.attrgetter("ascii_local")


# A bulk send composes each address once (recipients) or for every message (the sender):
# cached, like _parse_address. Errors are not cached.
@functools.lru_cache(maxsize=4096)
def _mailbox(text: str, field: str) -> _Mailbox:
    plain = _PLAIN_ADDR.match(text)
    if plain is not None and len(text) <= 254 and "=?" not in text:
        return _Mailbox(Address("", plain.group(1), plain.group(2)), text, text, True)
    address = _ascii_domain(parse_address(text, field))
    return _Mailbox(address, address.addr_spec, _address_value([address]),
                    address.username.isascii())


def _mailboxes(values: tuple[str, ...], field: str) -> list[_Mailbox]:
    """``values`` (strings: SendRequest made them so) checked, each a _Mailbox."""
    return [_mailbox(v, field) for v in values]


def _addresses(values: tuple[str, ...], field: str) -> list[Address]:
    return [m.address for m in _mailboxes(values, field)]


def _sender(request: SendRequest, settings: ConnectionSettings) -> _Mailbox:
    if request.sender:
        return _text_mailbox(request.sender, "sender")
    if settings.sender:
        return _text_mailbox(settings.sender, "sender setting")
    if settings.username and "@" in settings.username:
        return _text_mailbox(settings.username, "username (used as the sender)")
    raise InvalidRequest(
        "No sender address: give 'from' (--from), or set the sender or an email-address username."
    )


def _text_mailbox(text: object, field: str) -> _Mailbox:
    """``_mailbox`` for a value that may not be text (which cannot be a cache key)."""
    if not isinstance(text, str):
        raise InvalidRequest(f"The {field} {text!r} is not a string.")
    return _mailbox(text, field)


def check_attachments(request: SendRequest, settings: ConnectionSettings) -> None:
    """Every attachment exists and is within ``attachment_size``; checked before connecting."""
    limit = settings.attachment_limit
    for att in request.attachments:
        check_header_value(f"attachment name {att.filename!r}", att.filename)
        size = att.size
        if size > limit:
            raise InvalidRequest(
                f"Attachment {att.filename!r} is {size / MB:.1f} MB, over the "
                f"{settings.attachment_size:g} MB limit (attachment_size)."
            )


def compose(request: SendRequest, settings: ConnectionSettings, *, text: str | None = None,
            shortcut: bool | None = None) -> Composed:
    """Validate the request and build the message. Raises InvalidRequest with one sentence.

    The body is sent as it is: an HTML body comes sanitised and laid out, with its plain-text
    alternative in ``text`` (default ``request.text``); see ``stages``. ``shortcut``: whether
    the "compose" shortcut was allowed when the caller's batch began (None: asked now); a
    failed runtime check turns it off from the next message on either way."""
    if request.subject is None:
        raise InvalidRequest("The message has no subject ('subject' is required).")
    if not isinstance(request.subject, str):
        raise InvalidRequest(f"The subject must be text, not {type(request.subject).__name__}.")
    if not request.to:
        raise InvalidRequest("The message has no recipient ('to' needs at least one address).")
    check_header_value("subject", request.subject)
    if request.attachments:
        request = request.replace(attachments=unique_attachments(request.attachments))
    sender = _sender(request, settings)
    to = [_mailbox(v, "'to' address") for v in request.to]  # (_mailboxes, inline)
    cc = _mailboxes(request.cc, "'cc' address") if request.cc else []
    bcc = _mailboxes(request.bcc, "'bcc' address") if request.bcc else []
    if request.reply_to:
        reply_to = _mailboxes(request.reply_to, "'reply_to' address")
    elif settings.reply_to:
        reply_to = _mailboxes(as_address_list(settings.reply_to), "reply_to setting")
    else:
        reply_to = []
    if reply_to:  # kept as text in the request (display names included) for both writers
        request = request.replace(reply_to=tuple(str(m.address) for m in reply_to))
    if request.attachments:
        check_attachments(request, settings)
    content_type = (request.content_type or settings.content_type).lower()
    if content_type not in ("text/plain", "text/html", "multipart/alternative"):
        raise InvalidRequest(
            f"Unsupported content type {content_type!r}: use text/html, text/plain, "
            "text/markdown or multipart/alternative."
        )

    smtputf8 = not all(map(_ASCII_LOCAL, (sender, *to, *cc, *bcc, *reply_to)))
    if request.message_id:
        message_id = check_header_value("Message-ID", request.message_id)
    else:  # digits and the sender's checked domain: nothing to check
        domain = sender.address.domain
        message_id = make_msgid(domain=domain if domain.isascii() else "smtp-magic.local")

    date = _date()
    if request.headers:
        _check_extra_headers(request.headers, reply_to=bool(reply_to))
    if content_type == "text/plain":
        text = None
    else:
        body = request.body or ""
        if not isinstance(body, str):
            raise InvalidRequest(f"The body must be text, not {type(body).__name__}.")
        # An HTML body always travels with a plain-text alternative (made by the stage before).
        text = request.text if text is None else text
        if text is None:
            raise ValueError("an HTML body needs its plain-text alternative")

    build = functools.partial(_build_of_mailboxes, request, content_type, sender, to, cc,
                              smtputf8, date, message_id, text)
    if len(to) == 1 and not cc and not bcc:
        recipients: tuple[str, ...] = (to[0].spec,)
    else:
        recipients = tuple(dict.fromkeys([m.spec for m in (*to, *cc, *bcc)]))
    if shortcut is None:
        shortcut = _shortcuts.allowed("compose")
    elif shortcut:
        shortcut = _shortcuts.unbroken("compose")
    parts = None
    if shortcut and not smtputf8 and not request.inline_images:
        parts = _render_fast(request, content_type, sender, to, cc, date, message_id, text)
    if parts is None:
        return Composed(build(), sender.spec, recipients, message_id, smtputf8)
    return Composed(None, sender.spec, recipients, message_id, smtputf8,
                    subject=request.subject, parts=parts, build=build)


def _build_of_mailboxes(
    request: SendRequest, content_type: str, sender: _Mailbox, to: list[_Mailbox],
    cc: list[_Mailbox], smtputf8: bool, date: str, message_id: str, text: str | None,
) -> EmailMessage:
    """``_build_message`` of compose's mailboxes: how a Composed builds its message when it
    is asked for (a preview)."""
    return _build_message(request, content_type, sender.address, [m.address for m in to],
                          [m.address for m in cc], smtputf8, date, message_id, text)


def _check_extra_headers(headers: tuple[tuple[str, str], ...], *, reply_to: bool) -> None:
    """The request's ``headers``: valid names (RFC 5322 ftext), text values without line breaks
    or control characters, none that the composer or a feature owns. One sentence, exit 1."""
    for name, value in headers:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidRequest(f"{str(name)[:60]!r} in 'headers' is not a header name (printable "
                                 "ASCII letters, digits and signs, no spaces or ':').")
        owner = _RESERVED.get(name.lower())
        if owner is not None:
            raise InvalidRequest(f"{name} cannot be set in 'headers': {owner}.")
        if name.lower() == "reply-to" and reply_to:
            raise InvalidRequest("Reply-To is given twice, by reply_to and in 'headers': give "
                                 "it once.")
        if not isinstance(value, str):
            raise InvalidRequest(f"The value of header {name} in 'headers' must be text, not "
                                 f"{type(value).__name__}.")
        check_header_value(f"header {name}", value)


def _build_message(
    request: SendRequest, content_type: str, sender: Address, to: list[Address],
    cc: list[Address], smtputf8: bool, date: str, message_id: str, text: str | None,
) -> EmailMessage:
    """The message, built with the email package the documented way."""
    msg = EmailMessage(policy=POLICY_UTF8 if smtputf8 else POLICY)
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = request.subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    if request.reply_to:
        msg["Reply-To"] = _addresses(request.reply_to, "'reply_to' address")
    for name, value in request.headers:
        msg[name] = check_header_value(f"header {name}", value)

    _set_body(msg, request, content_type, text)
    for att in request.attachments:
        data = att.read()
        msg.add_attachment(data, maintype=att.maintype, subtype=att.subtype,
                           filename=att.filename, cte=attachment_cte(att, data))
    return msg


# A text attachment of plain ASCII travels as it is (7bit) rather than base64, which spam
# filters hold against text (rspamd: MIME_BASE64_TEXT_BOGUS). Only small ones: the file is read
# whole to check it, where base64 streams it.
_TEXT_7BIT_MAX = 2 * MB
_LONG_LINE = re.compile(rb"[^\n]{999}")


def attachment_cte(att: Attachment, data: bytes | None = None) -> str:
    """``"7bit"`` for a text/* attachment of ASCII lines (no NUL, no bare CR, none longer than
    SMTP allows), else ``"base64"``. Its line breaks arrive as CRLF, the canonical form of text
    in MIME; every other byte arrives as it was."""
    if att.maintype != "text" or att.size > _TEXT_7BIT_MAX:
        return "base64"
    if data is None:
        data = att.read()
    if not data.isascii() or b"\0" in data or _LONG_LINE.search(data):
        return "base64"
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return "base64"  # a bare CR would not survive the trip
    return "7bit"


_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    """``formatdate(localtime=True)``, computed once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, localtime=True))
    return _date_cache[1]


def _set_body(msg: EmailMessage, request: SendRequest, content_type: str, text: str | None) -> None:
    body = request.body or ""
    if not isinstance(body, str):
        raise InvalidRequest(f"The body must be text, not {type(body).__name__}.")
    if content_type == "text/plain":
        msg.set_content(body)
        return
    assert text is not None
    msg.set_content(text)
    msg.add_alternative(body, subtype="html")
    if request.inline_images:
        html_part: EmailMessage = msg.get_payload()[-1]  # type: ignore[index,assignment]
        for image in request.inline_images:
            html_part.add_related(image.data, maintype="image", subtype=image.subtype,
                                  cid=f"<{image.cid}>", filename=image.filename,
                                  disposition="inline")


# -- the fast path: the same bytes as ``_build_message(...).as_bytes()``, built per shape ------
#
# Building an EmailMessage costs about a millisecond, mostly in the header registry and the
# generator; a bulk send repeats that for messages that differ only in their values. So the
# MIME structure of each distinct shape (content type, transfer encodings, attachment types and
# names) is built once by the email package with placeholder payloads, flattened by its
# generator, and cached; a message is then its folded headers, that skeleton, fresh boundaries
# and its payloads, encoded by the email package's own content manager. Headers take a short
# path only when the email package would write them unchanged (short printable ASCII); anything
# else is folded by the policy itself. tests/test_compose_fast.py checks the bytes are equal.
# The text encoder is the stdlib's private one, so this path lives behind ``_shortcuts``
# ("compose"): off outside its version window, with SMTP_MAGIC_NO_SHORTCUTS, or once the
# first message of a shape, built both ways, shows other bytes than the email package's.
_SIMPLE = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDR = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)\Z")
_SIMPLE_NAME = re.compile(r"([A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <([^<>\s]+)>\Z")
# ``user@example.org``, nothing else: what most addresses in a bulk send look like. A dot-atom
# local part and a domain of valid labels, so the header parser would give exactly its parts,
# addr_spec is the text itself, and there is nothing to check, quote or IDNA-encode.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDR = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@({_LABEL}(?:\.{_LABEL})*)\Z")
_SIMPLE_MSGID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>\Z")
_SLOT = "smtpmagicslot{}x"
_SLOT_RE = rb"smtpmagicslot\d+x"
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))


@functools.lru_cache(maxsize=1)
def _skeleton_split() -> re.Pattern[bytes]:
    """A slot or a boundary (``_new_boundary``'s format) in a flattened skeleton; compiled on
    the first skeleton (one compile per process)."""
    return re.compile(b"(" + _SLOT_RE + b"|={15}[0-9]{%d}==)" % _BOUNDARY_DIGITS)

_B64_BLOCK = 57 * 8192  # whole 76-character lines per block


class _Base64Body:
    """An attachment's base64 body as the email package writes it (76-character lines),
    produced a block at a time from the file or the bytes."""

    __slots__ = ("attachment",)

    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment

    def size(self) -> int:
        """The size of ``chunks()``: the base64 of the attachment in lines of 76 characters,
        each ended by CRLF (every block but the last is whole lines)."""
        encoded = 4 * ((self.attachment.size + 2) // 3)
        return encoded + 2 * ((encoded + 75) // 76)

    def chunks(self) -> Iterator[bytes]:
        att = self.attachment
        if att.data is not None:
            view = memoryview(att.data)
            for start in range(0, len(view), _B64_BLOCK):
                yield _base64_lines(view[start:start + _B64_BLOCK])
            return
        assert att.path is not None
        try:
            with open(att.path, "rb") as f:
                while block := f.read(_B64_BLOCK):
                    yield _base64_lines(block)
        except OSError as exc:
            raise InvalidRequest(f"Attachment {str(att.path)!r} cannot be read: {exc.strerror}.") from exc


def _head_of(raw: bytes) -> bytes:
    """The header block of the CRLF message ``raw``, its empty line included (``raw`` itself
    when the block has not ended yet)."""
    end = raw.find(b"\r\n\r\n")
    return raw[:end + 4] if end >= 0 else raw


def _crlf(data: bytes) -> bytes:
    """A 7bit text payload as the generator writes it: every line break as CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _base64_lines(block: bytes | memoryview) -> bytes:
    encoded = binascii.b2a_base64(block, newline=False)
    return b"\r\n".join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


@functools.lru_cache(maxsize=2)
def _date_line(date: str) -> bytes:
    """The Date header, the same for every message of the same second."""
    return _fold("Date", date)


def _fold(name: str, value: str) -> bytes:
    """``name: value`` folded exactly as the policy folds it when the message is flattened."""
    if len(name) + len(value) <= 76 and "=?" not in value and _SIMPLE.match(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return POLICY.fold_binary(name, POLICY.header_store_parse(name, value)[1])


def _address_value(addresses: list[Address]) -> str | None:
    """The header value of simple addresses (as ``str(Address)`` gives it), else None."""
    out = []
    for a in addresses:
        # Its addr_spec when it matches: a dot-atom local part is never quoted.
        spec = f"{a.username}@{a.domain}"
        if not _SIMPLE_ADDR.match(spec):
            return None
        name = a.display_name
        if name:
            if not _SIMPLE_NAME.match(f"{name} <x>"):
                return None
            out.append(f"{name} <{spec}>")
        else:
            out.append(spec)
    return ", ".join(out)


def _fold_addresses(name: str, mailboxes: list[_Mailbox]) -> bytes:
    value = _header_text(mailboxes)
    if value is not None and len(name) + len(value) <= 76:
        return f"{name}: {value}\r\n".encode("ascii")
    addresses = [m.address for m in mailboxes]
    return POLICY.fold_binary(name, POLICY.header_store_parse(name, addresses)[1])


def _header_text(mailboxes: list[_Mailbox]) -> str | None:
    """The addresses as a header writes them, when each is written as it is; else None."""
    if len(mailboxes) == 1:
        return mailboxes[0].header
    texts = []
    for m in mailboxes:
        if m.header is None:
            return None
        texts.append(m.header)
    return ", ".join(texts)


class _Skeleton:
    """The flattened MIME structure of one shape, compiled for filling in: ``segments`` are
    bytes templates (``%b`` for the head, each boundary and each payload, literal ``%`` as
    ``%%``) with a getter of their values, or the index of an attachment streamed lazily;
    ``checked`` once a message of this shape matched the email package's bytes."""

    __slots__ = ("checked", "nboundaries", "segments")

    def __init__(self, pieces: list[bytes | tuple[str, int]], nboundaries: int,
                 lazy: set[int]) -> None:
        self.nboundaries, self.checked = nboundaries, False
        # Values are [head, *boundaries, *slots]: one bytes % tuple per run between lazy
        # parts, C work, instead of a list grown piece by piece for every message.
        self.segments: list[tuple[bytes, Callable[[list[Any]], tuple[Any, ...]]] | int] = []
        template, keys = [b"%b"], [0]
        for piece in pieces:
            if isinstance(piece, bytes):
                template.append(piece.replace(b"%", b"%%"))
            elif piece[0] == "slot" and piece[1] in lazy:
                self._add(template, keys)
                self.segments.append(piece[1])
                template, keys = [], []
            else:
                template.append(b"%b")
                keys.append(1 + piece[1] + (nboundaries if piece[0] == "slot" else 0))
        self._add(template, keys)

    def _add(self, template: list[bytes], keys: list[int]) -> None:
        if not template:
            return
        if len(keys) == 1:  # itemgetter of one key gives the item, not a tuple of it
            key = keys[0]
            self.segments.append((b"".join(template), lambda values: (values[key],)))
        elif keys:
            self.segments.append((b"".join(template), operator.itemgetter(*keys)))
        else:
            self.segments.append((b"".join(template), lambda values: ()))

    def fill(self, head: bytes, boundaries: list[bytes], slots: list[bytes | _Base64Body]
             ) -> list[bytes | _Base64Body]:
        """The message: ``head`` (its folded headers), then the structure with ``boundaries``
        and the payload of each slot (bytes, or a lazy attachment body)."""
        values = [head, *boundaries, *slots]
        segments = self.segments
        if len(segments) == 1:  # a message without lazy parts: one template
            template, getter = segments[0]  # type: ignore[misc]
            return [template % getter(values)]
        return [slots[segment] if isinstance(segment, int) else segment[0] % segment[1](values)
                for segment in segments]


_skeletons: dict[tuple[object, ...], _Skeleton] = {}


def _skeleton(shape: tuple[Any, ...]) -> _Skeleton | None:
    """The compiled MIME structure of ``shape`` (content type, text ctes, attachments)."""
    cached = _skeletons.get(shape)
    if cached is not None:
        return cached
    content_type, ctes, attachments = shape
    msg = EmailMessage(policy=POLICY)
    msg.set_content("x", cte=ctes[0])
    if content_type != "text/plain":
        msg.add_alternative("x", subtype="html", cte=ctes[1])
    for maintype, subtype, filename, cte in attachments:
        msg.add_attachment(b"", maintype=maintype, subtype=subtype, filename=filename, cte=cte)
    leaves = [p for p in msg.walk() if not p.is_multipart()]
    for i, leaf in enumerate(leaves):
        leaf.set_payload(_SLOT.format(i))
    # Boundaries of the generator's format set here (the generator would draw them, and compile
    # a regex for each to search the parts with), so that one regex finds them all.
    for part in msg.walk():
        if part.is_multipart():
            part.set_boundary(_new_boundary())
    raw = msg.as_bytes(policy=POLICY)
    boundaries = [str(p.get_boundary()).encode("ascii") for p in msg.walk() if p.is_multipart()]
    pieces: list[bytes | tuple[str, int]] = []
    for i, piece in enumerate(_skeleton_split().split(raw)):
        if i % 2 == 0:
            pieces.append(piece)
        elif piece.startswith(b"smtpmagicslot"):
            pieces.append(("slot", int(piece[13:-1])))
        elif piece in boundaries:
            pieces.append(("boundary", boundaries.index(piece)))
        else:  # a file name that looks like a boundary
            pieces.append(piece)
    if sorted(p[1] for p in pieces if isinstance(p, tuple) and p[0] == "slot") != list(
        range(len(leaves))
    ):
        return None  # a file name that looks like a slot: not worth handling
    pieces = [p for p in pieces if p != b""]
    if len(_skeletons) > 256:
        _skeletons.clear()
    ntexts = len(ctes)
    lazy = {ntexts + k for k, att in enumerate(attachments) if att[3] != "7bit"}
    result = _Skeleton(pieces, len(boundaries), lazy)
    _skeletons[shape] = result
    return result


def _new_boundary() -> str:
    """A multipart boundary in the generator's own format (``===...==``, random digits)."""
    return "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="


# The first message of each shape is also built by the email package and the bytes compared,
# unless its attachments are large (building it whole is what the fast path avoids): then the
# sample messages of ``_self_check`` stand in, once per process.
_CHECK_WHOLE_MAX = 1 << 20


def _render_fast(
    request: SendRequest, content_type: str, sender: _Mailbox, to: list[_Mailbox],
    cc: list[_Mailbox], date: str, message_id: str, text: str | None,
    new_boundary: Callable[[], str] = _new_boundary, check: bool = True,
) -> list[bytes | _Base64Body] | None:
    """The message's bytes (attachments as lazy parts), or None to build it the slow way
    (which is also the answer for good once a check finds other bytes than the email
    package's; see ``_shortcuts``)."""
    body = request.body or ""
    if not isinstance(body, str):
        return None
    subject = request.subject
    if (len(to) == 1 and not cc and sender.header is not None and to[0].header is not None
            and len(sender.header) <= 72 and len(to[0].header) <= 74 and len(subject) <= 69
            and len(message_id) <= 64 and "=?" not in subject and _SIMPLE.match(subject)
            and _SIMPLE_MSGID.match(message_id)):
        # The commonest head, each field short and written as it is: the lines _fold_addresses
        # and _fold give for it (the width each allows, less the field's name), in one piece.
        head = [f"From: {sender.header}\r\nTo: {to[0].header}\r\nSubject: {subject}\r\n"
                .encode("ascii"), _date_line(date), f"Message-ID: {message_id}\r\n".encode("ascii")]
    else:
        head = [_fold_addresses("From", [sender]), _fold_addresses("To", to)]
        if cc:
            head.append(_fold_addresses("Cc", cc))
        head += [_fold("Subject", subject), _date_line(date)]
        if _SIMPLE_MSGID.match(message_id) and len(message_id) <= 64:
            head.append(f"Message-ID: {message_id}\r\n".encode("ascii"))
        else:
            head.append(POLICY.fold_binary("Message-ID",
                                           POLICY.header_store_parse("Message-ID", message_id)[1]))
    if request.reply_to:
        head.append(_fold_addresses("Reply-To", _mailboxes(request.reply_to, "'reply_to' address")))
    for name, value in request.headers:
        check_header_value(f"header {name}", value)
        if name.lower() in POLICY.header_factory.registry:  # type: ignore[attr-defined]
            return None  # a structured header (Reply-To...): the email package's rules apply
        head.append(_fold(name, value))
    texts = [body] if content_type == "text/plain" else [text or "", body]
    ctes: list[str] = []
    slots: list[bytes | _Base64Body] = []
    plain: list[bytes] = []  # the payloads a boundary could appear in
    for t in texts:
        cte, data = _shortcuts.encode_text(t, POLICY)
        payload = data.encode("ascii").replace(b"\n", b"\r\n")  # bytes.replace: twice as fast
        ctes.append(cte)
        slots.append(payload)
        if cte == "7bit":  # quoted-printable and base64 never hold 15 "=" in a row
            plain.append(payload)
    atts = []
    for att in request.attachments:
        cte = attachment_cte(att)
        atts.append((att.maintype, att.subtype, att.filename, cte))
        if cte == "7bit":
            plain.append(_crlf(att.read()))
            slots.append(plain[-1])
        else:
            slots.append(_Base64Body(att))
    skeleton = _skeleton((content_type, tuple(ctes), tuple(atts)))
    if skeleton is None:
        return None
    boundaries: list[bytes] = []
    while len(boundaries) < skeleton.nboundaries:
        b = new_boundary().encode("ascii")
        if b not in boundaries:
            for p in plain:
                if p.find(b) >= 0:  # (not ``b in p``: that tries b as an integer first)
                    break
            else:
                boundaries.append(b)
    # A small message comes out as one bytes object.
    parts = skeleton.fill(b"".join(head), boundaries, slots)
    if check and not skeleton.checked:
        if sum(a.size for a in request.attachments) <= _CHECK_WHOLE_MAX:
            same = _same_as_email_package(parts, boundaries, request, content_type, sender, to,
                                          cc, date, message_id, text)
        else:
            same = _samples_checked()
        if not _shortcuts.record_check("compose", same):
            return None
        skeleton.checked = True
    return parts


def _same_as_email_package(
    parts: list[bytes | _Base64Body], boundaries: list[bytes], request: SendRequest,
    content_type: str, sender: _Mailbox, to: list[_Mailbox], cc: list[_Mailbox], date: str,
    message_id: str, text: str | None,
) -> bool:
    """Whether ``parts`` are the bytes the email package writes for the message (with the
    same boundaries)."""
    fast = b"".join(p if isinstance(p, bytes) else b"".join(p.chunks()) for p in parts)
    msg = _build_message(request, content_type, sender.address, [m.address for m in to],
                         [m.address for m in cc], False, date, message_id, text)
    for boundary, part in zip(boundaries, (p for p in msg.walk() if p.is_multipart())):
        part.set_boundary(boundary.decode("ascii"))
    return fast == msg.as_bytes(policy=POLICY)


@functools.lru_cache(maxsize=1)
def _samples_checked() -> bool:
    """``_self_check``, once per process."""
    return _self_check()


def _self_check() -> bool:
    """The fast path writes the email package's bytes for a few representative messages
    (7bit, quoted-printable and base64 bodies; one and two levels of multipart).

    Stands in for the check of a real message when that one has large attachments.
    """
    try:
        return _samples_match_email_package()
    except Exception:  # noqa: BLE001 - a shortcut that raises is a shortcut that does not work
        return False


def _recorded(boundaries: list[bytes]) -> Callable[[], str]:
    """``_new_boundary``, remembering what it gave in ``boundaries``."""
    def new_boundary() -> str:
        boundary = _new_boundary()
        boundaries.append(boundary.encode("ascii"))
        return boundary
    return new_boundary


def _samples_match_email_package() -> bool:
    sender = _mailbox("Self Check <check@example.test>", "sender")
    to = _mailboxes(("to@example.test", "Bob Smith <bob@example.test>"), "'to' address")
    cc = _mailboxes(("cc@example.test",), "'cc' address")
    date, message_id = "Thu, 01 Jan 2026 00:00:00 +0000", "<self.check@example.test>"
    samples = [
        ("text/plain", "Grüße, naïve café – " * 8, None, ()),
        ("text/html", "<p>" + "long line " * 40 + "</p>\n" + "<p>é</p>\n" * 12, "Plain\n",
         (Attachment.from_bytes("données.csv", b"a,b\n1,2\n" * 50),)),
    ]
    for content_type, body, text, attachments in samples:
        request = SendRequest(to=tuple(str(m.address) for m in to), cc=(cc[0].spec,),
                              subject="Self-check é " * 6, body=body, text=text,
                              content_type=content_type, attachments=attachments,
                              headers=(("X-Note", "checked"),))
        boundaries: list[bytes] = []
        parts = _render_fast(request, content_type, sender, to, cc, date, message_id, text,
                             new_boundary=_recorded(boundaries), check=False)
        if parts is None or not _same_as_email_package(
                parts, boundaries, request, content_type, sender, to, cc, date, message_id, text):
            return False
    return True
