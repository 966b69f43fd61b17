"""The one boundary where smtp_magic leans on more than a library's documented API.

Each shortcut has a declared version window, a runtime check, and a fallback on public APIs
that the same tests exercise (``SMTP_MAGIC_NO_SHORTCUTS=1`` runs the suite on the fallbacks):

``compose``
    The bulk composer (``mime._render_fast``) writes a message's bytes from a cached MIME
    skeleton instead of building an ``EmailMessage`` for each one. It encodes text parts as
    the stdlib's private ``email.contentmanager._encode_text`` (what ``set_content`` itself
    calls) does, so that its bytes are exactly the email package's: with an exact copy of it
    for the composer's policy (``_encode_text_7bit``, compared with it by
    tests/test_shortcuts_encode.py), else with the function itself. Checked on the first
    message of each MIME shape by building it both ways and comparing the bytes (samples stand in
    for one with large attachments). Fallback: ``EmailMessage`` +
    ``set_content``/``add_alternative``/``add_attachment``, flattened by its generator.

``pipelining``
    aiosmtplib has no PIPELINING (RFC 2920) and copies a message several times on its way to
    the socket. After aiosmtplib has connected, negotiated TLS and logged in (its public API),
    the transport's ``_pipeline.Channel`` takes over the connection's asyncio transport
    (``SMTP.transport``, a public attribute; ``BaseTransport.set_protocol``, public asyncio) for
    the mail transactions, and in a bulk send it sends the next message's envelope with the end
    of the data (RFC 2920 §3.1). That relies on aiosmtplib not touching the transport afterwards,
    which holds for the versions in the window. Checked per connection: the transport must
    still be attached to aiosmtplib's protocol. Fallback: aiosmtplib's public ``mail``,
    ``rcpt`` and ``data``.

Smaller reaches, each a named function below with the public way it replaces:

``kernel_allows_stdin``
    ipykernel's ``Kernel._allow_stdin`` (the last execute request's ``allow_stdin``), for a
    widget callback, whose own message does not say. Public way: the current execute request's
    content, read first. Fallback when the attribute is missing: ``None`` (the caller decides).

``figure_suptitle``
    matplotlib's ``Figure.get_suptitle()`` (public since 3.8); before 3.8, the private
    ``Figure._suptitle`` text object. Fallback when neither is there: ``""``.

``controller_on_socket``
    aiosmtpd's ``Controller`` made to listen on a socket bound by the capture server (so port 0
    works and the real port is known), by overriding its ``_create_server`` with its
    ``_factory_invoker`` (the hook its source says to override). Public way, and the fallback
    when either is missing: the socket's port is released and aiosmtpd binds it itself.

``dkim_fold``, ``dkim_select_headers``, ``dkim_blank_signature``, ``dkim_gen_header``
    dkimpy's ``fold``, ``select_headers``, ``RE_BTAG`` and ``DKIM.gen_header`` (with the
    ``headers``/``hasher`` it reads), outside its ``__all__``: with them the DKIM stage signs a
    message that streams by, hashing with OpenSSL, and writes the header exactly as dkimpy does.
    Public way: ``dkim.sign`` on the whole message in memory, with dkimpy's own RSA (about ten
    times slower). Checked by tests/test_dkim.py and tests/test_dkim_same.py (every signature
    equals ``dkim.sign``'s and verifies) for the dkimpy in use (``>=1.1``); there is no fallback
    at run time yet.

Nothing else in the package may use another library's private names (tests/test_private_names.py
scans every module's attribute access for them).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import logging
import os
import re
import struct
import sys
import threading
import warnings
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "AIOSMTPLIB_WINDOW",
    "ENV",
    "FEATURES",
    "PYTHON_WINDOW",
    "allowed",
    "controller_on_socket",
    "dkim_blank_signature",
    "dkim_fold",
    "dkim_gen_header",
    "dkim_select_headers",
    "encode_text",
    "figure_suptitle",
    "kernel_allows_stdin",
    "record_check",
    "status",
    "take_transport",
    "unbroken",
]

ENV = "SMTP_MAGIC_NO_SHORTCUTS"
FEATURES = ("compose", "pipelining")
# [lowest, first unsupported): tested at the low and high end of each (scripts/test.sh).
PYTHON_WINDOW = ((3, 10), (3, 14))  # the wire tests passed on 3.10, 3.11 (CI) and 3.13
AIOSMTPLIB_WINDOW = ((3, 0), (6, 0))  # keep in step with pyproject.toml's dependency

_checked: dict[str, bool] = {}
_lock = threading.Lock()


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _in_window(version: tuple[int, ...], window: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    low, high = window
    return low <= version[:2] < high


def _aiosmtplib_version() -> tuple[int, ...]:
    import aiosmtplib

    return _version(getattr(aiosmtplib, "__version__", "0"))


def _why_not(feature: str) -> str | None:
    """Why ``feature`` is off (a short reason), or None when it may be used."""
    if os.environ.get(ENV, "").strip() not in ("", "0"):
        return f"{ENV} is set"
    if _checked.get(feature) is False:
        return "its runtime check failed"
    return _why_not_here(feature, PYTHON_WINDOW, AIOSMTPLIB_WINDOW)


@functools.lru_cache(maxsize=16)
def _why_not_here(feature: str, python_window: Any, aiosmtplib_window: Any) -> str | None:
    """The reasons that do not change while the process runs (versions, attributes)."""
    if not _in_window(sys.version_info[:2], python_window):
        return f"Python {sys.version_info[0]}.{sys.version_info[1]} is outside {_window(python_window)}"
    if feature == "compose":
        from email import contentmanager

        if not callable(getattr(contentmanager, "_encode_text", None)):
            return "email.contentmanager._encode_text is missing"
    elif feature == "pipelining":
        version = _aiosmtplib_version()
        if not _in_window(version, aiosmtplib_window):
            shown = ".".join(map(str, version))
            return f"aiosmtplib {shown} is outside {_window(aiosmtplib_window)}"
    else:
        raise ValueError(f"unknown shortcut {feature!r}")
    return None


def _window(window: tuple[tuple[int, int], tuple[int, int]]) -> str:
    (a, b), (c, d) = window
    return f"[{a}.{b}, {c}.{d})"


def allowed(feature: str) -> bool:
    """Whether the shortcut may be used now (environment, version window, earlier checks)."""
    return _why_not(feature) is None


def unbroken(feature: str) -> bool:
    """Whether no runtime check of ``feature`` has failed: for a batch that read ``allowed``
    once, when it began (a failed check turns the shortcut off at once)."""
    return _checked.get(feature) is not False


def record_check(feature: str, ok: bool) -> bool:
    """Record the outcome of a runtime check of ``feature`` (``ok``) and return it; a failed
    one turns the shortcut off for good, with a warning (once), so the public path takes over."""
    with _lock:
        if ok:
            if feature not in _checked:
                log.debug("shortcut %r: on", feature)
                _checked[feature] = True
            return True
        if _checked.get(feature) is not False:
            warnings.warn(f"smtp_magic: the {feature!r} shortcut failed its self-check on this "
                          "Python/aiosmtplib; using the public APIs instead (slower, same result).",
                          RuntimeWarning, stacklevel=3)
            log.debug("shortcut %r: off (self-check failed)", feature)
        _checked[feature] = False
        return False


def status() -> dict[str, str]:
    """Each shortcut's state, for diagnostics and tests: ``"on"``, ``"unchecked"`` or why it is off."""
    out = {}
    for feature in FEATURES:
        why = _why_not(feature)
        out[feature] = why if why else ("on" if _checked.get(feature) else "unchecked")
    return out


