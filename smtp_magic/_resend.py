"""Sending kept messages again: which outbox entries are retried, the settings each is resent
with (the account it was going to, as it is set now), and the resend itself, grouped by
destination over the same connections and pace as any send. Also what an outbox entry records
of its settings (``destination_of``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import pacing
from ._attempts import deliver, run_each, save_copy, size_of, workers_for
from ._requests import with_profile
from .config import ConnectionSettings, SmtpMagic
from .delivery import Envelope
from .errors import ConnectFailed, SmtpMagicError
from .models import Response
from .outbox import Outbox, OutboxEntry, SendRecord, history

log = logging.getLogger(__name__)

# What an outbox entry remembers of its settings, so that a retry goes where it was going.
_DESTINATION = ("host", "port", "security", "username", "auth", "profile", "transport")


def destination_of(settings: ConnectionSettings) -> dict[str, Any]:
    """Host, port, security, username, auth, profile and transport (with Graph's endpoint) of
    ``settings``: never a secret."""
    where = {name: getattr(settings, name) for name in _DESTINATION}
    if settings.transport == "graph":
        where["graph_endpoint"] = settings.graph_endpoint
    return where


async def resend(base: SmtpMagic, keys: Iterable[str] | None, in_doubt: bool, *,
                 check: Callable[[ConnectionSettings], str | None],
                 pacers: dict[ConnectionSettings, pacing.Pacer],
                 route: Callable[[ConnectionSettings], tuple[Any, bool]]) -> list[Response]:
    """Resend the kept messages ``keys`` (None: all; those in doubt only with ``in_doubt``),
    each to where it was going, with ``base`` the current settings. ``check`` resolves a
    destination's password (or fails it, exit 1), ``pacers`` are the pace of each account and
    ``route`` gives the transport of a destination: the Mailer's."""
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
    results = await asyncio.gather(*(
        _retry_group(settings, group, outbox, check=check, pacers=pacers, route=route)
        for settings, group in by_settings.items()))
    for found in results:
        responses.update(found)
    return [responses[e.key] for e in entries]


async def _retry_group(settings: ConnectionSettings, entries: list[OutboxEntry], outbox: Outbox,
                       *, check: Callable[[ConnectionSettings], str | None],
                       pacers: dict[ConnectionSettings, pacing.Pacer],
                       route: Callable[[ConnectionSettings], tuple[Any, bool]]
                       ) -> dict[str, Response]:
    """Resend kept messages that go to the same place, over the transport's connections,
    each read from disk as it goes out."""
    folder = None
    try:
        password = check(settings)
        if settings.save_sent:
            from .imap import SentFolder

            folder = SentFolder(settings, password)
    except SmtpMagicError as exc:  # nothing was tried: the messages stay as they are
        return {entry.key: _not_retried(entry, exc) for entry in entries}
    pacer = pacers.get(settings)
    if pacer is None:
        pacer = pacers[settings] = pacing.Pacer.from_setting(settings.rate)
    pacer.total += len(entries)
    way = route(settings)
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
        envelope = Envelope(entry.sender, entry.recipients, size_of(data),
                            not all(a.isascii() for a in addresses), entry.message_id,
                            settings)
        response = await deliver(envelope, data, entry, outbox, pacer, way)
        # A partly sent message was copied when its first part went out.
        if folder is not None and entry.status != "partly sent":
            response = await save_copy(folder, response, data)
        pacer.settled += 1
        record.finish(response)
        return entry.key, response

    try:
        found: dict[str, Response] = {}


        async def keep(entry: OutboxEntry) -> None:
            key, response = await one(entry)
            found[key] = response

        await run_each(entries, workers_for(settings), keep)
        return found
    finally:
        if folder is not None:
            await folder.close()


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
