"""The public Python API: send, send_many, the seed's connector, outbox retry, connection check."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import itertools
import logging
import os
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from . import _dkim, pacing, transport
from .attachments import AttachmentSpec, resolve_all
from .config import ALIASES, SETTINGS, ConnectionSettings, SmtpMagic, current
from .credentials import resolve_password
from .errors import (
    ConnectFailed,
    ExitCode,
    InDoubt,
    InvalidRequest,
    OutboxUnwritable,
    SmtpMagicError,
    did_you_mean,
)
from .models import Response, SendRequest
from .outbox import Batch, Outbox, OutboxEntry, SendRecord, history

if TYPE_CHECKING:
    from . import imap
    from .deliverability import DeliverabilityReport
    from .mime import Composed

__all__ = [
    "Connector",
    "Prepared",
    "SendHandle",
    "build_message",
    "check",
    "check_address",
    "check_async",
    "check_deliverability",
    "connector",
    "load_settings",
    "oauth2_login",
    "oauth2_logout",
    "oauth2_status",
    "prepare_many",
    "request_from_dict",
    "retry_outbox",
    "retry_outbox_async",
    "run_blocking",
    "send",
    "send_async",
    "send_many",
    "send_many_async",
    "send_notebook",
    "send_notebook_async",
    "submit_many",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
ConfigLike = SmtpMagic | Mapping[str, Any] | str | os.PathLike[str] | None
AttachmentLike = AttachmentSpec
# progress(done, total, response) after each message; a callback with a fourth parameter also
# gets the expected finish time (time.time() seconds, or None), and a first call (0, total,
# None, finish) before anything is sent when the batch is paced (the rate setting).
Progress = Callable[..., None]

# The seed's request parameters (plus a few natural spellings) and what they map to.
_REQUEST_FIELDS = {
    "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject", "body": "body",
    "from": "sender", "sender": "sender", "attachments": "attachments",
    "content-type": "content_type", "content_type": "content_type", "headers": "headers",
    "unsubscribe": "unsubscribe", "reply_to": "reply_to", "reply-to": "reply_to",
}
# Any other setting (or its seed name: target, port, username, password...) in a request
# changes the connection for that one send.
_CONNECTION_FIELDS = frozenset(SETTINGS) | frozenset(ALIASES)
_KNOWN_FIELDS = frozenset({*_REQUEST_FIELDS, *_CONNECTION_FIELDS, "action", "template"})


# -- settings and requests ------------------------------------------------------------------------

def load_settings(config: ConfigLike = None) -> SmtpMagic:
    """Settings from ``config``: an SmtpMagic, a dict (seed or trait names) or a JSON file path.

    A dict or a file is layered over the current settings (defaults < IPython config <
    environment), so an environment password still applies unless the file sets another.
    """
    if config is None:
        return current()
    if isinstance(config, SmtpMagic):
        return config
    if isinstance(config, Mapping):
        return current().copy().update(config, source="the connector configuration")
    if isinstance(config, (str, os.PathLike)):
        return current().copy().load_file(config)
    raise InvalidRequest(f"config must be settings, a dict or a JSON file path, not {type(config).__name__}.")


def _with_profile(settings: SmtpMagic, profile: str | None) -> SmtpMagic:
    """``settings`` with the saved profile ``profile`` applied (a copy), or as they are."""
    if not profile:
        return settings
    return settings.copy().update({"profile": profile}, source="profile=")


def _make_request(
    to: Any, subject: Any, body: Any = "", *, cc: Any = None, bcc: Any = None, sender: Any = None,
    attachments: Any = (), content_type: str | None = None, headers: Any = (),
    unsubscribe: str | None = None, reply_to: Any = None,
) -> SendRequest:
    # Values of the wrong JSON type must be exit 1, not a TypeError from deep inside.
    for name, value in (("to", to), ("cc", cc), ("bcc", bcc), ("reply_to", reply_to)):
        if value is not None and not isinstance(value, (str, Iterable)):
            raise InvalidRequest(f"{name!r} must be an address or a list of addresses, not "
                                 f"{type(value).__name__}.")
    if headers is not None and not isinstance(headers, Iterable):
        raise InvalidRequest(f"'headers' must map header names to values, not {type(headers).__name__}.")
    pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers or ())
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InvalidRequest("'headers' must map header names (text) to values, e.g. "
                                 "{\"X-Report\": \"weekly\"}.")
    if content_type is not None and not isinstance(content_type, str):
        raise InvalidRequest(f"The content type must be text, not {type(content_type).__name__}.")
    return SendRequest(
        to=to, subject=subject, body=body, cc=cc, bcc=bcc, sender=sender,
        attachments=resolve_all(attachments), content_type=content_type,
        headers=pairs, unsubscribe=unsubscribe, reply_to=reply_to,
    )


def request_from_dict(data: Mapping[str, Any]) -> tuple[SendRequest, dict[str, Any]]:
    """A request in the seed's JSON format -> (SendRequest, connection overrides)."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("The request must be a JSON object.")
    action = data.get("action", "send")
    if action != "send":
        raise InvalidRequest(f"Unknown action {action!r}: the only action is 'send'.")
    fields: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if key == "action":
            continue
        if key == "template":  # a request's body is sent as written: never a Jinja template
            if value is not False:
                raise InvalidRequest("A request's body is sent as written (no Jinja), so "
                                     "'template' can only be false; fill a template with "
                                     "smtp_magic.render.render_template first.")
            continue
        if key in _REQUEST_FIELDS:
            fields[_REQUEST_FIELDS[key]] = value
        elif key in _CONNECTION_FIELDS:
            overrides[key] = value
        else:
            raise InvalidRequest(f"Unknown request parameter {key!r}"
                                 f"{did_you_mean(str(key), _KNOWN_FIELDS)}")
    for required in ("to", "subject"):
        if required not in fields:
            raise InvalidRequest(f"The request has no {required!r} (it is required).")
    return _make_request(**fields), overrides


