"""A private event loop in a daemon thread, for blocking calls made from inside a running loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["WorkerLoop", "run_blocking", "run_on_own_thread", "worker_loop"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerLoop:
    """An event loop running forever in a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="smtp-magic", daemon=True)
        self.thread.start()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]


_worker: WorkerLoop | None = None
_worker_lock = threading.Lock()


def worker_loop() -> WorkerLoop:
    """The process's worker loop (started on first use)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = WorkerLoop()
        return _worker


def run_blocking(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion, whether or not this thread already runs an event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    worker = worker_loop()
    if loop is worker.loop:
        # Called from code the worker loop itself runs: a send_many progress callback, when the
        # outer call came from a running loop (a notebook cell). Waiting here for the worker
        # would wait forever; this call gets a loop (and a thread) of its own instead, while
        # the outer batch waits for the callback to return, as it always does.
        return run_on_own_thread(lambda: asyncio.run(coro))  # type: ignore[arg-type]
    # asyncio.run (and aiosmtplib's *_sync helpers) raise inside a running loop, e.g. a kernel.
    return worker.submit(coro).result()


def run_on_own_thread(call: Callable[[], T]) -> T:
    """``call()`` in a new thread (with this thread's context variables), waited for."""
    context = contextvars.copy_context()  # e.g. where debug lines go (conversation.debug_output)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="smtp-magic-nested") as pool:
        return pool.submit(context.run, call).result()
