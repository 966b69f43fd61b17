"""How the outcome of work on another thread reaches the notebook: one relay for every face."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Relay"]


class Relay:
    """Runs callables posted from any thread (a progress redraw, a debug line, a status line,
    a form's update) where the caller's outputs belong:

    - ``queued``: on the thread that waits in ``serve`` (a blocking send, whose cell is still
      running: its outputs stay in that cell, and the kernel's own loop is not needed);
    - else on the event loop running where the relay was made (the kernel's, in the caller's
      context: outputs go out in order, parented to the cell or form that started the work);
    - else (plain Python, no loop) at once, on the posting thread.

    ``release`` turns a queued relay into a loop one (a wait was interrupted): what was posted
    last (the outcome) is still delivered.
    """

    def __init__(self, *, queued: bool = False) -> None:
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], bool]] | None = (
            queue.SimpleQueue() if queued else None)

    def post(self, func: Callable[[], Any], *, last: bool = False) -> None:
        """Run ``func`` where the outputs belong; ``last``: it ends what ``serve`` waits for."""
        with self._lock:
            if self._queue is not None:
                self._queue.put((func, last))
                return
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(func, context=self._context)
                return
            except RuntimeError:  # the loop closed in between
                pass
        func()

    def when_done(self, future: concurrent.futures.Future[Any],
                  callback: Callable[[concurrent.futures.Future[Any]], Any]) -> None:
        """Post ``callback(future)`` (as the last thing) once ``future`` is done."""
        future.add_done_callback(lambda f: self.post(partial(callback, f), last=True))

    def serve(self) -> None:
        """Run what is posted, on this thread, until what was posted last has run. An
        interrupt (KeyboardInterrupt) stops the wait, not the work: call ``release`` then."""
        assert self._queue is not None, "serve() needs a queued relay"
        while True:
            func, last = self._queue.get()  # a signal interrupts the wait
            func()
            if last:
                return

    def release(self) -> None:
        """Stop serving: from now on what is posted goes to the loop (or runs at once); the last
        thing already waiting in the queue goes there too, the rest (redraws) is dropped."""
        with self._lock:
            pending, self._queue = self._queue, None
        while pending is not None and not pending.empty():
            func, last = pending.get()
            if last:
                self.post(func, last=True)