def _as_request(item: SendRequest | Mapping[str, Any]) -> tuple[SendRequest, dict[str, Any]]:
    if isinstance(item, SendRequest):
        return item, {}
    if isinstance(item, Mapping):
        if any(k in item for k in ("from", "content-type", "action")) or not (
            set(item) <= {"to", "subject", "body", "cc", "bcc", "sender", "attachments",
                          "content_type", "headers", "unsubscribe", "reply_to"}
        ):
            return request_from_dict(item)
        return _make_request(**item), {}
    raise InvalidRequest(f"A request must be a dict or a SendRequest, not {type(item).__name__}.")


# -- the engine: windows of requests composed, journaled, then delivered over reused connections --
#
# Requests are taken ``_WINDOW`` at a time (they may come from a generator): each window is
# composed, written to the outbox as one journal (every message on disk before any of the
# window is sent), and delivered; the connections (and the password) stay open from one window
# to the next. Memory is bounded by the window, not by the number of requests; what is kept
# for every request is its Response (and its line in the session's send log).

_WINDOW = 1000

@dataclass
class _Job:
    index: int
    request: SendRequest
    settings: ConnectionSettings | None
    composed: Composed | None = None
    response: Response | None = None
    record: SendRecord | None = None
    entry: OutboxEntry | None = None  # its place in the outbox, once written there
    data: bytes | transport.Payload | None = None


def _prepare(request: SendRequest, settings: ConnectionSettings) -> Composed:
    from .stages import prepare  # the composer (and the email package), imported on the first send

    return prepare(request, settings)


def _new_job(index: int, item: Any, base: SmtpMagic, timeout: float | None,
             plain: ConnectionSettings | None = None, composed: Composed | None = None) -> _Job:
    try:
        request, overrides = _as_request(item)
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


async def _deliver_job(job: _Job, session: transport.Session, outbox: Outbox,
                       pacer: pacing.Pacer | None = None,
                       folder: imap.SentFolder | None = None) -> Response:
    composed, entry = job.composed, job.entry
    assert composed is not None and job.record is not None and entry is not None
    assert job.data is not None
    response = await _deliver_bytes(session, composed, job.data, entry, outbox, pacer)
    if folder is not None:
        response = await _save_copy(folder, response, job.data)
    job.data = None  # sent: let a large message's bytes go
    job.record.finish(response)
    return response


async def _save_copy(folder: imap.SentFolder, response: Response,
                     data: bytes | transport.Payload) -> Response:
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


def _upcoming(job: _Job) -> transport.Upcoming:
    composed = job.composed
    assert composed is not None and job.data is not None
    size = len(job.data) if isinstance(job.data, bytes) else job.data.size
    return transport.Upcoming(composed.sender, composed.recipients, size, composed.smtputf8)


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


async def _deliver_paced(
    session: transport.Session, envelope: transport.Envelope, data: bytes | transport.Payload,
    pacer: pacing.Pacer | None, clock: list[float],
) -> transport.Outcome:
    """``transport.deliver`` at the pacer's pace. A throttled message slows the pacer down and
    is sent again at the slower pace (up to ``pacing.MAX_THROTTLED`` times), without spending
    its retries. ``clock[0]`` is set to when the last attempt started (after the wait)."""
    throttled = 0
    while True:
        if pacer is not None:
            await pacer.wait(retry=throttled > 0)
        clock[0] = time.monotonic()
        try:
            outcome = await transport.deliver(session, envelope, data)
        except pacing.Throttled as exc:
            throttled += 1
            if pacer is None or throttled > pacing.MAX_THROTTLED:
                raise pacing.Throttled(
                    f"{exc.message.rstrip('.')}, still after {throttled} tries at a slower pace; "
                    "the message is kept in the outbox.",
                    refused=exc.refused, code=exc.code, reply=exc.reply) from exc
            pacer.throttled(exc.reply, exc.retry_after)  # Graph's Retry-After, if it said
            session.upcoming = None  # paced from now on: no envelope goes out ahead of time
            if session.conversation is not None:
                session.conversation.note(f"throttled ({exc.reply}); sending again at "
                                          f"{pacer.interval:.2f} s per message")
            continue
        if pacer is not None:
            pacer.succeeded()
        return outcome


