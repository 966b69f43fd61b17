"""Undelivered messages kept on disk (a Maildir plus envelope metadata) and this session's log."""

from __future__ import annotations

import json
import mailbox
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import Response

__all__ = ["Outbox", "OutboxEntry", "SendRecord", "SendLog", "default_outbox_dir", "history"]


def default_outbox_dir() -> Path:
    """``$SMTP_MAGIC_OUTBOX``, else ``$XDG_DATA_HOME/smtp_magic/outbox`` (``~/.local/share``)."""
    if os.environ.get("SMTP_MAGIC_OUTBOX"):
        return Path(os.environ["SMTP_MAGIC_OUTBOX"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "smtp_magic" / "outbox"


@dataclass(frozen=True)
class OutboxEntry:
    """One kept message: its envelope and why it is here. Never holds credentials."""

    key: str
    message_id: str
    subject: str
    sender: str
    recipients: tuple[str, ...]
    status: str  # "pending" (being sent, or interrupted) or "failed"
    exitcode: int | None = None
    reason: str = ""
    created: float = 0.0
    updated: float = 0.0


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
            for sub in ("tmp", "new", "cur", "meta"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self._maildir = mailbox.Maildir(self.path, factory=None, create=False)
        return self._maildir

    def _meta_path(self, key: str) -> Path:
        return self.path / "meta" / f"{key}.json"

    def _write_meta(self, entry: OutboxEntry) -> None:
        data = {k: v for k, v in entry.__dict__.items() if k != "key"}
        data["recipients"] = list(entry.recipients)
        target = self._meta_path(entry.key)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, target)

    def add(self, data: bytes, *, sender: str, recipients: tuple[str, ...], message_id: str,
            subject: str) -> OutboxEntry:
        """Keep a message as pending; returns its entry."""
        with self._lock:
            key = self.maildir.add(data)
        now = time.time()
        entry = OutboxEntry(key, message_id, subject, sender, tuple(recipients), "pending",
                            created=now, updated=now)
        self._write_meta(entry)
        return entry

    def mark_failed(self, entry: OutboxEntry, response: Response,
                    recipients: tuple[str, ...] | None = None) -> OutboxEntry:
        """Record why a kept message was not delivered (and to whom it is still owed)."""
        failed = OutboxEntry(
            entry.key, entry.message_id, entry.subject, entry.sender,
            tuple(recipients) if recipients is not None else entry.recipients, "failed",
            response.exitcode, response.message, entry.created, time.time(),
        )
        self._write_meta(failed)
        return failed

    def remove(self, key: str) -> None:
        """Forget a message (delivered, or cleared by the user)."""
        with self._lock:
            try:
                self.maildir.remove(key)
            except KeyError:
                pass
        self._meta_path(key).unlink(missing_ok=True)

    def entries(self) -> list[OutboxEntry]:
        """Every kept message, oldest first."""
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
        with self._lock:
            return self.maildir.get_bytes(key)

    def clear(self) -> int:
        entries = self.entries()
        for entry in entries:
            self.remove(entry.key)
        return len(entries)

    def __len__(self) -> int:
        return len(self.entries())

    def __iter__(self) -> Iterator[OutboxEntry]:
        return iter(self.entries())


@dataclass
class SendRecord:
    """One send of this session, as ``%smtp_outbox`` lists it."""

    subject: str
    recipients: tuple[str, ...]
    message_id: str | None
    status: str = "pending"  # pending, sent, failed
    response: Response | None = None
    started: float = field(default_factory=time.time)
    outbox_key: str | None = None

    @property
    def reason(self) -> str:
        return self.response.message if self.response is not None else ""

    def finish(self, response: Response) -> None:
        self.response = response
        self.status = "sent" if response.ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "subject": self.subject, "recipients": list(self.recipients),
            "message_id": self.message_id, "reason": self.reason,
            "exitcode": self.response.exitcode if self.response else None,
        }


class SendLog:
    """Every send of this process, in order (thread-safe: blocking sends run on a worker loop)."""

    def __init__(self) -> None:
        self._records: list[SendRecord] = []
        self._lock = threading.Lock()

    def add(self, record: SendRecord) -> SendRecord:
        with self._lock:
            self._records.append(record)
        return record

    def records(self) -> list[SendRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


history = SendLog()
