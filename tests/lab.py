"""JupyterLab in Debian's chromium for browser tests: start a private JupyterLab on 127.0.0.1,
open a notebook, wait until its kernel is really ready, run its cells, stop everything.

Every Jupyter and IPython directory is isolated under the test's folder; the server dies with
pytest (``setpriv --pdeathsig``), and its kernel with the server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.2f}s] {msg}", flush=True)


def unavailable(reason: str) -> None:
    """Skip, or fail where CI requires the browser tests (SMTP_MAGIC_REQUIRE_BROWSER=1)."""
    if os.environ.get("SMTP_MAGIC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test is required (SMTP_MAGIC_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, driven by Playwright (never `playwright install`)."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        log(f"chromium {browser.version} launched")
        try:
            yield browser
        finally:
            browser.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of code cells for the python3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def die_with_pytest(cmd: list[str]) -> list[str]:
    """Kill the server if pytest itself is killed, so no run leaves one behind (Linux).

    KILL, not TERM: a JupyterLab still starting up was seen to hang on SIGTERM. Its kernel
    exits by itself once its parent is gone (ipykernel's parent poller).
    """
    setpriv = shutil.which("setpriv")  # util-linux; the death signal survives its exec
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()  # our own child, by its PID
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lab_environment(d: Path) -> dict[str, str]:
    """This process's environment, minus the developer's SMTP_* settings, with every Jupyter,
    IPython and smtp-magic data directory under ``d``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(d / ".jcfg"), JUPYTER_DATA_DIR=str(d / ".jdata"),
        JUPYTER_RUNTIME_DIR=str(d / ".jrun"), IPYTHONDIR=str(d / ".ipy"),
        JUPYTER_PLATFORM_DIRS="1", XDG_DATA_HOME=str(d / ".xdg"),
        XDG_CONFIG_HOME=str(d / ".xdg-config"),
        SMTP_MAGIC_OUTBOX=str(d / "outbox"), SMTP_MAGIC_CAPTURE_DIR=str(d / "capture"),
    )
    return env


def write_user_settings(d: Path, plugin: str, settings: dict[str, Any]) -> None:
    """A JupyterLab user setting, e.g. ("@jupyterlab/apputils-extension/themes", {...})."""
    path = d / ".jcfg" / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))


@contextmanager
def jupyter_lab(d: Path, *, expose_app: bool = False) -> Iterator[tuple[str, str]]:
    """A JupyterLab serving ``d``; yields (base URL, token). ``expose_app``: the page has
    ``window.jupyterapp`` (to run JupyterLab commands, e.g. change the theme)."""
    labconfig = d / ".jcfg" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    # JupyterLab 4's "official Jupyter news?" toast would cover the page.
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port, token = free_port(), secrets.token_hex(16)
    args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            f"--IdentityProvider.token={token}", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.root_dir={d}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if expose_app:
        args.append("--LabApp.expose_app_in_browser=True")
    log("starting jupyter lab")
    with open(d / "lab.log", "w") as logfile:
        proc = subprocess.Popen(die_with_pytest(args), env=lab_environment(d), stdout=logfile,
                                stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        log("jupyter lab answers")
        yield f"http://127.0.0.1:{port}", token
    finally:
        stop(proc)
        log("jupyter lab stopped")


def wait_kernel_ready(page: Any, timeout: float = 60_000) -> None:
    """'idle' shows once before the kernel is connected; the debugger button is enabled only
    after the kernel_info reply (JupyterLab's Galata waits the same way)."""
    page.wait_for_function("""() => {
        const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
        const b = document.querySelector('.jp-DebuggerBugButton');
        return s && s.getAttribute('data-status') === 'idle'
            && b && b.getAttribute('aria-disabled') === 'false';
    }""", timeout=timeout)
    log("kernel ready")


def wait_all_run(page: Any, cells: int, timeout: float = 120_000) -> None:
    """Until every code cell has its execution count and the kernel is idle again."""
    page.wait_for_function("""(n) => {
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
        const done = prompts.filter(p => /\\[\\d+\\]/.test(p.textContent)).length;
        const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return done >= n && s && s.getAttribute('data-status') === 'idle';
    }""", arg=cells, timeout=timeout)
    log(f"{cells} cells run")