async def _deliver_bytes(
    session: transport.Session, envelope: transport.Envelope, data: bytes | transport.Payload,
    entry: OutboxEntry, outbox: Outbox, pacer: pacing.Pacer | None = None,
) -> Response:
    """Deliver (at the pacer's pace), then settle the outbox entry: removed once confirmed,
    else marked failed. ``elapsed`` does not count the wait for the pace."""
    message_id = entry.message_id
    clock = [time.monotonic()]

    def mark(sent: bool) -> None:  # the journal knows when the final "." goes out
        if sent:
            outbox.sending(entry)
        else:
            outbox.answered(entry)

    session.mark = mark
    try:
        outcome = await _deliver_paced(session, envelope, data, pacer, clock)
    except SmtpMagicError as exc:
        in_doubt = isinstance(exc, InDoubt) or session.unconfirmed
        response = Response.from_error(
            exc, message_id=message_id, elapsed=time.monotonic() - clock[0],
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
        session.abort()
        in_doubt = session.unconfirmed
        response = Response(
            exitcode=ExitCode.CONNECT, message=f"Unexpected error while sending ({type(exc).__name__}: {exc}).",
            message_id=message_id, elapsed=time.monotonic() - clock[0],
            result=IN_DOUBT_RESULT if in_doubt else "",
        )
        outbox.mark_failed(entry, response, in_doubt=in_doubt)
        return response
    finally:
        session.mark = None
    elapsed = time.monotonic() - clock[0]
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


IN_DOUBT_RESULT = "in doubt: it may have been delivered"


class _Pool:
    """The connections and passwords of one bulk send, kept from one window to the next."""

    def __init__(self) -> None:
        self._idle: dict[ConnectionSettings, list[transport.Session]] = {}
        self._passwords: dict[ConnectionSettings, str | None | SmtpMagicError] = {}

    def password(self, settings: ConnectionSettings) -> str | None:
        """Resolved once per settings (a prompt or a keyring look-up is not repeated)."""
        if settings not in self._passwords:
            try:
                self._passwords[settings] = resolve_password(settings)
            except SmtpMagicError as exc:
                self._passwords[settings] = exc
        found = self._passwords[settings]
        if isinstance(found, SmtpMagicError):
            raise found
        return found

    def take(self, settings: ConnectionSettings, password: str | None) -> transport.Session:
        idle = self._idle.get(settings)
        return idle.pop() if idle else transport.Session(settings, password)

    def give(self, session: transport.Session) -> None:
        self._idle.setdefault(session.settings, []).append(session)

    async def close(self) -> None:
        sessions = [s for idle in self._idle.values() for s in idle]
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@dataclass
class _Group:
    """Jobs that share settings, ready to deliver: credentials resolved, messages journaled."""

    settings: ConnectionSettings
    jobs: list[_Job]
    password: str | None
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


def _open_group(jobs: list[_Job], settings: ConnectionSettings,
                progress: _Counter, pool: _Pool) -> _Group | None:
    """Resolve the password and write every message to the outbox (exit 1 for each message,
    before any connection, when either fails); None when nothing is left to deliver."""
    try:
        password = pool.password(settings)
        if settings.save_sent:  # a Sent copy that could never be made: exit 1 now
            from . import imap  # imaplib, only for those who keep a copy

            imap.check_settings(settings)
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
    return _Group(settings, jobs, password, outbox, batch, progress.pacer(settings, len(jobs)),
                  folder)


async def _run_group(group: _Group, progress: Callable[[_Job], None], pool: _Pool) -> None:
    """Deliver jobs that share settings over at most ``settings.connections`` connections,
    each message at the group's pace (the ``rate`` setting)."""
    settings, password, outbox, pacer = group.settings, group.password, group.outbox, group.pacer
    queue = [job for job in reversed(group.jobs) if job.response is None]

    async def worker() -> None:
        session = pool.take(settings, password)
        job = queue.pop() if queue else None
        try:
            while job is not None:
                # The next message is this connection's from now on; unpaced, its envelope
                # can go out with the end of this one's data (transport.Session.upcoming).
                after = queue.pop() if queue else None
                paced = pacer is not None and pacer.interval > 0
                session.upcoming = _upcoming(after) if after is not None and not paced else None
                job.response = await _deliver_job(job, session, outbox, pacer, group.folder)
                progress(job)
                job = after
        finally:
            session.upcoming = None
            pool.give(session)  # closed by the pool when the whole send is done

    try:
        workers = min(settings.connections, len(queue))
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        group.batch.close()  # deleted when every message is settled; kept (pending) otherwise
        if group.folder is not None:
            await group.folder.close()


class _Counter:
    """Reports jobs as they finish, counted across windows: ``progress(done, total, response)``
    (with a fourth argument, the expected finish time, when the callback takes one), and keeps
    the pace of each account (one ``pacing.Pacer`` per settings, shared by its messages)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.tell = _progress_caller(progress)
        self.total, self.done = total, 0
        self.pacers: dict[ConnectionSettings, pacing.Pacer] = {}

    def pacer(self, settings: ConnectionSettings, count: int) -> pacing.Pacer:
        """The pacer of ``settings``, now with ``count`` more messages to send."""
        pacer = self.pacers.get(settings)
        if pacer is None:
            pacer = self.pacers[settings] = pacing.Pacer.from_setting(settings.rate)
        pacer.total += count
        return pacer

    def finish_at(self) -> float | None:
        """The expected finish time (``time.time()`` seconds), for the progress callback."""
        left = [p.finish_in() for p in self.pacers.values()]
        if any(x is None for x in left):
            return None
        return time.time() + max((x for x in left if x is not None), default=0.0)

    def started(self) -> None:
        """A paced batch knows its finish time before anything is sent: say it."""
        if self.tell is not None and self.total and not self.done and any(
                p.interval for p in self.pacers.values()):
            self.tell(0, self.total, None, self.finish_at)

    def __call__(self, job: _Job) -> None:
        self.done += 1
        pacer = self.pacers.get(job.settings) if job.settings is not None else None
        if pacer is not None and job.composed is not None:
            pacer.settled += 1
        if self.tell is not None and job.response is not None:
            self.tell(self.done, self.total, job.response, self.finish_at)


class Prepared:
    """A batch on its way: every message composed, its credentials resolved and written to the
    outbox, so that nothing is lost from here on, even if the process dies before it is sent.
    ``await prepared.deliver()`` sends it; the Responses come back in request order."""

    def __init__(self, jobs: list[_Job], groups: list[_Group], report: Callable[[_Job], None],
                 pool: _Pool | None = None) -> None:
        self.jobs, self._groups, self._report = jobs, groups, report
        self._pool, self._own_pool = pool or _Pool(), pool is None

    async def deliver(self) -> list[Response]:
        here = threading.get_ident()
        for job in self.jobs:
            if job.record is not None:
                job.record.thread = here
        try:
            await asyncio.gather(*(_run_group(g, self._report, self._pool) for g in self._groups))
        except Exception as exc:  # noqa: BLE001 - a bug: the messages stay in the outbox
            _fail(self.jobs, ConnectFailed(
                f"Unexpected error while sending ({type(exc).__name__}: {exc}); the message "
                "is kept in the outbox (%smtp_outbox --retry)."), self._report)
        finally:
            # Cancelled (e.g. the loop stopped): nothing may stay "pending" in this session's log.
            _fail(self.jobs, ConnectFailed("The send was cancelled; the message is kept in the "
                                            "outbox (%smtp_outbox --retry)."), self._report)
            if self._own_pool:
                await self._pool.close()
        return [job.response for job in self.jobs]  # type: ignore[misc]


def _settings_for(config: ConfigLike, timeout: float | None, profile: str | None = None
                  ) -> tuple[SmtpMagic, ConnectionSettings | None]:
    """The settings of a batch (``profile`` applied over ``config``), and their snapshot for
    requests that override nothing."""
    base = _with_profile(load_settings(config), profile)
    try:
        plain = base.snapshot({"timeout": timeout} if timeout is not None else None)
    except SmtpMagicError:
        plain = None  # each request reports the problem itself
    return base, plain


def _prepare_window(items: Sequence[Any], start: int, base: SmtpMagic,
                    plain: ConnectionSettings | None, timeout: float | None, report: _Counter,
                    pool: _Pool | None, composed: Sequence[Composed] | None = None) -> Prepared:
    """Compose ``items``, resolve their credentials and journal them (see ``prepare_many``)."""
    jobs: list[_Job] = []
    groups: list[_Group] = []
    group_pool = pool or _Pool()
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
            group = _open_group(group_jobs, settings, report, group_pool)
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
    return Prepared(jobs, groups, report, group_pool if pool is not None else None)


def _failed_batch(count: int, exc: SmtpMagicError) -> Prepared:
    failed = [_Job(i, SendRequest(to=(), subject=""), None, response=Response.from_error(exc))
              for i in range(count)]
    return Prepared(failed, [], lambda job: None)


def prepare_many(
    requests: Iterable[SendRequest | Mapping[str, Any]], *, config: ConfigLike = None,
    timeout: float | None = None, progress: Progress | None = None,
    composed: Sequence[Composed] | None = None,
) -> Prepared:
    """Compose every message, resolve the credentials and write the batch to the outbox, now,
    in this thread; then ``await .deliver()`` (or ``submit_many``) sends it.

    ``composed``: the messages ``build_message`` already made from these requests with the same
    config (a preview or a validation pass), so they are not composed twice.
    """
    items = list(requests)
    try:
        base, plain = _settings_for(config, timeout)
    except SmtpMagicError as exc:  # a bad configuration fails every request with exit 1
        return _failed_batch(len(items), exc)
    return _prepare_window(items, 0, base, plain, timeout, _Counter(progress, len(items)), None,
                           composed)


def submit_many(
    requests: Iterable[SendRequest | Mapping[str, Any]], *, config: ConfigLike = None,
    timeout: float | None = None, progress: Progress | None = None,
    composed: Sequence[Composed] | None = None,
) -> concurrent.futures.Future[list[Response]]:
    """Start sending on the worker loop and return at once. By then every message is in the
    outbox (``prepare_many``): a kernel restart right after this returns loses nothing."""
    prepared = prepare_many(requests, config=config, timeout=timeout, progress=progress,
                            composed=composed)
    return worker_loop().submit(prepared.deliver())


async def send_many_async(
    requests: Iterable[SendRequest | Mapping[str, Any]], *, config: ConfigLike = None,
    timeout: float | None = None, progress: Progress | None = None, profile: str | None = None,
) -> list[Response]:
    """Send many messages over a few reused connections; one Response per request, in order.

    ``requests`` are dicts in the seed's request format (``to``, ``from``, ``subject``, ``body``,
    ``cc``, ``bcc``, ``attachments``, ``content-type``...), dicts of ``send``'s keyword arguments,
    or ``SendRequest`` objects, in a list or from any iterable (a generator is consumed a window
    at a time, each window composed and written to the outbox before it is sent, so memory does
    not grow with the number of messages). Invalid requests get exit code 1 without stopping
    the others. ``profile`` applies a saved profile over ``config``. With the ``rate`` setting
    the messages go out evenly paced. ``progress(done, total, response)`` is called after each
    message (``total`` is 0 when ``requests`` has no length); a callback with a fourth
    parameter also gets the expected finish time (``time.time()`` seconds or None), first
    before anything is sent when the batch is paced.
    """
    try:
        base, plain = _settings_for(config, timeout, profile)
    except SmtpMagicError as exc:  # a bad configuration fails every request with exit 1
        return [Response.from_error(exc) for _ in requests]
    report = _Counter(progress, len(requests) if isinstance(requests, Sized) else 0)
    responses: list[Response] = []
    pool = _Pool()
    started = time.time()
    try:
        start = 0
        for window in _windows(requests, _WINDOW):
            prepared = _prepare_window(window, start, base, plain, timeout, report, pool)
            responses += await prepared.deliver()
            start += len(window)
    finally:
        await pool.close()
    log.info("%d of %d message(s) sent in %.2f s", sum(1 for r in responses if r.ok),
             len(responses), time.time() - started)
    return responses


def _windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window


def _progress_caller(progress: Progress | None
                     ) -> Callable[[int, int, Response | None, Callable[[], float | None]], None] | None:
    """Call ``progress(done, total, response)``, or with a fourth argument, the expected finish
    time (``time.time()`` seconds or None), when the callback takes one."""
    if progress is None:
        return None
    try:
        inspect.signature(progress).bind(0, 0, None, None)
    except TypeError:
        takes_eta = False
    except ValueError:  # no signature (a builtin): the documented three arguments
        takes_eta = False
    else:
        takes_eta = True

    def tell(done: int, total: int, response: Response | None,
             finish_at: Callable[[], float | None]) -> None:
        if takes_eta:
            progress(done, total, response, finish_at())  # type: ignore[call-arg]
        elif response is not None:
            progress(done, total, response)

    return tell


async def send_async(
    to: str | Sequence[str], subject: str, body: str = "", *, cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None, sender: str | None = None,
    attachments: Iterable[AttachmentLike] | AttachmentLike = (), content_type: str | None = None,
    config: ConfigLike = None, timeout: float | None = None, profile: str | None = None,
    reply_to: str | Sequence[str] | None = None, headers: Mapping[str, str] | None = None,
) -> Response:
    """Send one message; returns its Response (never raises for a failed send)."""
    return await _send_one(
        lambda: _make_request(to, subject, body, cc=cc, bcc=bcc, sender=sender,
                              attachments=attachments, content_type=content_type,
                              reply_to=reply_to, headers=headers),
        config=config, timeout=timeout, profile=profile)


async def _send_one(build: Callable[[], SendRequest], *, config: ConfigLike,
                    timeout: float | None, profile: str | None) -> Response:
    """The Response of the one request ``build()`` makes (exit 1 if it cannot be made)."""
    try:
        request = build()
    except SmtpMagicError as exc:
        return Response.from_error(exc)
    (response,) = await send_many_async([request], config=config, timeout=timeout,
                                        profile=profile)
    return response


async def send_notebook_async(
    notebook: str | os.PathLike[str] | Mapping[str, Any], to: str | Sequence[str], *,
    subject: str | None = None, cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None, sender: str | None = None, no_input: bool = False,
    attach_notebook: bool = False, attachments: Iterable[AttachmentLike] | AttachmentLike = (),
    config: ConfigLike = None, profile: str | None = None, timeout: float | None = None,
    reply_to: str | Sequence[str] | None = None,
) -> Response:
    """Email an executed notebook (see ``send_notebook``); returns its Response."""
    from .nbreport import notebook_request

    return await _send_one(
        lambda: notebook_request(notebook, to, subject=subject, cc=cc, bcc=bcc, sender=sender,
                                 no_input=no_input, attach_notebook=attach_notebook,
                                 attachments=resolve_all(attachments), reply_to=reply_to),
        config=config, timeout=timeout, profile=profile)


def send_notebook(
    notebook: str | os.PathLike[str] | Mapping[str, Any], to: str | Sequence[str], *,
    subject: str | None = None, cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None, sender: str | None = None, no_input: bool = False,
    attach_notebook: bool = False, attachments: Iterable[AttachmentLike] | AttachmentLike = (),
    config: ConfigLike = None, profile: str | None = None, timeout: float | None = None,
    reply_to: str | Sequence[str] | None = None,
) -> Response:
    """Email an executed notebook as one message: its Markdown, code (unless ``no_input``) and
    outputs in order, rendered as ``%%smtp_send --capture`` renders a cell (images inline,
    long tables and outputs cut to fit, the whole of them attached). ``notebook`` is a path or
    the NotebookNode ``papermill.execute_notebook`` returns; ``attach_notebook`` attaches the
    ``.ipynb``. The subject defaults to the notebook's first heading.

    >>> nb = papermill.execute_notebook("report.ipynb", "out.ipynb", parameters={"week": 12})  # doctest: +SKIP
    >>> send_notebook(nb, to="team@example.org", no_input=True)  # doctest: +SKIP
    """
    return run_blocking(send_notebook_async(
        notebook, to, subject=subject, cc=cc, bcc=bcc, sender=sender, no_input=no_input,
        attach_notebook=attach_notebook, attachments=attachments, config=config,
        profile=profile, timeout=timeout, reply_to=reply_to))


# -- blocking calls that also work inside a running event loop (a notebook cell) ------------------

class _WorkerLoop:
    """A private event loop in a daemon thread, for blocking calls made from inside a loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="smtp-magic", daemon=True)
        self.thread.start()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]


