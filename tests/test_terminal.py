"""Terminal IPython (no kernel, no notebook): a blocking ``--each`` draws a text progress bar on
the terminal while it waits, then prints the outcome. Run in a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")

SCRIPT = """\
%load_ext smtp_magic
%smtp_config --host 127.0.0.1 --port {port} --security none --from a@example.test --rate 20/s
people = [{{"to": f"p{{i}}@example.test", "n": i}} for i in range(12)]
get_ipython().run_cell_magic("smtp_send", "--each people --to {{to}} --subject 'Row {{n}}'",
                             "{{{{ n }}}}")
"""


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """Run ``args`` with a pseudo-terminal as stdin, stdout and stderr; everything it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"still running after {timeout} s: {out!r}")
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child, by its PID
        proc.wait()
        os.close(master)
    return out.decode("utf-8", "replace")


def test_each_in_a_terminal_draws_a_text_progress_bar(tmp_path: Path,
                                                      smtp_server: CaptureServer) -> None:
    script = tmp_path / "merge.ipy"
    script.write_text(SCRIPT.format(port=smtp_server.port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHONIOENCODING="utf-8")
    shown = run_in_terminal([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor",
                             str(script)], env)
    assert smtp_server.count() == 12, shown
    frames = [f for f in re.split(r"[\r\n]+", shown) if f.startswith("sending ")]
    # drawn more than once in place (12 messages at 20/s: about 0.6 s, redrawn every 0.2 s)
    assert len(frames) >= 3, shown
    assert "done by about" in frames[0] and "0/12 done" in frames[0], frames
    assert re.search(r"\b([1-9]|1[01])/12 done", shown), frames  # a frame on the way
    assert "100% |" + "\u2588" * 24 + "| 12/12 done" in frames[-1], frames
    assert "\u2714 sent 12 messages in" in shown