# -- compose: the stdlib's text encoder ----------------------------------------------------------

def encode_text(text: str, policy: Any) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body) exactly as ``set_content(text)`` chooses them.

    Only called when ``allowed("compose")``. For the composer's own policy (7bit, CRLF, 78
    columns) a copy of the stdlib's heuristic answers (``_encode_text_7bit``, several times
    faster; tests/test_shortcuts_encode.py compares the two on every kind of input); any other
    policy asks the private function, looked up at call time.
    """
    if policy.cte_type == "7bit" and policy.max_line_length == 78 and policy.linesep == "\r\n":
        return _encode_text_7bit(text)
    from email import contentmanager

    return contentmanager._encode_text(text, "utf-8", None, policy)  # type: ignore[attr-defined,no-any-return]


# What ``email.contentmanager._encode_text(text, "utf-8", None, policy)`` returns for a policy
# with cte_type "7bit", linesep "\r\n" and max_line_length 78, the same in Python 3.10 to 3.13
# (the version window): the text's lines (bytes.splitlines: CR, LF or CRLF end one) are
# - "7bit", joined with LF, when the text is ASCII and no line is over 78 characters;
# - else "quoted-printable" (``email.quoprimime.body_encode``, wrapped at 78) unless that would
#   make the first ten lines longer than base64 does; then "base64", in 76-character lines.
# The stdlib quotes bytes with str.translate even where there is nothing or only "=" to quote,
# encodes the first ten lines twice (to choose, then again for a longer text) and loops over
# every 77 characters of a long line in Python; this quotes only what needs it, a
# bytes.replace per distinct byte, encodes each line once, leaves short lines alone, and cuts
# a line without "=" into slices in one list.
# Bytes quoted-printable writes as they are (email.quoprimime's body map): printable ASCII but
# "=", and space and tab; LF here is the line break. Every other byte becomes "=XX".
_QP_KEEP = b"\t\n !\"#$%&'()*+,-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
_QP_QUOTED = [chr(c) if c in _QP_KEEP else f"={c:02X}" for c in range(256)]
# (``bytes.find`` rather than ``in``: ``b"x" in data`` first tries its argument as an integer,
# and raises and clears a TypeError each time, some 2000 instructions.)
# Each byte as 0 when quoted-printable keeps it, else 1: whether a text needs any quoting is a
# table translation and a search for 1 (several times cheaper than deleting the kept bytes).
_QP_NEEDS = bytes(0 if c in _QP_KEEP else 1 for c in range(256))
_QP_REPLACES = 32  # up to ~40 distinct bytes, replaces beat the table (1 KB: 25 vs 32 us)


# A line over 78 characters in an ASCII text of LF-ended lines (the text with an LF in front):
# the regex engine jumps from LF to LF, where splitting the text makes a string of each line.
_LONG_LINE = re.compile("\n[^\n]{79}")


def _encode_text_7bit(text: str) -> tuple[str, str]:
    if text.isascii() and "\r" not in text:  # the commonest text: ASCII, lines ended by LF
        if not _LONG_LINE.search("\n" + text):  # short lines: itself, with an LF at the end
            return "7bit", text if text.endswith("\n") else text + "\n"
        data = text.encode("ascii")
        lines = data.split(b"\n") if "\n" in text else [data]  # (a split costs ~5 Ir a byte)
        if not lines[-1]:  # a last LF ends the last line; no empty line after it
            lines.pop()
    else:
        data = text.encode("utf-8")  # a lone surrogate raises here, as in the stdlib
        lines = data.splitlines()
        if len(data) == len(text) and max(map(len, lines), default=0) <= 78:
            return "7bit", (b"\n".join(lines) + b"\n").decode("ascii")
    # The stdlib's choice: quoted-printable of the first ten lines (CRLF-joined, so ended
    # with a break) unless longer than their base64 (with its newline), CRLFs included.
    # Quoted-printable is at least as long as its bytes, two more for each byte to quote, and
    # a last LF: a text mostly not Latin is base64 without quoting anything.
    head = b"\n".join(lines[:10])
    to_quote = _to_quote(head)
    base64_size = 4 * ((len(head) + len(lines[:10]) + 1 + 2) // 3) + 1
    if len(head) + 2 * len(to_quote) + 1 <= base64_size:
        encoded = _qp_lines(head, to_quote)
        if sum(map(len, encoded)) + len(encoded) <= base64_size:
            if len(lines) > 10:
                rest = b"\n".join(lines[10:])
                encoded += _qp_lines(rest, _to_quote(rest))
            return "quoted-printable", (b"\n".join(encoded) + b"\n").decode("ascii")
    b64 = binascii.b2a_base64(b"\r\n".join(lines) + b"\r\n", newline=False).decode("ascii")
    return "base64", "".join([b64[i:i + 76] + "\n" for i in range(0, len(b64), 76)])


def _to_quote(data: bytes) -> bytes:
    """The bytes of ``data`` quoted-printable writes as "=XX"."""
    return data.translate(None, _QP_KEEP) if 1 in data.translate(_QP_NEEDS) else b""


def _qp_lines(joined: bytes, to_quote: bytes) -> list[bytes]:
    """The LF-separated lines ``joined`` as ``quoprimime.body_encode(..., 78)`` writes them
    (soft breaks inside); ``to_quote``: its bytes that need "=XX"."""
    if to_quote:
        # One bytes.replace per distinct byte ("=" first: the others bring theirs): a text
        # holds few distinct ones, and str.translate (the stdlib's way) costs ~25 ns a byte.
        distinct = set(to_quote)
        if len(distinct) <= _QP_REPLACES:
            for byte in sorted(distinct, key=lambda c: c != 0x3D):
                joined = joined.replace(bytes((byte,)), b"=%02X" % byte)
        else:
            joined = joined.decode("latin-1").translate(_QP_QUOTED).encode("ascii")
    # Lines of up to 78 characters without a space or tab at the end stay as they are.
    return [_qp_line_bytes(line) if len(line) > 78 or line.endswith((b" ", b"\t")) else line
            for line in (joined.split(b"\n") if joined.find(b"\n") >= 0 else [joined])]


def _qp_line_bytes(line: bytes) -> bytes:
    """``_qp_line`` of an ASCII line; the commonest long line (no "=", no space or tab at
    its end) cut into 77-byte pieces by struct, in one call, joined with soft breaks."""
    laststart = len(line) - 79
    if laststart >= 0 and line.find(b"=") < 0 and line[-1] not in b" \t":
        start = laststart // 77 * 77 + 77
        return b"=\n".join([*_cutter(start // 77).unpack_from(line), line[start:]])
    return _qp_line(line.decode("ascii")).encode("ascii")


@functools.lru_cache(maxsize=64)
def _cutter(count: int) -> struct.Struct:
    """The struct format of ``count`` pieces of 77 bytes."""
    return struct.Struct("77s" * count)


def _qp_line(line: str) -> str:
    """One line of ``quoprimime.body_encode(..., 78)``: ``line`` is already quoted ("=XX" for
    each byte that needs it); the result has its soft breaks ("=" + LF), no line end."""
    # Pieces of 77 characters and a soft break, while over 78 are left; a piece that would cut
    # an "=XX" in two ends at its "=", which is then both the soft break and the start of the
    # next piece.
    pieces = []
    start, laststart = 0, len(line) - 79
    if "=" not in line:
        start = laststart // 77 * 77 + 77 if laststart >= 0 else 0
        if start:
            pieces = ["=\n".join([line[i:i + 77] for i in range(0, start, 77)]) + "="]
    else:
        while start <= laststart:
            stop = start + 77
            if line[stop - 2] == "=":
                pieces.append(line[start:stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                pieces.append(line[start:stop])
                start = stop - 1
            else:
                pieces.append(line[start:stop] + "=")
                start = stop
    last = line[-1:]
    if last == " " or last == "\t":  # quoted, where there is room for "=20"
        quoted = "=20" if last == " " else "=09"
        room = start - laststart
        if room >= 3:
            tail = quoted
        elif room == 2:  # room for the space and a soft break only
            tail = last + "=\n"
        else:  # room for a soft break only: the quoted space alone on the next line
            tail = "=\n" + quoted
        pieces.append(line[start:-1] + tail)
    else:
        pieces.append(line[start:])
    return "\n".join(pieces)


# -- pipelining: the connection's transport, taken over from aiosmtplib ----------------------------

def take_transport(smtp: Any) -> Any | None:
    """The asyncio transport under a connected ``aiosmtplib.SMTP``, or None when it cannot be
    taken over safely (then the transport keeps using aiosmtplib's own send)."""
    if not allowed("pipelining"):
        return None
    transport = getattr(smtp, "transport", None)
    if transport is None or transport.is_closing():
        return None  # already gone: aiosmtplib's send reports the disconnection
    protocol = getattr(smtp, "protocol", None)
    ok = (
        callable(getattr(transport, "set_protocol", None))
        and callable(getattr(transport, "get_protocol", None))
        and transport.get_protocol() is protocol
    )
    if not ok:
        _checked["pipelining"] = False
        return None
    _checked["pipelining"] = True
    return transport


# -- the kernel's last execute request -----------------------------------------------------------

def kernel_allows_stdin(kernel: Any) -> bool | None:
    """Whether the kernel's last execute request allowed stdin (ipykernel's private
    ``Kernel._allow_stdin``), or None when this kernel does not keep it."""
    allowed = getattr(kernel, "_allow_stdin", None)
    return None if allowed is None else bool(allowed)


# -- a matplotlib figure's suptitle --------------------------------------------------------------

def figure_suptitle(figure: Any) -> str:
    """The figure's suptitle ("" when it has none): ``get_suptitle()`` (matplotlib >= 3.8), else
    the text of the private ``_suptitle`` (3.6, 3.7)."""
    get_suptitle = getattr(figure, "get_suptitle", None)
    if callable(get_suptitle):
        return str(get_suptitle() or "")
    text = getattr(figure, "_suptitle", None)
    return str(text.get_text() or "") if text is not None else ""


# -- dkimpy's header writer, for a message hashed as it streams --------------------------------

def dkim_fold(value: bytes, namelen: int) -> bytes:
    """``value`` folded as dkimpy folds a DKIM-Signature header named ``namelen`` bytes long."""
    import dkim

    return dkim.fold(value, namelen=namelen, linesep=b"\r\n")  # type: ignore[no-any-return]


def dkim_select_headers(headers: list[tuple[bytes, bytes]], include: tuple[bytes, ...]) -> Any:
    """The (name, value) fields dkimpy signs for ``include``: for each name the last field not
    used yet, bottom up."""
    import dkim

    return dkim.select_headers(headers, include)


def dkim_blank_signature(value: bytes) -> bytes:
    """A DKIM-Signature value with its ``b=`` emptied, as dkimpy hashes it (its ``RE_BTAG``)."""
    import dkim

    return dkim.RE_BTAG.sub(b"\\1", value)  # type: ignore[no-any-return]


def dkim_gen_header(headers: list[tuple[bytes, bytes]], fields: list[tuple[bytes, bytes]],
                    include: tuple[bytes, ...], name: bytes, key: Any) -> bytes:
    """The value of a relaxed/relaxed rsa-sha256 DKIM-Signature header over ``headers``, made
    and signed by dkimpy's own ``DKIM.gen_header`` with its pure-Python RSA ``key``."""
    import dkim
    from dkim.canonicalization import CanonicalizationPolicy

    signer = dkim.DKIM(b"", signature_algorithm=b"rsa-sha256")
    signer.headers, signer.hasher = [[n, v] for n, v in headers], hashlib.sha256
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    return signer.gen_header(fields, include, policy, name, key)  # type: ignore[no-any-return]


# -- aiosmtpd's controller on a socket of ours ---------------------------------------------------

def controller_hooks(controller: type) -> bool:
    """Whether aiosmtpd's Controller still has the two private names ``controller_on_socket``
    relies on."""
    return all(callable(getattr(controller, name, None))
               for name in ("_create_server", "_factory_invoker"))


def controller_on_socket(controller: type) -> type:
    """A subclass of aiosmtpd's ``Controller``, made as ``cls(factory, sock, **kw)``: it serves
    ``factory()``'s SMTP instances on ``sock``, a listening socket the caller bound; where the
    hooks are gone, aiosmtpd binds the socket's address itself (the socket is closed first)."""
    hooks = controller_hooks(controller)

    class OnSocket(controller):  # type: ignore[misc,valid-type]
        def __init__(self, factory: Any, sock: Any, **kw: Any) -> None:
            host, port = sock.getsockname()[:2]
            if not hooks:
                sock.close()
            super().__init__(None, hostname=host, port=port, **kw)
            self.smtp_factory, self.listening_socket = factory, sock

        def factory(self) -> Any:
            return self.smtp_factory()

        if hooks:
            def _create_server(self) -> Any:
                return self.loop.create_server(self._factory_invoker, sock=self.listening_socket,
                                               ssl=self.ssl_context)

    return OnSocket