_worker: _WorkerLoop | None = None
_worker_lock = threading.Lock()


def worker_loop() -> _WorkerLoop:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _WorkerLoop()
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
        return _run_on_own_thread(coro)
    # asyncio.run (and aiosmtplib's *_sync helpers) raise inside a running loop, e.g. a kernel.
    return worker.submit(coro).result()


def _run_on_own_thread(coro: Awaitable[T]) -> T:
    context = contextvars.copy_context()  # e.g. where debug lines go (conversation.debug_output)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="smtp-magic-nested") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()  # type: ignore[arg-type]


def send(
    to: str | Sequence[str], subject: str, body: str = "", *, cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None, sender: str | None = None,
    attachments: Iterable[AttachmentLike] | AttachmentLike = (), content_type: str | None = None,
    config: ConfigLike = None, timeout: float | None = None, profile: str | None = None,
    reply_to: str | Sequence[str] | None = None, headers: Mapping[str, str] | None = None,
) -> Response:
    """Send one message and wait for the outcome. Works in scripts and in notebook cells.

    ``profile`` sends with a saved profile's settings (``%smtp_config --profile NAME --save``).
    ``reply_to`` sets Reply-To (default: the reply_to setting); ``headers`` adds custom headers
    (``{"X-Report": "weekly"}``), checked like every header.

    >>> r = send("bob@example.org", "Numbers", "<p>Hi</p>")  # doctest: +SKIP
    >>> r.exitcode, r.message_id  # doctest: +SKIP
    """
    return run_blocking(send_async(
        to, subject, body, cc=cc, bcc=bcc, sender=sender, attachments=attachments,
        content_type=content_type, config=config, timeout=timeout, profile=profile,
        reply_to=reply_to, headers=headers,
    ))


