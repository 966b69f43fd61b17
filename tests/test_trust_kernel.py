"""Issue 19's settings and files, in a real kernel driven as JupyterLab drives it (stdin allowed):
a password typed for server A never reaches server B; an explicit host after --local wins; what
the kernel writes is private under umask 000; a broken --file is one line, no traceback."""

from __future__ import annotations

import json
import secrets
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import FaultServer
from kernels import kernel_environment
from test_durability import Kernel

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.kernel

PW_A = "pw-a-" + secrets.token_hex(8)
PW_B = "pw-b-" + secrets.token_hex(8)


class Frontend(Kernel):
    """A front end that allows stdin (as JupyterLab) and types ``answer`` at a getpass prompt."""

    answer: str | None = None
    prompts: list[str]

    def submit(self, code: str, interactive: bool = True) -> str:
        msg_id = self.kc.execute(code, allow_stdin=True)
        if self.answer is not None:
            request = self.kc.get_stdin_msg(timeout=30)
            self.prompts.append(request["content"]["prompt"])
            self.kc.input(self.answer)
            self.answer = None
        return msg_id

    def cell(self, code: str, answer: str | None = None) -> tuple[str, str]:
        """(reply status, the text of every output of the cell)."""
        self.answer = answer
        reply, text = self.run(code, interactive=True)
        return reply["status"], text


@pytest.fixture
def frontend(tmp_path: Path, ca_file: Path) -> Iterator[Frontend]:
    kernel = Frontend({**kernel_environment(tmp_path), "SSL_CERT_FILE": str(ca_file)}, tmp_path)
    kernel.prompts = []
    try:
        yield kernel
    finally:
        kernel.stop()


def test_settings_and_files_hold_in_a_kernel(frontend: Frontend, tmp_path: Path,
                                             server_tls: ssl.SSLContext) -> None:
    run = frontend.cell
    with CaptureServer(tmp_path / "a", tls="starttls", ssl_context=server_tls,
                       users={"me": PW_A}, require_auth=True) as a, \
         CaptureServer(tmp_path / "b", tls="starttls", ssl_context=server_tls,
                       users={"me": PW_B}, require_auth=True) as b, \
         CaptureServer(tmp_path / "plain") as plain, \
         FaultServer(tmp_path / "busy", data_reply=(451, "4.3.0 try later")) as busy:
        assert run("import os, smtp_magic\nos.umask(0)\n%load_ext smtp_magic")[0] == "ok"

        # 2. After --local (whose capture server keeps what it gets, see 3.), the host given
        # explicitly wins, and the notice names no setting that was given.
        assert run("%smtp_config --local")[0] == "ok"
        status, out = run("%%smtp_send --to x@example.test --subject Captured --sync\nhi")
        assert status == "ok", out
        status, out = run(f"%smtp_config --host 127.0.0.1 --port {plain.port} --security none")
        assert status == "ok" and "port" not in out and "host" not in out, out
        status, out = run("%%smtp_send --to x@example.test --subject Local --sync\nhi")
        assert status == "ok" and [m.subject for m in plain.wait_for(1)] == ["Local"]

        # 1. The password typed for A ...
        status, out = run(f"%smtp_config --host 127.0.0.1 --port {a.port} --username me "
                          "--password-prompt --from me@example.test --security auto", answer=PW_A)
        assert status == "ok" and frontend.prompts == ["Password for me: "] and PW_A not in out
        status, out = run("print(smtp_magic.send('x@example.test', 'A', 'hi').exitcode)")
        assert out.strip() == "0" and [ok for _, _, ok in a.logins] == [True]
        # ... is not sent to B by one call's config ...
        status, out = run(f"r = smtp_magic.send('x@example.test', 'B', 'hi', config="
                          f"{{'target': 'localhost', 'port': {b.port}}})\n"
                          "print(r.exitcode, r.message)")
        given = f"The password was given for me at 127.0.0.1:{a.port}, so it is not sent to me"
        assert out.startswith(f"3 {given} at localhost:{b.port}: give the password again"), out
        # ... nor after %smtp_config points at B: it says so, and a send asks for B's password
        # (a front end with stdin can answer; headless, it is exit 3 as above).
        status, out = run(f"%smtp_config --host localhost --port {b.port}")
        assert status == "ok" and given in out and "--password-prompt" in out
        send_b = "%%smtp_send --to x@example.test --subject B --sync\nhi"
        status, out = run(send_b, answer="")
        assert status == "error" and "Traceback" not in out, out
        assert f"No password was entered for me at localhost:{b.port}; nothing was sent." in out
        assert frontend.prompts[-1] == (f"Password for me at localhost:{b.port} (the one given "
                                        f"was for me at 127.0.0.1:{a.port}): ")
        assert b.logins == [] and b.count() == 0
        status, out = run(send_b, answer=PW_B)
        assert status == "ok" and [ok for _, _, ok in b.logins] == [True] and b.count() == 1
        assert run(send_b)[0] == "ok" and b.count() == 2  # asked once: the settings keep it

        # 3. What the kernel wrote under umask 000: the capture Maildir of --local, and the
        # outbox of a message a server keeps deferring (its Bcc is in the sidecar).
        # ... and the outbox of a message a server keeps deferring (Bcc in its sidecar).
        status, out = run(f"r = smtp_magic.send('x@example.test', 'Kept', 'hi', "
                          f"bcc='hidden@example.test', config={{'host': '127.0.0.1', "
                          f"'port': {busy.port}, 'security': 'none', 'attempts': 1, 'username': None}})\n"
                          "print(r.exitcode)")
        assert out.strip() == "7", out
        for folder, least in ((tmp_path / "capture", 1), (tmp_path / "outbox", 2)):
            found = {p: stat.S_IMODE(p.stat().st_mode) for p in (folder, *folder.rglob("*"))}
            wrong = {str(p): oct(m) for p, m in found.items()
                     if m != (0o700 if p.is_dir() else 0o600)}
            assert not wrong and sum(p.is_file() for p in found) >= least, (wrong, found)

        # 5. A config file nested too deeply, or not UTF-8: one line, no traceback.
        (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        (tmp_path / "latin.json").write_bytes('{"host": "café"}'.encode("latin-1"))
        for name, says in (("deep.json", "is nested too deeply to be settings"),
                           ("latin.json", "is not UTF-8 text")):
            (tmp_path / name).chmod(0o600)
            status, out = run(f"%smtp_config --file {tmp_path / name}")
            assert status == "error" and says in out and str(tmp_path / name) in out, out
            assert "Traceback" not in out and "Error:" not in out.replace("UsageError:", ""), out
        assert PW_A not in json.dumps(frontend.prompts)
