"""Durability: SIGKILL the kernel in the middle of a ``%%smtp_send --each`` batch.

After a restart, ``%smtp_outbox`` shows the messages that were not confirmed, ``--retry``
delivers them, and the messages the server had confirmed before the kill are not sent again.
No message is lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import FaultServer
from jupyter_client.manager import KernelManager
from kernels import kernel_environment
from waits import until

from smtp_magic.outbox import Outbox

pytestmark = pytest.mark.kernel

ROWS = 60


class Kernel:
    """A real ipykernel driven by jupyter_client, as a notebook front end drives it."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def submit(self, code: str, interactive: bool = False) -> str:
        """Headless (sends block the cell) unless ``interactive`` (as JupyterLab: they do not)."""
        return self.kc.execute(code, allow_stdin=interactive)

    def run(self, code: str, timeout: float = 60, interactive: bool = False
            ) -> tuple[dict[str, Any], str]:
        """Execute; returns (the reply content, the text of every output)."""
        msg_id = self.submit(code, interactive)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        texts = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            content = msg["content"]
            if msg["msg_type"] == "stream":
                texts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                texts.append(str(content["data"].get("text/plain", "")))
                texts.append(str(content["data"].get("text/html", "")))
            elif msg["msg_type"] == "error":
                texts.append("\n".join(content["traceback"]))
        return reply["content"], "\n".join(texts)

    def ok(self, code: str, timeout: float = 60) -> str:
        reply, text = self.run(code, timeout)
        assert reply["status"] == "ok", (reply.get("ename"), reply.get("evalue"), text)
        return text

    def pid(self) -> int:
        return int(self.ok("import os; print(os.getpid())").strip())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Callable[[], Kernel]]:
    started: list[Kernel] = []
    env = kernel_environment(tmp_path)

    def start() -> Kernel:
        kernel = Kernel(env, tmp_path)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        kernel.stop()


def setup_cells(kernel: Kernel, port: int) -> None:
    kernel.ok("%load_ext smtp_magic")
    kernel.ok(f"%smtp_config --host 127.0.0.1 --port {port} --security none "
              "--from reports@example.test")


def row_of(subject: str) -> int:
    match = re.fullmatch(r"Report #(\d+)", subject)
    assert match, subject
    return int(match.group(1))


def test_sigkill_mid_batch_then_retry_delivers_the_rest_once(
    fault_server: Callable[..., FaultServer], kernels: Callable[[], Kernel], tmp_path: Path
) -> None:
    # Each of the first ROWS transactions takes 50 ms at DATA, so the batch runs long enough
    # to be killed in the middle.
    server = fault_server(stall=0.05, times=ROWS)
    kernel = kernels()
    setup_cells(kernel, server.port)
    kernel.ok(f"people = [{{'email': f'user{{i}}@example.test', 'n': i}} for i in range({ROWS})]")
    pid = kernel.pid()

    kernel.submit("%%smtp_send --each people --to {email} --subject 'Report #{n}'\n"
                  "<p>Hello {{ email }}, your number is {{ n }}.</p>")
    deadline = time.monotonic() + 30
    while server.accepted < ROWS // 4:
        assert time.monotonic() < deadline, f"the batch did not start: {server!r}"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    killed_at = server.accepted
    until(lambda: not kernel.km.is_alive(), "the kernel to die")
    # The server has finished with the connections that were mid-transaction.
    until(lambda: server.active == 0, lambda: f"its connections to close: {server!r}")

    before = Counter(row_of(m.subject) for m in server.messages())
    assert all(n == 1 for n in before.values()), before
    assert 0 < len(before) < ROWS, f"the kill was not mid-batch ({len(before)} of {ROWS} sent)"
    box = Outbox(tmp_path / "outbox")
    pending = {row_of(e.subject): e for e in box.entries()}
    assert pending, "nothing was left in the outbox"
    doubtful = {n for n, e in pending.items() if e.status == "in doubt"}
    assert {e.status for e in pending.values()} <= {"pending", "in doubt"}
    # Nothing lost: every row was either delivered or is kept.
    assert set(before) | set(pending) == set(range(ROWS))
    # Confirmed before the kill means not kept; only messages in flight at the kill (at most
    # one per connection) may be both delivered and kept (the reply was lost with the kernel),
    # and each of those is in doubt: its mark went to the journal before its final ".".
    in_flight = set(before) & set(pending)
    assert in_flight <= doubtful and len(doubtful) <= 4, (in_flight, doubtful)
    print(f"\nkilled after {killed_at} deliveries: {len(before)} delivered, {len(pending)} kept, "
          f"{len(in_flight)} in flight, {len(doubtful)} in doubt")

    # A new kernel (a restart): the outbox lists what was not confirmed ...
    kernel = kernels()
    setup_cells(kernel, server.port)
    listing = kernel.ok("%smtp_outbox --limit 1000")  # every row (the default shows 20)
    for n, entry in pending.items():
        assert entry.message_id in listing, f"row {n} ({entry.message_id}) is not listed"
    assert "earlier session" in listing
    for n in set(before) - set(pending):
        assert f"Report #{n}<" not in listing and f"'Report #{n}'" not in listing

    # ... --retry delivers the pending ones, with the same Message-IDs, and leaves those in
    # doubt alone: no row arrives twice ...
    shown = kernel.ok("%smtp_outbox --retry", timeout=120)
    counts = Counter(row_of(m.subject) for m in server.messages())
    assert set(counts) == set(range(ROWS)) - (doubtful - in_flight)
    assert all(n == 1 for n in counts.values()), counts
    if doubtful:
        assert f"{len(doubtful)} message(s) in doubt were not resent" in shown
        assert "in doubt (earlier session)" in shown

    # ... unless the user asks for them: --retry --in-doubt (a duplicate where it had arrived).
    kernel.ok("%smtp_outbox --retry --in-doubt", timeout=120)
    after = server.messages()
    counts = Counter(row_of(m.subject) for m in after)
    assert set(counts) == set(range(ROWS))  # every row delivered
    for n in range(ROWS):
        expected = 2 if n in in_flight else 1
        assert counts[n] == expected, (n, counts[n], n in pending)
    by_row = {row_of(m.subject): m for m in after}
    for n, entry in pending.items():
        assert by_row[n].message_id == entry.message_id
        assert by_row[n].rcpt_to == (f"user{n}@example.test",)
    assert box.entries() == []
    assert "Nothing to retry" in kernel.ok("%smtp_outbox --retry")
    assert server.count() == len(after)  # the second retry sent nothing


