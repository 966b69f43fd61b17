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
    "pip install": "installs from PyPI: scripts/test-package.sh installs the wheel alone, then "
    "with [demo], in a fresh venv, and sends from it; `make test` installs [all]",
    "make test": "CI runs exactly this command (.ci/run)",
}
# Shell lines run as written by test_shell_lines_run_as_written, in a copy of the repository
# (what varies is normalised there, and said where).
SHELL_COMMANDS = ("make demo", ".venv/bin/jupyter lab notebooks/", "export SMTP_HOST=",
                  "mkdir -p runs", ".venv/bin/papermill notebooks/scheduled_report.ipynb",
                  "smtp-magic serve", "smtp-magic demo")


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
                skipped |= {run_command(c, where) for c in console_commands(block.text)}
            ran += 1
            if sends:
                assert arrived(providers, None) > before, f"{where} sent nothing:\n{block.text}"
    finally:
        logging.getLogger().handlers[:] = root_handlers
        local_server().stop()  # the process-wide one --local started: the next test gets its own
    assert ran == len(blocks)
    # Every exception is still needed (an example that became runnable must then run).
    assert skipped - {None} == (set(SKIPPED_COMMANDS) | set(SKIPPED_LINES)
                                | set(SHELL_COMMANDS))
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
    for prefix in (*SKIPPED_COMMANDS, *SHELL_COMMANDS):
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


# -- the shell lines: make demo, JupyterLab, the scheduled run and its cron line ----------------
def block_with(kind: str, text: str) -> Block:
    found = [b for b in readme_blocks() if b.kind == kind and text in b.text]
    assert len(found) == 1, f"README.md: {len(found)} {kind} blocks with {text!r}"
    return found[0]


