"""``smtp-magic demo``: run the quickstart notebook against the built-in capture server."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._views import visible
from .server import CapturedMessage, CaptureServer, default_maildir

__all__ = ["find_notebook", "main", "run"]

log = logging.getLogger(__name__)

# Shipped in the package (a link to the repository's notebooks/quickstart.ipynb), so the demo
# runs from an installed wheel as well as from a clone.
QUICKSTART = Path(__file__).resolve().parent / "notebooks" / "quickstart.ipynb"
DEFAULT_OUTPUT = Path("demo-output") / "quickstart.ipynb"
# Long enough for a cold kernel start plus matplotlib's first import (its font cache).
CELL_TIMEOUT = 300


class DemoError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def find_notebook(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The notebook to run: ``explicit``, else the quickstart shipped with the package."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DemoError(f"The notebook {str(path)!r} does not exist.")
        return path
    if QUICKSTART.is_file():
        return QUICKSTART
    raise DemoError(
        f"The quickstart notebook is missing from this installation ({QUICKSTART}); reinstall "
        "smtp-magic, or pass --notebook path/to/quickstart.ipynb."
    )


def _import_papermill() -> Any:
    try:
        import papermill
    except ImportError as exc:
        raise DemoError(
            "The demo runs the notebook with papermill, which is not installed: "
            "pip install 'smtp-magic[demo]' (papermill, ipykernel, pandas, matplotlib)."
        ) from exc
    return papermill


@contextlib.contextmanager
def _this_python_kernel() -> Iterator[str]:
    """A ``python3`` kernelspec for this very interpreter, found first for the run's duration.

    A ``python3`` kernel of the user's (another Python, without smtp_magic) must not win.
    """
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        raise DemoError("The demo needs a Python kernel for Jupyter: pip install "
                        "'smtp-magic[demo]'.") from None
    with tempfile.TemporaryDirectory(prefix="smtp-magic-demo-") as tmp:
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     # Quiet: not the "TCP without encryption" warning, nor the "KeyboardInterrupt
                     # caught" that shutting the kernel down logs; cell errors still fail the run.
                     "--log-level=CRITICAL"],
            "display_name": "Python 3 (smtp-magic demo)",
            "language": "python",
        }), encoding="utf-8")
        with _env(JUPYTER_PATH=os.pathsep.join(
                p for p in (tmp, os.environ.get("JUPYTER_PATH")) if p)):
            yield "python3"


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _describe(msg: CapturedMessage) -> list[str]:
    m = msg.message
    attachments = [
        f"{part.get_filename() or '(unnamed)'} ({part.get_content_type()})"
        for part in m.iter_attachments()
    ]
    inline = sum(1 for part in m.walk() if part.get("Content-ID") and part.get_content_maintype() == "image")
    lines = [
        f"  From:        {m.get('From', '')}",
        f"  To:          {m.get('To', '')}",
    ]
    if m.get("Cc"):
        lines.append(f"  Cc:          {m['Cc']}")
    lines.append(f"  Subject:     {m.get('Subject', '')}")
    if inline:
        lines.append(f"  Images:      {inline} inline")
    lines.append(f"  Attachments: {', '.join(attachments) if attachments else '(none)'}")
    lines.append(f"  File:        {msg.path}")
    return [visible(line, one_line=True) for line in lines]  # received headers: shown, not obeyed


def _delivered_since(maildir: Path, before: set[Path]) -> list[CapturedMessage]:
    """Messages stored since ``before`` was taken, oldest first (the order they were sent)."""
    from .server import messages

    return [m for m in reversed(messages(maildir)) if m.path not in before]


def run(notebook: Path, output: Path, maildir: Path, *, log: Any = print) -> tuple[int, list[CapturedMessage]]:
    """Execute ``notebook`` into ``output`` against a fresh capture server storing into ``maildir``.

    Returns (exit code, messages delivered during the run).
    """
    papermill = _import_papermill()
    output.parent.mkdir(parents=True, exist_ok=True)
    with CaptureServer(maildir, host="127.0.0.1", port=0) as server:
        before = {m.path for m in server.messages()}
        log(f"Capture server listening on {server.host}:{server.port}, storing mail in {server.maildir}")
        log(f"Running {notebook} with papermill ...")
        started = time.monotonic()
        failure: str | None = None
        # The kernel inherits the environment: %smtp_inbox there reads the same Maildir.
        with _this_python_kernel() as kernel, _env(SMTP_MAGIC_CAPTURE_DIR=str(server.maildir)):
            try:
                papermill.execute_notebook(
                    str(notebook), str(output),
                    parameters={"smtp_host": server.host, "smtp_port": server.port},
                    kernel_name=kernel, cwd=str(notebook.parent), progress_bar=False,
                    execution_timeout=CELL_TIMEOUT,
                )
            except papermill.PapermillExecutionError as exc:
                failure = f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
            except Exception as exc:  # noqa: BLE001 - kernel death, timeouts: report, no traceback
                failure = f"{type(exc).__name__}: {exc}"
        delivered = _delivered_since(server.maildir, before)
    elapsed = time.monotonic() - started
    if failure:
        log(f"The notebook failed after {elapsed:.1f} s: {failure}")
        log(f"See the executed notebook for the traceback: {output}")
        return 1, delivered
    log(f"Notebook executed in {elapsed:.1f} s; executed copy: {output}")
    return 0, delivered


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point of ``smtp-magic demo`` (``args`` has ``notebook`` and ``output``)."""
    if args is None or not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="smtp-magic demo")
        parser.add_argument("--notebook", default=None)
        parser.add_argument("--output", default=None)
        args = parser.parse_args(args)
    try:
        notebook = find_notebook(getattr(args, "notebook", None))
        output = Path(getattr(args, "output", None) or DEFAULT_OUTPUT).expanduser().resolve()
        maildir = default_maildir().resolve()
        code, delivered = run(notebook, output, maildir)
    except DemoError as exc:
        print(f"smtp-magic demo: {exc}", file=sys.stderr)
        return 1
    print()
    if delivered:
        print(f"Delivered {len(delivered)} message(s) to the capture server:")
        for i, msg in enumerate(delivered, 1):
            print(f"{i}.")
            print("\n".join(_describe(msg)))
    else:
        print("Nothing arrived at the capture server.")
    print()
    print(f"The captured .eml files are in {maildir / 'new'}")
    print("Each is a complete message: open it with any mail client, or `%smtp_inbox` in a notebook.")
    if code == 0 and not delivered:
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
