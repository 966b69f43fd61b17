"""SendRequest -> a validated email.message.EmailMessage and its SMTP envelope."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .config import ConnectionSettings
from .errors import InvalidRequest
from .htmltext import html_to_text
from .models import SendRequest

__all__ = ["Composed", "compose", "parse_address", "check_header_value"]

# 7bit transfer encodings make the message safe for any server; SMTPUTF8 only when an
# address needs it (a non-ASCII local part).
POLICY = email_policy.SMTP.clone(cte_type="7bit")
POLICY_UTF8 = email_policy.SMTPUTF8

_DOMAIN_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$", re.UNICODE)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers the composer owns; extra headers may not replace them.
_RESERVED = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
             "content-type", "content-transfer-encoding"}


@dataclass(frozen=True)
class Composed:
    """A message ready to send: the MIME message plus the SMTP envelope."""

    message: EmailMessage
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    smtputf8: bool

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=POLICY_UTF8 if self.smtputf8 else POLICY)


# CR and LF, plus what str.splitlines() also breaks at (VT, FF, FS, GS, RS, NEL, U+2028/9):
# the email package refuses all of them in headers, with a message about CR/LF only.
_LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def check_header_value(field: str, value: str) -> str:
    """Refuse line breaks and NUL in a header value: they would inject headers."""
    if "\0" in value or any(c in value for c in _LINE_BREAKS):
        kind = "a NUL character" if "\0" in value else "a line break"
        raise InvalidRequest(f"The {field} contains {kind}, which is not allowed in a header.")
    return value


def parse_address(text: str, field: str = "address") -> Address:
    """Parse one address (``"Name <user@host>"`` or ``user@host``); raise InvalidRequest if bad."""
    if not isinstance(text, str):
        raise InvalidRequest(f"The {field} {text!r} is not a string.")
    check_header_value(f"{field} {text.strip()[:60]!r}", text)
    try:
        header = email_policy.default.header_factory("To", text)
        addresses = header.addresses
        defects = [d for d in header.defects if type(d).__name__ != "NonASCIILocalPartDefect"]
    except Exception:  # the stdlib parser raises assorted errors on garbage
        addresses, defects = (), [None]
    if len(addresses) != 1 or defects or not _valid_addr_spec(addresses[0]):
        hint = "; separate several addresses with commas" if len(addresses) > 1 else ""
        raise InvalidRequest(f"The {field} {text.strip()!r} is not a valid email address{hint}.")
    return addresses[0]


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


def _addresses(values: tuple[str, ...], field: str) -> list[Address]:
    return [_ascii_domain(parse_address(v, field)) for v in values]


def _sender(request: SendRequest, settings: ConnectionSettings) -> Address:
    if request.sender:
        return _ascii_domain(parse_address(request.sender, "sender"))
    if settings.sender:
        return _ascii_domain(parse_address(settings.sender, "sender setting"))
    if settings.username and "@" in settings.username:
        return _ascii_domain(parse_address(settings.username, "username (used as the sender)"))
    raise InvalidRequest(
        "No sender address: give 'from' (--from), or set the sender or an email-address username."
    )


def check_attachments(request: SendRequest, settings: ConnectionSettings) -> None:
    """Every attachment exists and is within ``attachment_size``; checked before connecting."""
    limit = settings.attachment_limit
    for att in request.attachments:
        check_header_value(f"attachment name {att.filename!r}", att.filename)
        size = att.size
        if size > limit:
            raise InvalidRequest(
                f"Attachment {att.filename!r} is {size / 1e6:.1f} MB, over the "
                f"{settings.attachment_size:g} MB limit (attachment_size)."
            )


def compose(request: SendRequest, settings: ConnectionSettings) -> Composed:
    """Validate the request and build the message. Raises InvalidRequest with one sentence."""
    if request.subject is None:
        raise InvalidRequest("The message has no subject ('subject' is required).")
    if not isinstance(request.subject, str):
        raise InvalidRequest(f"The subject must be text, not {type(request.subject).__name__}.")
    if not request.to:
        raise InvalidRequest("The message has no recipient ('to' needs at least one address).")
    check_header_value("subject", request.subject)
    sender = _sender(request, settings)
    to = _addresses(request.to, "'to' address")
    cc = _addresses(request.cc, "'cc' address")
    bcc = _addresses(request.bcc, "'bcc' address")
    check_attachments(request, settings)
    content_type = (request.content_type or settings.content_type).lower()
    if content_type not in ("text/plain", "text/html", "multipart/alternative"):
        raise InvalidRequest(
            f"Unsupported content type {content_type!r}: use text/html, text/plain, "
            "text/markdown or multipart/alternative."
        )

    smtputf8 = not all(a.username.isascii() for a in (sender, *to, *cc, *bcc))
    domain = sender.domain if sender.domain.isascii() else "smtp-magic.local"
    message_id = request.message_id or make_msgid(domain=domain)
    check_header_value("Message-ID", message_id)

    msg = EmailMessage(policy=POLICY_UTF8 if smtputf8 else POLICY)
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = request.subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = message_id
    for name, value in request.headers:
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
            raise InvalidRequest(f"{name!r} cannot be set as an extra header.")
        msg[name] = check_header_value(f"header {name}", value)

    _set_body(msg, request, content_type)
    for att in request.attachments:
        msg.add_attachment(att.read(), maintype=att.maintype, subtype=att.subtype,
                           filename=att.filename)

    recipients = tuple(dict.fromkeys(a.addr_spec for a in (*to, *cc, *bcc)))
    return Composed(msg, sender.addr_spec, recipients, message_id, smtputf8)


def _set_body(msg: EmailMessage, request: SendRequest, content_type: str) -> None:
    body = request.body or ""
    if not isinstance(body, str):
        raise InvalidRequest(f"The body must be text, not {type(body).__name__}.")
    if content_type == "text/plain":
        msg.set_content(body)
        return
    # An HTML body always travels with a plain-text alternative, for text-only clients and filters.
    text = request.text if request.text is not None else html_to_text(body)
    msg.set_content(text)
    msg.add_alternative(body, subtype="html")
    if request.inline_images:
        html_part = msg.get_payload()[-1]
        for image in request.inline_images:
            html_part.add_related(image.data, maintype="image", subtype=image.subtype,
                                  cid=f"<{image.cid}>", filename=image.filename,
                                  disposition="inline")
