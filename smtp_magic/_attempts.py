"""One message over a transport: its pace, its attempts (temporary failures retried with
``backoff``, a throttling server slowing the pacer), the execution timeout and what running out
of it means, then its outbox entry settled (removed once delivered, else failed, partly sent or
in doubt) and its ``save_sent`` copy."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from . import pacing
from .config import ConnectionSettings
from .delivery import Data, Envelope, Outcome
from .errors import (
    IN_DOUBT_NOTE,
    ExitCode,
    InDoubt,
    PartiallyRefused,
    Rejected,
    SmtpMagicError,
    TemporaryFailure,
)
from .models import Response
from .outbox import Outbox, OutboxEntry

if TYPE_CHECKING:
    from . import imap

log = logging.getLogger(__name__)

T = TypeVar("T")

IN_DOUBT_RESULT = "in doubt: it may have been delivered"


# -- retries, the execution timeout, refusals -----------------------------------------------------

def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): short, growing, jittered."""
    return 0.25 * (3 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def _where(settings: ConnectionSettings) -> str:
    return f"{settings.host}:{settings.port}"


def outcome_error(outcome: Outcome, settings: ConnectionSettings) -> SmtpMagicError | None:
    """The exit-4/5 error for refused recipients, or None when everyone accepted."""
    if not outcome.refused:
        return None
    listed = "; ".join(f"{r} ({c} {t})" for r, (c, t) in outcome.refused.items())
    code, text = next(iter(outcome.refused.values()))  # the first refusal stands for the rest
    if not outcome.accepted:
        cls: type[SmtpMagicError] = Rejected
        message = f"{_where(settings)} refused every recipient: {listed}."
    else:
        cls = PartiallyRefused
        total = len(outcome.accepted) + len(outcome.refused)
        message = f"Sent to {len(outcome.accepted)} of {total} recipients; refused: {listed}."
    return cls(message, refused=outcome.refused, code=code, reply=f"{code} {text}".strip())


class _Watch:
    """One message on its way: the journal's marks (through the envelope's hooks), whether its
    data went out unanswered, and the last temporary failure."""

    __slots__ = ("answered_unsaved", "entry", "last", "outbox", "unconfirmed")

    def __init__(self, outbox: Outbox | None, entry: OutboxEntry | None) -> None:
        self.outbox, self.entry = outbox, entry
        self.unconfirmed = False
        self.answered_unsaved = False
        self.last: SmtpMagicError | None = None

    def sending(self) -> None:  # may raise OutboxUnwritable: the message then stays unsent
        if self.outbox is not None and self.entry is not None:
            self.outbox.sending(self.entry)
        self.unconfirmed = True
        self.answered_unsaved = False

    def answered(self) -> None:
        # Recorded in the journal only when this attempt did not deliver (``settle``): a
        # delivered message is removed at once, one write instead of two.
        if self.unconfirmed:
            self.unconfirmed = False
            self.answered_unsaved = True

    def settle(self) -> None:
        """The server answered and the message is not (wholly) delivered: no longer in doubt."""
        if self.answered_unsaved and self.outbox is not None and self.entry is not None:
            self.outbox.answered(self.entry)
        self.answered_unsaved = False


class _Deadline:
    """``asyncio.timeout(None)`` for Python 3.10: cancels the task at the time given to
    ``reschedule`` (loop time) and turns that cancellation into ``TimeoutError``."""

    def __init__(self, when: float | None = None, after: float = 0.0) -> None:
        self._when, self._after = when, after
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    def when(self) -> float | None:
        return self._when

    def start(self) -> None:
        """Set to ``after`` seconds from now, unless it is set already."""
        if self._when is None:
            self.reschedule(asyncio.get_running_loop().time() + self._after)

    def expired(self) -> bool:
        return self._fired

    def reschedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self._home.call_at(when, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def enter(self) -> _Deadline:
        self._home = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        if self._when is not None:
            self.reschedule(self._when)
        return self

    def exit(self, exc_type: object, exc: BaseException | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    async def __aenter__(self) -> _Deadline:  # noqa: PYI034 - a final private class
        return self.enter()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.exit(exc_type, exc)


_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+


class _Clock:
    """The one timer of a task that sends messages one after another (a batch's worker): each
    message's deadline would otherwise cost a timer (a heap push, and a cancelled entry left
    behind) per message. It stays armed between messages, no later than the current deadline;
    fired early (the deadline moved on), it re-arms itself."""

    __slots__ = ("armed", "current", "handle", "loop", "task")

    def __init__(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        # (A weak reference: the task's context keeps its clock, a clock must not keep its task.)
        self.task, self.loop = weakref.ref(task), loop
        self.current: _TaskDeadline | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0.0  # when the handle fires (its when(), without a call)

    def arm(self, when: float) -> None:
        handle = self.handle
        if handle is None or self.armed > when:
            if handle is not None:
                handle.cancel()
            self.handle = self.loop.call_at(when, self.fire)
            self.armed = when

    def fire(self) -> None:
        fired, self.handle = self.handle, None
        deadline = self.current
        if deadline is None or deadline._when is None:
            return  # between messages: the next deadline arms the timer again
        if fired is not None and deadline._when > fired.when():
            self.handle = self.loop.call_at(deadline._when, self.fire)
            self.armed = deadline._when
            return
        task = self.task()
        if task is not None:
            deadline._fired = True
            task.cancel()


# The clock of the task that runs: a context variable, as each task runs in a context of its
# own (a task started from another inherits its clock, and gets its own at its first deadline).
_task_clock: contextvars.ContextVar[_Clock | None] = contextvars.ContextVar(
    "smtp_magic_task_clock", default=None)


class _TaskDeadline:
    """``asyncio.timeout_at(when)`` (Python 3.11+: cancel the task, then ``TimeoutError`` if
    that cancellation is the one that ends the block), on its task's ``_Clock``."""

    __slots__ = ("_after", "_cancelling", "_clock", "_fired", "_own", "_task", "_when")

    def __init__(self, when: float | None, after: float = 0.0) -> None:
        self._when, self._after = when, after
        self._fired = False
        self._clock: _Clock | None = None
        self._task: asyncio.Task[Any] | None = None
        self._own = False  # a timer of its own (nested in another deadline of its task)
        self._cancelling = 0

    def when(self) -> float | None:
        return self._when

    def expired(self) -> bool:
        return self._fired

    def reschedule(self, when: float) -> None:
        self._when = when
        if self._clock is not None:
            self._clock.arm(when)

    def start(self) -> None:
        """Set to ``after`` seconds from now, unless it is set already."""
        if self._when is None:
            clock = self._clock
            if clock is None:  # (outside its block: armed when it is entered)
                self._when = asyncio.get_running_loop().time() + self._after
                return
            self._when = when = clock.loop.time() + self._after
            clock.arm(when)

    def enter(self) -> _TaskDeadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        clock = _task_clock.get()
        if clock is None or clock.task() is not task:
            clock = _Clock(task, asyncio.get_running_loop())
            _task_clock.set(clock)
        if clock.current is not None:  # (never nested today) a timer of its own
            clock, self._own = _Clock(task, clock.loop), True
        clock.current, self._clock, self._task = self, clock, task
        self._cancelling = task.cancelling()  # type: ignore[attr-defined]  # (3.11+)
        if self._when is not None:
            clock.arm(self._when)
        return self

    def exit(self, exc_type: object, exc: BaseException | None) -> None:
        clock, task = self._clock, self._task
        assert clock is not None and task is not None
        clock.current, self._clock, self._task = None, None, None  # its timer stays armed
        if self._own and clock.handle is not None:
            clock.handle.cancel()
        if self._fired:
            uncancelled = task.uncancel()  # type: ignore[attr-defined]  # (3.11+)
            if uncancelled <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    async def __aenter__(self) -> _TaskDeadline:  # noqa: PYI034 - a final private class
        return self.enter()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.exit(exc_type, exc)


def _deadline(when: float | None, after: float = 0.0) -> Any:
    """A timeout at loop time ``when``, or armed later (``reschedule``, or ``start``: ``after``
    seconds from then) when None: on the task's one timer (``_TaskDeadline``) where tasks
    count cancellations (Python 3.11+)."""
    return _TaskDeadline(when, after) if _timeout_at is not None else _Deadline(when, after)


async def save_copy(folder: imap.SentFolder, response: Response, data: Data) -> Response:
    """The ``save_sent`` copy of a message the server accepted (wholly, or for some of its
    recipients): the exact bytes sent (DKIM-Signature included; never a Bcc line, which the
    message never has). A copy that fails only adds its reason to the response's message."""
    if not (response.exitcode == ExitCode.SENT or response.accepted):
        return response
    raw = data if isinstance(data, bytes) else b"".join(data.chunks())
    problem = await folder.append(raw)
    if problem is None:
        return response
    log.warning("%s: %s", response.message_id, problem)
    return replace(response, message=f"{response.message} {problem}".strip())


# -- one message: pace, attempts, timeout, outbox ---------------------------------------------------

async def deliver(envelope: Envelope, data: Data, entry: OutboxEntry, outbox: Outbox,
                  pacer: pacing.Pacer | None, route: tuple[Any, bool]) -> Response:
    """Deliver (at the pacer's pace, retrying temporary failures), then settle the outbox
    entry: removed once confirmed, else marked failed, partly sent or in doubt.
    ``elapsed`` does not count the wait for the pace."""
    settings = envelope.settings
    assert settings is not None
    message_id = entry.message_id
    watch = _Watch(outbox, entry)
    envelope.on_sending, envelope.on_answered = watch.sending, watch.answered
    clock = time.monotonic()
    try:
        throttled = 0
        while True:
            if pacer is not None and not pacer.go(retry=throttled > 0):
                await pacer.wait(retry=throttled > 0)
            clock = time.monotonic()
            try:
                outcome = await _timed(envelope, data, settings, watch, route)
            except pacing.Throttled as exc:
                throttled += 1
                if pacer is None or throttled > pacing.MAX_THROTTLED:
                    raise pacing.Throttled(
                        f"{exc.message.rstrip('.')}, still after {throttled} tries at a "
                        "slower pace; the message is kept in the outbox.",
                        refused=exc.refused, code=exc.code, reply=exc.reply) from exc
                pacer.throttled(exc.reply, exc.retry_after)  # Graph's Retry-After, if it said
                continue
            if pacer is not None:
                pacer.succeeded()
            break
        if outcome is not None:
            error = outcome_error(outcome, settings)
            if error is not None:
                raise error
    except SmtpMagicError as exc:
        in_doubt = isinstance(exc, InDoubt) or watch.unconfirmed
        if not in_doubt:
            watch.settle()
        response = Response.from_error(
            exc, message_id=message_id, elapsed=time.monotonic() - clock,
            accepted=tuple(r for r in envelope.recipients if r not in exc.refused)
            if exc.exitcode == ExitCode.PARTIAL else (),
        )
        owed = tuple(exc.refused) if response.exitcode == ExitCode.PARTIAL else None
        if in_doubt:
            response = replace(response, result=IN_DOUBT_RESULT)
        elif owed is not None:
            response = replace(response, result=f"partly sent: sent to {len(response.accepted)} "
                               f"of {len(response.accepted) + len(owed)}")
        outbox.mark_failed(entry, response, owed, in_doubt=in_doubt)
        return response
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the message
        in_doubt = watch.unconfirmed
        response = Response(
            exitcode=ExitCode.CONNECT, message=f"Unexpected error while sending ({type(exc).__name__}: {exc}).",
            message_id=message_id, elapsed=time.monotonic() - clock,
            result=IN_DOUBT_RESULT if in_doubt else "",
        )
        outbox.mark_failed(entry, response, in_doubt=in_doubt)
        return response
    elapsed = time.monotonic() - clock
    try:
        outbox.remove(entry.key)
    except OSError as exc:
        # Accepted is sent, whatever the outbox can still record: it stays marked in doubt there
        # (never resent without asking), and the response says so.
        warning = (f"Sent, but the outbox {str(outbox.path)!r} could not record it "
                   f"({exc.strerror or exc}); it stays there as in doubt: do not resend it.")
        log.warning("%s: %s", message_id, warning)
        return Response(exitcode=ExitCode.SENT, message=warning, message_id=message_id,
                        elapsed=elapsed, accepted=tuple(envelope.recipients if outcome is None
                                                        else outcome.accepted))
    return Response.sent(message_id, elapsed,
                         tuple(envelope.recipients if outcome is None else outcome.accepted))


async def _timed(envelope: Envelope, data: Data, settings: ConnectionSettings,
                 watch: _Watch, route: tuple[Any, bool]) -> Outcome | None:
    """The attempts bounded by the execution timeout (``settings.timeout``: connecting and
    retries included; from when the transport starts on the message, if it queues it).
    None: every recipient accepted the message at the first attempt."""
    watch.unconfirmed, watch.last = False, None
    envelope.stalled = None
    transport, queues = route
    loop = asyncio.get_running_loop()
    seconds = settings.timeout
    deadline = _deadline(None if queues else loop.time() + seconds, seconds)
    if queues:  # the clock starts once, however many attempts follow
        envelope.on_started = deadline.start
    # ``async with deadline``, spelt out: its enter and exit are plain calls, not coroutines.
    deadline.enter()
    try:
        try:
            outcome = await _attempts(transport, envelope, data, settings, watch)
        except BaseException as exc:
            deadline.exit(type(exc), exc)
            raise
        deadline.exit(None, None)
        return outcome
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise _timed_out(settings, watch, envelope) from exc


async def _attempts(transport: Any, envelope: Envelope, data: Data,
                    settings: ConnectionSettings, watch: _Watch) -> Outcome | None:
    """Deliver, retrying temporary failures (the whole message, or the recipients the
    server deferred) with ``backoff`` up to ``settings.attempts`` attempts in all. A
    throttling reply with nothing accepted is ``pacing.Throttled`` (the pace slows).
    None: every recipient accepted it at once (the common case: no Outcome made for it)."""
    accepted: list[str] = []
    refused: dict[str, tuple[int, str]] = {}
    pending = envelope.recipients
    last: SmtpMagicError | None = None
    attempt = 0
    while pending:
        attempt += 1
        this = envelope if pending == envelope.recipients else replace(envelope, recipients=pending)
        try:
            outcome = await transport.deliver(this, data)
            if outcome is None and attempt == 1:  # the common case: everyone, at once
                return None
        except pacing.Throttled:
            raise
        except TemporaryFailure as exc:
            last = watch.last = exc
            watch.settle()
        else:
            if outcome is None:
                accepted += pending
                pending = ()
                break
            accepted += outcome.accepted
            temp = {r: v for r, v in outcome.refused.items() if 400 <= v[0] < 500}
            refused.update({r: v for r, v in outcome.refused.items() if r not in temp})
            pending = tuple(r for r in pending if r in temp)
            if not pending:
                break
            watch.settle()
            code, text = temp[pending[0]]
            last = watch.last = TemporaryFailure(
                "The server deferred some recipients: "
                + "; ".join(f"{r} ({c} {t})" for r, (c, t) in temp.items()) + ".",
                refused=temp, code=code, reply=f"{code} {text}".strip(),
            )
        assert last is not None
        if not accepted and pacing.is_throttle(last.code, last.reply):
            # Retrying at once would be throttled again: the pacer slows down and this
            # message goes again later.
            raise pacing.Throttled(
                f"{_where(settings)} is throttling: {last.reply}.",
                refused={r: (last.code or 450, last.reply or "") for r in pending},
                code=last.code, reply=last.reply) from last
        if attempt >= settings.attempts:
            break
        delay = backoff(attempt)
        log.info("%s: temporary failure (%s); retrying in %.1f s (attempt %d of %d)",
                 _where(settings), last.reply or last.message, delay, attempt + 1,
                 settings.attempts)
        await asyncio.sleep(delay)
    if pending:
        assert last is not None
        left = {r: refused.get(r) or last.refused.get(r) or (450, last.message) for r in pending}
        if not accepted:
            raise TemporaryFailure(
                f"{last.message.rstrip('.')}, still failing after {attempt} attempts; "
                "the message is kept in the outbox.",
                refused={**refused, **left}, code=last.code, reply=last.reply,
            ) from last
        refused.update(left)
    if not refused and len(accepted) == len(envelope.recipients):
        return Outcome(list(envelope.recipients))  # everyone, at the first attempt or later
    order = {r: i for i, r in enumerate(envelope.recipients)}
    return Outcome(sorted(accepted, key=lambda r: order.get(r, 0)), refused)


def workers_for(settings: ConnectionSettings) -> int:
    """Messages of one destination on their way at once: one per connection, one more per
    connection waiting for it (the SMTP transport sends its envelope ahead), and one that may
    be pausing before a retry."""
    return 2 * max(1, settings.connections) + 1


async def run_each(items: Sequence[T], workers: int, work: Callable[[T], Awaitable[None]]) -> None:
    """``work(item)`` for every item, in order, at most ``workers`` at a time: each message
    waits for its pace just before it goes (a throttled server slows the ones after it)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(items)))))


def size_of(data: Data) -> int:
    return len(data) if isinstance(data, (bytes, bytearray)) else data.size


def _timed_out(settings: ConnectionSettings, watch: _Watch, envelope: Envelope) -> SmtpMagicError:
    """What a send that ran out of time amounts to: unknown only if its data went out and no
    final reply came back; otherwise nothing was delivered (exit 2 or 7, not 6)."""
    where, seconds = _where(settings), f"{settings.timeout:g} s"
    if watch.unconfirmed:
        return InDoubt(f"The send to {where} did not finish within {seconds} after the message "
                       f"was sent; {IN_DOUBT_NOTE}")
    last = watch.last
    if last is not None:
        return TemporaryFailure(
            f"{last.message.rstrip('.')}, still failing when the {seconds} timeout ran out; "
            "the message is kept in the outbox.",
            refused=last.refused, code=last.code, reply=last.reply,
        )
    if isinstance(envelope.stalled, SmtpMagicError):
        return envelope.stalled
    return TemporaryFailure(f"{where} did not accept the message within {seconds}; "
                            "nothing was sent and it is kept in the outbox.")

