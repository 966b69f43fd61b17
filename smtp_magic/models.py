"""Frozen data passed between the layers: SendRequest, Attachment, InlineImage, Response."""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .errors import ExitCode, InvalidRequest, SmtpMagicError, error_for

__all__ = [
    "Attachment",
    "InlineImage",
    "Response",
    "SendRequest",
    "as_address_list",
    "mime_type_for",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def assembler(cls: type[T]) -> Callable[..., T]:
    """A maker of the frozen dataclass ``cls`` from keyword values already in their final form
    (what its ``__post_init__``, which it skips, would make of them), the rest its defaults
    (a default factory called for each object made).

    The generated ``__init__`` of a frozen dataclass sets each field with its own
    ``object.__setattr__`` call (a microsecond for a dozen fields); a bulk send makes a request,
    an outbox entry and a Response per message, so they are made here with one ``dict.update``."""
    # Every field, in order, with its default (the fields without one must be among the
    # values): the object's attributes come in the order ``__init__`` would set them.
    defaults = {f.name: None if f.default is MISSING else f.default
                for f in fields(cls)}  # type: ignore[arg-type]
    factories = {f.name: f.default_factory for f in fields(cls)  # type: ignore[arg-type]
                 if f.default_factory is not MISSING}
    new = object.__new__

    def assemble(**values: Any) -> T:
        made = new(cls)
        attributes = made.__dict__
        attributes.update(defaults)
        for name, factory in factories.items():
            if name not in values:
                attributes[name] = factory()
        attributes.update(values)
        return made

    return assemble


# The types we promise, whatever the host's /etc/mime.types says (python's built-in table lacks
# OpenDocument and most MS Office types).
_MIME_TYPES = {
    ".doc": "application/msword",
    ".dot": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".odg": "application/vnd.oasis.opendocument.graphics",
    ".rtf": "application/rtf",
    ".pdf": "application/pdf",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed",
    ".json": "application/json",
    ".xml": "application/xml",
    ".parquet": "application/vnd.apache.parquet",
    ".ipynb": "application/x-ipynb+json",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".ics": "text/calendar",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".eml": "message/rfc822",
}


def mime_type_for(filename: str) -> str:
    """The MIME type of a file name, by its extension; ``application/octet-stream`` if unknown."""
    ext = os.path.splitext(filename)[1].lower()
    if ext in _MIME_TYPES:
        return _MIME_TYPES[ext]
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    if guessed and not encoding:
        return guessed
    return "application/octet-stream"


@dataclass(frozen=True)
class Attachment:
    """A file to attach: bytes in memory, or a path read when the message is built."""

    filename: str
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise InvalidRequest(f"Attachment {self.filename!r} needs either data or a path.")
        if self.content_type is None:
            object.__setattr__(self, "content_type", mime_type_for(self.filename))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], filename: str | None = None) -> Attachment:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InvalidRequest(f"Attachment {str(path)!r} does not exist or is not a file.")
        return cls(filename=filename or p.name, path=p)

    @classmethod
    def from_bytes(cls, filename: str, data: bytes | str, content_type: str | None = None) -> Attachment:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return cls(filename=filename, data=bytes(data), content_type=content_type)

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        try:
            return self.path.stat().st_size
        except OSError as exc:
            raise InvalidRequest(f"Attachment {str(self.path)!r} cannot be read: {exc.strerror}.") from exc

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"Attachment {str(self.path)!r} cannot be read: {exc.strerror}.") from exc

    @property
    def maintype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[1]


@dataclass(frozen=True)
class InlineImage:
    """An image shown inside the HTML body, referenced there as ``cid:<cid>``."""

    cid: str  # without angle brackets, e.g. "img1.123@smtp-magic"
    data: bytes = field(repr=False)
    subtype: str = "png"
    filename: str | None = None


def as_address_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise an address field of a request ("string or array of strings") to a tuple.

    A single string may hold several addresses separated by commas or semicolons.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[str] = [value]
    else:
        items = value
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequest(f"Address {item!r} is not a string.")
        if "\r" in item or "\n" in item or "\0" in item:
            # Checked before splitting, which would strip a trailing CR or LF away unnoticed.
            kind = "a NUL character" if "\0" in item else "a line break"
            raise InvalidRequest(f"The address {item.strip()[:60]!r} contains {kind}, which is not allowed.")
        out.extend(_split_addresses(item))
    return tuple(out)