def send_many(
    requests: Iterable[SendRequest | Mapping[str, Any]], *, config: ConfigLike = None,
    timeout: float | None = None, progress: Progress | None = None, profile: str | None = None,
) -> list[Response]:
    """Blocking ``send_many_async``."""
    return run_blocking(send_many_async(requests, config=config, timeout=timeout,
                                        progress=progress, profile=profile))


# -- the seed's connector ---------------------------------------------------------------------------

class SendHandle:
    """A send started by ``Connector.run_async()``: await it, or call ``.result()``."""

    def __init__(self, future: concurrent.futures.Future[Response]) -> None:
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Response:
        return self._future.result(timeout)

    def __await__(self) -> Generator[Any, None, Response]:
        return asyncio.wrap_future(self._future).__await__()

    def __repr__(self) -> str:
        return f"<SendHandle {'done' if self.done() else 'pending'}>"


class Connector:
    """The Flint-style SMTP connector: ``connector(cfg).set("to", [...]).set(...).sync()``."""

    def __init__(self, config: ConfigLike) -> None:
        self._settings = load_settings(config)
        self._params: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> Connector:
        """Set one request parameter (the seed's names: to, from, subject, body, cc, ...)."""
        if key not in _KNOWN_FIELDS:
            raise InvalidRequest(f"Unknown request parameter {key!r}{did_you_mean(key, _KNOWN_FIELDS)}")
        self._params[key] = value
        return self

    def __repr__(self) -> str:
        shown = {k: ("********" if k == "password" else v) for k, v in self._params.items()}
        return f"Connector({self._settings.host}:{self._settings.port}, {shown})"

    async def _send(self, request: Mapping[str, Any]) -> Response:
        (response,) = await send_many_async([dict(request)], config=self._settings)
        return response

    def sync(self) -> Response:
        """Send with the parameters set so far and wait for the Response."""
        return run_blocking(self._send(dict(self._params)))

    def run_async(self) -> SendHandle:
        """Start the send and return at once (the message is in the outbox by then); await the
        handle or call ``.result()``."""
        prepared = prepare_many([dict(self._params)], config=self._settings)

        async def one() -> Response:
            (response,) = await prepared.deliver()
            return response

        return SendHandle(worker_loop().submit(one()))

    def call(self, request: Mapping[str, Any]) -> Response:
        """Send a whole request (the seed's JSON request as a dict) and wait for the Response."""
        return run_blocking(self._send(request))


