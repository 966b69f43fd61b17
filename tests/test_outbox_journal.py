"""Bulk sends keep their messages in one journal per batch: same outbox guarantees, one file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from waits import until

from smtp_magic.models import Response
from smtp_magic.outbox import Outbox, _batches


def _batch(outbox: Outbox, n: int):
    batch = outbox.batch()
    entries = []
    for i in range(n):
        entry, data = batch.add([b"Subject: %d\r\n\r\n" % i, b"body\r\n"], sender="a@x.test",
                                recipients=("b@x.test",), message_id=f"<{i}@x.test>", subject=str(i))
        assert data == b"Subject: %d\r\n\r\nbody\r\n" % i
        entries.append(entry)
    batch.commit()
    return batch, entries


def test_journal_entries_read_remove_fail_and_cleanup(tmp_path: Path):
    outbox = Outbox(tmp_path / "outbox")
    batch, entries = _batch(outbox, 4)
    assert [e.message_id for e in outbox.entries()] == [f"<{i}@x.test>" for i in range(4)]
    assert all(e.status == "pending" for e in outbox.entries())
    assert outbox.read(entries[2].key) == b"Subject: 2\r\n\r\nbody\r\n"
    outbox.remove(entries[0].key)
    outbox.mark_failed(entries[1], Response(exitcode=7, message="deferred"))
    kept = {e.key: e for e in outbox.entries()}
    assert list(kept) == [entries[1].key, entries[2].key, entries[3].key]
    assert kept[entries[1].key].status == "failed" and kept[entries[1].key].exitcode == 7
    assert outbox.read(entries[1].key) == b"Subject: 1\r\n\r\nbody\r\n"  # now in the Maildir
    outbox.remove(entries[2].key)
    outbox.remove(entries[3].key)
    batch.close()
    assert not list((tmp_path / "outbox" / "journal").iterdir())  # every message settled
    assert [e.key for e in outbox.entries()] == [entries[1].key]
    outbox.remove(entries[1].key)
    assert outbox.entries() == []


def test_journal_left_by_a_dead_process_is_read_and_settled_by_another(tmp_path: Path):
    outbox = Outbox(tmp_path / "outbox")
    batch, entries = _batch(outbox, 3)
    outbox.remove(entries[0].key)
    # The process dies: no close(), nothing deleted, and its last settlement is torn.
    batch._file.close()
    _batches.pop(batch.path)
    with open(batch.path, "ab") as f:
        f.write(b"D 9")
    other = Outbox(tmp_path / "outbox")
    assert [e.key for e in other.entries()] == [entries[1].key, entries[2].key]
    assert other.clear() == 2
    assert other.entries() == [] and not batch.path.exists()


SERVER_REPLIES = 3  # the server confirms this many messages, then never answers again

CHILD = """
import sys, smtp_magic
reqs = [{"to": f"u{i}@example.test", "subject": f"m{i}", "body": "hello", "content-type": "text/plain",
         "from": "me@example.test"} for i in range(8)]
cfg = {"host": "127.0.0.1", "port": int(sys.argv[1]), "security": "none", "connections": 1,
       "timeout": 60}
