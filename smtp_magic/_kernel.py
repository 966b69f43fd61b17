"""Kernel plumbing for the magics: headless detection, sends on the worker loop, live status, capture."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import html
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from . import _theme, api
from ._relay import Relay
from ._views import visible
from .config import SmtpMagic
from .conversation import debug_output
from .errors import ExitCode, SmtpMagicError
from .models import Response, SendRequest, tally
from .outbox import history

__all__ = [
    "SendInterrupted",
    "SendJob",
    "is_headless",
    "one_line",
    "run_captured",
    "should_block",
    "start_send",
    "wait_all",
]

log = logging.getLogger(__name__)

# Every job this session started, so `%smtp_outbox --wait` can block on their concurrent futures
# (never on kernel-loop tasks: the kernel's own loop is blocked while a cell runs).
_jobs: list[SendJob] = []


# -- where are we running? -------------------------------------------------------------------------

def kernel_of(shell: Any) -> Any | None:
    """The ipykernel Kernel behind ``shell``; None in a terminal or a plain InteractiveShell."""
    return getattr(shell, "kernel", None)


def is_headless(shell: Any) -> bool | None:
    """Whether the running execute request cannot prompt (papermill, nbval, nbconvert --execute).

    Front ends with a user (JupyterLab, Notebook, VS Code) send ``allow_stdin=True``; headless
    clients send False. None outside a kernel.
    """
    kernel = kernel_of(shell)
    if kernel is None:
        return None
    parent: Any = None
    get_parent = getattr(kernel, "get_parent", None)
    if get_parent is not None:  # ipykernel >= 6; 7 defaults to the calling thread's channel
        try:
            parent = get_parent("shell")
        except TypeError:
            parent = get_parent()
    content = parent.get("content") if isinstance(parent, dict) else None
    if isinstance(content, dict) and "allow_stdin" in content:
        return not content["allow_stdin"]
    # Not an execute request (e.g. a widget callback): the last execute request decides.
    # Only ipykernel keeps it (a shortcut); where it is missing (another kernel, a newer
    # ipykernel), the front end counts as interactive, which only means a send does not block.
    from ._shortcuts import kernel_allows_stdin

    return kernel_allows_stdin(kernel) is False


def should_block(shell: Any, settings: SmtpMagic, forced: bool = False) -> bool:
    """Whether a send waits for its outcome: ``--sync``, ``send_mode``, else headless runs and
    terminals (no event loop keeps running between their cells) wait; notebooks do not."""
    if forced or settings.send_mode == "sync":
        return True
    if settings.send_mode == "async":
        return False
    headless = is_headless(shell)
    return True if headless is None else headless


# -- sends --------------------------------------------------------------------------------------

class SendJob:
    """A send started by ``%%smtp_send`` (stored as ``smtp_last``).

    ``await smtp_last`` gives its ``Response`` (a list of them for ``--each``) without blocking
    the kernel; ``smtp_last.result(timeout)`` blocks; ``smtp_last.done()`` tells whether it ended.
    Displaying it shows its status line, which updates in place.
    """

    def __init__(self, requests: Sequence[SendRequest], *, many: bool,
                 notes: Sequence[str] = ()) -> None:
        self.requests = tuple(requests)
        self.many = many
        self.notes = tuple(notes)  # e.g. an object that was sent as text: its repr raised
        self.display_id = uuid.uuid4().hex
        self.started = time.monotonic()
        self.finished: float | None = None
        self.progress = 0  # messages done (sent or failed) so far
        self.failed = 0  # ... of which failed
        self.finish_at: float | None = None  # expected, for a paced --each (the rate setting)
        self.future: concurrent.futures.Future[list[Response]] | None = None
        self.responses: list[Response] | None = None
        self.crash: BaseException | None = None

    # -- the outcome --
    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def result(self, timeout: float | None = None) -> Response | list[Response]:
        assert self.future is not None
        responses = self.future.result(timeout)
        return responses if self.many else responses[0]

    def __await__(self) -> Generator[Any, None, Response | list[Response]]:
        assert self.future is not None
        responses = yield from asyncio.wrap_future(self.future).__await__()
        return responses if self.many else responses[0]

    def _settle(self) -> None:
        """Record the outcome once the future is done (idempotent)."""
        if self.finished is not None or self.future is None or not self.future.done():
            return
        self.finished = time.monotonic()
        try:
            self.responses = self.future.result()
        except BaseException as exc:  # noqa: BLE001 - a bug in the send shows as a failed status
            self.crash = exc

    def failures(self) -> list[Response]:
        if self.crash is not None:
            return [Response(exitcode=ExitCode.CONNECT, message=f"The send crashed ({type(self.crash).__name__}: "
                                                 f"{self.crash}).")]
        return [r for r in self.responses or () if not r.ok]

    def error(self) -> SmtpMagicError | None:
        """The typed error for a failed job, with one sentence a user understands."""
        failed = self.failures()
        if not failed:
            return None
        try:
            failed[0].raise_for_status()
        except SmtpMagicError as exc:
            if len(self.requests) == 1:
                return exc
            return type(exc)(f"{tally(failed, len(self.requests))}; the first: {exc.message}",
                             refused=exc.refused)
        return SmtpMagicError(failed[0].message)

    # -- the status line: one line for the whole send, with a progress bar for --each --
    def _counts(self) -> str:
        total = len(self.requests)
        text = f"{self.progress} of {total} done"
        if self.failed:
            text += f", {self.failed} failed"
        if self.finish_at and self.progress < total:
            text += f", done by about {finish_time(self.finish_at)}"
        return text

    def _summary(self) -> tuple[str, str]:
        """(kind, text): busy while sending, then ok or error."""
        total = len(self.requests)
        if self.finished is None:
            if self.many:
                return "busy", f"sending {total} messages\u2026 {self._counts()}"
            req = self.requests[0]
            return "busy", f"sending \u201c{req.subject}\u201d to {', '.join(req.recipients)}\u2026"
        elapsed = self.finished - self.started
        failed = self.failures()
        if not failed:
            assert self.responses is not None
            warned = [r for r in self.responses if r.message]  # e.g. the outbox is full
            kind = "warn" if warned else "ok"
            if self.many:
                note = f"; {len(warned)} with a warning: {warned[0].message}" if warned else ""
                return kind, f"sent {total} messages in {elapsed:.2f} s{note}"
            return kind, str(self.responses[0])
        if self.crash is not None:
            return "error", f"failed: {failed[0].message}"
        kind = "warn" if all(r.state != "not sent" for r in failed) else "error"
        if not self.many:
            state = failed[0].state
            return kind, f"{'failed' if state == 'not sent' else state}: {failed[0].message}"
        reasons = "; ".join(dict.fromkeys(r.message for r in failed))
        return kind, (f"{total - len(failed)} of {total} messages sent, {tally(failed, total)} "
                      f"({elapsed:.2f} s): {reasons}")

    def _notes(self) -> str:
        return "".join(f"; note: {note}" for note in self.notes)

    def _repr_html_(self) -> str:
        kind, text = self._summary()
        if self.many:
            done = len(self.requests) if self.finished is not None else self.progress
            text_html = (_theme.ICONS[kind] + _theme.progress_bar(done, len(self.requests))
                         + html.escape(text))
            status = _theme.line(kind, text_html, tag="div", escape=False, icon="")
        else:
            status = _theme.line(kind, text, tag="div")
        notes = "".join(_theme.line("warn", note, tag="div") for note in self.notes)
        # One live region around the line: screen readers announce the outcome when it changes.
        return f'<div role="status" aria-live="polite">{status}{notes}</div>'

    def __repr__(self) -> str:
        kind, text = self._summary()
        return visible(f"{_theme.ICONS[kind]}{text}{self._notes()}")  # a server's reply, shown


def _display(obj: Any, display_id: str | None = None, update: bool = False) -> None:
    from IPython.display import display

    if update:
        display(obj, display_id=display_id, update=True)
    else:
        display(obj, display_id=display_id)


class _TextBar:
    """The progress of ``--each`` in a terminal: one line on stderr, redrawn in place, as tqdm
    draws it (``sending  62% |███████████████▍        | 25/40 done, 1 failed, done by about
    14:32:05``). Not tqdm itself: in a notebook the status line is the one indicator, so a
    terminal line is all that is needed, and it is not worth a dependency."""

    WIDTH = 24
    _PARTS = " \u258f\u258e\u258d\u258c\u258b\u258a\u2589"  # eighths of a block

    def __init__(self, total: int, stream: Any) -> None:
        self.total = total
        self.stream = stream
        self.shown = 0
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "\u2588\u258f".encode(encoding)
            self.unicode = True
        except (UnicodeEncodeError, LookupError):
            self.unicode = False

    def draw(self, job: SendJob, end: str = "") -> None:
        share = job.progress / self.total if self.total else 1.0
        if self.unicode:
            eighths = round(share * self.WIDTH * 8)
            bar = "\u2588" * (eighths // 8) + (self._PARTS[eighths % 8] if eighths % 8 else "")
        else:
            bar = "#" * round(share * self.WIDTH)
        text = (f"sending {share:4.0%} |{bar.ljust(self.WIDTH)}| "
                f"{job._counts().replace(' of ', '/', 1)}")
        self.stream.write("\r" + text.ljust(self.shown) + end)
        self.stream.flush()
        self.shown = len(text)


def finish_time(at: float) -> str:
    """``14:32:05`` (and the date when it is not today) for a ``time.time()`` value."""
    today = time.strftime("%Y-%m-%d")
    day = time.strftime("%Y-%m-%d", time.localtime(at))
    return time.strftime("%H:%M:%S" if day == today else "%Y-%m-%d %H:%M", time.localtime(at))


class SendInterrupted(KeyboardInterrupt):
    """A blocking send was interrupted (the stop button): the send itself goes on."""

    def __init__(self, job: SendJob) -> None:
        super().__init__("the send goes on in the background; its status line shows the outcome, "
                         "and `await smtp_last` or %smtp_outbox --wait waits for it.")
        self.job = job

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31mKeyboardInterrupt\x1b[0m: {self}"]


class _Transcript:
    """The SMTP conversation of an asynchronous send in debug mode, shown in the cell's output
    under its status line and updated in place (at most five times a second), so it stays in
    the right cell after the cell has finished. The newest ``limit`` lines are kept."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 2000) -> None:
        self.loop = loop
        self.lines: collections.deque[str] = collections.deque(maxlen=limit)
        self.dropped = 0
        self.display_id = uuid.uuid4().hex
        self._scheduled = False

    def show(self) -> None:
        """Put it in the cell's output (under the status line, so after it)."""
        _display(self, self.display_id)

    def add(self, line: str) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1
        self.lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_later(0.2, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        _display(self, self.display_id, update=True)

    def text(self) -> str:
        head = [f"({self.dropped} earlier lines not shown)"] if self.dropped else []
        return "\n".join(head + list(self.lines)) or "(no SMTP conversation yet)"

    def __repr__(self) -> str:
        return "SMTP conversation (debug):\n" + self.text()

    def _repr_html_(self) -> str:
        return ("<details open><summary>SMTP conversation (debug)</summary>"
                f"<pre style='margin:0;font-size:12px'>{html.escape(self.text())}</pre></details>")


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _StatusView:
    """What a send shows while it runs and when it ends: the status line (updated in place where
    the front end applies display updates), a text progress bar in a terminal, and the SMTP
    conversation with --debug. Everything it draws from the worker thread goes through
    ``relay``, so it lands where this cell's outputs belong."""

    def __init__(self, shell: Any, job: SendJob, relay: Relay, *, block: bool) -> None:
        in_kernel = kernel_of(shell) is not None
        self.job, self.relay = job, relay
        # A live status line needs a front end that applies display updates; headless runners
        # (nbval, papermill) keep only the first version, so there we show the final line alone.
        self.live = not block or (in_kernel and not is_headless(shell))
        # In a terminal a blocking --each draws a text progress bar on stderr while it waits.
        self.text_bar = (_TextBar(len(job.requests), sys.stderr)
                         if job.many and block and not in_kernel and _is_tty(sys.stderr)
                         else None)
        self.transcript: _Transcript | None = None
        self._block = block
        self._on_screen = False  # the status line is shown: updates may follow
        self._last_update = 0.0

    def debug_sink(self) -> Callable[[str], None]:
        """Where --debug's conversation goes: this cell's stderr while the cell waits or where
        no loop runs, else a transcript under the status line (see _Transcript)."""
        loop = self.relay.loop
        if self._block or loop is None:
            return lambda line: self.relay.post(partial(_stderr_line, line))
        transcript = self.transcript = _Transcript(loop)
        return lambda line: self.relay.post(partial(transcript.add, line))

    def on_progress(self, done: int, total: int, response: Response | None,
                    finish_at: float | None) -> None:
        """On the worker thread, after each message: count, and redraw at most 5 times a
        second (the final state is drawn when the send settles)."""
        job = self.job
        job.progress, job.finish_at = done, finish_at
        if response is not None and not response.ok:
            job.failed += 1
        now = time.monotonic()
        if job.many and (self.live or self.text_bar is not None) and \
                now - self._last_update >= 0.2:
            self._last_update = now
            self.relay.post(self._redraw)

    def show(self) -> None:
        if self.live:
            _display(self.job, self.job.display_id)
            self._on_screen = True
        elif self.text_bar is not None:
            self.text_bar.draw(self.job)
        if self.transcript is not None:
            self.transcript.show()

    def _redraw(self) -> None:
        if self.job.finished is not None:  # settled meanwhile: the final line is already shown
            return
        if self.text_bar is not None:
            self.text_bar.draw(self.job)
        elif self._on_screen:
            _display(self.job, self.job.display_id, update=True)

    def settle(self, _future: Any = None) -> None:
        """The outcome: the status line's final state (a new output where updates are lost)."""
        self.job._settle()
        if self.transcript is not None:
            self.transcript.flush()
        if self.text_bar is not None:
            self.text_bar.draw(self.job, end="\n")
        if self.live:
            _display(self.job, self.job.display_id, update=True)
        else:
            _display(self.job)


def start_send(shell: Any, requests: Sequence[SendRequest], settings: SmtpMagic, *, block: bool,
               many: bool, composed: Sequence[Any] | None = None,
               notes: Sequence[str] = ()) -> SendJob:
    """Send ``requests`` in one batch on the worker loop, with a status line.

    Every message is written to the outbox before this starts sending or shows "sending", so a
    kernel restart right after the cell returns loses nothing. ``composed``: the messages
    already built from ``requests`` (the magic's validation pass), reused as they are.
    ``notes``: what the status line says besides the outcome (e.g. an object that fell back).

    Whatever the send shows reaches the notebook one way, through a ``Relay``: with ``block``
    this thread serves it until the outcome is shown (the I/O runs on the worker loop's thread,
    so the kernel's loop is not needed), and an interrupt raises ``SendInterrupted`` while the
    send goes on; otherwise this returns at once and the kernel's loop (or, where no loop runs,
    the worker thread) shows the outcome, parented to this cell.
    """
    job = SendJob(requests, many=many, notes=notes)
    relay = Relay(queued=block)
    view = _StatusView(shell, job, relay, block=block)
    # Composed (if need be), credentials resolved and journaled here, before anything is shown.
    try:
        with debug_output(view.debug_sink()) if settings.debug else contextlib.nullcontext():
            job.future = api.submit_many(job.requests, config=settings,
                                         progress=view.on_progress, composed=composed)
    except KeyboardInterrupt:
        raise one_line(KeyboardInterrupt("interrupted before anything was sent; nothing was "
                                         "kept in the outbox.")) from None
    _jobs[:] = [*pending_jobs(), job]  # finished ones are in the send log; do not keep their bodies
    view.show()
    relay.when_done(job.future, view.settle)
    if block:
        try:
            relay.serve()
        except KeyboardInterrupt:  # the send goes on; its status line still settles later
            relay.release()
            raise SendInterrupted(job) from None
    return job


def pending_jobs() -> list[SendJob]:
    return [job for job in _jobs if not job.done()]


def wait_all(timeout: float | None = None) -> list[Any]:
    """Block until every send of this session has finished, whatever started it (the magics,
    the form, the API); returns the sends still pending (those running on this thread's own
    event loop, which cannot finish while it blocks).

    Waits on the worker loop's futures and the send log, so it works while the kernel's loop
    is blocked.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    jobs = list(_jobs)
    concurrent.futures.wait([j.future for j in jobs if j.future is not None], timeout=timeout)
    for job in jobs:
        job._settle()
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    return history.wait(left)


def one_line(exc: BaseException) -> BaseException:
    """Make IPython show ``exc`` as one line (its type and sentence) instead of a traceback."""
    # Our own colour codes only: the sentence can quote a server's reply, shown, not obeyed.
    text = f"\x1b[0;31m{type(exc).__name__}\x1b[0m: {visible(str(exc))}"
    exc._render_traceback_ = lambda: [text]  # type: ignore[attr-defined]
    return exc


# -- --capture: run a cell as usual and keep what it shows when it ends -------------------------

class _TeeStream:
    """``sys.stdout``/``sys.stderr`` as before, plus a copy of every write in ``records``."""

    def __init__(self, stream: Any, records: list[tuple[Any, ...]], name: str) -> None:
        self._stream = stream
        self._records = records
        self._name = name

    def write(self, text: str) -> int:
        if text:
            self._records.append(("stream", self._name, text))
        return self._stream.write(text)  # type: ignore[no-any-return]

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_captured(shell: Any, code: str) -> tuple[list[Any], Any]:
    """Run ``code`` as a cell whose outputs show as usual; returns (outputs, ExecutionResult).

    The outputs are what the notebook shows once the cell has ended, in order, as
    ``render.Output`` objects: stdout and stderr (warnings included), ``display()`` calls
    (figures included) and the last expression's value; a display updated through its
    ``display_id`` shows its last value, and ``clear_output()`` (``wait=True`` too) removes what
    came before it. A displayed object's title (figures, charts) and notebook variable name are
    kept to name its image.
    """
    from .render import Output, cell_paths

    records: list[tuple[Any, ...]] = []
    # id(format dict) -> (title, variable, object, the dict: kept alive so its id stays its own)
    labels: dict[int, tuple[str, str, Any, Any]] = {}
    pub, hook, formatter = shell.display_pub, shell.displayhook, shell.display_formatter
    orig_publish, orig_write = pub.publish, hook.write_format_data
    orig_clear, orig_format = pub.clear_output, formatter.format

    def format(obj: Any, *args: Any, **kwargs: Any) -> Any:
        result = orig_format(obj, *args, **kwargs)
        if isinstance(result, tuple) and result and isinstance(result[0], dict):
            labels[id(result[0])] = (*_label_of(obj, shell.user_ns), obj, result[0])
        return result

    def publish(*args: Any, **kwargs: Any) -> Any:
        data = kwargs["data"] if "data" in kwargs else (args[0] if args else {})
        metadata = kwargs.get("metadata", args[1] if len(args) > 1 else None)
        transient = kwargs.get("transient") or {}
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        kind = "update" if kwargs.get("update") else "display"
        records.append((kind, data, metadata or {}, display_id))
        return orig_publish(*args, **kwargs)

    def write_format_data(format_dict: Any, md_dict: Any = None) -> Any:
        records.append(("display", format_dict, md_dict or {}, None))
        return orig_write(format_dict, md_dict)

    def clear_output(wait: bool = False) -> Any:
        records.append(("clear", wait))
        return orig_clear(wait)

    patched = ((pub, "publish", publish), (hook, "write_format_data", write_format_data),
               (pub, "clear_output", clear_output), (formatter, "format", format))
    saved = [(obj, name, vars(obj).get(name)) for obj, name, _ in patched]
    stdout, stderr = sys.stdout, sys.stderr
    for obj, name, func in patched:
        setattr(obj, name, func)
    sys.stdout = _TeeStream(stdout, records, "stdout")
    sys.stderr = _TeeStream(stderr, records, "stderr")
    try:
        result = shell.run_cell(code, store_history=False)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        for obj, name, before in saved:
            if before is None:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, before)
    where = _cell_finder(shell, code)
    return [replace(o, text=cell_paths(o.text, where)) if o.kind == "stream" else o
            for o in _final_outputs(records, labels, Output)], result


def _cell_finder(shell: Any, code: str) -> Callable[[str, str], tuple[str, int] | None]:
    """Which cell a kernel file name is (for warnings): the cell being sent (its code starts on
    the line after ``%%smtp_send``) or an earlier one, as IPython's compiler knows them."""
    # The Out[] number of the running cell (IPython 9 counts the next cell while one runs).
    number = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
    compiler: Any = getattr(shell, "compile", None)
    try:  # the name the captured code was compiled under, as run_cell names it
        own = compiler.get_code_name(code, shell.transform_cell(code), shell.execution_count)
    except Exception:  # noqa: BLE001 - a shell without IPython's compiler: names stay
        own = None

    def where(path: str, digest: str) -> tuple[str, int] | None:
        if path == own:
            return f"cell [{number}]" if number is not None else "this cell", 1
        try:
            found = compiler.format_code_name(path)
        except Exception:  # noqa: BLE001
            found = None
        match = re.search(r"\[(\d+)\]", found[1]) if found else None
        return (f"cell [{match.group(1)}]", 0) if match else None

    return where


def _final_outputs(records: list[tuple[Any, ...]],
                   labels: dict[int, tuple[str, str, Any, Any]], output: Any) -> list[Any]:
    """Replay the cell's output messages as a front end does and keep the final state."""
    shown: list[Any] = []
    ids: list[str | None] = []
    clear_pending = False
    for record in records:
        kind = record[0]
        if kind == "clear":
            if record[1]:
                clear_pending = True  # clear_output(wait=True): when the next output comes
            else:
                shown.clear()
                ids.clear()
            continue
        if kind == "update":  # redraws the outputs with this display_id, wherever they are
            _, data, metadata, display_id = record
            for i, known in enumerate(ids):
                if display_id is not None and known == display_id:
                    shown[i] = _display_output(output, data, metadata, labels)
            continue
        if clear_pending:
            shown.clear()
            ids.clear()
            clear_pending = False
        if kind == "stream":
            shown.append(output(kind="stream", name=record[1], text=record[2]))
            ids.append(None)
        else:
            _, data, metadata, display_id = record
            shown.append(_display_output(output, data, metadata, labels))
            ids.append(display_id)
    return shown


def _display_output(output: Any, data: Any, metadata: Any,
                    labels: dict[int, tuple[str, str, Any, Any]]) -> Any:
    title, variable, obj, _ = labels.get(id(data), ("", "", None, None))
    return output(kind="display", data=dict(data), metadata=dict(metadata), title=title,
                  variable=variable, source=obj)


def _label_of(obj: Any, namespace: Any) -> tuple[str, str]:
    """(title, variable name) of a displayed object, where it has them."""
    from ._kinds import title_of

    variable = ""
    if obj is not None and not isinstance(obj, (str, int, float, bool, bytes)):
        variable = next((k for k, v in namespace.items()
                         if v is obj and isinstance(k, str) and not k.startswith("_")
                         and k not in ("In", "Out")), "")
    return title_of(obj), variable
