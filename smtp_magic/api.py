"""The public Python API: send, send_many, the connector, outbox retry, connection check.

Every send goes through an ``engine.Mailer`` made for the call and closed after it; these are
the functions the magics, the form and the command line call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _dkim, transport
from ._batch import prepare_message
from ._requests import (
    CONNECTION_FIELDS,  # noqa: F401 - what a request may override, for the faces
    KNOWN_FIELDS,
    AttachmentLike,
    ConfigLike,
    load_settings,
    make_request,
    request_from_dict,
)
from ._worker import run_blocking, worker_loop
from .attachments import resolve_all
from .credentials import resolve_password
from .engine import AnyProgress, Mailer, Prepared
from .errors import InvalidRequest, did_you_mean
from .models import Response, SendRequest
from .outbox import Outbox

if TYPE_CHECKING:
    from .deliverability import DeliverabilityReport
    from .mime import Composed

__all__ = [
    "Connector",
    "Mailer",
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
    "outbox",
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
    "worker_loop",
]

log = logging.getLogger(__name__)

# progress(done, total, response) after each message; a callback with a fourth parameter also
# gets the expected finish time (time.time() seconds, or None), and a first call (0, total,
# None, finish) before anything is sent when the batch is paced (the rate setting).
Progress = AnyProgress


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
    return Mailer(config).prepare(requests, timeout=timeout, progress=progress,
                                  composed=composed, own=True)


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

    ``requests`` are dicts in the JSON request format (``to``, ``from``, ``subject``, ``body``,
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
    async with Mailer(config, profile=profile) as mailer:
        return await mailer.send_many_async(requests, timeout=timeout, progress=progress)


async def send_async(
    to: str | Sequence[str], subject: str, body: str = "", *, cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None, sender: str | None = None,
    attachments: Iterable[AttachmentLike] | AttachmentLike = (), content_type: str | None = None,
    config: ConfigLike = None, timeout: float | None = None, profile: str | None = None,
    reply_to: str | Sequence[str] | None = None, headers: Mapping[str, str] | None = None,
) -> Response:
    """Send one message; returns its Response (never raises for a failed send)."""
    return await _send_one(
        lambda: make_request(to, subject, body, cc=cc, bcc=bcc, sender=sender,
                             attachments=attachments, content_type=content_type,
                             reply_to=reply_to, headers=headers),
        config=config, timeout=timeout, profile=profile)


async def _send_one(build: Callable[[], SendRequest], *, config: ConfigLike,
                    timeout: float | None, profile: str | None) -> Response:
    """The Response of the one request ``build()`` makes (exit 1 if it cannot be made)."""
    async with Mailer(config, profile=profile) as mailer:
        return await mailer.send_request_async(build, timeout=timeout)

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


# -- the connector ---------------------------------------------------------------------------------

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
    """A connector: ``connector(cfg).set("to", [...]).set(...).sync()``."""

    def __init__(self, config: ConfigLike) -> None:
        self._settings = load_settings(config)
        self._params: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> Connector:
        """Set one request parameter (the JSON request's names: to, from, subject, body, cc...)."""
        if key not in KNOWN_FIELDS:
            raise InvalidRequest(f"Unknown request parameter {key!r}{did_you_mean(key, KNOWN_FIELDS)}")
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
        """Send a whole request (a JSON request as a dict) and wait for the Response."""
        return run_blocking(self._send(request))


def connector(config: ConfigLike) -> Connector:
    """A connector for ``config``: a dict or a JSON file (``target``, ``port``...)."""
    return Connector(config)


# -- outbox retry and connection check -----------------------------------------------------------

async def retry_outbox_async(*, config: ConfigLike = None, keys: Iterable[str] | None = None,
                             in_doubt: bool = False) -> list[Response]:
    """Resend kept messages (same bytes, same Message-ID), each to the server it was going to
    (host, port, security, login and profile as recorded; the rest of the settings and the
    password from ``config``, else the current settings).

    Pending and failed messages are resent, and the refused recipients of a partly sent one; a
    message in doubt (sent, but the server's final reply never came: it may have been
    delivered) only with ``in_doubt=True``.
    """
    async with Mailer(config) as mailer:
        return await mailer.retry_outbox_async(keys=keys, in_doubt=in_doubt)


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
    from ._requests import as_request

    req, overrides = as_request(request)
    settings = load_settings(config).snapshot(overrides)
    return prepare_message(req, settings)
