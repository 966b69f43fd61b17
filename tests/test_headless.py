"""papermill runs: the last cell's asynchronous send is delivered before exit; failures fail the run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from faults import FaultServer, refused_port
from kernels import kernel_environment

pytest.importorskip("papermill")
pytest.importorskip("pandas")

pytestmark = pytest.mark.kernel

REPORT_CELLS = [
    'port = 25\nto = "boss@example.test"\nexpected_prefix = ""',
    "import sys\nassert sys.prefix == expected_prefix, f'kernel runs {sys.executable}'",
    "%load_ext smtp_magic",
    ("%smtp_config --host 127.0.0.1 --port {port} --security none --from reports@example.test "
    "--timeout 20"),
    "import pandas as pd\nsales = pd.DataFrame({'region': ['North', 'South'], 'total': [120, 80]})",
    # The last cell, asynchronous as written: headless runs must still wait for it.
    '%%smtp_send --to {to} --subject "Weekly report"\n<h1>Sales</h1>\n{{ sales }}',
]


@dataclass
class Run:
    """One papermill run: its directory, the server it sent to, and how it ended."""

    dir: Path
    server: FaultServer | None
    process: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""

    @property
    def output(self) -> str:
        return (self.dir / "out.ipynb").read_text(encoding="utf-8")


def start_papermill(root: Path, port: int, to: str = "boss@example.test") -> subprocess.Popen[str]:
    """``python -m papermill`` on the report notebook, with Jupyter and data dirs under ``root``."""
    root.mkdir(parents=True)
    source = root / "report.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in REPORT_CELLS]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    env = kernel_environment(root)
    return subprocess.Popen(
        [sys.executable, "-m", "papermill", str(source), str(root / "out.ipynb"),
         "--kernel", "python3", "--no-progress-bar", "--cwd", str(root),
         "-p", "port", str(port), "-p", "to", to, "-p", "expected_prefix", sys.prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """The three runs, started together: papermill's own start-up takes seconds here."""
    root = tmp_path_factory.mktemp("papermill")
    slow = FaultServer(root / "slow-mail", stall=1.5).start()  # in flight at exit would be lost
    refusing = FaultServer(root / "refusing-mail",
                           refuse_rcpt={"nobody@example.test": (550, "5.1.1 No such user")}).start()
    try:
        with refused_port() as down:
            started = {
                "ok": Run(root / "ok", slow, start_papermill(root / "ok", slow.port)),
                "down": Run(root / "down", None, start_papermill(root / "down", down)),
                "refused": Run(root / "refused", refusing,
                               start_papermill(root / "refused", refusing.port, "nobody@example.test")),
            }
            for run in started.values():
                run.stdout, run.stderr = run.process.communicate(timeout=240)
        yield started
    finally:
        slow.stop()
        refusing.stop()


def test_last_cell_async_send_is_delivered_before_papermill_exits(runs: dict[str, Run]) -> None:
    run = runs["ok"]
    assert run.process.returncode == 0, run.stderr[-3000:]
    assert run.server is not None
    (msg,) = run.server.messages()  # there when papermill returned (stored before the reply)
    assert msg.subject == "Weekly report" and msg.rcpt_to == ("boss@example.test",)
    assert "North" in msg.message.get_body(("html",)).get_content()
    assert "sent in" in run.output


def test_server_down_fails_the_run(runs: dict[str, Run]) -> None:
    run = runs["down"]
    assert run.process.returncode != 0
    assert "ConnectFailed" in run.output and "Could not connect" in run.output
    # The message is kept in the outbox for %smtp_outbox --retry.
    assert list((run.dir / "outbox" / "meta").glob("*.json"))


def test_refused_recipient_fails_the_run(runs: dict[str, Run]) -> None:
    run = runs["refused"]
    assert run.process.returncode != 0
    assert "Rejected" in run.output and "No such user" in run.output
    assert run.server is not None and run.server.count() == 0
