"""Every code example of the README runs, as written, against capture servers on 127.0.0.1.

The ```python blocks run in order in one IPython shell (magics and Python alike); the
``$ smtp-magic ...`` lines of the ```console blocks run through the CLI. The providers the
examples name (smtp.gmail.com, smtp.office365.com, Amazon SES, smtp.example.org) resolve to
127.0.0.1 for this test, where a capture server with STARTTLS and AUTH answers on port 587 with
a certificate for those names. What the examples take for granted (a DataFrame ``df``, a figure,
``report.pdf``, a template file...) is set up first. Every message an example sends must arrive,
and every Response it gets must be a success.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import re
import shlex
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import ROOT, TestingShell

from smtp_magic.models import Response
from smtp_magic.server import CaptureServer, local_server, messages

pd = pytest.importorskip("pandas")

README = ROOT / "README.md"
PROVIDERS = ("smtp.gmail.com", "smtp.office365.com", "email-smtp.eu-west-1.amazonaws.com",
             "smtp.example.org")
# The logins the examples use, and the passwords their password sources give.
USERS = {"me@gmail.com": "gmail-app-password", "me@corp.example": "corp-password",
         "AKIA...": "ses-smtp-password", "reports@example.org": "reports-password"}

# What cannot run here, and why (each is tested elsewhere, as said).
SKIPPED_LINES = {
    "%smtp_config --oauth2-login": "a person signs in at Microsoft's page; the same sign-in runs "
    "against a local OpenID Connect provider in tests/test_oauth_frontends.py",
}
SKIPPED_COMMANDS = {
    "pip install": "the package tests install the wheel in a fresh venv (scripts/test-package.sh)",
    "make ": "CI runs make test itself; scripts/test-package.sh runs the demo from the wheel",
    "smtp-magic serve": "runs until Ctrl-C; the capture server is under test everywhere",
    "smtp-magic demo": "scripts/test-package.sh runs it from an installed wheel",
    "export ": "the scheduled report's papermill run is scripts/test-notebooks.sh's",
    "papermill notebooks/scheduled_report.ipynb": "scripts/test-notebooks.sh runs it, "
    "against the capture server, and checks the failing case too",
}


@dataclass
class Block:
    kind: str  # python, console, json
    line: int
    text: str
    before: str  # the paragraph before the block


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence:
            start, body = i + 1, []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = "\n".join(lines[max(0, start - 4):start - 1])
            blocks.append(Block(fence.group(1), start, "\n".join(body) + "\n", before))
        i += 1
    return blocks


# -- the world the examples assume ---------------------------------------------------------------
@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CaptureServer]:
    """The providers the README names, all answering on 127.0.0.1:587 (STARTTLS, AUTH)."""
    ca = trustme.CA()
    ca_file = tmp_path / "providers-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*PROVIDERS, "127.0.0.1").configure_cert(context)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host in PROVIDERS else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        server = CaptureServer(tmp_path / "providers", port=587, tls="starttls",
                               ssl_context=context, users=USERS).start()
    except OSError as exc:
        pytest.fail(f"the README test needs 127.0.0.1:587 for its provider stand-in: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: Any) -> Path:
    """The files, variables and secrets the examples take for granted, in a fresh folder."""
    import keyring

    folder = tmp_path / "work"
    (folder / "reports").mkdir(parents=True)
    (folder / "templates").mkdir()
    for name in ("report.pdf", "reports/q1.pdf", "reports/q2.pdf"):
        (folder / name).write_bytes(b"%PDF-1.4\n% an example\n")
    (folder / "Sample.txt").write_text("A sample attachment.\n")
    (folder / "Example.doc").write_bytes(b"\xd0\xcf\x11\xe0 a Word file")
    (folder / "templates" / "report.html.j2").write_text(
        "<h1>{{ title }}</h1>\n{% block content %}{% endblock %}\n<p>The reports robot</p>\n")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("week = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("# Weekly report"),
                nbformat.v4.new_code_cell("print(f'Week {week}: 42 orders')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / "report.ipynb")
    # The README's JSON files, as shown there.
    for block in readme_blocks():
        named = re.findall(r"`([\w.-]+\.json)`", block.before)
        if block.kind == "json" and named:
            (folder / named[-1]).write_text(block.text)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": USERS["me@gmail.com"])
    monkeypatch.setenv("SES_PASSWORD", USERS["AKIA..."])
    monkeypatch.setenv("REPORTS_PASSWORD", USERS["reports@example.org"])
    keyring.set_password("smtp-magic", "me@corp.example@smtp.office365.com",
                         USERS["me@corp.example"])
    return folder


def notebook_values() -> dict[str, Any]:
    """The variables the examples refer to: your data, in a real notebook."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"day": ["Mon", "Tue", "Wed"], "orders": [120, 95, 143],
                       "revenue": [15400.0, 11250.5, 18990.0]})
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.plot(df.day, df.orders)
    ax.set_title("Orders per day")
    customers = pd.DataFrame({"email": ["ann@example.org", "bob@example.org"],
                              "name": ["Ann", "Bob"], "balance": [120.5, 80.0]})
    return {"df": df, "fig": fig, "growth": 12, "customers": customers, "week": 12,
            "total": 358}


