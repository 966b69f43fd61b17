"""Waiting on the event itself: a condition polled until a deadline, never a fixed sleep.

A test that sleeps and then asserts is slow when the machine is fast and flaky when it is
busy; ``until`` returns as soon as the condition holds and fails, saying what it waited for,
when the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def until(condition: Callable[[], T], what: str | Callable[[], Any] = "the condition",
          timeout: float = 10.0, interval: float = 0.01) -> T:
    """The first truthy value of ``condition()``, polled every ``interval`` s for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what() if callable(what) else what}")
        time.sleep(interval)
    return value


async def until_async(condition: Callable[[], T], what: str | Callable[[], Any] = "the condition",
                      timeout: float = 10.0, interval: float = 0.01) -> T:
    """``until`` on an event loop (the loop keeps running while it waits)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what() if callable(what) else what}")
        await asyncio.sleep(interval)
    return value
