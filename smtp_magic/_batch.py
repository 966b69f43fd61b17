"""A batch of requests on its way: one job per request (its settings, its composed message, its
place in the outbox and its Response), the jobs of one destination as a group written to the
outbox as one journal before any is sent, the windows requests are taken in, and the progress
callback counting jobs as they finish."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from . import pacing
from ._requests import as_request
from ._resend import destination_of
from .config import ConnectionSettings, SmtpMagic
from .delivery import Data
from .errors import SmtpMagicError
from .models import Response, SendRequest
from .outbox import Batch, Outbox, OutboxEntry, SendRecord, history

if TYPE_CHECKING:
    from . import imap
    from .mime import Composed

log = logging.getLogger(__name__)

T = TypeVar("T")


class Progress(Protocol):
    """``progress(done, total, response)``, called after each message (``total`` is 0 when the
    requests have no length)."""

    def __call__(self, done: int, total: int, response: Response, /) -> None: ...


class TimedProgress(Protocol):
    """``progress(done, total, response, finish_at)``: also the expected finish time
    (``time.time()`` seconds, or None), and a first call ``(0, total, None, finish_at)`` before
    anything is sent when the batch is paced (the rate setting)."""

    def __call__(self, done: int, total: int, response: Response | None,
                 finish_at: float | None, /) -> None: ...


AnyProgress = Union[Progress, TimedProgress]  # noqa: UP007 - a runtime alias on Python 3.10


# -- composing messages -------------------------------------------------------------------------

def prepare_message(request: SendRequest, settings: ConnectionSettings) -> Composed:
    """The message of ``request``, ready to send (``stages.prepare``)."""
    from .stages import prepare  # the stages (and the email package), imported on the first send

    return prepare(request, settings)


def prepare_messages(items: list[tuple[SendRequest, ConnectionSettings]]
                     ) -> list[Composed | SmtpMagicError]:
    """The message of each (request, settings), or the error that stopped it
    (``stages.prepare_many``)."""
    from .stages import prepare_many

    return prepare_many(items)


# -- jobs: one request each ----------------------------------------------------------------------

@dataclass
class Job:
    index: int
    request: SendRequest
    settings: ConnectionSettings | None
    composed: Composed | None = None
    response: Response | None = None
    record: SendRecord | None = None
    entry: OutboxEntry | None = None  # its place in the outbox, once written there
    data: Data | None = None


def new_jobs(start: int, items: Sequence[Any], base: SmtpMagic, timeout: float | None,
             plain: ConnectionSettings | None = None,
             composed: Sequence[Composed] | None = None) -> list[Job]:
    """A job per item (numbered from ``start``): its request read, its settings, its message
    composed (``composed``: made already) and its line in the session's send log; a request
    that cannot be read or made has its Response (exit 1) already."""
    jobs = [_read_job(start + i, item, base, timeout, plain) for i, item in enumerate(items)]
    readable = [(job, job.settings) for job in jobs if job.settings is not None]
    if composed is not None:
        for job, _ in readable:
            job.composed = composed[job.index - start]
    else:  # the window's messages made together, stage by stage
        results = prepare_messages([(job.request, settings) for job, settings in readable])
        for (job, _), result in zip(readable, results):
            if isinstance(result, SmtpMagicError):
                _failed(job, items[job.index - start], result)
            else:
                job.composed = result
    records = []
    for job in jobs:
        message = job.composed
        if message is not None:
            job.record = SendRecord(message.subject, message.recipients, message.message_id)
        else:
            job.record = SendRecord(str(job.request.subject or ""), job.request.recipients, None)
        records.append(job.record)
    history.add_all(records)  # the window's lines in one go (one lock)
    for job in jobs:
        if job.response is not None:
            job.record.finish(job.response)  # type: ignore[union-attr]
    return jobs


def _read_job(index: int, item: Any, base: SmtpMagic, timeout: float | None,
              plain: ConnectionSettings | None) -> Job:
    try:
        request, overrides = as_request(item)
        if timeout is not None:
            overrides = {**overrides, "timeout": timeout}
        settings = plain if plain is not None and not overrides else base.snapshot(overrides)
    except SmtpMagicError as exc:
        job = Job(index, SendRequest(to=(), subject=""), None)
        _failed(job, item, exc)
        return job
    return Job(index, request, settings)


def _failed(job: Job, item: Any, exc: SmtpMagicError) -> None:
    """A request that cannot be sent: exit 1 now (the log shows the request as given)."""
    job.request = item if isinstance(item, SendRequest) else SendRequest(to=(), subject="")
    job.settings = None
    job.response = Response.from_error(exc)


def journal(jobs: list[Job], outbox: Outbox, progress: Callable[[Job], None],
             settings: ConnectionSettings | None = None) -> Batch:
    """Write every message of the group to the outbox (one journal) before any is sent."""
    batch = outbox.batch(destination_of(settings) if settings is not None else None)
    try:
        for job in jobs:
            composed = job.composed
            assert composed is not None and job.record is not None
            try:
                job.entry, job.data = batch.add(
                    composed.chunks(), sender=composed.sender, recipients=composed.recipients,
                    message_id=composed.message_id, subject=composed.subject,
                )
            except SmtpMagicError as exc:  # e.g. an attachment that can no longer be read
                job.response = Response.from_error(exc, message_id=composed.message_id)
                job.record.finish(job.response)
                progress(job)
                continue
            job.record.outbox_key = job.entry.key
        batch.commit()
    except BaseException:
        batch.close()
        raise
    return batch


@dataclass
class Group:
    """Jobs that share settings, ready to deliver: credentials resolved, messages journaled."""

    settings: ConnectionSettings
    jobs: list[Job]
    outbox: Outbox
    batch: Batch
    pacer: pacing.Pacer | None = None  # the rate setting's pace, shared by the account
    folder: imap.SentFolder | None = None  # save_sent: one IMAP connection for the group


def fail_jobs(jobs: list[Job], exc: SmtpMagicError, progress: Callable[[Job], None]) -> None:
    for job in jobs:
        if job.response is None:
            job.response = Response.from_error(
                exc, message_id=job.composed.message_id if job.composed else None)
            assert job.record is not None
            job.record.finish(job.response)
            progress(job)


def screen(jobs: list[Job], check: Callable[[Composed], None],
           progress: Callable[[Job], None]) -> list[Job]:
    """The jobs whose message passes ``check``; the others (it raised) are settled now with
    its error, before anything of theirs is written to the outbox."""
    passed = []
    for job in jobs:
        assert job.composed is not None
        try:
            check(job.composed)
        except SmtpMagicError as exc:
            fail_jobs([job], exc, progress)
            continue
        passed.append(job)
    return passed


def progress_caller(progress: AnyProgress | None
                     ) -> Callable[[int, int, Response | None, Callable[[], float | None]], None] | None:
    """Call ``progress(done, total, response)``, or with a fourth argument, the expected finish
    time (``time.time()`` seconds or None), when the callback takes one."""
    if progress is None:
        return None
    try:
        inspect.signature(progress).bind(0, 0, None, None)
    except (TypeError, ValueError):  # ValueError: no signature (a builtin): three arguments
        takes_eta = False
    else:
        takes_eta = True

    def tell(done: int, total: int, response: Response | None,
             finish_at: Callable[[], float | None]) -> None:
        if takes_eta:
            progress(done, total, response, finish_at())  # type: ignore[call-arg,arg-type]
        elif response is not None:
            progress(done, total, response)  # type: ignore[call-arg]

    return tell


class Counter:
    """Reports jobs as they finish, counted across windows: ``progress(done, total, response)``
    (with a fourth argument, the expected finish time, when the callback takes one), using the
    pace of each account (the Mailer's ``pacing.Pacer`` per settings)."""

    def __init__(self, progress: AnyProgress | None, total: int,
                 pacers: dict[ConnectionSettings, pacing.Pacer]) -> None:
        self.tell = progress_caller(progress)
        self.total, self.done = total, 0
        self.pacers = pacers
        self.mine: set[ConnectionSettings] = set()
        self.awaiting: Job | None = None  # the job a stream waits for,
        self.changed: asyncio.Future[None] | None = None  # set when it is final

    def pacer(self, settings: ConnectionSettings, count: int) -> pacing.Pacer:
        """The pacer of ``settings``, now with ``count`` more messages to send."""
        pacer = self.pacers.get(settings)
        if pacer is None:
            pacer = self.pacers[settings] = pacing.Pacer.from_setting(settings.rate)
        pacer.total += count
        self.mine.add(settings)
        return pacer

    def finish_at(self) -> float | None:
        """The expected finish time (``time.time()`` seconds), for the progress callback."""
        left = [self.pacers[s].finish_in() for s in self.mine]
        if any(x is None for x in left):
            return None
        return time.time() + max((x for x in left if x is not None), default=0.0)

    def wake(self) -> None:
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)

    def started(self) -> None:
        """A paced batch knows its finish time before anything is sent: say it."""
        if self.tell is not None and self.total and not self.done and any(
                self.pacers[s].interval for s in self.mine):
            self.tell(0, self.total, None, self.finish_at)

    def __call__(self, job: Job) -> None:
        self.done += 1
        pacer = self.pacers.get(job.settings) if job.settings is not None else None
        if pacer is not None and job.composed is not None:
            pacer.settled += 1
        if job is self.awaiting:
            self.wake()
        if self.tell is not None and job.response is not None:
            self.tell(self.done, self.total, job.response, self.finish_at)


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window