def test_outbox_files_of_a_killed_batch_hold_no_password(
    fault_server: Callable[..., FaultServer], kernels: Callable[[], Kernel], tmp_path: Path
) -> None:
    password = "pw-7f3a-SECRET-durable"
    server = fault_server(stall=0.05, times=ROWS, users={"alice": password})
    kernel = kernels()
    kernel.ok("%load_ext smtp_magic")
    kernel.ok(f"%smtp_config --host 127.0.0.1 --port {server.port} --security none "
              "--username alice --from reports@example.test")
    kernel.ok(f"%config SmtpMagic.password = {password!r}\n"
              "%config SmtpMagic.allow_plaintext_auth = True")
    kernel.ok(f"people = [{{'n': i}} for i in range({ROWS})]")
    pid = kernel.pid()
    kernel.submit("%%smtp_send --each people --to u{n}@example.test --subject 'Report #{n}'\n"
                  "{{ n }}")
    deadline = time.monotonic() + 30
    while server.accepted < 5:
        assert time.monotonic() < deadline, f"the batch did not start: {server!r}"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    until(lambda: not kernel.km.is_alive(), "the kernel to die")  # its files are final
    files = [p for p in (tmp_path / "outbox").rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert password.encode() not in data, path
    assert Outbox(tmp_path / "outbox").entries()


def test_restart_right_after_an_each_cell_returns_then_retry_delivers_every_row_once(
    fault_server: Callable[..., FaultServer], kernels: Callable[[], Kernel], tmp_path: Path
) -> None:
    """The cell says "sending" and returns; the user restarts the kernel at once. Every message
    must already be in the outbox by then (nothing can have been delivered: the server holds
    the first connections at the greeting)."""
    rows = 200
    server = fault_server(stall=10.0, stall_at="greeting", times=4)
    kernel = kernels()
    setup_cells(kernel, server.port)
    kernel.ok(f"people = [{{'email': f'user{{i}}@example.test', 'n': i}} for i in range({rows})]")
    pid = kernel.pid()
    reply, text = kernel.run("%%smtp_send --each people --to {email} --subject 'Report #{n}'\n"
                             "<p>Hello {{ email }}, your number is {{ n }}.</p>", interactive=True)
    os.kill(pid, signal.SIGKILL)  # the restart, right after the cell returned
    assert reply["status"] == "ok" and "sending 200 messages" in text
    assert server.accepted == 0
    kept = Outbox(tmp_path / "outbox").entries()
    assert sorted(row_of(e.subject) for e in kept) == list(range(rows))

    kernel = kernels()
    setup_cells(kernel, server.port)
    shown = kernel.ok("%smtp_outbox")
    assert f"{rows} pending (earlier session); the newest 20 of {rows} below" in shown
    listing = kernel.ok("%smtp_outbox --limit 1000")
    assert all(e.message_id in listing for e in kept) and "pending (earlier session)" in listing
    kernel.ok("%smtp_outbox --retry", timeout=120)
    counts = Counter(row_of(m.subject) for m in server.messages())
    assert counts == Counter(range(rows))  # every row, exactly once
    assert Outbox(tmp_path / "outbox").entries() == []
