"""The command line as a user runs it (a subprocess): options that add up, --profile alone,
--version, help everywhere, a bare command, a closed pipe, and check's one format (JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import TmpData

from smtp_magic import __version__
from smtp_magic.cli import build_parser
from smtp_magic.profiles import profiles_path
from smtp_magic.server import CaptureServer

SUBCOMMANDS = ("send", "send-notebook", "serve", "check", "outbox", "demo")


def cli(*args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=120, check=False, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_every_subcommand_is_covered_here() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)  # type: ignore[arg-type]


def test_version(tmp_path: Path) -> None:
    proc = cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"smtp-magic {__version__}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command: str, tmp_path: Path) -> None:
    proc = cli(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"usage: smtp-magic {command}")


def test_a_bare_command_prints_the_help(tmp_path: Path) -> None:
    proc = cli(cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: smtp-magic")
    assert all(command in proc.stdout for command in SUBCOMMANDS)


@pytest.mark.parametrize("args", [["--help"], [], ["--version"], ["send", "--help"],
                                  ["check", "--config", "missing.json"], ["outbox"]])
def test_a_reader_that_goes_away_ends_the_output_quietly(args: list[str], tmp_path: Path
                                                        ) -> None:
    """`smtp-magic ... | head -1`: the pipe is closed before the command writes."""
    proc = subprocess.Popen([sys.executable, "-m", "smtp_magic", *args], cwd=tmp_path,
                            env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before Python has even started: every write meets a closed pipe
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_head_in_a_shell_pipeline(tmp_path: Path) -> None:
    proc = subprocess.run(f"{sys.executable} -m smtp_magic --help | head -1", shell=True,
                          cwd=tmp_path, env=os.environ, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stdout.startswith("usage: smtp-magic") and proc.stdout.count("\n") == 1
    assert proc.stderr == ""


# -- send --------------------------------------------------------------------------------------
def _request(tmp_path: Path) -> Path:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"to": "bob@example.test", "subject": "by profile", "body": "hi"}))
    return path


def test_send_with_a_profile_needs_no_config_file(smtp_server: CaptureServer, tmp_path: Path,
                                                  tmp_data: TmpData) -> None:
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"capture": {"host": "127.0.0.1", "port": smtp_server.port,
                                            "security": "none",
                                            "sender": "me@example.test"}}))
    proc = cli("send", "--profile", "capture", "--request", str(_request(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["result"] == "sent"
    assert smtp_server.wait_for(1)[0].subject == "by profile"


def test_send_without_config_or_profile_is_exit_1_in_json(tmp_path: Path) -> None:
    proc = cli("send", "--request", str(_request(tmp_path)), cwd=tmp_path)
    answer = json.loads(proc.stdout)
    assert proc.returncode == answer["exitcode"] == 1
    assert "--config CONN.json or --profile NAME" in answer["message"]


# -- send-notebook: repeated options add up, as in %%smtp_send ------------------------------------
def test_send_notebook_repeated_recipients_and_attachments_add_up(
        smtp_server: CaptureServer, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hi')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), cell]
    nbformat.write(nb, tmp_path / "out.ipynb")
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.txt").write_text("b")
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "port": smtp_server.port,
                                "security": "none", "from": "reports@example.test"}))
    proc = cli("send-notebook", "out.ipynb", "--config", str(conn),
               "--to", "a@example.test", "--to", "b@example.test", "c@example.test",
               "--cc", "d@example.test", "--cc", "e@example.test",
               "--bcc", "f@example.test", "--bcc", "g@example.test",
               "--attach", "a.csv", "--attach", "b.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    [got] = smtp_server.wait_for(1)
    assert set(got.rcpt_to) == {f"{c}@example.test" for c in "abcdefg"}
    assert got.message["To"] == "a@example.test, b@example.test, c@example.test"
    assert got.message["Cc"] == "d@example.test, e@example.test"
    names = {part.get_filename() for part in got.message.iter_attachments()}
    assert {"a.csv", "b.txt"} <= names


def test_send_notebook_and_smtp_send_share_one_option_table() -> None:
    from IPython.core.magic_arguments import construct_parser

    from smtp_magic.magics import SmtpMagics
    from smtp_magic.models import MESSAGE_OPTIONS

    magic = construct_parser(SmtpMagics.smtp_send)
    cli_parser = build_parser()
    sub = next(a for a in cli_parser._actions if a.dest == "command")
    notebook = sub.choices["send-notebook"]  # type: ignore[index]
    for option in MESSAGE_OPTIONS:
        for parser in (magic, notebook):
            action = next(a for a in parser._actions if option.flag in a.option_strings)
            assert action.dest == option.dest
            assert (action.nargs == "+") is option.many


# -- check: one format, JSON, success or not --------------------------------------------------------
def test_check_prints_json_whatever_the_outcome(smtp_server: CaptureServer, tmp_path: Path,
                                                refused_port: int) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"target": "127.0.0.1", "port": smtp_server.port,
                                "security": "none"}))
    proc = cli("check", "--config", str(good), cwd=tmp_path)
    answer = json.loads(proc.stdout)
    assert proc.returncode == answer["exitcode"] == 0
    assert answer["result"] == "connected" and answer["port"] == smtp_server.port
    assert answer["tls"] == "none" and answer["login"] == "not attempted (no password)"
    assert answer["report"][0].startswith(f"Connected to 127.0.0.1:{smtp_server.port}")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"target": "127.0.0.1", "port": refused_port,
                               "security": "none"}))
    proc = cli("check", "--config", str(bad), cwd=tmp_path)
    answer = json.loads(proc.stdout)
    assert proc.returncode == answer["exitcode"] == 2 and "refused" in answer["message"]
