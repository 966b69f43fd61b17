"""The SMTP conversation of a connection, with credentials redacted: logged, and shown in debug mode.

Every command and reply passes through a :class:`Conversation` on its way to or from the server.
Each line is a ``logging`` record of the ``smtp_magic.conversation`` logger (level DEBUG; notes
such as "TLS established" are INFO), so ``logging.getLogger("smtp_magic").setLevel("DEBUG")``
with a handler shows it; the library itself configures no handler. With the ``debug`` setting
the lines are also written to a *debug output*: standard error by default, or what a front end
installs with :func:`debug_output` (the magics put them in the cell's output).

Credentials never appear: the arguments of ``AUTH`` and every client line of the SASL exchange
that follows (until the server's final reply) are replaced by ``********``, and any line that
still contains the password, an OAuth token or their base64 forms is scrubbed as well.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar

from ._views import visible

__all__ = ["REDACTED", "Conversation", "debug_output", "secret_forms"]

log = logging.getLogger(__name__)

REDACTED = "********"

Sink = Callable[[str], None]
_sink: ContextVar[Sink | None] = ContextVar("smtp_magic_debug_output", default=None)
_numbers = itertools.count(1)


@contextlib.contextmanager
def debug_output(sink: Sink) -> Iterator[None]:
    """Send the debug lines of connections opened inside this block to ``sink`` (one line per
    call, no newline) instead of standard error. The choice follows the context, so it reaches
    sends started here on another thread's event loop (``run_coroutine_threadsafe`` copies it)."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def _stderr(line: str) -> None:
    stream = sys.stderr
    stream.write(line + "\n")
    stream.flush()


def secret_forms(secrets: Iterable[str | None], username: str | None = None) -> tuple[str, ...]:
    """Every way ``secrets`` could show up on the wire: as typed, base64, and inside the base64
    of AUTH PLAIN / XOAUTH2 strings. Longest first, so a longer form is scrubbed whole."""
    forms: set[str] = set()
    user = username or ""
    for secret in secrets:
        if not secret or len(secret) < 3:  # scrubbing "ab" everywhere would garble the log
            continue
        forms.add(secret)
        for raw in (secret, f"\0{user}\0{secret}", f"{user}\0{user}\0{secret}",
                    f"user={user}\x01auth=Bearer {secret}\x01\x01"):
            forms.add(base64.b64encode(raw.encode("utf-8")).decode("ascii"))
    return tuple(sorted(forms, key=len, reverse=True))


class Conversation:
    """The transcript of one connection.

    The transport calls :meth:`command` for every command it writes, :meth:`reply` for every
    reply it reads, :meth:`data` for a message body (shown as its size only) and :meth:`note`
    for events (TLS established, a retry, throttling). Lines look like ``#3 > EHLO host``,
    ``#3 < 250 OK`` and ``#3 * TLS established``, ``#3`` telling parallel connections apart.
    """

    def __init__(self, where: str, *, debug: bool = False, secrets: Iterable[str | None] = (),
                 username: str | None = None) -> None:
        self.number = next(_numbers)
        self.where = where
        self.debug = debug
        self._sink = (_sink.get() or _stderr) if debug else None
        self._secrets = secret_forms(secrets, username)
        self._in_auth = False  # between AUTH and the server's final (non-334) reply

    def __repr__(self) -> str:
        return f"<Conversation #{self.number} {self.where}>"

    def add_secrets(self, *secrets: str | None, username: str | None = None) -> None:
        """More values never to show (e.g. an OAuth2 access token, once it is known)."""
        self._secrets = tuple(sorted({*self._secrets, *secret_forms(secrets, username)},
                                     key=len, reverse=True))

    @property
    def active(self) -> bool:
        """Whether anyone will see the lines (checked first, so a quiet send pays nothing)."""
        return self.debug or log.isEnabledFor(logging.DEBUG)

    # -- what the transport reports ------------------------------------------------------------
    def command(self, *args: bytes) -> None:
        """One command line as aiosmtplib's ``execute_command`` takes it (its words)."""
        starts_auth = bool(args) and args[0].upper() == b"AUTH"
        if starts_auth:  # tracked even when nobody listens, so no SASL line can slip through
            self._in_auth = True
        if not self.active:
            return
        words = [a.decode("utf-8", "replace") for a in args]
        if starts_auth:
            shown = " ".join(words[:2] + ([REDACTED] if len(words) > 2 else []))
        elif self._in_auth:  # a SASL response: credentials, whatever they look like
            shown = REDACTED if any(words) else "(empty line)"
        else:
            shown = " ".join(words)
        self._emit(logging.DEBUG, ">", shown)

    def lines(self, data: bytes) -> None:
        """Commands written together (PIPELINING): one line each."""
        if not self.active:
            return
        for line in data.split(b"\r\n"):
            if line:
                self.command(line)

    def data(self, size: int) -> None:
        """The message itself, which is never shown: its size and the end-of-data line."""
        if self.active:
            self._emit(logging.DEBUG, ">", f"(message: {size:,} bytes)")
            self._emit(logging.DEBUG, ">", ".")

    def reply(self, code: int, message: str) -> None:
        """One reply; a multi-line reply (``message`` with newlines) gives one line each."""
        if code != 334:
            self._in_auth = False
        if not self.active:
            return
        lines = str(message).split("\n") or [""]
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            self._emit(logging.DEBUG, "<", f"{code}{sep}{line}".rstrip())

    def trace(self, side: str, line: str) -> None:
        """The pipelining channel's hook (``_pipeline.Trace``): ("C", a command line, or
        ``<message: N bytes>`` for the payload) and ("S", a reply)."""
        if side == "S":
            code, _, text = line.partition(" ")
            self.reply(int(code) if code.isdigit() else -1, text)
        elif line.startswith("<message: "):
            self.data(int("".join(c for c in line if c.isdigit()) or 0))
        else:
            self.command(line.encode("utf-8", "replace"))

    def line(self, marker: str, text: str) -> None:
        """A line of another protocol on this transcript (the IMAP copy of ``save_sent``),
        redacted by the caller where it carries a login; scrubbed of every secret here too."""
        if self.active:
            self._emit(logging.DEBUG, marker, text)

    def note(self, text: str) -> None:
        """An event worth seeing in a debug session; an INFO record of this logger."""
        self._emit(logging.INFO, "*", text)

    # -- output -------------------------------------------------------------------------------
    def _emit(self, level: int, marker: str, text: str) -> None:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = visible(text, one_line=True)  # a server's reply can hold terminal escapes
        if log.isEnabledFor(level):
            log.log(level, "#%d %s %s", self.number, marker, text)
        if self._sink is not None:
            try:
                self._sink(f"#{self.number} {marker} {text}")
            except Exception:  # showing the conversation must never break a send
                log.debug("the debug output failed", exc_info=True)
