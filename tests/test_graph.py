"""Microsoft Graph sendMail (transport graph) against a local HTTPS server that implements
Graph's documented MIME contract, signed in through MSAL against the Entra-shaped test IdP.

``GraphServer`` answers ``POST /v1.0/me/sendMail`` as Graph documents it: a bearer token it
checks with the identity provider (introspection: active, the user's, with the scope
``https://graph.microsoft.com/Mail.Send``), ``Content-Type: text/plain``, a body that is the
base64 of a MIME message (else ``400 Invalid base64 string for MIME content``), ``202 Accepted``
with no body; recipients from the message's To, Cc and Bcc headers, the Bcc header removed from
what is delivered (as Exchange does). Tests can queue other answers (429, 503, 401...) first.
The real Graph endpoint is never contacted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email
import email.policy
import email.utils
import json
import logging
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import TestingShell, run_cell
from idp import CLIENT_ID, USER_EMAIL, IdentityProvider
from test_oauth import User

import smtp_magic
from smtp_magic import graph, oauth, pacing
from smtp_magic.api import build_message
from smtp_magic.conversation import debug_output
from smtp_magic.delivery import Envelope
from smtp_magic.errors import (
    AuthFailed,
    ConfigError,
    ConnectFailed,
    ExitCode,
    InDoubt,
    InvalidRequest,
    OutboxUnwritable,
    Rejected,
    TemporaryFailure,
)

pytestmark = pytest.mark.oauth

# The end-to-end tests go through the public API: they need the engine to choose the transport
# by the ``transport`` setting (merged separately).

SENDER = USER_EMAIL  # Graph sends as the signed-in mailbox
GRAPH_SCOPE = "https://graph.microsoft.com/Mail.Send"


# -- the Graph server --------------------------------------------------------------------------
@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    content_type: str | None
    token: str | None
    status: int = 0


@dataclass
class Delivered:
    """A message Graph took: what its recipients get (no Bcc header), and who they are."""

    message: EmailMessage
    recipients: list[str]
    raw: bytes  # the decoded MIME as posted


@dataclass
class GraphServer:
    """``POST /v1.0/me/sendMail`` on 127.0.0.1 over HTTPS (see the module's docstring)."""

    tls: ssl.SSLContext
    idp: IdentityProvider
    script: list[tuple[int, dict[str, str], dict[str, str] | None]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    connections: int = 0
    hang: bool = False  # read the request, never answer
    drop: bool = False  # read the request, hang up without answering

    def start(self) -> GraphServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Graph

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                server.connections += 1
                super().setup()

            def do_POST(self) -> None:
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/v1.0"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length)
        if len(body) < length:  # the client went away before the end: no request at all
            h.close_connection = True
            return
        auth = h.headers.get("Authorization") or ""
        seen = Seen(h.path, h.headers.get("Content-Type"),
                    auth[7:] if auth.startswith("Bearer ") else None)
        self.requests.append(seen)
        if self.hang or self.drop:
            if self.hang:
                time.sleep(5)
            h.close_connection = True  # and no answer at all
            return
        if h.path != "/v1.0/me/sendMail":
            return self.answer(h, seen, 404, error=("ResourceNotFound", "Invalid version."))
        if not seen.token or not self.valid(seen.token):
            return self.answer(h, seen, 401, error=("InvalidAuthenticationToken",
                                                    "Access token validation failure."))
        if self.script:
            status, headers, error = self.script.pop(0)
            if error and "{token}" in error["message"]:  # a server that echoes what it got
                error = {**error, "message": error["message"].format(token=seen.token)}
            return self.answer(h, seen, status, headers,
                               error=(error["code"], error["message"]) if error else None)
        if (seen.content_type or "").split(";")[0].strip() != "text/plain":
            return self.answer(h, seen, 400, error=("ErrorInvalidRequest", "Not MIME content."))
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            return self.answer(h, seen, 400, error=("ErrorMimeContentInvalidBase64String",
                                                    "Invalid base64 string for MIME content."))
        message = email.message_from_bytes(raw, policy=email.policy.default)
        head = email.message_from_string(raw.decode("utf-8", "replace").split("\r\n\r\n")[0])
        fields = [str(v) for n in ("To", "Cc", "Bcc") for v in head.get_all(n, [])]
        recipients = [a for _, a in email.utils.getaddresses(fields) if a]
        if not message["From"] or not recipients or message.defects:
            return self.answer(h, seen, 400, error=("ErrorMimeContentInvalid",
                                                    "The MIME content is not valid."))
        del message["Bcc"]  # Exchange never passes a Bcc header on
        self.delivered.append(Delivered(message, recipients, raw))  # type: ignore[arg-type]
        self.answer(h, seen, 202)

    def valid(self, token: str) -> bool:
        info = self.idp.introspect(token)
        return bool(info.get("active")) and info.get("sub") == USER_EMAIL and \
            GRAPH_SCOPE in str(info.get("scope", "")).split()

    def answer(self, h: BaseHTTPRequestHandler, seen: Seen, status: int,
               headers: dict[str, str] | None = None,
               error: tuple[str, str] | None = None) -> None:
        seen.status = status
        payload = json.dumps({"error": {"code": error[0], "message": error[1]}}).encode() \
            if error else b""
        h.send_response(status)
        h.send_header("request-id", str(uuid.uuid4()))
        h.send_header("client-request-id", h.headers.get("client-request-id") or "")
        if error and status == 401:
            h.send_header("WWW-Authenticate", 'Bearer realm="", error="invalid_token"')
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        if payload:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def refuse(self, status: int, code: str = "", message: str = "", **headers: str) -> None:
        """Answer the next request with ``status`` (after checking its token)."""
        self.script.append((status, {k.replace("_", "-"): v for k, v in headers.items()},
                            {"code": code, "message": message} if code else None))


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that only tunnels (``CONNECT host:port``), as company proxies
    do for HTTPS; with ``login``, it wants ``Proxy-Authorization: Basic`` first (else 407)."""

    def __init__(self, login: str | None = None) -> None:
        self.login = login
        self.tunnels: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy.tunnel(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
        method, target, _ = lines[0].split(" ")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        wanted = "Basic " + base64.b64encode((self.login or "").encode()).decode()
        if method != "CONNECT" or (self.login and fields.get("Proxy-Authorization") != wanted):
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                           b"Content-Length: 0\r\n\r\n")
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(10)
        upstream.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _trust(ms_idp: IdentityProvider, no_keyring: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    # MSAL uses requests, which reads REQUESTS_CA_BUNDLE; Graph's TLS is trusted with cafile.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ms_idp.verify))
    oauth.clear_memory()
    yield
    oauth.clear_memory()


@pytest.fixture
def graph_server(server_tls: ssl.SSLContext, ms_idp: IdentityProvider) -> Iterator[GraphServer]:
    server = GraphServer(server_tls, ms_idp).start()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def graph_settings(ms_idp: IdentityProvider, server: GraphServer, ca_file: Path,
                   **extra: Any) -> dict[str, Any]:
    """transport graph at the test server, the Microsoft sign-in at the test IdP; the SMTP
    host is a closed port: nothing may go there."""
    return {"transport": "graph", "graph_endpoint": server.endpoint, "cafile": str(ca_file),
            "oauth2_provider": "microsoft", "oauth2_client_id": CLIENT_ID,
            "oauth2_tenant": ms_idp.issuer.removesuffix("/v2.0"), "username": USER_EMAIL,
            "host": "127.0.0.1", "port": closed_port(), "timeout": 10, **extra}


@pytest.fixture
def conf(ms_idp: IdentityProvider, graph_server: GraphServer, ca_file: Path) -> dict[str, Any]:
    """Graph settings, signed in once (device code approved in the IdP), as a user would have."""
    values = graph_settings(ms_idp, graph_server, ca_file)
    config = oauth.OAuthConfig.from_settings(smtp_magic.SmtpMagic().update(values).snapshot())
    assert config.scopes == (GRAPH_SCOPE, "offline_access")  # the default with transport graph
    token = oauth.login(config, User(ms_idp))
    assert graph_server.valid(token.value)
    oauth.clear_memory()  # the send refreshes from the saved sign-in, as in a new kernel
    return values


def snapshot(values: dict[str, Any]) -> Any:
    return smtp_magic.SmtpMagic().update(values).snapshot()


def composed(conf: dict[str, Any], **request: Any) -> Any:
    return build_message({"to": "boss@example.test", "subject": "Weekly numbers",
                          "body": "<p>Numbers attached.</p>", **request},
                         config={**conf, "sender": SENDER})


class Hooks:
    """The journal's two hooks, recorded."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse = refuse

    def sending(self) -> None:
        self.calls.append("sending")
        if self.refuse:
            raise OutboxUnwritable("The outbox cannot be written, so the message was not sent.")

    def answered(self) -> None:
        self.calls.append("answered")


def envelope(message: Any, hooks: Hooks | None = None, **extra: Any) -> Envelope:
    hooks = hooks or Hooks()
    data = message.as_bytes()
    return Envelope(message.sender, message.recipients, size=len(data),
                    message_id=message.message_id, on_sending=hooks.sending,
                    on_answered=hooks.answered, **extra)


def deliver(values: dict[str, Any], message: Any, hooks: Hooks | None = None,
            transport: graph.GraphTransport | None = None) -> Any:
    async def run() -> Any:
        t = transport or graph.GraphTransport(snapshot(values))
        try:
            return await t.deliver(envelope(message, hooks), message.as_bytes())
        finally:
            if transport is None:
                await t.aclose()

    return asyncio.run(run())


# -- the transport itself (delivery protocol) ---------------------------------------------------
def test_sent_with_a_graph_token_as_base64_mime(conf: dict[str, Any], graph_server: GraphServer,
                                                tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    report.write_text("week,sales\n49,1200\n")
    message = composed(conf, cc="team@example.test", bcc="audit@example.test",
                       attachments=[str(report)])
    sent = message.as_bytes()
    hooks = Hooks()
    assert deliver(conf, message, hooks) is None
    assert hooks.calls == ["sending", "answered"]
    (seen,) = graph_server.requests
    assert (seen.path, seen.content_type, seen.status) == ("/v1.0/me/sendMail", "text/plain", 202)
    (got,) = graph_server.delivered
    assert got.message["Subject"] == "Weekly numbers"
    assert got.message["Message-ID"] == message.message_id
    assert sorted(got.recipients) == ["audit@example.test", "boss@example.test",
                                      "team@example.test"]
    assert "audit@example.test" not in str(got.message)  # Bcc: delivered, never shown
    assert got.raw.endswith(sent) and got.raw[:-len(sent)] == b"Bcc: audit@example.test\r\n"
    names = [p.get_filename() for p in got.message.iter_attachments()]
    assert names == ["report.csv"]
    assert message.as_bytes() == sent  # the message itself (the outbox's copy) is unchanged


def test_international_addresses_reach_graph_bcc_included(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    message = composed(conf, to="Jörg <jörg@exämple.test>", bcc="zoë@example.test")
    assert message.smtputf8
    assert deliver(conf, message) is None
    (got,) = graph_server.delivered
    assert sorted(got.recipients) == ["jörg@xn--exmple-cua.test", "zoë@example.test"]


def test_throttled_429_carries_retry_after(conf: dict[str, Any],
                                           graph_server: GraphServer) -> None:
    graph_server.refuse(429, "ApplicationThrottled", "Application is over its MailboxConcurrency "
                        "limit.", Retry_After="2")
    hooks = Hooks()
    with pytest.raises(pacing.Throttled) as info:
        deliver(conf, composed(conf), hooks)
    assert info.value.exitcode == ExitCode.TEMPORARY and info.value.retry_after == 2
    assert "ApplicationThrottled" in str(info.value) and "2 s" in str(info.value)
    assert hooks.calls == ["sending", "answered"] and graph_server.delivered == []


def test_503_with_retry_after_is_throttling_without_a_temporary_failure(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)  # an HTTP date works too
    graph_server.refuse(503, "ServiceUnavailable", "Try later.", Retry_After=when)
    graph_server.refuse(503, "ServiceUnavailable", "Try later.")
    graph_server.refuse(500, "InternalServerError", "Oops.")
    with pytest.raises(pacing.Throttled) as info:
        deliver(conf, composed(conf))
    assert info.value.retry_after is not None and 25 < info.value.retry_after <= 30
    for _ in range(2):
        with pytest.raises(TemporaryFailure) as failed:
            deliver(conf, composed(conf))
        assert not isinstance(failed.value, pacing.Throttled)
        assert failed.value.exitcode == ExitCode.TEMPORARY and "kept in the outbox" in str(
            failed.value)
    assert graph_server.delivered == []


def test_401_once_gets_a_new_token_and_sends(conf: dict[str, Any],
                                             graph_server: GraphServer) -> None:
    graph_server.refuse(401, "InvalidAuthenticationToken", "Lifetime validation failed.")
    assert deliver(conf, composed(conf)) is None
    first, second = graph_server.requests
    assert (first.status, second.status) == (401, 202)
    assert first.token != second.token and graph_server.valid(str(second.token))
    assert len(graph_server.delivered) == 1


def test_401_twice_is_exit_3_without_the_token(conf: dict[str, Any],
                                               graph_server: GraphServer) -> None:
    for _ in range(2):
        graph_server.refuse(401, "InvalidAuthenticationToken", "Access token has expired.")
    with pytest.raises(AuthFailed) as info:
        deliver(conf, composed(conf))
    assert info.value.exitcode == ExitCode.AUTH
    text = str(info.value)
    assert "InvalidAuthenticationToken" in text and "Mail.Send" in text
    assert oauth.HINT in text
    tokens = {s.token for s in graph_server.requests}
    assert len(tokens) == 2 and not any(t and t in repr(info.value.__dict__) + text
                                        for t in tokens)


def test_not_signed_in_is_exit_3_and_nothing_is_sent(
        ms_idp: IdentityProvider, graph_server: GraphServer, ca_file: Path) -> None:
    values = graph_settings(ms_idp, graph_server, ca_file)
    with pytest.raises(AuthFailed) as info:
        deliver(values, composed(values))
    assert oauth.HINT in str(info.value)
    assert graph_server.connections == 0


def test_not_signed_in_with_the_authority_unreachable_says_sign_in_once(
        conf: dict[str, Any], graph_server: GraphServer, refused_port: int) -> None:
    from test_oauth_microsoft import unreachable_copy

    # Signed in (conf), and the authority gone since: it cannot be reached, and that is said.
    away = unreachable_copy(graph_server.idp, refused_port, conf, signed_in=True)
    response = smtp_magic.send("boss@example.test", "Hi", "x", sender=SENDER, config=away)
    assert response.exitcode == 3 and response.message.startswith(
        "Cannot reach the OAuth2 authorization server of microsoft"), response.message
    # Never signed in: the authority is not asked, and the message says how to sign in.
    never = unreachable_copy(graph_server.idp, refused_port, {**conf, "oauth2_client_id": "other"},
                             signed_in=False)
    response = smtp_magic.send("boss@example.test", "Hi", "x", sender=SENDER, config=never)
    assert response.exitcode == 3, response.message
    assert response.message.startswith("No saved OAuth2 sign-in"), response.message
    assert "`%smtp_config --oauth2-login`" in response.message
    assert graph_server.connections == 0


def test_over_4_mb_is_exit_1_and_the_server_sees_nothing(
        conf: dict[str, Any], graph_server: GraphServer, tmp_path: Path) -> None:
    graph.check_size(graph.MAX_MESSAGE)
    with pytest.raises(InvalidRequest, match="is 3,145,729 bytes, and Microsoft Graph takes at "
                       "most 3,145,728 bytes"):
        graph.check_size(graph.MAX_MESSAGE + 1)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))  # 4 MB once base64'd in the MIME, and again
    message = composed(conf, attachments=[str(big)])
    hooks = Hooks()
    with pytest.raises(InvalidRequest) as info:
        deliver(conf, message, hooks)
    assert info.value.exitcode == ExitCode.INVALID and "4 MB" in str(info.value)
    assert hooks.calls == [] and graph_server.connections == 0


def test_other_4xx_is_rejected_with_graphs_code_and_message(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    graph_server.refuse(403, "ErrorSendAsDenied", "The user account which was used to submit "
                        "this request does not have the right to send mail on behalf of the "
                        "specified sending account.")
    with pytest.raises(Rejected) as info:
        deliver(conf, composed(conf))
    text = str(info.value)
    assert info.value.exitcode == ExitCode.REJECTED and info.value.code == 403
    assert "ErrorSendAsDenied: The user account" in text and "send as" in text
    assert text.count(". ") == 0  # one sentence


def test_an_answer_that_echoes_the_token_never_shows_it(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    graph_server.refuse(400, "ErrorInvalidRecipients", "Token {token} may not send here.")
    lines: list[str] = []
    with debug_output(lines.append), pytest.raises(Rejected) as info:
        deliver({**conf, "debug": True}, composed(conf))
    (seen,) = graph_server.requests
    assert seen.token and len(seen.token) > 20
    assert "Token ******** may not send here" in str(info.value)
    assert seen.token not in str(info.value) + str(info.value.reply) + "\n".join(lines)


def test_settings_that_cannot_use_graph_are_exit_1_before_connecting(
        ms_idp: IdentityProvider, graph_server: GraphServer, ca_file: Path) -> None:
    base = graph_settings(ms_idp, graph_server, ca_file)
    password = {k: v for k, v in base.items() if not k.startswith("oauth2")}
    cases = {
        "--oauth2-provider microsoft": {**password, "auth": "password"},
        "oauth2_provider is 'https://login.example.org'": {
            **base, "oauth2_provider": "https://login.example.org"},
        "oauth2_client_id is not set": {**base, "oauth2_client_id": None},
        "unset save_sent": {**base, "save_sent": "Sent", "imap_host": "127.0.0.1"},
    }
    for words, values in cases.items():
        with pytest.raises(ConfigError) as info:
            deliver(values, composed(base))
        assert words in str(info.value) and info.value.exitcode == ExitCode.INVALID
    assert graph_server.connections == 0
    with pytest.raises(smtp_magic.errors.ConfigError, match="https:// URL"):
        smtp_magic.SmtpMagic().update({"graph_endpoint": "http://127.0.0.1:1/v1.0"})


def test_cannot_connect_is_exit_2(conf: dict[str, Any], graph_server: GraphServer,
                                  untrusted_ca: Any, tmp_path: Path) -> None:
    closed = {**conf, "graph_endpoint": f"https://127.0.0.1:{closed_port()}/v1.0"}
    with pytest.raises(ConnectFailed, match="refused"):
        deliver(closed, composed(conf))
    other_ca = tmp_path / "other-ca.pem"
    untrusted_ca.cert_pem.write_to_path(str(other_ca))
    with pytest.raises(ConnectFailed, match="could not be verified") as info:
        deliver({**conf, "cafile": str(other_ca)}, composed(conf))
    assert info.value.exitcode == ExitCode.CONNECT and graph_server.requests == []


@pytest.mark.parametrize("how", ["hang", "drop"])
def test_no_answer_after_the_request_is_in_doubt(conf: dict[str, Any],
                                                 graph_server: GraphServer, how: str) -> None:
    setattr(graph_server, how, True)
    hooks = Hooks()
    with pytest.raises(InDoubt) as info:
        deliver({**conf, "timeout": 1}, composed(conf), hooks)
    assert info.value.exitcode == ExitCode.TIMEOUT and "in doubt" in str(info.value)
    assert ("did not answer within 1 s" if how == "hang" else "dropped the connection after "
            "the message was sent") in str(info.value)
    assert hooks.calls == ["sending"] and len(graph_server.requests) == 1


def test_a_refused_sending_hook_sends_nothing(conf: dict[str, Any],
                                              graph_server: GraphServer) -> None:
    with pytest.raises(OutboxUnwritable):
        deliver(conf, composed(conf), Hooks(refuse=True))
    time.sleep(0.2)
    assert graph_server.requests == [] and graph_server.delivered == []


def test_a_resend_to_only_some_of_the_headers_addresses_is_refused(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    message = composed(conf, cc="team@example.test")
    async def run() -> None:
        t = graph.GraphTransport(snapshot(conf))
        env = Envelope(message.sender, ("team@example.test",))  # boss had it already
        await t.deliver(env, message.as_bytes())

    with pytest.raises(InvalidRequest, match="boss@example.test"):
        asyncio.run(run())
    assert graph_server.connections == 0


def test_connections_are_kept_between_messages(conf: dict[str, Any],
                                               graph_server: GraphServer) -> None:
    async def run() -> None:
        t = graph.GraphTransport(snapshot(conf))
        try:
            for n in range(3):
                message = composed(conf, subject=f"Row {n}")
                await t.deliver(envelope(message), message.as_bytes())
        finally:
            await t.aclose()

    asyncio.run(run())
    assert [d.message["Subject"] for d in graph_server.delivered] == ["Row 0", "Row 1", "Row 2"]
    assert graph_server.connections == 1


def test_parallel_workers_share_one_sign_in(conf: dict[str, Any],
                                            graph_server: GraphServer) -> None:
    """Four workers start at once with no token in memory: one refresh serves them all (with
    rotating refresh tokens, parallel refreshes would spend the same one several times)."""
    async def run() -> None:
        shared = graph.GraphTransport(snapshot(conf))
        # Two workers share a transport, two have their own: one sign-in per process.
        transports = [shared, shared, *(graph.GraphTransport(snapshot(conf)) for _ in range(2))]
        messages = [composed(conf, subject=f"Row {n}") for n in range(4)]
        try:
            await asyncio.gather(*(t.deliver(envelope(m), m.as_bytes())
                                   for t, m in zip(transports, messages)))
        finally:
            for t in set(transports):
                await t.aclose()

    asyncio.run(run())
    assert len(graph_server.delivered) == 4
    assert len({s.token for s in graph_server.requests}) == 1
    oauth.clear_memory()
    assert deliver(conf, composed(conf)) is None  # the saved sign-in still works


def test_debug_shows_the_exchange_never_the_token(conf: dict[str, Any],
                                                  graph_server: GraphServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    graph_server.refuse(401, "InvalidAuthenticationToken", "Lifetime validation failed.")
    lines: list[str] = []
    with debug_output(lines.append):
        assert deliver({**conf, "debug": True}, composed(conf)) is None
    shown = "\n".join(lines)
    assert "> POST /v1.0/me/sendMail HTTP/1.1" in shown
    assert "> Authorization: Bearer ********" in shown and "> Content-Type: text/plain" in shown
    assert "< HTTP/1.1 401 Unauthorized" in shown and "< HTTP/1.1 202 Accepted" in shown
    assert "InvalidAuthenticationToken" in shown and "(message: " in shown
    tokens = [s.token for s in graph_server.requests]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert len(tokens) == 2 and all(t and t not in shown + logged for t in tokens)


def test_check_signs_in_and_connects_without_posting(conf: dict[str, Any],
                                                     graph_server: GraphServer) -> None:
    report = smtp_magic.api.check(conf)
    lines = report.lines()
    assert lines[0] == (f"Connected to 127.0.0.1:{report.port}: Microsoft Graph sendMail at "
                        "/v1.0/me/sendMail (nothing was sent)")
    assert lines[1].startswith("Encryption: TLS (TLSv1.")
    assert lines[2].startswith(f"Login: an OAuth2 token for Graph, signed in as {USER_EMAIL}; "
                               "access token valid until")
    assert len(lines) == 3  # no SMTP extensions
    deadline = time.monotonic() + 5  # the server counts the connection in its own thread
    while graph_server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert graph_server.connections == 1 and graph_server.requests == []
    with pytest.raises(ConfigError, match="--oauth2-provider microsoft"):
        smtp_magic.api.check({**conf, "auth": "password", "oauth2_provider": None})


def test_debug_of_a_later_send_on_a_kept_connection_goes_to_that_send(
        conf: dict[str, Any], graph_server: GraphServer) -> None:
    first: list[str] = []
    second: list[str] = []

    async def run() -> None:
        t = graph.GraphTransport(snapshot({**conf, "debug": True}))
        try:
            for sink in (first, second):  # two cells, one kept connection
                message = composed(conf)
                with debug_output(sink.append):
                    await t.deliver(envelope(message), message.as_bytes())
        finally:
            await t.aclose()

    asyncio.run(run())
    assert graph_server.connections == 1
    assert sum("> POST " in line for line in first) == 1
    assert sum("> POST " in line for line in second) == 1


def test_through_the_environments_https_proxy(conf: dict[str, Any], graph_server: GraphServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = ConnectProxy(login="proxy-user:proxy-secret")
    try:
        for name in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, f"http://proxy-user:proxy-secret@127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "")
        assert deliver(conf, composed(conf)) is None
        graph_port = graph_server.endpoint.split(":")[2].split("/")[0]
        assert f"127.0.0.1:{graph_port}" in proxy.tunnels and len(graph_server.delivered) == 1
        for name in ("HTTPS_PROXY", "https_proxy"):  # a wrong proxy password: exit 2, not shown
            monkeypatch.setenv(name, f"http://proxy-user:wrong-secret@127.0.0.1:{proxy.port}")
        with pytest.raises(ConnectFailed, match="through the proxy 127.0.0.1.*407") as info:
            deliver(conf, composed(conf))
        assert "secret" not in str(info.value)
    finally:
        proxy.stop()


def test_the_pacer_holds_back_for_retry_after() -> None:
    now = [100.0]
    pacer = pacing.Pacer(None, clock=lambda: now[0])
    pacer.throttled("429 ApplicationThrottled", retry_after=7)
    assert pacer._next == 107.0 and pacer.interval == 0.5  # slowed down, and held back 7 s
    pacer.throttled("429", retry_after=None)
    assert pacer._next == 107.0


# -- end to end, through the public API ---------------------------------------------------------
def test_send_through_graph(conf: dict[str, Any], graph_server: GraphServer,
                            tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    report.write_text("week,sales\n49,1200\n")
    response = smtp_magic.send("boss@example.test", "Weekly numbers", "<p>Attached.</p>",
                               bcc="audit@example.test", attachments=[str(report)],
                               sender=SENDER, config=conf)
    assert response.exitcode == 0, response.message
    (got,) = graph_server.delivered
    assert got.message["Message-ID"] == response.message_id
    assert got.message["Subject"] == "Weekly numbers" and "Attached." in str(got.message)
    assert [p.get_filename() for p in got.message.iter_attachments()] == ["report.csv"]
    assert sorted(got.recipients) == ["audit@example.test", "boss@example.test"]


def test_a_merge_throttled_once_is_paced_and_sent(conf: dict[str, Any],
                                                  graph_server: GraphServer) -> None:
    graph_server.refuse(429, "ApplicationThrottled", "Too many requests.", Retry_After="1")
    rows = [{"to": f"r{n}@example.test", "subject": f"Hello {n}", "body": f"Row {n}",
             "from": SENDER} for n in range(4)]
    started = time.monotonic()
    responses = smtp_magic.send_many(rows, config={**conf, "connections": 1})
    assert [r.exitcode for r in responses] == [0, 0, 0, 0], [r.message for r in responses]
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert sorted(d.message["Subject"] for d in graph_server.delivered) == [
        f"Hello {n}" for n in range(4)]
    assert {r.message_id for r in responses} == {
        d.message["Message-ID"] for d in graph_server.delivered}


def test_401_twice_over_the_api_is_exit_3(conf: dict[str, Any],
                                          graph_server: GraphServer) -> None:
    for _ in range(2):
        graph_server.refuse(401, "InvalidAuthenticationToken", "Access token has expired.")
    response = smtp_magic.send("boss@example.test", "Hi", "x", sender=SENDER, config=conf)
    assert response.exitcode == 3 and oauth.HINT in response.message
    assert graph_server.delivered == []


def test_over_4_mb_over_the_api_is_exit_1_and_nothing_is_sent(
        conf: dict[str, Any], graph_server: GraphServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    response = smtp_magic.send("boss@example.test", "Big", "x", attachments=[str(big)],
                               sender=SENDER, config=conf)
    assert response.exitcode == 1 and "4 MB" in response.message
    assert graph_server.connections == 0
    assert smtp_magic.outbox(conf).entries() == []  # never kept: a retry could only fail


def test_a_message_too_large_for_graph_is_never_kept_and_the_rest_of_the_merge_goes(
        conf: dict[str, Any], graph_server: GraphServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    rows = [{"to": "boss@example.test", "subject": "Too big", "body": "x", "from": SENDER,
             "attachments": [str(big)]},
            {"to": "boss@example.test", "subject": "Fits", "body": "x", "from": SENDER}]
    too_big, fits = smtp_magic.send_many(rows, config=conf)
    assert too_big.exitcode == ExitCode.INVALID and "4 MB once base64-encoded" in \
        too_big.message, too_big.message
    assert fits.exitcode == 0, fits.message
    assert [d.message["Subject"] for d in graph_server.delivered] == ["Fits"]
    assert len(graph_server.requests) == 1
    # Nothing of it was kept, so a retry has nothing to send to Graph.
    assert smtp_magic.outbox(conf).entries() == []
    assert smtp_magic.retry_outbox(config=conf) == []
    assert len(graph_server.requests) == 1


def test_the_bcc_line_graph_gets_counts_in_the_size_checked_before_keeping(
        conf: dict[str, Any]) -> None:
    message = composed(conf, bcc="audit@example.test")
    head, size = message.measure()
    assert size == len(message.as_bytes())
    bcc = len(graph.graph_bytes(message.as_bytes(), message.recipients)) - size
    assert bcc == len(b"Bcc: audit@example.test\r\n")
    graph.check_message(head, graph.MAX_MESSAGE - bcc, message.recipients)
    with pytest.raises(InvalidRequest, match="4 MB once base64-encoded"):
        graph.check_message(head, graph.MAX_MESSAGE - bcc + 1, message.recipients)


def test_smtp_sends_never_measure_messages_for_graph(
        smtp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smtp_magic.mime import Composed

    def measure(self: Composed) -> tuple[bytes, int]:
        raise AssertionError("an SMTP send measured a message")

    monkeypatch.setattr(Composed, "measure", measure)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))  # too large for Graph, not for SMTP
    rows = [{"to": "boss@example.test", "subject": f"Row {n}", "body": "x",
             "from": SENDER, "attachments": [str(big)] if n == 0 else []} for n in range(3)]
    responses = smtp_magic.send_many(rows, config={"host": smtp_server.host,
                                                   "port": smtp_server.port})
    assert [r.exitcode for r in responses] == [0, 0, 0], [r.message for r in responses]


def test_a_failed_message_stays_in_the_outbox_and_retry_delivers_it(
        conf: dict[str, Any], graph_server: GraphServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(10):  # every attempt of the first send
        graph_server.refuse(503, "ServiceUnavailable", "The service is unavailable.")
    response = smtp_magic.send("boss@example.test", "Kept", "x", sender=SENDER,
                               config={**conf, "attempts": 2})
    assert response.exitcode == 7, response.message
    assert graph_server.delivered == []
    (entry,) = smtp_magic.outbox(conf).entries()
    assert entry.destination is not None and entry.destination["transport"] == "graph"
    assert entry.destination["graph_endpoint"] == graph_server.endpoint
    from smtp_magic.cli import main

    assert main(["outbox"]) == 0
    assert "via Microsoft Graph" in capsys.readouterr().out
    graph_server.script.clear()
    # Retried with the current settings back on SMTP (same host and login): it still goes
    # where it was going, through Graph.
    (again,) = smtp_magic.retry_outbox(config={**conf, "transport": "smtp"})
    assert again.exitcode == 0, again.message
    (got,) = graph_server.delivered
    assert got.message["Message-ID"] == response.message_id


def test_cli_send_with_debug_shows_graph_never_the_token(
        conf: dict[str, Any], graph_server: GraphServer, tmp_path: Path) -> None:
    (tmp_path / "conn.json").write_text(json.dumps(conf))
    (tmp_path / "req.json").write_text(json.dumps(
        {"to": "boss@example.test", "from": SENDER, "subject": "From the CLI", "body": "hi"}))
    done = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--config",
                           str(tmp_path / "conn.json"), "--request", str(tmp_path / "req.json"),
                           "--debug"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["exitcode"] == 0
    assert "POST /v1.0/me/sendMail" in done.stderr and "Bearer ********" in done.stderr
    (seen,) = graph_server.requests
    assert seen.token and seen.token not in done.stdout + done.stderr
    assert graph_server.delivered[0].message["Subject"] == "From the CLI"


def test_smtp_send_magic_through_graph(ip: TestingShell, conf: dict[str, Any],
                                       graph_server: GraphServer, tmp_path: Path) -> None:
    (tmp_path / "conn.json").write_text(json.dumps({**conf, "sender": SENDER}))
    ip.run_line_magic("smtp_config", f"--file {tmp_path / 'conn.json'}")
    run_cell(ip, "%%smtp_send --sync --to boss@example.test --subject 'From a cell'\nHello")
    (got,) = graph_server.delivered
    assert got.message["Subject"] == "From a cell"