def _split_addresses(text: str) -> list[str]:
    """Split on commas/semicolons that are outside quotes and angle brackets."""
    if '"' not in text and "<" not in text:  # nothing to be outside of (nearly every address)
        if "," not in text and ";" not in text:
            text = text.strip()
            return [text] if text else []
        return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    parts: list[str] = []
    buf: list[str] = []
    quoted = angle = escaped = False
    for ch in text:
        if escaped:  # \" and \\ inside a quoted display name do not end the quotes
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        if ch in ",;" and not quoted and not angle:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class SendRequest:
    """One message to send, independent of the connection settings.

    ``body`` is interpreted by ``content_type``: ``text/plain``, ``text/html`` (also used for
    ``multipart/alternative``) or ``text/markdown``. ``text`` is an optional precomputed plain-text
    alternative for an HTML body; ``inline_images`` are referenced from the HTML by ``cid:``.
    """

    to: tuple[str, ...]
    subject: str
    body: str = ""
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    sender: str | None = None
    attachments: tuple[Attachment, ...] = ()
    content_type: str | None = None
    text: str | None = None
    inline_images: tuple[InlineImage, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    message_id: str | None = None
    unsubscribe: str | None = None  # an https URL: List-Unsubscribe, one-click (RFC 8058)
    reply_to: tuple[str, ...] = ()  # Reply-To (default: the reply_to setting)

    def __post_init__(self) -> None:
        # A bulk send makes one request a message: the common values (one address, nothing
        # else, tuples already) are kept as they are rather than rebuilt.
        for name in ("to", "cc", "bcc", "reply_to"):
            value = getattr(self, name)
            if not (type(value) is tuple and not value):  # () is ()
                object.__setattr__(self, name, as_address_list(value))
        for name in ("attachments", "inline_images", "headers"):
            value = getattr(self, name)
            if type(value) is not tuple:
                if name == "headers" and isinstance(value, Mapping):
                    value = value.items()
                object.__setattr__(self, name, tuple(value))

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc + self.bcc

    def replace(self, **changes: Any) -> SendRequest:
        return replace(self, **changes)


# SendRequest(...) for values in the form its __post_init__ gives them (every address field
# and the other sequences a tuple): how _requests makes one request a message.
assemble_request = assembler(SendRequest)
_SENT_RESULT = ExitCode.SENT.result


@dataclass(frozen=True)
class Response:
    """The outcome of one send, as the CLI prints it (``exitcode``, ``message``, ``result``)."""

    exitcode: ExitCode | int
    message: str = ""
    result: str = ""
    message_id: str | None = None
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    elapsed: float = 0.0
    accepted: tuple[str, ...] = ()  # recipients the server accepted

    def __post_init__(self) -> None:
        code: ExitCode | None = self.exitcode  # type: ignore[assignment]
        if type(code) is not ExitCode:  # (a member as it is: no Enum lookup per message sent)
            try:
                code = ExitCode(self.exitcode)
            except ValueError:
                code = None
            else:
                object.__setattr__(self, "exitcode", code)
        if not self.result:
            object.__setattr__(self, "result", code.result if code is not None else "failed")

    @classmethod
    def sent(cls, message_id: str | None, elapsed: float, accepted: tuple[str, ...]) -> Response:
        """``Response(exitcode=ExitCode.SENT, message_id=..., elapsed=..., accepted=...)``, made
        by an ``assembler`` (a Response per message is a good part of a bulk send's own cost)."""
        return _assemble_response(exitcode=ExitCode.SENT, result=_SENT_RESULT,
                                  message_id=message_id, elapsed=elapsed, accepted=accepted)

    @classmethod
    def from_error(
        cls, exc: SmtpMagicError, *, message_id: str | None = None, elapsed: float = 0.0,
        accepted: tuple[str, ...] = (),
    ) -> Response:
        return cls(
            exitcode=exc.exitcode, message=exc.message, message_id=message_id,
            refused=dict(exc.refused), elapsed=elapsed, accepted=accepted,
        )

    @property
    def ok(self) -> bool:
        return self.exitcode == ExitCode.SENT

    @property
    def state(self) -> str:
        """``sent``, ``partly sent`` (refused for some recipients), ``in doubt`` (it went out
        but the final reply never came: it may have been delivered) or ``not sent``."""
        if self.ok:
            return "sent"
        if self.result.startswith("in doubt"):
            return "in doubt"
        if self.exitcode == ExitCode.PARTIAL:
            return "partly sent"
        return "not sent"

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access, like the JSON the CLI prints: ``response.get("result")``."""
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exitcode"] = int(self.exitcode)
        d["refused"] = {k: list(v) for k, v in self.refused.items()}
        d["accepted"] = list(self.accepted)
        d["elapsed"] = round(self.elapsed, 3)
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def raise_for_status(self) -> Response:
        """Raise the matching ``SmtpMagicError`` unless the send succeeded; return self otherwise."""
        if self.ok:
            return self
        raise error_for(self.exitcode, self.message, refused=self.refused)

    def __str__(self) -> str:
        if self.ok:  # a warning (the outbox or the Sent copy could not be written) follows
            sent = f"sent in {self.elapsed:.2f} s, {self.message_id or ''}".rstrip(", ")
            return f"{sent}; {self.message}" if self.message else sent
        state = self.state
        prefix = "" if state == "not sent" else f"{state}, "  # partly sent, in doubt
        return f"{prefix}exit {self.exitcode}: {self.message}"

    def _repr_html_(self) -> str:
        from ._theme import line

        state = self.state  # partly sent, in doubt, or sent with a warning: not a failure
        kind = ("error" if state == "not sent" else
                "ok" if state == "sent" and not self.message else "warn")
        refused = "".join(
            f"<li>{html.escape(rcpt)}: {code} {html.escape(text)}</li>"
            for rcpt, (code, text) in self.refused.items()
        )
        extra = f"<ul style='margin:2px 0'>{refused}</ul>" if refused else ""
        return line(kind, str(self), tag="div", icon="\u2718 " if kind == "error" else None) + extra


_assemble_response = assembler(Response)


def tally(responses: Iterable[Response], total: int) -> str:
    """How a batch went, by state: ``2 of 3 messages were partly sent, 1 was in doubt``."""
    counts: dict[str, int] = {}
    for response in responses:
        if not response.ok:
            counts[response.state] = counts.get(response.state, 0) + 1
    parts: list[str] = []
    for state in ("not sent", "partly sent", "in doubt"):
        n = counts.get(state, 0)
        if n:
            verb = "was" if n == 1 else "were"
            parts.append(f"{n} {verb} {state}" if parts else
                         f"{n} of {total} message{'s' if total != 1 else ''} {verb} {state}")
    return ", ".join(parts)


# -- the message options the faces share ---------------------------------------------------------
@dataclass(frozen=True)
class MessageOption:
    """An option of a message on a command line, declared once for ``%%smtp_send`` and
    ``smtp-magic send-notebook`` so the two cannot drift apart. ``many``: takes several values
    and, given again, adds to them (``--to a --to b`` is both)."""

    flag: str
    dest: str
    many: bool
    metavar: str
    help: str

    def argparse_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``add_argument`` (argparse or IPython's ``@argument``)."""
        kwargs: dict[str, Any] = {"dest": self.dest, "metavar": self.metavar, "help": self.help}
        if self.many:
            kwargs.update(nargs="+", action="extend")
        return kwargs


MESSAGE_OPTIONS: tuple[MessageOption, ...] = (
    MessageOption("--to", "to", True, "ADDR", "Recipients (several, or comma-separated)."),
    MessageOption("--cc", "cc", True, "ADDR", "Carbon-copy recipients."),
    MessageOption("--bcc", "bcc", True, "ADDR", "Blind carbon-copy recipients (not in the headers)."),
    MessageOption("--from", "sender", False, "ADDR", "The sender (default: settings)."),
    MessageOption("--reply-to", "reply_to", False, "ADDR",
                  "Where replies go (Reply-To; default: the reply_to setting)."),
    MessageOption("--attach", "attach", True, "ITEM",
                  "Files (globs allowed) or notebook variables: df, df:name.csv|xlsx|parquet, "
                  "fig:name.png|pdf|svg, bytes/str as var:name.ext."),
)
