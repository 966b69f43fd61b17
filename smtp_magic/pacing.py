"""Pacing of bulk sends: a steady rate (``"30/min"``) that slows down when the server throttles.

Providers cap how fast one account may send (Microsoft 365: 30 messages a minute; Amazon SES:
a per-second rate; Gmail: daily caps) and answer a client that goes faster with 4xx replies such
as ``454 Throttling failure: Maximum sending rate exceeded``. A :class:`Pacer` is shared by the
workers of one batch: each awaits :meth:`Pacer.wait` before a message, which hands out start
times one ``interval`` apart (no bursts, no credit saved up while idle). A throttling reply
(:func:`is_throttle`) doubles the interval and delays everyone, instead of spending the
message's retries; a run of successes brings the pace gently back towards the configured rate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from .errors import TemporaryFailure

__all__ = ["MAX_THROTTLED", "Pacer", "Throttled", "is_throttle", "parse_rate"]

log = logging.getLogger(__name__)

# How often one message may be throttled before it is given up (kept in the outbox, exit 7).
MAX_THROTTLED = 6
_FIRST_SLOWDOWN = 0.5  # seconds per message after a throttle when no rate was set
_MAX_INTERVAL = 120.0
_RECOVER_AFTER = 20  # successes in a row before the pace speeds up again

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:/|per\s)\s*([a-z]+)", re.IGNORECASE)

# 4xx replies that mean "you are sending too fast": SES's "Throttling failure: Maximum sending
# rate exceeded", Microsoft's "...RateLimitExceeded", "too many messages/connections", quotas.
_THROTTLE_CODES = frozenset({421, 432, 450, 451, 454})
_THROTTLE_WORDS = re.compile(
    r"\brate\b|rate[\s_-]?limit|throttl|quota|exceed|\blimit|too\s+fast|slow(?:ing)?\s+down"
    r"|too\s+many\s+(?:messages|mails?|e-?mails|connections|sessions|requests|concurrent)",
    re.IGNORECASE,
)


def parse_rate(text: str) -> float:
    """Messages per second from ``"30/min"``, ``"14/s"``, ``"1000/hour"``, ``"2000/day"``."""
    match = _RATE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else ""
    seconds = _UNITS.get(unit[:-1] if unit.endswith("s") and unit[:-1] in _UNITS else unit)
    if match is None or seconds is None:
        raise ValueError("expected messages per s, min, hour or day, like '30/min' or '14/s'")
    count = float(match.group(1))
    if not count > 0 or not math.isfinite(count):
        raise ValueError("expected more than 0 messages, like '30/min' or '14/s'")
    return count / seconds


def is_throttle(code: int | None, reply: str | None) -> bool:
    """Whether a temporary reply asks the client to send more slowly."""
    return code in _THROTTLE_CODES and bool(_THROTTLE_WORDS.search(reply or ""))


class Throttled(TemporaryFailure):
    """Exit 7: the server answered a message with a throttling reply (see ``is_throttle``).

    ``retry_after``: the seconds the server asked to wait (HTTP ``Retry-After``), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class Pacer:
    """Start times for the messages of one batch, ``interval`` seconds apart.

    ``rate`` is in messages per second (None: as fast as possible until the server throttles).
    Workers call :meth:`wait` before each message and report the outcome with
    :meth:`succeeded` or :meth:`throttled`; :meth:`finish_in` estimates the time left.
    """

    def __init__(self, rate: float | None = None, *, total: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = 1.0 / rate if rate else 0.0
        self.interval = self.base
        self.total = total  # messages in the batch
        self.settled = 0  # of which finished, one way or another
        self._begun = 0  # of which given a start time (a throttled retry is not a new one)
        self._clock = clock
        self._next = 0.0  # the next free start time (clock seconds)
        self._slowed_at = -math.inf
        self._streak = 0
        self.started = clock()

    @classmethod
    def from_setting(cls, rate: str | None, *, total: int = 0) -> Pacer:
        return cls(parse_rate(rate) if rate else None, total=total)

    def __repr__(self) -> str:
        return f"<Pacer {self.interval:.3f} s per message, {self.settled} of {self.total} done>"

    def go(self, *, retry: bool = False) -> bool:
        """``wait()`` when there is no pace (most sends): the message may go at once (True),
        without a coroutine per message; False (nothing done) when ``wait()`` is needed."""
        if self.interval > 0:
            return False
        if not retry:
            self._begun += 1
        return True

    async def wait(self, *, retry: bool = False) -> None:
        """Wait for this message's start time (at once when there is no pace)."""
        if not retry:
            self._begun += 1
        if self.interval <= 0:
            return
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def succeeded(self) -> None:
        self._streak += 1
        if self.interval > self.base and self._streak >= _RECOVER_AFTER:
            self._streak = 0
            self.interval = max(self.base, self.interval * 0.8)
            if self.interval < 0.01 and not self.base:
                self.interval = 0.0
            log.info("no throttling for a while: %.2f s per message now", self.interval)

    def throttled(self, reply: str | None, retry_after: float | None = None) -> None:
        """The server throttled a message: slow down (once per interval however many workers
        hear it) and hold every worker back for one new interval, or for ``retry_after``
        seconds when the server said how long (HTTP ``Retry-After``) and that is longer."""
        now = self._clock()
        self._streak = 0
        if now - self._slowed_at >= self.interval:
            self.interval = min(self.interval * 2 if self.interval else _FIRST_SLOWDOWN,
                                _MAX_INTERVAL)
            self._slowed_at = now
            log.info("the server is throttling (%s): slowing down to %.2f s per message",
                     reply, self.interval)
        self._next = max(self._next, now + max(self.interval, retry_after or 0.0))

    def finish_in(self) -> float | None:
        """Seconds until the batch is expected to be done: the pace, or the speed seen so far
        when that is slower; None before anything is known."""
        remaining = self.total - self.settled
        if remaining <= 0:
            return 0.0
        estimates = []
        if self.interval > 0:
            waiting = remaining - max(self._begun - self.settled, 0)  # not yet given a start
            estimates.append(max(self._next - self._clock(), 0.0)
                             + max(waiting - 1, 0) * self.interval)
        if self.settled:
            estimates.append((self._clock() - self.started) / self.settled * remaining)
        return max(estimates) if estimates else None