def connector(config: ConfigLike) -> Connector:
    """A connector for ``config``: a dict or JSON file in the seed's format (``target``...)."""
    return Connector(config)


# -- outbox retry and connection check -----------------------------------------------------------

@dataclass(frozen=True)
class _StoredEnvelope:
    sender: str
    recipients: tuple[str, ...]
    smtputf8: bool


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
        return (base if base.profile == profile else _with_profile(base, str(profile))).snapshot()
    if (destination.get("host"), destination.get("username"), destination.get(
            "transport", "smtp")) == (base.host, base.username, base.transport):
        return base.snapshot()
    values: dict[str, Any] = {k: destination.get(k) for k in (*_DESTINATION, "graph_endpoint")
                              if k != "profile"}
    values = {k: v for k, v in values.items() if v is not None or k == "username"}
    return base.snapshot({**values, "password": None, "password_env": None})


def _retryable(entry: OutboxEntry, in_doubt: bool) -> bool:
    return entry.status != "in doubt" or in_doubt


async def retry_outbox_async(*, config: ConfigLike = None, keys: Iterable[str] | None = None,
                             in_doubt: bool = False) -> list[Response]:
    """Resend kept messages (same bytes, same Message-ID), each to the server it was going to
    (host, port, security, login and profile as recorded; the rest of the settings and the
    password from ``config``, else the current settings).

    Pending and failed messages are resent, and the refused recipients of a partly sent one; a
    message in doubt (sent, but the server's final reply never came: it may have been
    delivered) only with ``in_doubt=True``.
    """
    base = load_settings(config)
    outbox = Outbox(base.snapshot().outbox_dir)
    wanted = set(keys) if keys is not None else None
    entries = [e for e in outbox.entries()  # not one another send is working on right now
               if (wanted is None or e.key in wanted) and _retryable(e, in_doubt)
               and not outbox.busy(e.key)]
    if not entries:
        return []
    by_settings: dict[ConnectionSettings, list[OutboxEntry]] = {}
    failed: list[tuple[OutboxEntry, SmtpMagicError]] = []
    for entry in entries:
        try:
            by_settings.setdefault(_retry_settings(base, entry.destination), []).append(entry)
        except SmtpMagicError as exc:  # e.g. its profile is gone: nothing is tried
            failed.append((entry, exc))
    responses: dict[str, Response] = {}
    for entry, error in failed:
        responses[entry.key] = _not_retried(entry, error)
    for settings, group in by_settings.items():
        responses.update(await _retry_group(settings, group, outbox))
    return [responses[e.key] for e in entries]


