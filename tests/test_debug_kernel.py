"""In a real kernel: --debug output lands in the cell (stderr when headless, a live transcript
under the status line when interactive), and a paced --each shows its expected finish time."""

from __future__ import annotations

import contextlib
import json
import queue
import time
from pathlib import Path
from typing import Any

import pytest
from faults import PASSWORD, USER
from jupyter_client.manager import KernelManager
from kernels import kernel_environment

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.kernel


class Client:
    """A front end that runs cells with or without stdin and keeps every iopub message."""

    def __init__(self, km: KernelManager) -> None:
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def run(self, code: str, *, stdin: bool, timeout: float = 60) -> list[dict[str, Any]]:
        msg_id = self.kc.execute(code, allow_stdin=stdin)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        assert reply["content"]["status"] == "ok", reply["content"]
        outputs = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            self.iopub.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return outputs
            outputs.append(msg)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self.iopub.append(self.kc.get_iopub_msg(timeout=0.1))


def stderr_of(outputs: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in outputs
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")


def test_debug_in_a_kernel(tmp_path: Path, server_tls: Any, ca_file: Path) -> None:
    with CaptureServer(tmp_path / "auth", tls="starttls", ssl_context=server_tls,
                       users={USER: PASSWORD}, require_auth=True) as server:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env={**kernel_environment(tmp_path), "SMTP_TEST_PW": PASSWORD},
                        cwd=str(tmp_path))
        try:
            fe = Client(km)
            fe.run(f"port = {server.port}\n%load_ext smtp_magic", stdin=False)
            fe.run(f"%smtp_config --host 127.0.0.1 --port {{port}} --username {USER} "
                   f"--password-env SMTP_TEST_PW --cafile {ca_file} --from a@example.test "
                   "--debug", stdin=False)

            # Headless (papermill, nbval): the send blocks and the conversation is this
            # cell's stderr.
            outputs = fe.run("%%smtp_send --to bob@example.test --subject Headless\nhi",
                             stdin=False)
            err = stderr_of(outputs)
            assert "> AUTH PLAIN ********" in err and "> MAIL FROM:<a@example.test>" in err
            assert "< 250 " in err

            # %smtp_config --check: the login exchange, in the cell too.
            outputs = fe.run("%smtp_config --check", stdin=False)
            assert "< 235 " in stderr_of(outputs)

            # Interactive: the cell returns at once; the transcript is a display under the
            # status line, updated in place until the send is done.
            outputs = fe.run("%%smtp_send --to bob@example.test --subject Live\nhi", stdin=True)
            shown = [m for m in outputs if m["msg_type"] == "display_data"]
            assert len(shown) == 2, shown  # the status line and the transcript
            transcript_id = shown[1]["content"]["transient"]["display_id"]
            server.wait_for(2, timeout=15)
            fe.run("await smtp_last", stdin=True)
            fe.drain(0.5)
            updates = [m for m in fe.iopub if m["msg_type"] == "update_display_data"
                       and m["content"]["transient"]["display_id"] == transcript_id]
            assert updates, "the transcript was never updated"
            final = updates[-1]["content"]["data"]["text/plain"]
            assert "SMTP conversation (debug)" in final and "> DATA" in final
            assert "> QUIT" in final or "< 250 " in final

            # A paced --each shows when it will be done.
            fe.run("%smtp_config --no-debug --rate 10/s", stdin=False)
            fe.run("people = [{'to': f'p{i}@example.test', 'n': i} for i in range(8)]",
                   stdin=True)
            fe.run("%%smtp_send --each people --to {to} --subject 'Row {n}'\n{{ n }}",
                   stdin=True)
            fe.run("await smtp_last", stdin=True)
            fe.drain(0.3)
            labels = [m["content"]["data"]["state"].get("value") for m in fe.iopub
                      if m["msg_type"] == "comm_msg"
                      and "state" in m["content"].get("data", {})]
            assert any(isinstance(v, str) and "done by about" in v for v in labels), labels
            assert "8 of 8" in labels

            everything = json.dumps(fe.iopub, default=str)
            assert PASSWORD not in everything
        finally:
            km.shutdown_kernel(now=True)
