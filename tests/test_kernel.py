"""The magics in real kernels: a notebook run headless by nbclient, and a front end with stdin."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from faults import FaultServer
from jupyter_client.manager import KernelManager
from kernels import kernel_environment as isolated_environment
from nbclient import NotebookClient

from smtp_magic.server import CapturedMessage, CaptureServer

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

pytestmark = pytest.mark.kernel

FRAME = {"name": ["Ann", "Bob", "Cy"],
         "email": ["ann@example.test", "bob@example.test", "cy@example.test"],
         "amount": [1.5, 20.25, 300.0]}
PASSWORD = "pw-" + secrets.token_hex(12)  # unique, so any leak is unmistakable


def kernel_environment(root: Path) -> dict[str, str]:
    """The isolated kernel environment, plus the password the notebook reads by --password-env."""
    return {**isolated_environment(root), "SMTP_TEST_PASSWORD": PASSWORD}


class RecordingClient(NotebookClient):
    """nbclient that also keeps every iopub message it processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[dict[str, Any]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.append(msg)
        return super().process_message(msg, cell, cell_index)


# -- (a) and (c): one headless notebook run ---------------------------------------------------------

@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, server_tls: ssl.SSLContext
            ) -> Iterator[tuple[CaptureServer, CaptureServer]]:
    root = tmp_path_factory.mktemp("kernel-servers")
    with CaptureServer(root / "plain") as plain, CaptureServer(
            root / "auth", tls="starttls", ssl_context=server_tls, users={"alice": PASSWORD},
            require_auth=True) as auth:
        yield plain, auth


def notebook_cells(plain: CaptureServer, auth: CaptureServer, ca_file: Path) -> list[str]:
    return [
        f"plain_port = {plain.port}\nauth_port = {auth.port}\ncafile = {str(ca_file)!r}",
        "%load_ext smtp_magic",
        ("%smtp_config --host 127.0.0.1 --port {plain_port} --security none "
        "--from reports@example.test"),
        (f"import pandas as pd\ndf = pd.DataFrame({FRAME!r})\n"
        "email = 'notebook-variable@example.test'  # named like a column"),
        ("%%smtp_send --to boss@example.test --subject 'Template report'\n"
        "<h2>Numbers</h2>\n{{ df }}"),
        ("%%smtp_send --to boss@example.test --subject 'Captured report' --capture\n"
        "import matplotlib.pyplot as plt\n"
        "print('hello from capture')\n"
        "display(df)\n"
        "fig, ax = plt.subplots(figsize=(3, 2))\n"
        "ax.plot([1, 2, 3], [3, 1, 2])\n"
        "ax.set_title('Trend')\n"
        "plt.show()"),
        ("%%smtp_send --to boss@example.test --subject Attachment --attach df:numbers.csv\n"
        "The numbers are attached."),
        ("%%smtp_send --each df --to {email} --subject 'Hello {name}'\n"
        "Dear {{ name }}, you owe {{ amount }}."),
        "%%smtp_send --to boss@example.test --subject 'Preview only' --preview\n{{ df }}",
        "%config SmtpMagic.cafile = cafile",
        ("%smtp_config --host 127.0.0.1 --port {auth_port} --security starttls --username alice "
        "--password-env SMTP_TEST_PASSWORD --from alice@example.test"),
        "%smtp_config --check",
        "%smtp_config",
        "%config SmtpMagic",
        "%%smtp_send --to boss@example.test --subject Authenticated\nLogged in.",
        "%smtp_outbox",
    ]


@pytest.fixture(scope="module")
def executed(servers: tuple[CaptureServer, CaptureServer], ca_file: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, RecordingClient, Path]:
    """The notebook executed by nbclient (allow_stdin=False, as papermill and nbval do)."""
    plain, auth = servers
    root = tmp_path_factory.mktemp("kernel-nb")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in notebook_cells(plain, auth, ca_file)]
    client = RecordingClient(nb, timeout=120, kernel_name="python3",
                             resources={"metadata": {"path": str(root)}})
    client.execute(env=kernel_environment(root))
    path = root / "executed.ipynb"
    nbformat.write(nb, path)
    return nb, client, path


def outputs_text(cell: Any) -> str:
    return json.dumps(cell.get("outputs", []))


def by_subject(server: CaptureServer) -> dict[str, CapturedMessage]:
    return {m.subject: m for m in server.messages()}