def arrived(*servers: CaptureServer | None) -> int:
    return sum(len(messages(s.maildir if s else None)) for s in servers)


def responses_in(value: Any) -> list[Response]:
    if isinstance(value, Response):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, Response) for v in value):
        return value
    return []


# -- the test -------------------------------------------------------------------------------------
def test_every_readme_example_runs(ip: TestingShell, providers: CaptureServer, world: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    ip.user_ns.update(notebook_values())
    blocks = [b for b in readme_blocks() if b.kind in ("python", "console")]
    assert sum(b.kind == "python" for b in blocks) >= 15, "the README lost its examples?"
    root_handlers = list(logging.getLogger().handlers)
    ran, skipped = 0, set()
    try:
        for block in blocks:
            where = f"README.md line {block.line}"
            before = arrived(providers, None)
            sends = bool(re.search(r"%%smtp_send|\.send(_many|_notebook)?\(|\.sync\(\)|"
                                   r"smtp-magic (send|send-notebook|outbox --retry)\b", block.text))
            if block.kind == "python":
                seen = {k: id(v) for k, v in ip.user_ns.items()}
                lines = block.text.splitlines()
                skipped.update(line.strip() for line in lines if line.strip() in SKIPPED_LINES)
                source = "\n".join(line for line in lines if line.strip() not in SKIPPED_LINES)
                try:
                    ip.run_cell(source)
                except Exception as exc:  # noqa: BLE001 - name the example that failed
                    pytest.fail(f"{where}: {type(exc).__name__}: {exc}\n{block.text}")
                for name, value in ip.user_ns.items():
                    if seen.get(name) != id(value):
                        for r in responses_in(value):
                            assert r.ok, f"{where}: {name} = {r}"
            else:
                for command in console_commands(block.text):
                    skipped.add(run_command(command, where))
            ran += 1
            if sends:
                assert arrived(providers, None) > before, f"{where} sent nothing:\n{block.text}"
    finally:
        logging.getLogger().handlers[:] = root_handlers
        local_server().stop()  # the process-wide one --local started: the next test gets its own
    assert ran == len(blocks)
    # Every exception is still needed (an example that became runnable must then run).
    assert skipped - {None} == set(SKIPPED_COMMANDS) | set(SKIPPED_LINES)
    assert "Traceback" not in capsys.readouterr().err


def console_commands(text: str) -> list[str]:
    """The commands of a console block: continuation lines joined, [optional] parts included,
    `[a | b]` alternatives taken one by one, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        if not line.startswith("$ "):
            continue
        command = line[2:].split("  #", 1)[0].strip()
        for part in command.split(" && "):
            alternatives = re.search(r"\[([^\]]*\|[^\]]*)\]", part)
            options = [o.strip() for o in alternatives.group(1).split("|")] if alternatives else [None]
            for option in options:
                single = part if option is None else part.replace(alternatives.group(0), option)
                out.append(re.sub(r"\[([^\]|]*)\]", r"\1", single).strip())
    return out


def run_command(command: str, where: str) -> str | None:
    """Run one console command; returns the SKIPPED_COMMANDS entry it matched instead, if any."""
    for prefix in SKIPPED_COMMANDS:
        if command.startswith(prefix):
            return prefix
    argv = shlex.split(command)
    if argv[0] == "smtp-magic":
        from smtp_magic.cli import main

        out = subprocess_free(main, argv[1:])
        assert out == 0, f"{where}: `{command}` exited {out}"
    elif argv[0] == "papermill":
        done = subprocess.run([sys.executable, "-m", *argv, "--no-progress-bar"],
                              capture_output=True, text=True, check=False, timeout=180)
        assert done.returncode == 0, f"{where}: `{command}`:\n{done.stderr[-2000:]}"
    else:
        pytest.fail(f"{where}: no way to run `{command}` here; add it to SKIPPED_COMMANDS with a "
                    "reason, or make it runnable")
    return None


def subprocess_free(main: Any, argv: list[str]) -> int:
    """The CLI in this process (so the providers resolve to 127.0.0.1), its JSON checked."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = int(main(argv))
    text = buffer.getvalue()
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and "exitcode" in item:
                assert item["exitcode"] == 0, text
    return code


def test_the_example_runner_can_fail(ip: TestingShell) -> None:
    """The runner notices a failing example (a send without a sender is exit 1)."""
    with pytest.raises(Exception, match="sender|from"):
        ip.run_cell("%%smtp_send --to a@example.org --subject x --sync\nhi")