smtp_magic.send_many(reqs, config=cfg)
"""


def test_sigkill_mid_batch_keeps_exactly_the_unconfirmed_messages(tmp_path: Path):
    received: list[bytes] = []
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go\r\n")
                data = []
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    data.append(chunk)
                received.append(b"".join(data))
                if len(received) > SERVER_REPLIES:
                    await asyncio.sleep(30)  # stall: this message is never confirmed
                writer.write(b"250 queued\r\n")
            elif verb == b"EHLO":
                writer.write(b"250-test\r\n250 PIPELINING\r\n")
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports.append(server.sockets[0].getsockname()[1])
        started.set()
        await asyncio.sleep(60)
        server.close()

    ports: list[int] = []
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert started.wait(10)
    env = {**os.environ, "SMTP_MAGIC_OUTBOX": str(tmp_path / "outbox")}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ports[0])], env=env)
    try:
        until(lambda: len(received) > SERVER_REPLIES, lambda: f"the stall: {received}", 30)
        # The client has handled the confirmed replies: their messages left the outbox.
        unconfirmed = [f"m{i}" for i in range(SERVER_REPLIES, 8)]
        until(lambda: sorted(e.subject for e in Outbox(tmp_path / "outbox").entries())
              == unconfirmed, "the confirmed messages to leave the outbox")
        assert child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    kept = Outbox(tmp_path / "outbox").entries()
    assert sorted(e.subject for e in kept) == [f"m{i}" for i in range(SERVER_REPLIES, 8)]
    # The message whose data the server got (and never confirmed) is in doubt: its mark went to
    # the journal before its final "." did, and a SIGKILL cannot take it back. The others were
    # never sent: pending, to be resent by --retry.
    status = {e.subject: e.status for e in kept}
    assert status == {f"m{SERVER_REPLIES}": "in doubt",
                      **{f"m{i}": "pending" for i in range(SERVER_REPLIES + 1, 8)}}, status
    journals = list((tmp_path / "outbox" / "journal").glob("*.log"))
    assert len(journals) == 1 and json.loads(
        journals[0].read_bytes().split(b"\n")[1].split(b" ", 3)[3])["subject"] == "m0"


def test_many_failures_in_one_batch_are_all_kept_and_stay_linear(tmp_data, refused_port):
    """A mail merge against a server that is down keeps every message, each retrievable."""
    import smtp_magic
    from smtp_magic.models import SendRequest

    requests = [SendRequest(to=f"u{i}@example.test", subject=f"s{i}", body="<p>x</p>")
                for i in range(300)]
    config = {"host": "127.0.0.1", "port": refused_port, "security": "none",
              "sender": "r@example.test"}
    responses = smtp_magic.send_many(requests, config=config)
    assert {r.exitcode for r in responses} == {2}
    entries = Outbox().entries()
    assert sorted(e.subject for e in entries) == sorted(f"s{i}" for i in range(300))
    assert all(e.status == "failed" for e in entries)
    assert b"Subject: s7\r\n" in Outbox().read(next(e.key for e in entries if e.subject == "s7"))


def test_send_log_waits_for_every_send_but_not_for_its_own_loop() -> None:
    """What %smtp_outbox --wait relies on: a send finishing on another thread wakes the wait;
    one delivered by the waiting thread's own loop could never finish, so it is returned."""
    from smtp_magic.outbox import SendLog, SendRecord

    log = SendLog()
    elsewhere = log.add(SendRecord("a", ("a@x.test",), None))
    mine = log.add(SendRecord("b", ("b@x.test",), None, thread=threading.get_ident()))
    timer = threading.Timer(0.3, elsewhere.finish, [Response(exitcode=0)])
    started = time.monotonic()
    timer.start()
    left = log.wait(timeout=10)
    assert 0.25 < time.monotonic() - started < 5
    assert elsewhere.status == "sent" and left == [mine]


@pytest.mark.parametrize("subject", ["Weekly report 5", 'é "quoted" \\ \x00 \u2028 \U0001f600',
                                     "lone \udcff surrogate", ""])
def test_a_journal_record_is_json_dumps_byte_for_byte(subject: str):
    """The record's metadata is written field by field (faster); it must stay what
    json.dumps writes, which is how the outbox reads it back."""
    from smtp_magic.outbox import _meta_json

    for recipients in ((), ("a@x.test",), ("ü@x.test", 'q"@x.test')):
        for created in (time.time(), 0.1, 1e22):
            expected = json.dumps({"message_id": "<1.2@x.test>", "subject": subject,
                                   "sender": "s@x.test", "recipients": list(recipients),
                                   "created": created}).encode("utf-8")
            assert _meta_json("<1.2@x.test>", subject, "s@x.test", recipients, created) == expected


class Text(str):
    pass


@pytest.mark.parametrize("values", [
    ("<1@x>", "s", "a@x", ("b@x", None), 1.5), (None, "s", "a@x", (), 1.5),
    ("<1@x>", Text("s"), "a@x", (Text("b@x"),), 1.5), ("<1@x>", "s", "a@x", ["b@x"], 2),
])
def test_a_journal_record_of_other_values_is_json_dumps_too(values):
    from smtp_magic.outbox import _meta_json

    message_id, subject, sender, recipients, created = values
    assert _meta_json(*values) == json.dumps(
        {"message_id": message_id, "subject": subject, "sender": sender,
         "recipients": list(recipients), "created": created}).encode("utf-8")