def _not_retried(entry: OutboxEntry, exc: SmtpMagicError) -> Response:
    record = history.add(SendRecord(entry.subject, entry.recipients, entry.message_id,
                                    outbox_key=entry.key))
    record.finish(Response.from_error(exc, message_id=entry.message_id))
    return record.response  # type: ignore[return-value]


async def _retry_group(settings: ConnectionSettings, entries: list[OutboxEntry], outbox: Outbox
                       ) -> dict[str, Response]:
    """Resend kept messages that go to the same place, over one connection."""
    folder = None
    try:
        password = resolve_password(settings)
        if settings.save_sent:
            from .imap import SentFolder, check_settings

            check_settings(settings)
            folder = SentFolder(settings, password)
    except SmtpMagicError as exc:  # nothing was tried: the messages stay as they are
        return {entry.key: _not_retried(entry, exc) for entry in entries}
    responses: dict[str, Response] = {}
    session = transport.Session(settings, password)
    pacer = pacing.Pacer.from_setting(settings.rate, total=len(entries))
    try:
        for entry in entries:
            addresses = (entry.sender, *entry.recipients)
            envelope = _StoredEnvelope(entry.sender, entry.recipients, not all(a.isascii() for a in addresses))
            record = history.add(SendRecord(entry.subject, entry.recipients, entry.message_id,
                                            outbox_key=entry.key, thread=threading.get_ident()))
            data = outbox.read(entry.key)
            response = await _deliver_bytes(session, envelope, data, entry, outbox, pacer)
            # A partly sent message was copied when its first part went out.
            if folder is not None and entry.status != "partly sent":
                response = await _save_copy(folder, response, data)
            pacer.settled += 1
            record.finish(response)
            responses[entry.key] = response
    finally:
        await session.close()
        if folder is not None:
            await folder.close()
    return responses