def test_headless_sends_are_done_when_their_cell_ends(executed: Any) -> None:
    nb, _, _ = executed
    sends = [c for c in nb.cells if c.source.startswith("%%smtp_send") and "--preview" not in c.source]
    assert len(sends) == 5
    for cell in sends:  # synchronous in a headless run: the status line is final in its cell
        assert "sent" in outputs_text(cell) and "\\u2192 sending" not in outputs_text(cell)


def test_dataframe_template(executed: Any, servers: Any) -> None:
    msg = by_subject(servers[0])["Template report"].message
    html = msg.get_body(("html",)).get_content()
    assert "<table" in html and "<h2" in html and "20.25" in html
    text = msg.get_body(("plain",)).get_content()
    assert "<" not in text and any("Bob" in ln and "20.25" in ln for ln in text.splitlines())


def test_capture_with_print_frame_and_figure(executed: Any, servers: Any) -> None:
    nb, _, _ = executed
    cell = next(c for c in nb.cells if "--capture" in c.source)
    shown = outputs_text(cell)
    assert "hello from capture" in shown and "image/png" in shown  # displayed as usual too
    msg = by_subject(servers[0])["Captured report"].message
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    html = related.get_body(("html",)).get_content()
    images = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0].get_payload(decode=True).startswith(b"\x89PNG")
    cid = images[0]["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html and "data:image" not in html
    order = [html.index(s) for s in ("hello from capture", "20.25", f"cid:{cid}")]
    assert order == sorted(order)


def test_attached_dataframe_parses_back_equal(executed: Any, servers: Any) -> None:
    msg = by_subject(servers[0])["Attachment"].message
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "numbers.csv"
    back = pd.read_csv(io.BytesIO(part.get_payload(decode=True)))
    pd.testing.assert_frame_equal(back, pd.DataFrame(FRAME))


def test_each_row_to_its_own_address(executed: Any, servers: Any) -> None:
    got = {s: m.rcpt_to for s, m in by_subject(servers[0]).items() if s.startswith("Hello")}
    assert got == {"Hello Ann": ("ann@example.test",), "Hello Bob": ("bob@example.test",),
                   "Hello Cy": ("cy@example.test",)}
    body = by_subject(servers[0])["Hello Cy"].message.get_body(("plain",)).get_content()
    assert "Dear Cy, you owe 300.0." in body


def test_preview_sends_nothing(executed: Any, servers: Any) -> None:
    nb, _, _ = executed
    cell = next(c for c in nb.cells if "--preview" in c.source)
    assert "nothing was sent" in outputs_text(cell)
    assert "Preview only" not in by_subject(servers[0])


def test_password_env_is_used_and_never_shown(executed: Any, servers: Any) -> None:
    nb, client, path = executed
    assert "Authenticated" in by_subject(servers[1])  # the AUTH server took the login
    check = next(c for c in nb.cells if c.source == "%smtp_config --check")
    assert "Login: succeeded" in outputs_text(check)
    listing = next(c for c in nb.cells if c.source == "%config SmtpMagic")
    assert "SmtpMagic.password_env" in outputs_text(listing)
    assert PASSWORD not in path.read_text(encoding="utf-8")
    assert client.messages and PASSWORD not in json.dumps(client.messages, default=str)


# -- (b) an interactive front end: allow_stdin=True ---------------------------------------------------

class Frontend:
    """A jupyter_client front end that keeps every iopub message and times execute requests."""

    def __init__(self, km: KernelManager) -> None:
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def run(self, code: str, timeout: float = 60) -> tuple[float, list[dict[str, Any]]]:
        """Execute as JupyterLab does; returns (seconds until the reply, this cell's outputs)."""
        started = time.monotonic()
        msg_id = self.kc.execute(code, allow_stdin=True)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        took = time.monotonic() - started
        outputs = []
        while True:  # the outputs up to idle
            msg = self.kc.get_iopub_msg(timeout=timeout)
            self.iopub.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            outputs.append(msg)
        assert reply["content"]["status"] == "ok", reply["content"]
        return took, outputs

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self.iopub.append(self.kc.get_iopub_msg(timeout=0.1))


def text_of(outputs: list[dict[str, Any]]) -> str:
    return json.dumps([m["content"] for m in outputs])


@contextlib.contextmanager
def kernel_sending_to(server: FaultServer, tmp_path: Path
                      ) -> Iterator[tuple[KernelManager, Frontend]]:
    """A kernel with the extension loaded and its settings pointing at ``server``."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=kernel_environment(tmp_path), cwd=str(tmp_path))
    try:
        fe = Frontend(km)
        fe.run(f"port = {server.port}\n%load_ext smtp_magic")
        fe.run("%smtp_config --host 127.0.0.1 --port {port} --security none --from nb@example.test")
        yield km, fe
    finally:
        km.shutdown_kernel(now=True)


def test_interactive_send_returns_at_once_and_settles_later(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    server = fault_server(stall=2.0)  # every DATA takes 2 s
    with kernel_sending_to(server, tmp_path) as (_, fe):
        fe.run("%%smtp_send --to bob@example.test --subject warmup --preview\nimports, once")
        empty, _ = fe.run("")
        took, outputs = fe.run("%%smtp_send --to bob@example.test --subject 'Slow server'\n"
                               "<p>Hello</p>")
        print(f"empty cell {empty:.3f} s, send cell {took:.3f} s")
        assert took < empty + 1.0, (took, empty)  # not the 2 s the server takes
        assert server.count() == 0
        (status,) = [m for m in outputs if m["msg_type"] == "display_data"]
        display_id = status["content"]["transient"]["display_id"]
        assert "sending" in text_of([status])

        # --each: one status line with a progress bar, while the first send still stalls.
        fe.run("people = [{'to': f'p{i}@example.test', 'n': i} for i in range(3)]")
        took, outputs = fe.run("%%smtp_send --each people --to {to} --subject 'Row {n}'\n{{ n }}")
        assert took < empty + 1.0, (took, empty)
        (merge,) = [m for m in outputs if m["msg_type"] == "display_data"]  # one indicator
        assert 'role=\\"progressbar\\"' in text_of([merge]) and "0 of 3 done" in text_of([merge])
        merge_id = merge["content"]["transient"]["display_id"]

        messages = server.wait_for(4, timeout=15)
        msg = next(m for m in messages if m.subject == "Slow server")
        assert sorted(m.subject for m in messages) == ["Row 0", "Row 1", "Row 2", "Slow server"]
        _, outputs = fe.run("%smtp_outbox --wait")
        assert "sent" in text_of(outputs) and "Slow server" in text_of(outputs)
        assert "pending" not in text_of(outputs)
        fe.drain(0.3)
        updates = [m for m in fe.iopub if m["msg_type"] == "update_display_data"
                   and m["content"]["transient"]["display_id"] == display_id]
        assert updates and "sent in" in text_of(updates[-1:])
        assert msg.message_id in text_of(updates[-1:])
        merge_updates = [m["content"]["data"]["text/plain"] for m in fe.iopub
                         if m["msg_type"] == "update_display_data"
                         and m["content"]["transient"]["display_id"] == merge_id]
        assert merge_updates[-1].startswith("\u2714 sent 3 messages in"), merge_updates
        assert not any(m["msg_type"] == "comm_open" for m in fe.iopub)  # no widget

        _, outputs = fe.run("responses = await smtp_last\nprint([r.ok for r in responses])")
        assert "[True, True, True]" in text_of(outputs)


def test_interrupting_a_sync_send_says_it_goes_on_and_keeps_smtp_last(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    server = fault_server(stall=3.0)  # every DATA takes 3 s
    with kernel_sending_to(server, tmp_path) as (km, fe):
        msg_id = fe.kc.execute("%%smtp_send --sync --to bob@example.test --subject 'Stopped'\n"
                               "<p>Hello</p>", allow_stdin=True)
        deadline = time.monotonic() + 20
        while server.transactions < 1:  # the send is under way, stalled at DATA
            assert time.monotonic() < deadline, server
            time.sleep(0.01)
        km.interrupt_kernel()  # the stop button: SIGINT
        reply = fe.kc.get_shell_msg(timeout=20)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = fe.kc.get_shell_msg(timeout=20)
        assert reply["content"]["status"] == "error"
        errors = []
        while True:
            msg = fe.kc.get_iopub_msg(timeout=20)
            fe.iopub.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                errors.append(msg["content"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        (error,) = errors
        shown = "\n".join(error["traceback"])
        assert len(error["traceback"]) == 1 and "KeyboardInterrupt" in shown
        assert "the send goes on" in shown and "smtp_last" in shown
        assert "smtp_magic" not in shown and "File " not in shown  # no traceback into the package

        _, outputs = fe.run("print(type(smtp_last).__name__)\nr = await smtp_last\nprint(r.ok)")
        assert "SendJob" in text_of(outputs) and "True" in text_of(outputs)
        (got,) = server.wait_for(1)
        assert got.subject == "Stopped"
        _, outputs = fe.run("%smtp_outbox")
        assert "sent" in text_of(outputs) and "pending" not in text_of(outputs)
