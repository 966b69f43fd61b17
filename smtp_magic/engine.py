"""The engine: ``Mailer`` composes, keeps (outbox), paces, delivers and retries messages."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import logging
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from . import _worker, pacing
from ._requests import ConfigLike, as_request, load_settings, make_request, with_profile
from .config import ConnectionSettings, SmtpMagic
from .credentials import resolve_password
from .delivery import Data, Envelope, Outcome, Transport
from .errors import (
    ConfigError,
    ConnectFailed,
    ExitCode,
    InDoubt,
    OutboxUnwritable,
    PartiallyRefused,
    Rejected,
    SmtpMagicError,
    TemporaryFailure,
)
from .models import Response, SendRequest
from .outbox import Batch, Outbox, OutboxEntry, SendRecord, history

if TYPE_CHECKING:
    from . import imap
    from .mime import Composed

__all__ = ["IN_DOUBT_RESULT", "Mailer", "Prepared", "Progress", "TimedProgress", "backoff",
           "destination_of"]

log = logging.getLogger(__name__)

T = TypeVar("T")

IN_DOUBT_RESULT = "in doubt: it may have been delivered"
# How an in-doubt message is reported: the end of one sentence.
IN_DOUBT_NOTE = ("it may or may not have been delivered, so it is kept in the outbox as in doubt "
                 "and not sent again unless asked (--retry --in-doubt).")


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


# -- composing one message --------------------------------------------------------------------------

def _prepare(request: SendRequest, settings: ConnectionSettings) -> Composed:
    """The message of ``request``, ready to send (the one place a message is made)."""
    from .stages import prepare  # the stages (and the email package), imported on the first send

    return prepare(request, settings)


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

    def __init__(self, when: float | None = None) -> None:
        self._when = when
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    def when(self) -> float | None:
        return self._when

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

    async def __aenter__(self) -> _Deadline:  # noqa: PYI034 - a final private class
        self._home = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        if self._when is not None:
            self.reschedule(self._when)
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+


def _deadline(when: float | None) -> Any:
    """A timeout at loop time ``when``, or armed later (``reschedule``) when None:
    ``asyncio.timeout_at`` where it exists."""
    return _timeout_at(when) if _timeout_at is not None else _Deadline(when)


# -- jobs: one request each ----------------------------------------------------------------------

@dataclass
class _Job:
    index: int
    request: SendRequest
    settings: ConnectionSettings | None
    composed: Composed | None = None
    response: Response | None = None
    record: SendRecord | None = None
    entry: OutboxEntry | None = None  # its place in the outbox, once written there
    data: Data | None = None


def _new_job(index: int, item: Any, base: SmtpMagic, timeout: float | None,
             plain: ConnectionSettings | None = None, composed: Composed | None = None) -> _Job:
    try:
        request, overrides = as_request(item)
        if timeout is not None:
            overrides = {**overrides, "timeout": timeout}
        settings = plain if plain is not None and not overrides else base.snapshot(overrides)
        job = _Job(index, request, settings)
        job.composed = composed if composed is not None else _prepare(request, settings)
    except SmtpMagicError as exc:
        request = item if isinstance(item, SendRequest) else SendRequest(to=(), subject="")
        job = _Job(index, request, None, response=Response.from_error(exc))
    composed = job.composed
    job.record = history.add(SendRecord(
        subject=composed.subject if composed else str(job.request.subject or ""),
        recipients=composed.recipients if composed else job.request.recipients,
        message_id=composed.message_id if composed else None,
    ))
    if job.response is not None:
        job.record.finish(job.response)
    return job


async def _save_copy(folder: imap.SentFolder, response: Response, data: Data) -> Response:
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


# What an outbox entry remembers of its settings, so that a retry goes where it was going.
_DESTINATION = ("host", "port", "security", "username", "auth", "profile", "transport")


def destination_of(settings: ConnectionSettings) -> dict[str, Any]:
    """Host, port, security, username, auth, profile and transport (with Graph's endpoint) of
    ``settings``: never a secret."""
    where = {name: getattr(settings, name) for name in _DESTINATION}
    if settings.transport == "graph":
        where["graph_endpoint"] = settings.graph_endpoint
    return where


def _journal(jobs: list[_Job], outbox: Outbox, progress: Callable[[_Job], None],
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


class _Passwords:
    """Passwords resolved once per settings (a prompt or a keyring look-up is not repeated)."""

    def __init__(self) -> None:
        self._found: dict[ConnectionSettings, str | None | SmtpMagicError] = {}

    def __call__(self, settings: ConnectionSettings) -> str | None:
        if settings not in self._found:
            try:
                self._found[settings] = resolve_password(settings)
            except SmtpMagicError as exc:
                self._found[settings] = exc
        found = self._found[settings]
        if isinstance(found, SmtpMagicError):
            raise found
        return found


_TRANSPORTS = ("smtp", "graph")


def _transport_kind(settings: ConnectionSettings) -> str:
    kind = getattr(settings, "transport", "smtp") or "smtp"
    if kind not in _TRANSPORTS:
        raise ConfigError(f"Unknown transport {kind!r}: the transport setting is 'smtp' or "
                          "'graph'.")
    return str(kind)


class _Destinations:
    """The default transport: each message goes by its settings' ``transport`` (SMTP, or
    Microsoft Graph), the SMTP ones over one pool of connections."""

    queues = True

    def __init__(self, passwords: Callable[[ConnectionSettings], str | None]) -> None:
        from .transport import SmtpTransport

        self.smtp = SmtpTransport(password=passwords)
        self.others: dict[ConnectionSettings, Any] = {}

    def check(self, settings: ConnectionSettings) -> None:
        """Exit 1 for a destination no transport can reach (before anything is kept)."""
        _transport_kind(settings)

    def route(self, settings: ConnectionSettings) -> Any:
        """The transport that takes messages to ``settings``."""
        if _transport_kind(settings) == "smtp":
            return self.smtp
        found = self.others.get(settings)
        if found is None:
            # Microsoft Graph, imported only by those who send through it.
            graph = importlib.import_module(f"{__package__}.graph")
            found = self.others[settings] = graph.GraphTransport(settings)
        return found

    async def deliver(self, envelope: Envelope, data: Any) -> Outcome | None:
        assert envelope.settings is not None
        transport = self.route(envelope.settings)
        if not getattr(transport, "queues", False):
            envelope.started()
        result: Outcome | None = await transport.deliver(envelope, data)
        return result

    def abandon(self) -> None:
        """Drop the SMTP connections at once: the loop they belong to is gone."""
        self.smtp.abandon()

    async def aclose(self) -> None:
        transports = [self.smtp, *self.others.values()]
        self.others.clear()
        await asyncio.gather(*(_aclose(t) for t in transports), return_exceptions=True)


async def _aclose(transport: Any) -> None:
    close = getattr(transport, "aclose", None)
    if close is not None:
        await close()


@dataclass
class _Group:
    """Jobs that share settings, ready to deliver: credentials resolved, messages journaled."""

    settings: ConnectionSettings
    jobs: list[_Job]
    outbox: Outbox
    batch: Batch
    pacer: pacing.Pacer | None = None  # the rate setting's pace, shared by the account
    folder: imap.SentFolder | None = None  # save_sent: one IMAP connection for the group


def _fail(jobs: list[_Job], exc: SmtpMagicError, progress: Callable[[_Job], None]) -> None:
    for job in jobs:
        if job.response is None:
            job.response = Response.from_error(
                exc, message_id=job.composed.message_id if job.composed else None)
            assert job.record is not None
            job.record.finish(job.response)
            progress(job)


def _progress_caller(progress: AnyProgress | None
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


class _Counter:
    """Reports jobs as they finish, counted across windows: ``progress(done, total, response)``
    (with a fourth argument, the expected finish time, when the callback takes one), using the
    pace of each account (the Mailer's ``pacing.Pacer`` per settings)."""

    def __init__(self, progress: AnyProgress | None, total: int,
                 pacers: dict[ConnectionSettings, pacing.Pacer]) -> None:
        self.tell = _progress_caller(progress)
        self.total, self.done = total, 0
        self.pacers = pacers
        self.mine: set[ConnectionSettings] = set()
        self.awaiting: _Job | None = None  # the job a stream waits for,
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

    def __call__(self, job: _Job) -> None:
        self.done += 1
        pacer = self.pacers.get(job.settings) if job.settings is not None else None
        if pacer is not None and job.composed is not None:
            pacer.settled += 1
        if job is self.awaiting:
            self.wake()
        if self.tell is not None and job.response is not None:
            self.tell(self.done, self.total, job.response, self.finish_at)


class Prepared:
    """A batch on its way: every message composed, its credentials resolved and written to the
    outbox, so that nothing is lost from here on, even if the process dies before it is sent.
    ``await prepared.deliver()`` sends it; the Responses come back in request order."""

    def __init__(self, jobs: list[_Job], groups: list[_Group], report: Callable[[_Job], None],
                 mailer: Mailer | None = None, *, own: bool = False) -> None:
        self.jobs, self._groups, self._report = jobs, groups, report
        self._mailer, self._own = mailer, own

    async def deliver(self) -> list[Response]:
        here = threading.get_ident()
        for job in self.jobs:
            if job.record is not None:
                job.record.thread = here
        try:
            if self._mailer is not None:
                mailer = self._mailer
                await asyncio.gather(*(mailer._run_group(g, self._report) for g in self._groups))
        except Exception as exc:  # noqa: BLE001 - a bug: the messages stay in the outbox
            _fail(self.jobs, ConnectFailed(
                f"Unexpected error while sending ({type(exc).__name__}: {exc}); the message "
                "is kept in the outbox (%smtp_outbox --retry)."), self._report)
        finally:
            # Cancelled (e.g. the loop stopped): nothing may stay "pending" in this session's log.
            _fail(self.jobs, ConnectFailed("The send was cancelled; the message is kept in the "
                                            "outbox (%smtp_outbox --retry)."), self._report)
            for group in self._groups:  # groups that never ran (cancelled before they began)
                group.batch.close()
            if self._own and self._mailer is not None:
                await self._mailer.aclose()
        return [job.response for job in self.jobs]  # type: ignore[misc]


def _windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window


# Requests are taken ``_WINDOW`` at a time (they may come from a generator): each window is
# composed, written to the outbox as one journal (every message on disk before any of the
# window is sent), and delivered; the connections (and the password) stay open from one window
# to the next. Memory is bounded by the window, not by the number of requests.
_WINDOW = 1000


# -- the Mailer ------------------------------------------------------------------------------------

class Mailer:
    """The engine, as one object: settings, connections, pacing, the outbox and an event loop.

    ``config`` is a settings object, a dict (JSON or trait names) or a JSON file path (None: the
    current settings), ``profile`` a saved profile applied over it. ``transport`` is any object
    with ``async deliver(envelope, data)`` (see ``smtp_magic.delivery``); by default each
    message goes over SMTP (or Microsoft Graph, the ``transport`` setting), over connections
    kept open from one call to the next until ``close()``. Use it as a context manager::

        with Mailer({"host": "smtp.example.org"}) as mailer:
            for response in mailer.iter_send_many(rows):
                ...

    Blocking calls work in scripts and in notebook cells; ``async`` twins run on the caller's
    loop. A blocking call made from code the Mailer itself runs (a progress callback) runs on a
    Mailer of its own instead of waiting for itself.
    """

    def __init__(self, config: ConfigLike = None, *, transport: Transport | None = None,
                 profile: str | None = None) -> None:
        self._config, self._profile = config, profile
        self._injected = transport
        self._transport: Any = transport
        self._passwords = _Passwords()
        self._pacers: dict[ConnectionSettings, pacing.Pacer] = {}
        self._home: asyncio.AbstractEventLoop | None = None  # where its connections live
        self._own_loop: asyncio.AbstractEventLoop | None = None  # for blocking calls, no thread
        self._running = 0  # calls in progress (a blocking call from inside one re-enters)

    def __repr__(self) -> str:
        return f"<Mailer {self._transport!r}>"

    # -- loops ------------------------------------------------------------------------------------

    def _twin(self) -> Mailer:
        return Mailer(self._config, transport=self._injected, profile=self._profile)

    def _call(self, make: Callable[[Mailer], Awaitable[T]]) -> T:
        """Run ``make(mailer)`` to completion from blocking code."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._home
        if loop is not None and (loop is running or (self._running and loop is self._own_loop)):
            # Called from code this Mailer runs (a progress callback): waiting for the Mailer
            # here would wait for itself. A Mailer of its own, in a thread of its own, does it.
            twin = self._twin()
            return _worker.run_on_own_thread(lambda: twin._call(make))
        if loop is not None and (loop.is_closed() or (
                loop is not self._own_loop and not loop.is_running())):
            self._rebind()  # its loop is gone (e.g. asyncio.run returned)
            loop = None
        if loop is None:
            if running is None:
                self._own_loop = loop = self._home = asyncio.new_event_loop()
            else:
                loop = self._home = _worker.worker_loop().loop
        if loop is self._own_loop:
            if running is None:
                return loop.run_until_complete(self._tracked(make))
            # A loop runs in this thread now: the Mailer's own loop runs in a thread for this call.
            own = loop
            return _worker.run_on_own_thread(lambda: own.run_until_complete(self._tracked(make)))
        return asyncio.run_coroutine_threadsafe(self._tracked(make), loop).result()  # type: ignore[arg-type]

    async def _on_loop(self, make: Callable[[Mailer], Awaitable[T]]) -> T:
        """Run ``make(mailer)`` on the Mailer's loop, from async code on any loop."""
        running = asyncio.get_running_loop()
        loop = self._home
        if loop is not None and loop is not running and (loop.is_closed() or not loop.is_running()):
            self._rebind()  # its loop is gone, or idle in this thread: the connections cannot follow
            loop = None
        if loop is None:
            self._home = loop = running
        if loop is running:
            return await self._tracked(make)
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._tracked(make), loop))  # type: ignore[arg-type]

    async def _tracked(self, make: Callable[[Mailer], Awaitable[T]]) -> T:
        self._running += 1
        try:
            return await make(self)
        finally:
            self._running -= 1

    def _rebind(self) -> None:
        """Leave the loop the Mailer was using: its connections cannot follow to another."""
        if self._injected is None and self._transport is not None:
            old, self._transport = self._transport, None
            old.abandon()
        own, self._own_loop = self._own_loop, None
        if own is not None and not own.is_running() and not own.is_closed():
            own.close()
        self._home = None

    def _route(self, settings: ConnectionSettings) -> tuple[Any, bool]:
        """The transport for messages to ``settings`` (the injected one, else SMTP or Graph by
        the transport setting), and whether it queues them (see ``delivery``)."""
        if self._transport is None:
            self._transport = _Destinations(self._passwords)
        transport = self._transport
        if self._injected is None:
            transport = transport.route(settings)
        return transport, bool(getattr(transport, "queues", False))

    # -- closing ----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connections (and the injected transport, if it has ``aclose``)."""
        transport = self._transport
        if transport is not None:
            if self._injected is None:
                self._transport = None
            await _aclose(transport)

    def close(self) -> None:
        """Close the connections (and the Mailer's own event loop, if it made one)."""
        loop = self._home
        if loop is not None and (loop.is_closed() or (
                loop is not self._own_loop and not loop.is_running())):
            self._rebind()  # their loop is gone: dropped
        if self._transport is not None:
            self._call(lambda m: m.aclose())
        own, self._own_loop = self._own_loop, None
        if own is not None and not own.is_running() and not own.is_closed():
            own.close()
        if self._home is own:
            self._home = None

    def __enter__(self) -> Mailer:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Mailer:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._on_loop(lambda m: m.aclose())

    # -- sending ----------------------------------------------------------------------------------

    def _settings_for(self, timeout: float | None) -> tuple[SmtpMagic, ConnectionSettings | None]:
        """The settings of a batch (the profile applied over the config), and their snapshot
        for requests that override nothing."""
        base = with_profile(load_settings(self._config), self._profile)
        try:
            plain = base.snapshot({"timeout": timeout} if timeout is not None else None)
        except SmtpMagicError:
            plain = None  # each request reports the problem itself
        return base, plain

    def send(
        self, to: str | Sequence[str], subject: str, body: str = "", *,
        cc: str | Sequence[str] | None = None, bcc: str | Sequence[str] | None = None,
        sender: str | None = None, attachments: Any = (), content_type: str | None = None,
        timeout: float | None = None, reply_to: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one message and wait for its Response (never raises for a failed send); the
        arguments are ``smtp_magic.send``'s."""
        return self._call(lambda m: m.send_async(
            to, subject, body, cc=cc, bcc=bcc, sender=sender, attachments=attachments,
            content_type=content_type, timeout=timeout, reply_to=reply_to, headers=headers))

    async def send_async(
        self, to: str | Sequence[str], subject: str, body: str = "", *,
        cc: str | Sequence[str] | None = None, bcc: str | Sequence[str] | None = None,
        sender: str | None = None, attachments: Any = (), content_type: str | None = None,
        timeout: float | None = None, reply_to: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """``send``, awaited."""
        return await self.send_request_async(
            lambda: make_request(to, subject, body, cc=cc, bcc=bcc, sender=sender,
                                 attachments=attachments, content_type=content_type,
                                 reply_to=reply_to, headers=headers), timeout=timeout)

    async def send_request_async(self, build: Callable[[], SendRequest], *,
                                 timeout: float | None = None) -> Response:
        """The Response of the one request ``build()`` makes (exit 1 if it cannot be made)."""
        try:
            request = build()
        except SmtpMagicError as exc:
            return Response.from_error(exc)
        (response,) = await self.send_many_async([request], timeout=timeout)
        return response

    def send_many(self, requests: Iterable[SendRequest | Mapping[str, Any]], *,
                  timeout: float | None = None, progress: AnyProgress | None = None
                  ) -> list[Response]:
        """One Response per request, in order (see ``send_many_async``)."""
        return self._call(lambda m: m.send_many_async(requests, timeout=timeout,
                                                      progress=progress))

    async def send_many_async(self, requests: Iterable[SendRequest | Mapping[str, Any]], *,
                              timeout: float | None = None, progress: AnyProgress | None = None
                              ) -> list[Response]:
        """Send many messages over a few reused connections; one Response per request, in
        order. ``requests``: dicts in the JSON request form or of ``send``'s keyword arguments,
        or ``SendRequest`` objects, from any iterable (see ``aiter_send_many``)."""
        return await self._on_loop(lambda m: m._send_many(requests, timeout, progress))

    async def _send_many(self, requests: Iterable[Any], timeout: float | None,
                         progress: AnyProgress | None) -> list[Response]:
        started = time.time()
        responses: list[Response] = []
        async for chunk in self._chunks(requests, timeout, progress, stream=False):
            responses += chunk
        log.info("%d of %d message(s) sent in %.2f s", sum(1 for r in responses if r.ok),
                 len(responses), time.time() - started)
        return responses

    def iter_send_many(self, requests: Iterable[SendRequest | Mapping[str, Any]], *,
                       timeout: float | None = None, progress: AnyProgress | None = None
                       ) -> Iterator[Response]:
        """Each request's Response, in request order, as soon as it is final: any number of
        requests (a generator is read a window at a time) in constant memory. Messages sent
        this way are not kept in the session's send log once their Response is given (those
        not sent are, as they are in the outbox)."""
        chunks = self._chunks(requests, timeout, progress, stream=True)
        next_chunk = _next_of(chunks)
        try:
            while (chunk := self._call(next_chunk)) is not None:
                yield from chunk
        finally:
            self._call(lambda _: chunks.aclose())

    async def aiter_send_many(self, requests: Iterable[SendRequest | Mapping[str, Any]], *,
                              timeout: float | None = None, progress: AnyProgress | None = None
                              ) -> AsyncIterator[Response]:
        """``iter_send_many``, asynchronously."""
        chunks = self._chunks(requests, timeout, progress, stream=True)
        next_chunk = _next_of(chunks)
        try:
            while (chunk := await self._on_loop(next_chunk)) is not None:
                for response in chunk:
                    yield response
        finally:
            await self._on_loop(lambda _: chunks.aclose())

    async def _chunks(self, requests: Iterable[Any], timeout: float | None,
                      progress: AnyProgress | None, *, stream: bool
                      ) -> AsyncGenerator[list[Response], None]:
        """The Responses in request order, a list at a time (on the Mailer's loop); a window
        is composed and journaled when the one before is done. ``stream``: each Response as
        soon as it and those before it are final (else a window's at once), and the send-log
        lines of the messages sent dropped once given."""
        try:
            base, plain = self._settings_for(timeout)
        except SmtpMagicError as exc:  # a bad configuration fails every request with exit 1
            for window in _windows(requests, _WINDOW):
                yield [Response.from_error(exc) for _ in window]
            return
        report = _Counter(progress, len(requests) if isinstance(requests, Sized) else 0,
                          self._pacers)
        start = 0
        for window in _windows(requests, _WINDOW):
            prepared = self._prepare_window(window, start, base, plain, timeout, report)
            start += len(window)
            if not stream:
                yield await prepared.deliver()
                continue
            delivering = asyncio.ensure_future(prepared.deliver())
            delivering.add_done_callback(lambda _: report.wake())
            try:
                given = 0
                jobs = prepared.jobs
                while given < len(jobs):
                    ready = given
                    while ready < len(jobs) and jobs[ready].response is not None:
                        ready += 1
                    if ready > given:
                        done = jobs[given:ready]
                        history.discard([job.record for job in done if job.record is not None
                                         and job.response is not None and job.response.ok])
                        for job in done:
                            job.composed = job.record = None  # reported: let the message go
                        yield [job.response for job in done]  # type: ignore[misc]
                        given = ready
                        continue
                    if delivering.done():
                        delivering.result()
                        if jobs[given].response is None:  # never: deliver() settles every job
                            raise RuntimeError("a message was left without a response")
                        continue
                    report.awaiting = jobs[given]  # woken when it is final (or all are)
                    report.changed = asyncio.get_running_loop().create_future()
                    await report.changed
                await delivering
            finally:
                report.awaiting = report.changed = None
                if not delivering.done():
                    delivering.cancel()
                    await asyncio.gather(delivering, return_exceptions=True)

    # -- preparing a window -----------------------------------------------------------------------

    def prepare(self, requests: Iterable[SendRequest | Mapping[str, Any]], *,
                timeout: float | None = None, progress: AnyProgress | None = None,
                composed: Sequence[Composed] | None = None, own: bool = False) -> Prepared:
        """Compose every message, resolve the credentials and write the batch to the outbox,
        now, in this thread; ``await .deliver()`` then sends it (on one loop). ``own``: the
        Prepared closes this Mailer's connections when it is done."""
        items = list(requests)
        try:
            base, plain = self._settings_for(timeout)
        except SmtpMagicError as exc:
            failed = [_Job(i, SendRequest(to=(), subject=""), None,
                           response=Response.from_error(exc)) for i in range(len(items))]
            return Prepared(failed, [], lambda job: None)
        report = _Counter(progress, len(items), self._pacers)
        return self._prepare_window(items, 0, base, plain, timeout, report, composed, own=own)

    def _prepare_window(self, items: Sequence[Any], start: int, base: SmtpMagic,
                        plain: ConnectionSettings | None, timeout: float | None,
                        report: _Counter, composed: Sequence[Composed] | None = None, *,
                        own: bool = False) -> Prepared:
        jobs: list[_Job] = []
        groups: list[_Group] = []
        try:
            for i, item in enumerate(items):
                jobs.append(_new_job(start + i, item, base, timeout, plain,
                                     composed[i] if composed is not None else None))
            by_settings: dict[ConnectionSettings, list[_Job]] = {}
            for job in jobs:
                if job.response is not None:
                    report(job)
                else:
                    assert job.settings is not None
                    by_settings.setdefault(job.settings, []).append(job)
            for settings, group_jobs in by_settings.items():
                group = self._open_group(group_jobs, settings, report)
                if group is not None:
                    groups.append(group)
            report.started()
        except BaseException:
            # Interrupted (or a bug) before anything was sent: these never became sends.
            for group in groups:
                for job in group.jobs:
                    if job.entry is not None:
                        group.outbox.remove(job.entry.key)
                group.batch.close()
            history.discard([job.record for job in jobs if job.record is not None])
            raise
        return Prepared(jobs, groups, report, self, own=own)

    def _check_destination(self, settings: ConnectionSettings) -> str | None:
        """Exit 1 now for what could never be sent: an unknown transport, a password that
        cannot be found, a Sent copy that could never be made. Returns the password."""
        password = None
        if self._injected is None:
            kind = _transport_kind(settings)
            if kind == "graph":  # the sign-in Graph needs, and no Sent copy (it files its own)
                importlib.import_module(f"{__package__}.graph").check_settings(settings)
            if kind == "smtp" or settings.save_sent:
                password = self._passwords(settings)
        if settings.save_sent:
            from . import imap  # imaplib, only for those who keep a copy

            imap.check_settings(settings)
        return password

    def _open_group(self, jobs: list[_Job], settings: ConnectionSettings,
                    progress: _Counter) -> _Group | None:
        """Resolve the password and write every message to the outbox (exit 1 for each message,
        before any connection, when either fails); None when nothing is left to deliver."""
        try:
            password = self._check_destination(settings)
        except SmtpMagicError as exc:
            _fail(jobs, exc, progress)
            return None
        outbox = Outbox(settings.outbox_dir)
        try:
            batch = _journal(jobs, outbox, progress, settings)
        except OSError as exc:
            _fail(jobs, OutboxUnwritable(f"The outbox {str(outbox.path)!r} cannot be written "
                                         f"({exc.strerror or exc}), so the message was not sent."),
                  progress)
            return None
        folder = None
        if settings.save_sent:
            from .imap import SentFolder

            folder = SentFolder(settings, password)
        return _Group(settings, jobs, outbox, batch, progress.pacer(settings, len(jobs)), folder)

    async def _run_group(self, group: _Group, progress: Callable[[_Job], None]) -> None:
        """Deliver jobs that share settings, each at the group's pace (the ``rate`` setting);
        the transport decides how many go at once (the ``connections`` setting, for SMTP)."""
        settings, outbox, pacer = group.settings, group.outbox, group.pacer
        route = self._route(settings)

        async def one(job: _Job) -> None:
            composed, entry = job.composed, job.entry
            assert composed is not None and entry is not None and job.data is not None
            assert job.record is not None
            envelope = Envelope(composed.sender, composed.recipients, _size(job.data),
                                composed.smtputf8, composed.message_id, settings)
            response = await self._deliver(envelope, job.data, entry, outbox, pacer, route)
            if group.folder is not None:
                response = await _save_copy(group.folder, response, job.data)
            job.data = None  # sent: let a large message's bytes go
            job.record.finish(response)
            job.response = response
            progress(job)

        try:
            await _each([job for job in group.jobs if job.response is None],
                        _workers(settings), one)
        finally:
            group.batch.close()  # deleted when every message is settled; kept (pending) otherwise
            if group.folder is not None:
                await group.folder.close()

    # -- one message: pace, attempts, timeout, outbox -----------------------------------------

    async def _deliver(self, envelope: Envelope, data: Data, entry: OutboxEntry, outbox: Outbox,
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
                if pacer is not None:
                    await pacer.wait(retry=throttled > 0)
                clock = time.monotonic()
                try:
                    outcome = await self._timed(envelope, data, settings, watch, route)
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
                            elapsed=elapsed, accepted=tuple(outcome.accepted))
        return Response(exitcode=ExitCode.SENT, message_id=message_id, elapsed=elapsed,
                        accepted=tuple(outcome.accepted))

    async def _timed(self, envelope: Envelope, data: Data, settings: ConnectionSettings,
                     watch: _Watch, route: tuple[Any, bool]) -> Outcome:
        """The attempts bounded by the execution timeout (``settings.timeout``: connecting and
        retries included; from when the transport starts on the message, if it queues it)."""
        watch.unconfirmed, watch.last = False, None
        envelope.stalled = None
        transport, queues = route
        loop = asyncio.get_running_loop()
        seconds = settings.timeout
        deadline = _deadline(None if queues else loop.time() + seconds)
        if queues:
            def started() -> None:  # the clock starts once, however many attempts follow
                if deadline.when() is None:
                    deadline.reschedule(loop.time() + seconds)

            envelope.on_started = started
        try:
            async with deadline:
                return await self._attempts(transport, envelope, data, settings, watch)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise _timed_out(settings, watch, envelope) from exc

    async def _attempts(self, transport: Any, envelope: Envelope, data: Data,
                        settings: ConnectionSettings, watch: _Watch) -> Outcome:
        """Deliver, retrying temporary failures (the whole message, or the recipients the
        server deferred) with ``backoff`` up to ``settings.attempts`` attempts in all. A
        throttling reply with nothing accepted is ``pacing.Throttled`` (the pace slows)."""
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
                    return Outcome(list(envelope.recipients))
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

    # -- the outbox: sending kept messages again ----------------------------------------------

    def retry_outbox(self, *, keys: Iterable[str] | None = None,
                     in_doubt: bool = False) -> list[Response]:
        """Blocking ``retry_outbox_async``."""
        return self._call(lambda m: m.retry_outbox_async(keys=keys, in_doubt=in_doubt))

    async def retry_outbox_async(self, *, keys: Iterable[str] | None = None,
                                 in_doubt: bool = False) -> list[Response]:
        """Resend kept messages (same bytes, same Message-ID), each to the server it was going
        to, over the same pooled connections as any send; see ``smtp_magic.retry_outbox``."""
        return await self._on_loop(lambda m: m._retry(keys, in_doubt))

    async def _retry(self, keys: Iterable[str] | None, in_doubt: bool) -> list[Response]:
        base = with_profile(load_settings(self._config), self._profile)
        outbox = Outbox(base.snapshot().outbox_dir)
        wanted = set(keys) if keys is not None else None
        entries = [e for e in outbox.entries()  # not one another send is working on right now
                   if (wanted is None or e.key in wanted) and _retryable(e, in_doubt)
                   and not outbox.busy(e.key)]
        if not entries:
            return []
        by_settings: dict[ConnectionSettings, list[OutboxEntry]] = {}
        responses: dict[str, Response] = {}
        for entry in entries:
            try:
                by_settings.setdefault(_retry_settings(base, entry.destination), []).append(entry)
            except SmtpMagicError as exc:  # e.g. its profile is gone: nothing is tried
                responses[entry.key] = _not_retried(entry, exc)
        results = await asyncio.gather(*(self._retry_group(settings, group, outbox)
                                         for settings, group in by_settings.items()))
        for found in results:
            responses.update(found)
        return [responses[e.key] for e in entries]

    async def _retry_group(self, settings: ConnectionSettings, entries: list[OutboxEntry],
                           outbox: Outbox) -> dict[str, Response]:
        """Resend kept messages that go to the same place, over the transport's connections,
        each read from disk as it goes out."""
        folder = None
        try:
            password = self._check_destination(settings)
            if settings.save_sent:
                from .imap import SentFolder

                folder = SentFolder(settings, password)
        except SmtpMagicError as exc:  # nothing was tried: the messages stay as they are
            return {entry.key: _not_retried(entry, exc) for entry in entries}
        pacer = self._pacers.get(settings)
        if pacer is None:
            pacer = self._pacers[settings] = pacing.Pacer.from_setting(settings.rate)
        pacer.total += len(entries)
        route = self._route(settings)
        here = threading.get_ident()

        async def one(entry: OutboxEntry) -> tuple[str, Response]:
            addresses = (entry.sender, *entry.recipients)
            record = history.add(SendRecord(entry.subject, entry.recipients, entry.message_id,
                                            outbox_key=entry.key, thread=here))
            try:
                data = outbox.payload(entry.key)
            except (KeyError, OSError) as exc:
                response = Response.from_error(ConnectFailed(
                    f"The kept message {entry.key} cannot be read ({exc})."),
                    message_id=entry.message_id)
                record.finish(response)
                return entry.key, response
            envelope = Envelope(entry.sender, entry.recipients, _size(data),
                                not all(a.isascii() for a in addresses), entry.message_id,
                                settings)
            response = await self._deliver(envelope, data, entry, outbox, pacer, route)
            # A partly sent message was copied when its first part went out.
            if folder is not None and entry.status != "partly sent":
                response = await _save_copy(folder, response, data)
            pacer.settled += 1
            record.finish(response)
            return entry.key, response

        try:
            found: dict[str, Response] = {}


            async def keep(entry: OutboxEntry) -> None:
                key, response = await one(entry)
                found[key] = response

            await _each(entries, _workers(settings), keep)
            return found
        finally:
            if folder is not None:
                await folder.close()


def _next_of(chunks: AsyncGenerator[list[Response], None]
             ) -> Callable[[Mailer], Awaitable[list[Response] | None]]:
    """What gets the next list of Responses (None at the end), for ``Mailer._call``."""

    async def next_chunk(_: Mailer) -> list[Response] | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    return next_chunk


def _workers(settings: ConnectionSettings) -> int:
    """Messages of one destination on their way at once: one per connection, one more per
    connection waiting for it (the SMTP transport sends its envelope ahead), and one that may
    be pausing before a retry."""
    return 2 * max(1, settings.connections) + 1


async def _each(items: Sequence[T], workers: int, work: Callable[[T], Awaitable[None]]) -> None:
    """``work(item)`` for every item, in order, at most ``workers`` at a time: each message
    waits for its pace just before it goes (a throttled server slows the ones after it)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(items)))))


def _size(data: Data) -> int:
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


def _retry_settings(base: SmtpMagic, destination: Mapping[str, Any] | None) -> ConnectionSettings:
    """The settings a kept message is resent with: the account it was going to, as it is set
    now. ``base`` is the current settings (or the config given).

    - a message sent with a profile: that profile as saved now;
    - a message for the server, login and transport of ``base``: ``base`` (a port or security
      fixed since applies, and so does its password);
    - any other: its recorded host, port, security, login, auth and transport, with the
      password from the usual sources for that server (the keyring's ``username@host``); never
      the password of another account.
    """
    if not destination:  # kept by an older version: the current settings, as then
        return base.snapshot()
    profile = destination.get("profile")
    if profile:
        return (base if base.profile == profile else with_profile(base, str(profile))).snapshot()
    if (destination.get("host"), destination.get("username"), destination.get(
            "transport", "smtp")) == (base.host, base.username, base.transport):
        return base.snapshot()
    values: dict[str, Any] = {k: destination.get(k) for k in (*_DESTINATION, "graph_endpoint")
                              if k != "profile"}
    values = {k: v for k, v in values.items() if v is not None or k == "username"}
    return base.snapshot({**values, "password": None, "password_env": None})


def _retryable(entry: OutboxEntry, in_doubt: bool) -> bool:
    return entry.status != "in doubt" or in_doubt


def _not_retried(entry: OutboxEntry, exc: SmtpMagicError) -> Response:
    record = history.add(SendRecord(entry.subject, entry.recipients, entry.message_id,
                                    outbox_key=entry.key))
    record.finish(Response.from_error(exc, message_id=entry.message_id))
    return record.response  # type: ignore[return-value]
