"""The engine: ``Mailer`` composes, keeps (outbox), paces, delivers and retries messages.

It owns the event loop its connections live on, the batches (taken a window at a time) and the
outbox retry; its parts: ``_batch`` (jobs, the journal, progress), ``_attempts`` (one message:
pace, retries, the execution timeout), ``_resend`` (kept messages sent again) and
``_destinations`` (the transport of each destination, its password)."""

from __future__ import annotations

import asyncio
import logging
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
from typing import TYPE_CHECKING, Any, TypeVar

from . import _worker, pacing
from ._attempts import IN_DOUBT_RESULT, backoff, deliver, run_each, save_copy, size_of, workers_for
from ._batch import (
    AnyProgress,
    Counter,
    Group,
    Job,
    Progress,
    TimedProgress,
    fail_jobs,
    journal,
    new_jobs,
    screen,
    windows,
)
from ._destinations import (
    Destinations,
    Passwords,
    aclose_transport,
    check_destination,
    expect,
    message_check,
)
from ._requests import ConfigLike, load_settings, make_request, with_profile
from ._resend import destination_of, resend
from .config import ConnectionSettings, SmtpMagic
from .delivery import Envelope, Transport
from .errors import ConnectFailed, OutboxUnwritable, SmtpMagicError
from .models import Response, SendRequest
from .outbox import Outbox, history

if TYPE_CHECKING:
    from .mime import Composed

__all__ = ["IN_DOUBT_RESULT", "Mailer", "Prepared", "Progress", "TimedProgress", "backoff",
           "destination_of"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Prepared:
    """A batch on its way: every message composed, its credentials resolved and written to the
    outbox, so that nothing is lost from here on, even if the process dies before it is sent.
    ``await prepared.deliver()`` sends it; the Responses come back in request order."""

    def __init__(self, jobs: list[Job], groups: list[Group], report: Callable[[Job], None],
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
            fail_jobs(self.jobs, ConnectFailed(
                f"Unexpected error while sending ({type(exc).__name__}: {exc}); the message "
                "is kept in the outbox (%smtp_outbox --retry)."), self._report)
        finally:
            # Cancelled (e.g. the loop stopped): nothing may stay "pending" in this session's log.
            fail_jobs(self.jobs, ConnectFailed("The send was cancelled; the message is kept in the "
                                            "outbox (%smtp_outbox --retry)."), self._report)
            for group in self._groups:  # groups that never ran (cancelled before they began)
                group.batch.close()
            if self._own and self._mailer is not None:
                await self._mailer.aclose()
        return [job.response for job in self.jobs]  # type: ignore[misc]


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
        self._passwords = Passwords()
        self._pacers: dict[ConnectionSettings, pacing.Pacer] = {}
        self._plain: ConnectionSettings | None = None  # the last batch's snapshot (_settings_for)
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
            self._transport = Destinations(self._passwords)
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
            await aclose_transport(transport)

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
        if plain is not None:
            # Unchanged settings: the last batch's snapshot itself, so that the dicts keyed by
            # it (connections, pacers) find it by identity per message, not field by field.
            if plain == self._plain:
                plain = self._plain
            else:
                self._plain = plain
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
            for window in windows(requests, _WINDOW):
                yield [Response.from_error(exc) for _ in window]
            return
        report = Counter(progress, len(requests) if isinstance(requests, Sized) else 0,
                          self._pacers)
        start = 0
        for window in windows(requests, _WINDOW):
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
            failed = [Job(i, SendRequest(to=(), subject=""), None,
                           response=Response.from_error(exc)) for i in range(len(items))]
            return Prepared(failed, [], lambda job: None)
        report = Counter(progress, len(items), self._pacers)
        return self._prepare_window(items, 0, base, plain, timeout, report, composed, own=own)

    def _prepare_window(self, items: Sequence[Any], start: int, base: SmtpMagic,
                        plain: ConnectionSettings | None, timeout: float | None,
                        report: Counter, composed: Sequence[Composed] | None = None, *,
                        own: bool = False) -> Prepared:
        jobs: list[Job] = []
        groups: list[Group] = []
        try:
            jobs = new_jobs(start, items, base, timeout, plain, composed)
            by_settings: dict[ConnectionSettings, list[Job]] = {}
            for job in jobs:
                if job.response is not None:
                    report(job)
                else:
                    assert job.settings is not None
                    same = by_settings.get(job.settings)  # (setdefault: a new list a job)
                    if same is None:
                        by_settings[job.settings] = [job]
                    else:
                        same.append(job)
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
            kind = check_destination(settings)  # (Graph: its sign-in, and no Sent copy)
            if kind == "smtp" or settings.save_sent:
                password = self._passwords(settings)
        if settings.save_sent:
            from . import imap  # imaplib, only for those who keep a copy

            imap.check_settings(settings)
        return password

    def _open_group(self, jobs: list[Job], settings: ConnectionSettings,
                    progress: Counter) -> Group | None:
        """Resolve the password and write every message to the outbox (exit 1 for each message,
        before any connection, when either fails, and for a message the destination can never
        take, before it is written); None when nothing is left to deliver."""
        try:
            password = self._check_destination(settings)
        except SmtpMagicError as exc:
            fail_jobs(jobs, exc, progress)
            return None
        check = message_check(settings) if self._injected is None else None
        if check is not None:  # a message the destination can never take: exit 1, never kept
            jobs = screen(jobs, check, progress)
            if not jobs:
                return None
        if self._injected is None:
            expect(settings)  # (while the messages are written to the outbox)
        outbox = Outbox(settings.outbox_dir)
        try:
            batch = journal(jobs, outbox, progress, settings)
        except OSError as exc:
            fail_jobs(jobs, OutboxUnwritable(f"The outbox {str(outbox.path)!r} cannot be written "
                                         f"({exc.strerror or exc}), so the message was not sent."),
                  progress)
            return None
        folder = None
        if settings.save_sent:
            from .imap import SentFolder

            folder = SentFolder(settings, password)
        return Group(settings, jobs, outbox, batch, progress.pacer(settings, len(jobs)), folder)

    async def _run_group(self, group: Group, progress: Callable[[Job], None]) -> None:
        """Deliver jobs that share settings, each at the group's pace (the ``rate`` setting);
        the transport decides how many go at once (the ``connections`` setting, for SMTP)."""
        settings, outbox, pacer = group.settings, group.outbox, group.pacer
        route = self._route(settings)

        async def one(job: Job) -> None:
            composed, entry = job.composed, job.entry
            assert composed is not None and entry is not None and job.data is not None
            assert job.record is not None
            envelope = Envelope(composed.sender, composed.recipients, size_of(job.data),
                                composed.smtputf8, composed.message_id, settings)
            response = await deliver(envelope, job.data, entry, outbox, pacer, route)
            if group.folder is not None:
                response = await save_copy(group.folder, response, job.data)
            job.data = None  # sent: let a large message's bytes go
            job.record.finish(response)
            job.response = response
            progress(job)

        try:
            await run_each([job for job in group.jobs if job.response is None],
                        workers_for(settings), one)
        finally:
            group.batch.close()  # deleted when every message is settled; kept (pending) otherwise
            if group.folder is not None:
                await group.folder.close()

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
        return await resend(base, keys, in_doubt, check=self._check_destination,
                            pacers=self._pacers, route=self._route)


def _next_of(chunks: AsyncGenerator[list[Response], None]
             ) -> Callable[[Mailer], Awaitable[list[Response] | None]]:
    """What gets the next list of Responses (None at the end), for ``Mailer._call``."""

    async def next_chunk(_: Mailer) -> list[Response] | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    return next_chunk
