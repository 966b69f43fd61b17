"""Undelivered messages kept on disk (a Maildir plus envelope metadata) and this session's log."""

from __future__ import annotations

import errno
import functools
import json
import logging
import mailbox
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps uses
from pathlib import Path
from typing import Any

try:  # POSIX: a batch being sent holds a lock on its journal (released when the process dies)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ._paths import open_private, private_dir, user_path, write_private
from .errors import ExitCode, OutboxUnwritable
from .models import Response, assembler

__all__ = ["Batch", "Outbox", "OutboxEntry", "SendLog", "SendRecord", "default_outbox_dir", "history"]

log = logging.getLogger(__name__)

# A batch journal keeps every message of one bulk send in one file; keys look like J<id>-<n>.
_JOURNAL_DIR = "journal"
_MAGIC = b"smtp-magic journal 1\n"
_KEEP_IN_MEMORY = 1 << 20  # larger messages are streamed back from the journal when sent
_READ_CHUNK = 1 << 20
_JOURNAL_BUFFER = 1 << 20  # a batch is written in a few large writes; commit() flushes it
# Marks after a message's record: D delivered, M moved to the Maildir (both final); U its data
# was sent and no final reply has come (in doubt), A the server answered after all (pending).
_SETTLEMENT = re.compile(rb"([DMUA]) (\d+)")
_FINAL = (b"D", b"M")

# The states of a kept message (what %smtp_outbox shows). --retry resends pending and failed ones, and the
# refused recipients of a partly sent one; an in-doubt one only with --retry --in-doubt.
PENDING, FAILED, PARTLY_SENT, IN_DOUBT = "pending", "failed", "partly sent", "in doubt"
# Why a message is in doubt when the process that sent it ended before the reply came.
_CUT_OFF = ("Its data was sent and the process ended before the server's reply came: it may or "
            "may not have been delivered.")


def default_outbox_dir() -> Path:
    """``$SMTP_MAGIC_OUTBOX``, else ``$XDG_DATA_HOME/smtp_magic/outbox`` (``~/.local/share``)."""
    return user_path("SMTP_MAGIC_OUTBOX", "data", "outbox")


@dataclass(frozen=True)
class OutboxEntry:
    """One kept message: its envelope and why it is here. Never holds credentials."""

    key: str
    message_id: str
    subject: str
    sender: str
    recipients: tuple[str, ...]
    # "pending" (being sent, or interrupted before its data was sent), "failed", "partly sent"
    # (``recipients`` are then those still owed), "in doubt" (sent, no final reply)
    status: str
    exitcode: int | None = None
    reason: str = ""
    created: float = 0.0
    updated: float = 0.0
    # Where it was going: host, port, security, username, auth, profile; never a secret.
    destination: dict[str, Any] | None = field(default=None, compare=False)


# OutboxEntry(...) made in one go (models.assembler): a batch makes one a message.
_new_entry = assembler(OutboxEntry)


