"""Delivery at the edges (issue 20): partly sent messages, retries that go where the message was
going, a full disk under the outbox, and outbox/inbox outputs that stay true.

Real servers (tests/faults.py), a real small filesystem (tmpfs), real kernels.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TmpData, run_cell, shown_text
from faults import FaultHandler, FaultServer
from test_kernel import kernel_sending_to, text_of

from smtp_magic import SmtpMagic, retry_outbox, send, send_many
from smtp_magic.outbox import Outbox

SENDER = "nb@example.test"
BOB, CAROL = "bob@example.test", "carol@example.test"
FaultFactory = Callable[..., FaultServer]


def settings(server: FaultServer, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "127.0.0.1", "port": server.port, "sender": SENDER,
                               "security": "none", "timeout": 10, **extra})


# -- partly sent: named as such everywhere, and a retry owes only the refused recipients ------------

def test_partly_sent_is_named_so_kept_for_the_refused_and_retried_for_them_only(
        fault_server: FaultFactory, tmp_data: TmpData) -> None:
    server = fault_server(refuse_rcpt={CAROL: (550, "5.1.1 No such user")})
    r = send([BOB, CAROL], "Partly", "hello", config=settings(server))
    assert r.exitcode == 5, r
    assert r.message == f"Sent to 1 of 2 recipients; refused: {CAROL} (550 5.1.1 No such user)."
    assert r.result == "partly sent: sent to 1 of 2" and r.state == "partly sent"
    assert str(r).startswith("partly sent, exit 5: Sent to 1 of 2")
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert (entry.status, entry.recipients, entry.message_id) == ("partly sent", (CAROL,),
                                                                   r.message_id)

    server.faults.refuse_rcpt.clear()  # Carol's mailbox exists now
    (again,) = retry_outbox()  # the current settings point elsewhere: it goes where it went
    assert again.exitcode == 0, again
    first, second = server.wait_for(2)
    assert {first.rcpt_to, second.rcpt_to} == {(BOB,), (CAROL,)}  # Bob got it once
    assert first.message_id == second.message_id == r.message_id
    assert Outbox(tmp_data.outbox).entries() == []


def test_a_merge_where_every_row_is_partly_sent_says_so(
        ip: Any, fault_server: FaultFactory, tmp_data: TmpData) -> None:
    from smtp_magic import config
    from smtp_magic.errors import PartiallyRefused

    server = fault_server(refuse_rcpt={CAROL: (550, "5.1.1 No such user")})
    config.current().update({"host": "127.0.0.1", "port": server.port, "security": "none",
                             "sender": SENDER})
    ip.user_ns["rows"] = [{"n": 1}, {"n": 2}]
    with pytest.raises(PartiallyRefused) as raised:
        ip.run_cell(f"%%smtp_send --sync --each rows --to {BOB} {CAROL} --subject 'Row {{n}}'\n"
                    "{{ n }}")
    message = str(raised.value)
    assert message.startswith("2 of 2 messages were partly sent; the first: Sent to 1 of 2 "
                              f"recipients; refused: {CAROL} (550"), message
    assert "not sent" not in message
    listing = shown_text(run_cell(ip, "%smtp_outbox"))
    assert "2 partly sent" in listing and "failed" not in listing, listing
    entries = Outbox(tmp_data.outbox).entries()
    assert [e.status for e in entries] == ["partly sent", "partly sent"]
    assert {m.rcpt_to for m in server.messages()} == {(BOB,)}

    # One message: its status line says partly sent, with a warning sign, not a cross.
    with pytest.raises(PartiallyRefused):
        ip.run_cell(f"%%smtp_send --sync --to {BOB} {CAROL} --subject One\nhello")
    line = ip.user_ns["smtp_last"]._repr_html_()
    assert "partly sent: Sent to 1 of 2 recipients" in line and "\u26a0" in line, line
    assert "\u2718" not in line


def test_the_form_says_partly_sent(fault_server: FaultFactory, tmp_data: TmpData) -> None:
    import html

    from test_widgets import wait_until_done

    from smtp_magic.widgets import compose

    server = fault_server(refuse_rcpt={CAROL: (550, "5.1.1 No such user")})
    form = compose(settings=settings(server), to=f"{BOB}, {CAROL}", subject="s", namespace={})
    try:
        form.send_button.click()
        wait_until_done(form)
        status = html.unescape(form.status.value)
        assert (f"Partly sent: Sent to 1 of 2 recipients; refused: {CAROL} (550 5.1.1 "
                "No such user).") in status, status
        assert "Not sent" not in status and "\u2718" not in status
    finally:
        form.close()


# -- retries go where the message was going, with that account's password ---------------------------

def test_retry_goes_to_the_recorded_server_with_its_own_password_never_another(
        fault_server: FaultFactory, tmp_data: TmpData, memory_keyring: dict[tuple[str, str], str]
) -> None:
    password = "alice-pw-4f1c"
    server = fault_server(users={"alice": password}, require_auth=True,
                          data_reply=(451, "4.3.0 Try later"), times=3)
    kept = settings(server, username="alice", password=password, allow_plaintext_auth=True)
    r = send(BOB, "Kept", "hello", config=kept)
    assert r.exitcode == 7, r
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert entry.destination == {"host": "127.0.0.1", "port": server.port, "security": "none",
                                 "username": "alice", "auth": "password", "profile": None,
                                 "transport": "smtp"}
    for path in tmp_data.outbox.rglob("*"):  # the destination, never the secret
        assert not path.is_file() or password.encode() not in path.read_bytes(), path

    # The current settings are another account on another server, with its own password: the
    # retry goes to 127.0.0.1:port as alice, with alice's password from the keyring.
    memory_keyring[("smtp-magic", "alice@127.0.0.1")] = password
    current = SmtpMagic().update({"host": "localhost", "port": 25, "username": "zoe",
                                  "password": "zoe-secret", "use_keyring": True,
                                  "allow_plaintext_auth": True})
    (again,) = retry_outbox(config=current)
    assert again.exitcode == 0, again
    (got,) = server.wait_for(1)
    assert got.message_id == r.message_id and got.rcpt_to == (BOB,)
    assert Outbox(tmp_data.outbox).entries() == []


def test_retry_of_the_same_account_uses_its_settings_as_fixed_since(
        fault_server: FaultFactory, refused_port: int, tmp_data: TmpData) -> None:
    """A wrong port (exit 2, nothing sent): after fixing it, --retry uses the fixed setting."""
    server = fault_server()
    wrong = SmtpMagic().update({"host": "127.0.0.1", "port": refused_port, "sender": SENDER,
                                "security": "none", "attempts": 1})
    r = send(BOB, "Wrong port", "hello", config=wrong)
    assert r.exitcode == 2, r
    (again,) = retry_outbox(config=settings(server))
    assert again.exitcode == 0, again
    assert server.wait_for(1)[0].message_id == r.message_id


def test_retry_of_a_message_sent_with_a_profile_uses_the_profile_as_saved_now(
        fault_server: FaultFactory, refused_port: int, tmp_data: TmpData) -> None:
    from smtp_magic.profiles import save

    server = fault_server()
    save("work", {"host": "127.0.0.1", "port": refused_port, "security": "none",
                  "sender": SENDER, "attempts": 1})
    r = send(BOB, "Via the profile", "hello", profile="work")
    assert r.exitcode == 2, r
    (entry,) = Outbox(tmp_data.outbox).entries()
    assert entry.destination is not None and entry.destination["profile"] == "work"
    save("work", {"host": "127.0.0.1", "port": server.port, "security": "none",
                  "sender": SENDER})  # the user fixes the profile's port
    (again,) = retry_outbox()  # from settings without a profile (localhost:25)
    assert again.exitcode == 0, again
    assert server.wait_for(1)[0].message_id == r.message_id


SENDER_PROCESS = """
import sys, smtp_magic
rows = [{"to": f"u{i}@example.test", "subject": f"m{i}", "body": "hello",
         "content-type": "text/plain", "from": "me@example.test"} for i in range(int(sys.argv[2]))]