def normalise(text: str, folders: dict[str, str]) -> str:
    """What differs from run to run, or from machine to machine, replaced by a mark: the
    given folders, ports, durations, Maildir file names."""
    for folder, mark in folders.items():
        text = text.replace(folder, mark)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"\b\d+\.\d s\b", "N.N s", text)
    return re.sub(r"new/\d+\.M\d+P\d+Q(\d+)\.[\w.-]+\.eml", r"new/MAILDIR-FILE-\1.eml", text)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of what the shell lines use from a clone: the notebooks, and `.venv` (the venv
    these tests run in, as `make demo` or `make test` left it; only read)."""
    import shutil

    copy = tmp_path / "home" / "smtp-magic"
    shutil.copytree(ROOT / "notebooks", copy / "notebooks")
    (copy / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return copy


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.pop("MPLBACKEND", None)  # as on a desktop: the notebook's inline charts
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), IPYTHONDIR=str(tmp_path / "ipython"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"), **extra)
    return env


def test_make_demo_installs_jupyterlab_and_prints_the_readme_sample(
        clone: Path, tmp_path: Path) -> None:
    """`make demo` then `.venv/bin/jupyter lab notebooks/`, and the sample output shown.

    What `make demo` would install is read from make's dry run (installing from PyPI is what
    scripts/test-package.sh does, with the wheel, in a fresh venv); what it then runs,
    `smtp-magic demo`, runs here for real and must print what the README shows, up to the
    folders, the port, the time taken and the Maildir's file names."""
    # --no-print-directory: under CI's own `make test`, a sub-make would announce its folder.
    dry = subprocess.run(["make", "--no-print-directory", "-n", "demo",
                          "VENV=.venv-of-the-dry-run"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    install = next(line for line in dry.splitlines() if "pip install" in line and "-e" in line)
    assert "[demo]" in install and "jupyterlab" in install, install
    assert dry.rstrip().endswith(".venv-of-the-dry-run/bin/smtp-magic demo"), dry

    shown = readme_blocks()[[b.text for b in readme_blocks()].index(
        block_with("console", "$ make demo\n").text) + 1]
    assert shown.kind == "text" and shown.text.startswith("Capture server listening"), shown
    env = shell_env(tmp_path)
    done = subprocess.run([str(clone / ".venv" / "bin" / "smtp-magic"), "demo"], cwd=clone,
                          env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    import smtp_magic

    package = Path(smtp_magic.__file__).resolve().parent
    real = normalise(done.stdout, {f"{tmp_path}/data/smtp_magic/capture": "CAPTURE",
                                   str(package.parent): "CLONE", str(clone): "CLONE"})
    sample = normalise(shown.text, {"/home/you/.local/share/smtp_magic/capture": "CAPTURE",
                                    "/home/you/smtp-magic": "CLONE"})
    assert real.splitlines() == sample.splitlines()


def started(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    """A long-running command of the README, its output going to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(proc: subprocess.Popen[Any], log: Path, pattern: str,
                  timeout: float) -> re.Match[str]:
    """Until ``pattern`` shows in the command's output (it must keep running meanwhile)."""
    import time

    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    return found


def test_jupyter_lab_from_the_venv_serves_the_notebooks(clone: Path, tmp_path: Path) -> None:
    """The README's `.venv/bin/jupyter lab notebooks/`, with what a test machine needs added
    (no browser, a free port on 127.0.0.1, --allow-root), until it serves the notebooks."""
    import urllib.request

    block = block_with("console", "jupyter lab notebooks/")
    (command,) = console_commands(block.text)
    argv = [*shlex.split(command), "--no-browser", "--ServerApp.port=0",
            "--ServerApp.ip=127.0.0.1", "--allow-root", "--IdentityProvider.token=readme"]
    log = tmp_path / "lab.log"
    proc = started(argv, clone, shell_env(tmp_path), log)
    try:
        port = wait_for_line(proc, log, r"http://127\.0\.0\.1:(\d+)/", timeout=90)[1]
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/api/contents?token=readme", timeout=10) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        assert "quickstart.ipynb" in names and "scheduled_report.ipynb" in names, names
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def report_server(tmp_path: Path) -> Iterator[tuple[CaptureServer, Path]]:
    """smtp.example.org for the scheduled run: STARTTLS and AUTH on a free port of 127.0.0.1
    (a subprocess cannot be made to resolve the name: the lines get 127.0.0.1 instead)."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with CaptureServer(tmp_path / "mail", tls="starttls", ssl_context=context,
                       users={"reports@example.org": USERS["reports@example.org"]}) as server:
        yield server, ca_file


def test_the_scheduled_run_and_its_cron_line_run_as_written(
        clone: Path, tmp_path: Path, report_server: tuple[CaptureServer, Path]) -> None:
    """The scheduled-run lines, then the crontab line (cron's `\\%` made `%`, as cron does),
    in a copy of the repository. smtp.example.org:587 becomes the capture server's address and
    `SMTP_PASSWORD=...` its password; the rest runs as written."""
    server, ca_file = report_server

    def local(line: str) -> str:
        return (line.replace("SMTP_HOST=smtp.example.org", "SMTP_HOST=127.0.0.1")
                .replace("SMTP_PORT=587", f"SMTP_PORT={server.port}")
                .replace("SMTP_PASSWORD=...", f"SMTP_PASSWORD={USERS['reports@example.org']}"))

    env = shell_env(tmp_path, SSL_CERT_FILE=str(ca_file))
    lines = console_commands(block_with("console", "mkdir -p runs").text)
    assert [line.split()[0] for line in lines] == ["export", "mkdir", ".venv/bin/papermill"]
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(map(local, lines))],
                          cwd=clone, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (first,) = server.wait_for(1, timeout=10)
    assert set(first.rcpt_to) == {"ops@example.org", "finance@example.org"}
    assert "2024-03-01" in first.subject, first.subject
    assert len(list((clone / "runs").glob("report-*.ipynb"))) == 1

    cron = block_with("cron", "papermill").text.strip()
    command = cron.split(None, 5)[5].replace("\\%", "%")  # after the five time fields
    (clone / "smtp.env").write_text(local(lines[0]) + "\n")  # "holds the export SMTP_... lines"
    done = subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    log = (clone / "runs" / "cron.log").read_text() if (clone / "runs" / "cron.log").exists() \
        else ""
    assert done.returncode == 0, done.stderr + log[-3000:]
    assert len(server.wait_for(2, timeout=10)) == 2
    assert server.messages()[0].rcpt_to == ("ops@example.org",)


def test_smtp_magic_serve_runs_until_ctrl_c(tmp_path: Path) -> None:
    """`smtp-magic serve --port 8025 --maildir ./mail` as shown, on a free port instead of 8025
    (other tests share the machine): it listens, then Ctrl-C (SIGINT) ends it cleanly."""
    import signal

    block = block_with("console", "smtp-magic serve --port 8025")
    (line,) = [c for c in console_commands(block.text) if c.startswith("smtp-magic serve")]
    argv = shlex.split(line.replace("--port 8025", "--port 0"))
    argv[0] = str(Path(sys.prefix) / "bin" / "smtp-magic")
    log = tmp_path / "serve.log"
    proc = started(argv, tmp_path, shell_env(tmp_path), log)
    try:
        wait_for_line(proc, log, "listening on", timeout=30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text() and (tmp_path / "mail").is_dir()


def test_readme_links_work_on_pypi_too() -> None:
    """PyPI shows README.md as the long description, where a relative link is dead and the
    screenshot missing: every link is absolute, and those into the repository name a file it
    has, under the project's URL (pyproject.toml)."""
    found = re.search(r'(?m)^Homepage = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml has no Homepage URL"
    home = found[1].rstrip("/")
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"src=\"([^\"]+)\"", text)
    assert len(targets) > 20, targets
    relative = [t for t in targets if not re.match(r"https?://|#|mailto:", t)]
    assert not relative, f"relative links, dead on PyPI: {relative}"
    raw = home.replace("https://github.com/", "https://raw.githubusercontent.com/")
    for target in targets:
        for prefix in (f"{home}/blob/main/", f"{raw}/main/"):
            if target.startswith(prefix):
                path = target[len(prefix):]
                assert (ROOT / path).exists(), f"{target}: no {path} in the repository"
    assert f"{raw}/main/docs/compose-form.png" in targets  # the screenshot, as an image