class Outbox:
    """A Maildir of messages not (yet) confirmed delivered, with a JSON sidecar per message.

    A message is written here *before* it is sent and removed once the server confirmed it,
    so a crash (even SIGKILL) never loses it; a retry resends the same bytes and Message-ID.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(directory).expanduser() if directory else default_outbox_dir()
        self._maildir: mailbox.Maildir | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    @property
    def maildir(self) -> mailbox.Maildir:
        if self._maildir is None:
            # Maildir(create=True) skips tmp/new/cur when the folder already exists.
            private_dir(self.path)  # 0700 (an old 0755 one under smtp_magic/ too)
            for sub in ("tmp", "new", "cur", "meta"):
                private_dir(self.path / sub, tighten=True)
            self._maildir = mailbox.Maildir(self.path, factory=None, create=False)
        return self._maildir

    def _meta_path(self, key: str) -> Path:
        return self.path / "meta" / f"{key}.json"

    def _write_meta(self, entry: OutboxEntry) -> None:
        data = {k: v for k, v in entry.__dict__.items() if k != "key"}
        data["recipients"] = list(entry.recipients)
        target = self._meta_path(entry.key)
        tmp = target.with_suffix(".tmp")
        write_private(tmp, json.dumps(data).encode("utf-8"))
        os.replace(tmp, target)

    def add(self, data: bytes, *, sender: str, recipients: tuple[str, ...], message_id: str,
            subject: str) -> OutboxEntry:
        """Keep a message as pending; returns its entry."""
        with self._lock:
            key = self.maildir.add(data)
            os.chmod(self.path / "new" / key, 0o600)  # mailbox writes 0666 & ~umask
        now = time.time()
        entry = OutboxEntry(key, message_id, subject, sender, tuple(recipients), "pending",
                            created=now, updated=now)
        self._write_meta(entry)
        return entry

    def mark_failed(self, entry: OutboxEntry, response: Response,
                    recipients: tuple[str, ...] | None = None, *, in_doubt: bool = False
                    ) -> OutboxEntry:
        """Record why a kept message was not delivered (and to whom it is still owed): state
        ``failed``, ``partly sent`` (exit 5), or ``in doubt`` (its data was sent and no final
        reply came). A disk that cannot take the record leaves the message as it was kept (a
        warning is logged): never an exception here, the send is over."""
        status = (IN_DOUBT if in_doubt else PARTLY_SENT if int(response.exitcode) == 5
                  else FAILED)
        log.info("kept %s in the outbox %s as %s (exit %d): %s", entry.message_id, self.path,
                 status, int(response.exitcode), response.message)
        failed = OutboxEntry(
            entry.key, entry.message_id, entry.subject, entry.sender,
            tuple(recipients) if recipients is not None else entry.recipients, status,
            response.exitcode, response.message, entry.created, time.time(), entry.destination,
        )
        journal = _journal_key(entry.key)
        try:
            if journal is not None and not self._meta_path(entry.key).exists():
                # Moved out of its batch journal into the Maildir, under the same key.
                self._copy_to_maildir(entry.key, self._journal_chunks(entry.key))
            self._write_meta(failed)
            if journal is not None:
                _settle(self._journal_path(journal[0]), journal[1], b"M")
        except OSError as exc:
            log.warning("the outbox %s could not record %s as %s (%s); it stays as it was kept",
                        self.path, entry.message_id, status, exc.strerror or exc)
        return failed

    def sending(self, entry: OutboxEntry) -> None:
        """Mark the message as "data sent, awaiting the reply" (in doubt if the process dies
        now); called just before its final "." goes out. One write the OS has once this
        returns (a killed process cannot lose it; no fsync). Raises OutboxUnwritable when the
        mark cannot be written: the message must then not be sent."""
        try:
            if self._mark_live(entry.key, b"U"):  # the common case: one append
                return
            journal = _journal_key(entry.key)
            if journal is not None and not self._meta_path(entry.key).exists():
                _mark(self._journal_path(journal[0]), journal[1], b"U")
            else:
                self._write_meta(replace(entry, status=IN_DOUBT, exitcode=6, reason=_CUT_OFF,
                                         updated=time.time()))
        except OSError as exc:
            raise OutboxUnwritable(
                f"The outbox {str(self.path)!r} cannot be written ({exc.strerror or exc}), so "
                "the message could not be marked as being sent and was not sent.") from None

    def answered(self, entry: OutboxEntry) -> None:
        """Undo ``sending``: the server answered, so this attempt delivered nothing."""
        try:
            journal = _journal_key(entry.key)
            if self._mark_live(entry.key, b"A"):
                return
            if journal is not None and not self._meta_path(entry.key).exists():
                _mark(self._journal_path(journal[0]), journal[1], b"A")
            else:
                self._write_meta(entry)
        except OSError as exc:  # it stays "in doubt": never resent without asking
            log.warning("the outbox %s could not record the answer for %s (%s)", self.path,
                        entry.message_id, exc.strerror or exc)

    def _copy_to_maildir(self, key: str, chunks: Iterable[bytes]) -> None:
        self.maildir  # noqa: B018 - creates tmp/ new/ cur/ meta/
        tmp = self.path / "tmp" / f"{key}.{os.getpid()}"
        with os.fdopen(open_private(tmp), "wb") as f:
            f.writelines(chunks)
        os.replace(tmp, self.path / "new" / key)
        # No Maildir._refresh(): a lookup of an unknown key refreshes by itself, and a refresh
        # per failure lists the whole folder each time.

    # -- batch journals --------------------------------------------------------------------

    def batch(self, destination: dict[str, Any] | None = None) -> Batch:
        """A journal for the messages of one bulk send (see ``Batch``) to ``destination``."""
        return Batch(self, destination)

    def _mark_live(self, key: str, mark: bytes) -> bool:
        """Append ``mark`` through the batch this process is sending ``key`` with, if any and
        the message is unsettled there (the common case: one append, no look at the disk)."""
        journal = _journal_key(key)
        if journal is None:
            return False
        with _batches_lock:
            batch = _batch_ids.get(journal[0])  # by id: no Path built per message
            if batch is None or journal[1] not in batch.pending or (
                    batch.outbox is not self and batch.outbox.path != self.path):
                return False
            batch.settle(journal[1], mark)
            return True

    def _journal_path(self, journal_id: str) -> Path:
        return self.path / _JOURNAL_DIR / f"{journal_id}.log"

    def _journal_record(self, key: str) -> tuple[Path, int, int] | None:
        """(journal path, payload offset, length) of an unsettled journal entry, else None."""
        journal = _journal_key(key)
        if journal is None:
            return None
        path = self._journal_path(journal[0])
        record = _read_journal(path).get(journal[1])
        if record is None or record[3] in _FINAL:
            return None
        return path, record[0], record[1]

    def _journal_chunks(self, key: str) -> Iterator[bytes]:
        journal = _journal_key(key)
        if journal is not None:
            with _batches_lock:
                batch = _batches.get(self._journal_path(journal[0]))
            if batch is not None and journal[1] in batch.regions:
                # Being sent by this process: no need to re-read the journal (that made many
                # failures in one batch quadratic).
                return batch.region(journal[1]).chunks()
        found = self._journal_record(key)
        if found is None:
            raise KeyError(key)
        return _region_chunks(*found)

    def remove(self, key: str) -> None:
        """Forget a message (delivered, or cleared by the user)."""
        if self._mark_live(key, b"D"):  # a confirmed delivery of a batch being sent
            return
        journal = _journal_key(key)
        if journal is not None and not self._meta_path(key).exists():
            _settle(self._journal_path(journal[0]), journal[1], b"D")
            return
        with self._lock:
            try:
                self.maildir.remove(key)
            except KeyError:
                pass
        self._meta_path(key).unlink(missing_ok=True)
        if journal is not None:  # a moved journal entry: settle its record too
            _settle(self._journal_path(journal[0]), journal[1], b"D")

    def busy(self, key: str) -> bool:
        """Whether a message is being sent right now, by this process or another one (its
        batch's journal is locked): a retry must leave it alone, or it could arrive twice."""
        journal = _journal_key(key)
        if journal is None:
            return False
        with _batches_lock:
            batch = _batch_ids.get(journal[0])
            if batch is not None and journal[1] in batch.pending:
                return True
        return _locked(self._journal_path(journal[0]))

    def entries(self) -> list[OutboxEntry]:
        """Every kept message, oldest first."""
        out = self._maildir_entries()
        known = {e.key for e in out}
        journals = self.path / _JOURNAL_DIR
        if journals.is_dir():
            for path in journals.glob("*.log"):
                records = _read_journal(path)
                if records and all(r[3] in _FINAL for r in records.values()):
                    _forget_journal(path)  # every message settled: a finished batch
                    continue
                for n, (_, _, meta, settled) in records.items():
                    key = f"J{path.stem}-{n}"
                    if settled not in _FINAL and key not in known:
                        out.append(_pending_entry(key, meta, IN_DOUBT if settled else PENDING))
        return sorted(out, key=lambda e: e.created)

    def _maildir_entries(self) -> list[OutboxEntry]:
        if not (self.path / "meta").is_dir():
            return []
        out = []
        for meta in (self.path / "meta").glob("*.json"):
            try:
                data = json.loads(meta.read_text(encoding="utf-8"))
                data["recipients"] = tuple(data["recipients"])
                out.append(OutboxEntry(key=meta.stem, **data))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a half-written sidecar of a crashed process; the message stays
        return sorted(out, key=lambda e: e.created)

    def read(self, key: str) -> bytes:
        if _journal_key(key) is not None and not self._meta_path(key).exists():
            return b"".join(self._journal_chunks(key))
        with self._lock:
            return self.maildir.get_bytes(key)

    def payload(self, key: str) -> bytes | _FileRegion:
        """A kept message to send again, without reading it whole: a region of its file (its
        chunks are read from disk as they go out; a small message is simply read)."""
        found = None
        if _journal_key(key) is not None and not self._meta_path(key).exists():
            found = self._journal_record(key)
            if found is None:
                raise KeyError(key)
        else:
            for sub in ("new", "cur"):
                for path in (self.path / sub).glob(f"{key}*"):
                    if path.name == key or path.name.startswith(f"{key}:"):
                        found = (path, 0, path.stat().st_size)
                        break
                if found is not None:
                    break
            if found is None:
                return self.read(key)
        if found[2] <= _READ_CHUNK:
            return b"".join(_region_chunks(*found))
        return _FileRegion(*found)

    def clear(self) -> int:
        entries = self.entries()
        for entry in entries:
            self.remove(entry.key)
        return len(entries)

    def __len__(self) -> int:
        return len(self.entries())

    def __iter__(self) -> Iterator[OutboxEntry]:
        return iter(self.entries())


class _Region:
    """A message kept in a journal, sent straight from the file (``transport.Payload``)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.size = fd, offset, size

    def chunks(self) -> Iterator[bytes]:
        end = self.offset + self.size
        for start in range(self.offset, end, _READ_CHUNK):
            yield os.pread(self.fd, min(_READ_CHUNK, end - start), start)


class _FileRegion:
    """Bytes of a file, read a chunk at a time whenever they are sent (``delivery.Payload``)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.path, self.offset, self.size = path, offset, size

    def chunks(self) -> Iterator[bytes]:
        return _region_chunks(self.path, self.offset, self.size)


class Batch:
    """The journal of one bulk send: every message in one file, written before any is sent.

    A message per Maildir file costs a file creation, an fsync, a link and an unlink, plus its
    JSON sidecar, for each message; a journal costs one append per message and one fsync per
    batch. Confirmations are appended as they arrive (``D`` delivered, ``M`` moved to the
    Maildir as failed), so a process killed mid-batch leaves exactly the unconfirmed messages
    pending, and ``Outbox.entries()``/``read()``/``remove()``/``retry`` treat them as any other
    entry. The file is deleted once every message in it is settled.

    Format: a magic line, then ``P <n> <length:016d> <json>\\n<message>\\n`` per message and
    ``D <n>\\n`` / ``M <n>\\n`` settlements. It is written as ``<id>.tmp`` and renamed to
    ``<id>.log`` when complete, so a reader never sees a half-written batch.
    """

    def __init__(self, outbox: Outbox, destination: dict[str, Any] | None = None) -> None:
        self.outbox = outbox
        self.destination = destination
        # Spliced into every record's JSON (one dumps per batch, not per message).
        self._where = (b', "destination": ' + json.dumps(destination).encode("utf-8") + b"}"
                       if destination else b"}")
        directory = outbox.path / _JOURNAL_DIR
        private_dir(directory, tighten=True)
        self.id = f"{time.time_ns():x}{os.getpid():x}{secrets.token_hex(3)}"
        self.path = directory / f"{self.id}.log"
        self._tmp = directory / f"{self.id}.tmp"
        self._file = os.fdopen(open_private(self._tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC),
                               "w+b", buffering=_JOURNAL_BUFFER)  # closed in close()
        self._file.write(_MAGIC)
        self._end = len(_MAGIC)  # where the next record starts (tell() would cost a syscall)
        self._count = 0
        self.pending: set[int] = set()
        self.regions: dict[int, tuple[int, int]] = {}  # n -> (offset, size) in the journal
        self._fd = self._file.fileno()
        self._append: int | None = None
        self._committed = False

    def add(self, chunks: Iterable[bytes], *, sender: str, recipients: tuple[str, ...],
            message_id: str, subject: str) -> tuple[OutboxEntry, bytes | _Region]:
        """Journal one message; returns its entry and what to send (bytes, or a file region)."""
        n, f = self._count, self._file
        now = time.time()
        prefix = b"P %d " % n
        suffix = b" %b%b\n" % (_meta_json(message_id, subject, sender, recipients, now)[:-1],
                               self._where)
        start = self._end
        # A message that fits in memory (nearly all) is written in one go, its length known; a
        # larger one is streamed and its length written back into the record afterwards (a seek
        # flushes the file's buffer, so the common case avoids it).
        kept: list[bytes] = []
        size, streamed = 0, False
        rest = iter(chunks)
        try:
            for chunk in rest:
                kept.append(chunk)
                size += len(chunk)
                if size > _KEEP_IN_MEMORY:
                    streamed = True
                    break
            if not streamed:
                body = b"".join(kept)  # (one part: itself)
                header = b"%b%016d%b" % (prefix, size, suffix)
                f.write(b"".join((header, body, b"\n")))
                offset = start + len(header)
                self._end = offset + size + 1
            else:
                f.write(prefix + b"%016d" % 0 + suffix)
                offset = f.tell()
                f.writelines(kept)
                kept = []
                for chunk in rest:
                    f.write(chunk)
                    size += len(chunk)
                f.write(b"\n")
                f.seek(start)
                f.write(prefix + b"%016d" % size + suffix)
                self._end = f.seek(0, os.SEEK_END)
        except BaseException:
            f.seek(start)  # drop the partial record (e.g. an attachment that cannot be read)
            f.truncate()
            raise
        self._count += 1
        self.pending.add(n)
        self.regions[n] = (offset, size)
        entry = _new_entry(key=f"J{self.id}-{n}", message_id=message_id, subject=subject,
                           sender=sender, recipients=tuple(recipients), status=PENDING,
                           created=now, updated=now, destination=self.destination)
        # A streamed message is sent from the journal, never held whole in memory.
        return entry, (self.region(n) if streamed else body)

    def region(self, n: int) -> _Region:
        """Where message ``n`` is in the journal, to read it back from there."""
        return _Region(self._fd, *self.regions[n])

    def commit(self) -> None:
        """Make the batch durable and visible; call before sending any of its messages."""
        self._file.flush()
        os.fsync(self._file.fileno())
        if fcntl is not None:  # "being sent" until close(): a retry elsewhere leaves it alone
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        os.replace(self._tmp, self.path)
        self._append = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._committed = True
        with _batches_lock:
            _batches[self.path] = self
            _batch_ids[self.id] = self

    def settle(self, n: int, mark: bytes) -> None:
        assert self._append is not None, "settle() before commit()"
        _append(self._append, b"%s %d\n" % (mark, n))
        if mark in _FINAL:
            self.pending.discard(n)

    def close(self) -> None:
        """Delete the journal if every message is settled; otherwise leave it for the outbox."""
        with _batches_lock:
            _batches.pop(self.path, None)
            _batch_ids.pop(self.id, None)
        if not self._file.closed:
            self._file.close()
        if self._append is not None:
            os.close(self._append)
            self._append = None
        if not self._committed:
            self._tmp.unlink(missing_ok=True)
        elif not self.pending:
            self.path.unlink(missing_ok=True)


_batches: dict[Path, Batch] = {}  # batches being sent by this process
_batch_ids: dict[str, Batch] = {}  # the same, by journal id
_batches_lock = threading.Lock()


def _meta_json(message_id: str, subject: str, sender: str, recipients: tuple[str, ...],
               created: float) -> bytes:
    """``json.dumps`` of a journal record's metadata, byte for byte, in a third of its time
    (the fields are written one by one with json's own string encoder)."""
    if type(created) is float:
        try:  # json's string encoder refuses anything but text (TypeError), as json.dumps would
            return (f'{{"message_id": {_json_str(message_id)}, "subject": {_json_str(subject)}, '
                    f'"sender": {_json_str(sender)}, '
                    f'"recipients": [{", ".join(map(_json_str, recipients))}], '
                    f'"created": {float.__repr__(created)}}}').encode("ascii")
        except TypeError:
            pass
    return json.dumps({"message_id": message_id, "subject": subject, "sender": sender,
                       "recipients": list(recipients), "created": created}).encode("utf-8")


@functools.lru_cache(maxsize=4096)  # a message's key is looked at several times as it is sent
def _journal_key(key: str) -> tuple[str, int] | None:
    if key.startswith("J") and "-" in key:
        journal_id, _, n = key[1:].rpartition("-")
        if n.isdigit() and journal_id.isalnum():
            return journal_id, int(n)
    return None


def _settle(path: Path, n: int, mark: bytes) -> None:
    """Append a settlement (D, M) to a journal; a journal of another process whose every
    message is settled is deleted."""
    try:
        if _mark(path, n, mark):
            return
    except FileNotFoundError:
        return
    records = _read_journal(path)
    if all(r[3] in _FINAL for r in records.values()):
        _forget_journal(path)


def _mark(path: Path, n: int, mark: bytes) -> bool:
    """Append a mark to a journal, through its batch if this process is sending it (then
    True); raises OSError (FileNotFoundError when the journal is gone)."""
    with _batches_lock:  # held while settling: the batch cannot close meanwhile
        batch = _batches.get(path)
        if batch is not None:
            batch.settle(n, mark)
            return True
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        _append(fd, b"%s %d\n" % (mark, n))
    finally:
        os.close(fd)
    return False


def _append(fd: int, line: bytes) -> None:
    """Append one mark, whole or not at all: on a full disk a write can be short, and a torn
    "D 12" would read as "D 1", another message's mark. The torn part is cut off again and the
    full disk raised (OSError)."""
    written = os.write(fd, line)
    if written != len(line):
        os.ftruncate(fd, os.fstat(fd).st_size - written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _locked(path: Path) -> bool:
    """Whether another process holds the "being sent" lock of a journal."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (and with it the shared lock just taken)
    return False


def _forget_journal(path: Path) -> None:
    with _batches_lock:
        if path in _batches:  # still being sent by this process
            return
    path.unlink(missing_ok=True)


def _read_journal(path: Path) -> dict[int, tuple[int, int, dict[str, Any], bytes | None]]:
    """n -> (payload offset, length, meta, settlement or None). Tolerates a torn tail."""
    records: dict[int, tuple[int, int, dict[str, Any], bytes | None]] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return records
    with f:
        end = os.fstat(f.fileno()).st_size
        if f.readline() != _MAGIC:
            return records
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            kind, _, rest = line.partition(b" ")
            try:
                if kind == b"P":
                    n_text, length_text, meta_text = rest.split(b" ", 2)
                    offset, length = f.tell(), int(length_text)
                    if offset + length + 1 > end:
                        break
                    records[int(n_text)] = (offset, length, json.loads(meta_text), None)
                    f.seek(length + 1, os.SEEK_CUR)
                else:  # settlements; a torn one may share its line with the next
                    for mark, n_text in _SETTLEMENT.findall(line):
                        n = int(n_text)
                        if n in records and records[n][3] not in _FINAL:
                            records[n] = (*records[n][:3], None if mark == b"A" else mark)
            except (ValueError, TypeError):
                break
    return records


def _region_chunks(path: Path, offset: int, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while size > 0:
            chunk = f.read(min(_READ_CHUNK, size))
            if not chunk:
                break
            size -= len(chunk)
            yield chunk


def _pending_entry(key: str, meta: dict[str, Any], status: str = PENDING) -> OutboxEntry:
    created = float(meta.get("created", 0.0))
    destination = meta.get("destination")
    doubt = status == IN_DOUBT
    return OutboxEntry(key, str(meta.get("message_id", "")), str(meta.get("subject", "")),
                       str(meta.get("sender", "")), tuple(meta.get("recipients", ())), status,
                       6 if doubt else None, _CUT_OFF if doubt else "", created, created,
                       destination if isinstance(destination, dict) else None)


@dataclass
class SendRecord:
    """One send of this session, as ``%smtp_outbox`` lists it."""

    subject: str
    recipients: tuple[str, ...]
    message_id: str | None
    status: str = "pending"  # pending, sent, failed, partly sent, in doubt
    response: Response | None = None
    started: float = field(default_factory=time.time)
    outbox_key: str | None = None
    # The thread whose event loop delivers it, once delivery started: a wait on that same
    # thread could never see it finish.
    thread: int | None = field(default=None, repr=False, compare=False)
    _log: SendLog | None = field(default=None, repr=False, compare=False)

    @property
    def reason(self) -> str:
        return self.response.message if self.response is not None else ""

    def finish(self, response: Response) -> None:
        self.response = response
        state = "sent" if response.exitcode is ExitCode.SENT else response.state  # (most often)
        self.status = "failed" if state == "not sent" else state  # sent, partly sent, in doubt
        if self._log is not None:
            self._log.changed()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "subject": self.subject, "recipients": list(self.recipients),
            "message_id": self.message_id, "reason": self.reason,
            "exitcode": self.response.exitcode if self.response else None,
        }


class SendLog:
    """Every send of this process, in order, whatever started it: the magics, the form, the
    API (thread-safe: sends run on worker loops)."""

    def __init__(self) -> None:
        self._records: list[SendRecord] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting = 0  # threads in wait(): a send that finishes wakes nobody otherwise

    def add(self, record: SendRecord) -> SendRecord:
        with self._lock:
            record._log = self
            self._records.append(record)
        return record

    def add_all(self, records: list[SendRecord]) -> None:
        """``add`` for each of ``records``, in order."""
        with self._lock:
            for record in records:
                record._log = self
            self._records += records

    def records(self) -> list[SendRecord]:
        with self._lock:
            return list(self._records)

    def pending(self) -> list[SendRecord]:
        with self._lock:
            return [r for r in self._records if r.status == "pending"]

    def changed(self) -> None:
        # Read without the lock: a waiter that is not counted yet checks the records (already
        # changed by the caller) before it waits, under the lock.
        if self._waiting:
            with self._changed:
                self._changed.notify_all()

    def wait(self, timeout: float | None = None) -> list[SendRecord]:
        """Block until no send is pending, except those delivered by this thread's own event
        loop (they cannot progress while it blocks); returns the sends still pending."""
        me = threading.get_ident()

        def settled() -> bool:
            return all(r.status != "pending" or r.thread == me for r in self._records)

        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(settled, timeout)
            finally:
                self._waiting -= 1
            return [r for r in self._records if r.status == "pending"]

    def discard(self, records: Iterable[SendRecord]) -> None:
        """Forget records of sends that never started (interrupted while being prepared)."""
        gone = {id(r) for r in records}
        with self._changed:
            self._records[:] = [r for r in self._records if id(r) not in gone]
            self._changed.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


history = SendLog()