def retry_outbox(*, config: ConfigLike = None, keys: Iterable[str] | None = None,
                 in_doubt: bool = False) -> list[Response]:
    """Blocking ``retry_outbox_async``."""
    return run_blocking(retry_outbox_async(config=config, keys=keys, in_doubt=in_doubt))


async def check_async(config: ConfigLike = None) -> transport.ServerReport:
    """Connect, negotiate TLS and log in; report the server's capabilities. Sends nothing."""
    settings = load_settings(config).snapshot()
    if settings.transport == "graph":  # the sign-in and Graph's endpoint; nothing is posted
        from .graph import GraphTransport

        return await GraphTransport(settings).check()
    return await transport.check_connection(settings, resolve_password(settings))


def check_deliverability(config: ConfigLike = None) -> DeliverabilityReport:
    """What a receiving provider will conclude about mail from these settings: the From
    domain's SPF (does it allow the relay?), the DKIM key published for ``dkim_selector``
    (does it match ``dkim_key``?) and DMARC (policy, alignment). A ``DeliverabilityReport``
    (``.lines()``, ``.ok``); raises SmtpMagicError when DNS cannot be asked. Sends nothing."""
    from .deliverability import check_sender, sender_domain

    settings = load_settings(config).snapshot()
    return check_sender(settings, sender_domain(settings), _dkim.load_key)


def check(config: ConfigLike = None) -> transport.ServerReport:
    """Blocking ``check_async``; raises SmtpMagicError (with ``exitcode``) on a problem."""
    return run_blocking(check_async(config))


def _oauth_config(config: ConfigLike) -> Any:
    from .oauth import OAuthConfig

    return OAuthConfig.from_settings(load_settings(config).snapshot())


def oauth2_login(config: ConfigLike = None, *, show: Callable[[Any], object] | None = None
                 ) -> Any:
    """The interactive OAuth2 sign-in; returns who signed in (an ``oauth.SignIn``).

    ``show`` receives the ``oauth.DeviceCode`` (URL and code) to put in front of the user
    (default: print it); this then blocks until the user has approved it or the code expired.
    The refresh token is saved (keyring, else a 0600 file) for later and headless sends.
    """
    from . import oauth

    cfg = _oauth_config(config)
    token = oauth.login(cfg, show or (lambda code: print(code.text(), flush=True)))
    return oauth.sign_in_status(cfg, token)


def oauth2_logout(config: ConfigLike = None) -> bool:
    """Forget (and, where the provider allows, revoke) the saved OAuth2 sign-in."""
    from . import oauth

    return oauth.forget(_oauth_config(config))


def oauth2_status(config: ConfigLike = None) -> Any:
    """Who is signed in with OAuth2 and until when (an ``oauth.SignIn``); never the token."""
    from . import oauth

    return oauth.sign_in_status(_oauth_config(config))


def outbox(config: ConfigLike = None) -> Outbox:
    """The outbox of the current (or given) settings."""
    return Outbox(load_settings(config).outbox_dir)



def check_address(text: str, field: str = "address") -> str:
    """The address as the message will carry it, or InvalidRequest with one sentence naming
    ``field`` (what the form checks as you type)."""
    from .mime import parse_address

    return str(parse_address(text, field))


def build_message(request: SendRequest | Mapping[str, Any], *, config: ConfigLike = None) -> Composed:
    """Validate and compose a request without sending it (for previews); raises InvalidRequest."""
    req, overrides = _as_request(request)
    settings = load_settings(config).snapshot(overrides)
    return _prepare(req, settings)
