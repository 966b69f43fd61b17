"""A blocking send made from inside a bulk send (its progress callback) runs, whatever loop the
outer call came from; it never waits for itself. Each scenario runs in a subprocess with a
timeout, so a regression (a deadlock) fails the test instead of hanging the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smtp_magic.server import CaptureServer

SCENARIO = textwrap.dedent("""
    import asyncio, sys
    import smtp_magic

    config = {{"host": "127.0.0.1", "port": {port}, "security": "none",
              "sender": "merge@example.test", "timeout": 10}}
    requests = [{{"to": f"row{{i}}@example.test", "subject": f"Row {{i}}", "body": "x"}}
                for i in range(3)]
    inner = []

    def progress(done, total, response):
        if done == 1:  # e.g. tell someone the merge has started
            inner.append(smtp_magic.send("boss@example.test", "merge started", "1 sent",
                                         config=config))

    def merge():
        return smtp_magic.send_many(requests, config=config, progress=progress)

    async def cell():  # what a notebook cell is: code running inside the loop
        {call}

    responses = {run}
    print([int(r.exitcode) for r in responses], [int(r.exitcode) for r in inner], flush=True)
""")

CASES = {
    "from a running loop (a notebook cell)": ("return merge()", "asyncio.run(cell())"),
    "from plain code": ("return merge()", "merge()"),
    "awaited in a running loop": (
        "return await smtp_magic.send_many_async(requests, config=config, progress=progress)",
        "asyncio.run(cell())"),
}


@pytest.mark.parametrize("case", CASES)
def test_send_inside_a_progress_callback_runs(case: str, smtp_server: CaptureServer,
                                              tmp_path: Path) -> None:
    call, run = CASES[case]
    code = SCENARIO.format(port=smtp_server.port, call=call, run=run)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=os.environ, cwd=tmp_path, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"send() inside a send_many progress callback hung ({case})")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 0, 0] [0]", proc.stdout + proc.stderr
    subjects = sorted(m.subject for m in smtp_server.wait_for(4))
    assert subjects == ["Row 0", "Row 1", "Row 2", "merge started"]


@pytest.mark.kernel
def test_send_inside_a_progress_callback_in_a_kernel(smtp_server: CaptureServer,
                                                     tmp_path: Path) -> None:
    """The same in a real kernel cell (its loop is running); the reply must come in time."""
    import queue

    from jupyter_client.manager import KernelManager
    from kernels import kernel_environment

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=kernel_environment(tmp_path), cwd=str(tmp_path))
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        code = SCENARIO.format(port=smtp_server.port, call="", run="merge()")
        code = code.replace("async def cell():  # what a notebook cell is: code running inside "
                            "the loop\n    \n", "")
        msg_id = kc.execute(code)
        try:
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=60)
        except queue.Empty:
            pytest.fail("send() inside a send_many progress callback hung the kernel")
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        km.shutdown_kernel(now=True)
    subjects = sorted(m.subject for m in smtp_server.wait_for(4))
    assert subjects == ["Row 0", "Row 1", "Row 2", "merge started"]