config = {"host": "127.0.0.1", "port": int(sys.argv[1]), "security": "none", "connections": 1}
sys.exit(max(r.exitcode for r in smtp_magic.send_many(rows, config=config)))
"""


def test_a_retry_leaves_alone_what_another_process_is_sending(
        fault_server: FaultFactory, tmp_data: TmpData) -> None:
    """`smtp-magic outbox --retry` while a notebook's merge is under way: the merge's messages
    not sent yet are pending in the outbox, and must not be sent by the retry as well."""
    rows = 30
    server = fault_server(stall=0.05)
    child = subprocess.Popen([sys.executable, "-c", SENDER_PROCESS, str(server.port), str(rows)],
                             env={**os.environ, "SMTP_MAGIC_OUTBOX": str(tmp_data.outbox)})
    try:
        deadline = time.monotonic() + 30
        while server.accepted < 5:
            assert time.monotonic() < deadline and child.poll() is None, server
            time.sleep(0.01)
        assert Outbox(tmp_data.outbox).entries(), "nothing pending while the merge runs"
        assert retry_outbox(config=settings(server)) == []
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    received = Counter(m.message_id for m in server.messages())
    assert len(received) == rows and set(received.values()) == {1}, received
    assert Outbox(tmp_data.outbox).entries() == []


# -- the CLI: in doubt listed, skipped by --retry, resent by --retry --in-doubt ----------------------

def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_lists_in_doubt_skips_it_and_resends_it_on_request(
        fault_server: FaultFactory, tmp_data: TmpData, tmp_path: Path) -> None:
    server = fault_server(drop_after_data=True, times=1)
    r = send(BOB, "Maybe", "hello", config=settings(server))
    assert r.exitcode == 6 and r.state == "in doubt", r

    listing = cli("outbox", cwd=tmp_path).stdout
    assert listing.startswith("in doubt") and f"via 127.0.0.1:{server.port}" in listing
    assert "may or may not have been delivered" in listing

    proc = cli("outbox", "--retry", cwd=tmp_path)  # the README's advice, plain
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout
    assert "1 message(s) in doubt were not resent" in proc.stderr
    assert server.count() == 0 and server.transactions == 1

    proc = cli("outbox", "--retry", "--in-doubt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"exitcode": 0' in proc.stdout
    (got,) = server.wait_for(1)
    assert got.message_id == r.message_id
    assert cli("outbox", cwd=tmp_path).stdout.startswith("0 message(s)")

    proc = cli("outbox", "--in-doubt", cwd=tmp_path)
    assert proc.returncode == 1 and "--in-doubt goes with --retry" in proc.stdout


# -- a full disk under the outbox (a real small tmpfs) ---------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KB tmpfs, mounted for the test (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the full-disk tests needs root")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` (a page at a time); returns the filler file."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def test_a_full_outbox_sends_nothing_exit_8_one_sentence(
        fault_server: FaultFactory, small_disk: Path) -> None:
    server = fault_server()
    fill(small_disk)
    responses = send_many([{"to": BOB, "subject": f"#{i}", "body": "x" * 3000} for i in range(5)],
                          config=settings(server, outbox_dir=str(small_disk / "outbox")))
    for r in responses:
        assert r.exitcode == 8, r
        assert r.message == (f"The outbox {str(small_disk / 'outbox')!r} cannot be written (No "
                             "space left on device), so the message was not sent."), r.message
    assert server.connections == 0 and server.count() == 0


class FillingHandler(FaultHandler):
    """Fills the disk just before confirming the ``at``-th message: every free page, and the
    rest of the journal's last page (with blank lines, which a journal reader skips), so that
    the client's next mark, this message's "delivered", is the first that finds no room."""

    at, disk = 0, Path()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.server.accepted + 1 == self.at:
            fill(self.disk)
            (journal,) = (self.disk / "outbox" / "journal").glob("*.log")
            fill_page(journal)
        return await super().handle_DATA(server, session, envelope)


def fill_page(path: Path) -> None:
    with open(path, "ab", buffering=0) as f:
        while f.tell() % 4096:
            f.write(b"\n")


def test_the_disk_fills_mid_merge_accepted_is_sent_unjournalled_is_not_and_retry_never_doubles(
        tmp_path: Path, small_disk: Path, tmp_data: TmpData) -> None:
    rows, at = 400, 20
    server = FaultServer(tmp_path / "filling")
    FillingHandler.at, FillingHandler.disk = at, small_disk
    server._make_handler = lambda: FillingHandler(  # type: ignore[method-assign]
        server, offer_auth=False, require_auth=False)
    server.start()
    try:
        outbox = small_disk / "outbox"
        config = settings(server, outbox_dir=str(outbox), connections=1)
        requests = [{"to": f"u{i}@example.test", "subject": f"Row {i}", "body": f"row {i}",
                     "content-type": "text/plain"} for i in range(rows)]
        responses = send_many(requests, config=config)
        codes = Counter(r.exitcode for r in responses)
        received = Counter(m.message_id for m in server.messages())
        print(f"\nfull disk after {at}: {dict(codes)}; {len(received)} received")
        assert codes == {0: at, 8: rows - at}, codes
        for r in responses:
            if r.exitcode == 0:  # accepted is sent, whatever the outbox could still record
                assert received[r.message_id] == 1
                assert not r.message or r.message.startswith("Sent, but the outbox"), r.message
            else:  # not journalled as being sent: not sent
                assert received[r.message_id] == 0
                assert "was not sent" in r.message and r.message.count(".") <= 2, r.message
        warned = {r.message_id for r in responses if r.ok and r.message}
        assert warned == {responses[at - 1].message_id}  # its "delivered" could not be written
        assert responses[at - 1].message == (
            f"Sent, but the outbox {str(outbox)!r} could not record it (No space left on "
            "device); it stays there as in doubt: do not resend it.")
        assert responses[at].message == (
            f"The outbox {str(outbox)!r} cannot be written (No space left on device), so the "
            "message could not be marked as being sent and was not sent.")

        (small_disk / "filler").unlink()  # the user frees some space, then --retry
        retried = retry_outbox(config=config)
        assert len(retried) == codes[8] and all(r.ok for r in retried), retried[:3]
        assert retry_outbox(config=config) == []
        received = Counter(m.message_id for m in server.messages())
        assert received == Counter(r.message_id for r in responses)  # each exactly once
        left = Outbox(outbox).entries()  # only accepted ones whose mark could not be settled
        assert {e.message_id for e in left} == warned
        assert all(e.status == "in doubt" for e in left)
    finally:
        server.stop()


# -- outputs that stay true: %smtp_outbox and %smtp_inbox update in place ----------------------------

def test_outbox_and_inbox_outputs_update_in_place_when_a_paced_merge_ends(
        fault_server: FaultFactory, tmp_path: Path) -> None:
    server = fault_server()
    rows = 12
    with kernel_sending_to(server, tmp_path) as (_, fe):
        fe.run("import os, smtp_magic.magics as m\n"
               "m.SETTLE_SECONDS = 0.2  # (the 10 s wait, shortened)\n"
               f"os.environ['SMTP_MAGIC_CAPTURE_DIR'] = {str(server.maildir)!r}")
        fe.run("%smtp_config --rate 6/s")
        fe.run(f"people = [{{'n': i}} for i in range({rows})]")
        fe.run("%%smtp_send --each people --to p{n}@example.test --subject 'Row {n}'\n{{ n }}")
        _, outputs = fe.run("%smtp_outbox")
        (table,) = [m for m in outputs if m["msg_type"] == "display_data"]
        assert "pending" in text_of([table])
        _, outputs = fe.run("%smtp_inbox")
        (inbox,) = [m for m in outputs if m["msg_type"] == "display_data"]
        assert f"Row {rows - 1}" not in text_of([inbox])
        ids = {m["content"]["transient"]["display_id"]: name
               for m, name in ((table, "outbox"), (inbox, "inbox"))}

        server.wait_for(rows, timeout=30)
        deadline = time.monotonic() + 10
        last: dict[str, str] = {}
        while time.monotonic() < deadline and (
                f"{rows} sent" not in last.get("outbox", "") or "pending" in last["outbox"]
                or f"Row {rows - 1}" not in last.get("inbox", "")):
            fe.drain(0.3)
            for m in fe.iopub:
                if m["msg_type"] == "update_display_data":
                    name = ids.get(m["content"]["transient"]["display_id"])
                    if name:
                        last[name] = text_of([m])
        assert f"{rows} sent" in last.get("outbox", ""), last
        assert "pending" not in last["outbox"]
        assert f"Row {rows - 1}" in last.get("inbox", ""), last

