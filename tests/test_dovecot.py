"""Sign-in at a real, independently written server: Dovecot's submission service (passdb oauth2
checking JWTs itself, passwd-file for passwords) relaying to a capture server. Tokens the size of
Microsoft's (2 KB) must not go on the AUTH line (RFC 4954 §4: Dovecot answers "500 5.5.2 Line
too long"); the same holds for long PLAIN and LOGIN responses. Runs with and without the
pipelining shortcut (scripts/test.sh runs it again with SMTP_MAGIC_NO_SHORTCUTS=1)."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LONG_LOGIN, Dovecot

import smtp_magic
from smtp_magic import transport
from smtp_magic.conversation import debug_output


def settings(dv: Dovecot, **extra: Any) -> dict[str, Any]:
    return {"host": dv.host, "port": dv.submission_port, "security": "starttls",
            "cafile": str(dv.ca), "username": dv.user, "timeout": 20, **extra}


def oauth_settings(dv: Dovecot, token: str, **extra: Any) -> dict[str, Any]:
    return settings(dv, auth="oauth2", oauth2_token_provider=lambda: token, **extra)


def send(values: dict[str, Any], subject: str) -> smtp_magic.Response:
    return smtp_magic.send("boss@example.test", subject, "<p>hello from a long token</p>",
                           config=values)


def arrived(dv: Dovecot, message_id: str) -> Any:
    """The message the relay got from Dovecot, by Message-ID."""
    for _ in range(200):
        for got in dv.relay.messages():
            if got.message["Message-ID"] == message_id:
                return got
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never reached the relay; see {dv.log}")


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make smtp-magic pick one OAuth2 mechanism (Dovecot offers both)."""
    def choose(mechanism: str) -> None:
        monkeypatch.setattr(transport, "_OAUTH_MECHANISMS", (mechanism,))
    return choose


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_2kb_token_signs_in_at_dovecot_and_the_message_is_relayed(
        dovecot: Dovecot, only: Any, mechanism: str) -> None:
    only(mechanism)
    token = dovecot.token(size=2048)
    assert 2000 <= len(token) <= 2300
    lines: list[str] = []
    with debug_output(lines.append):
        response = send(oauth_settings(dovecot, token, debug=True), f"2 KB via {mechanism}")
    assert response.exitcode == 0, response.message
    got = arrived(dovecot, response.message_id)
    assert got.subject == f"2 KB via {mechanism}"
    assert got.rcpt_to == ("boss@example.test",)
    # AUTH alone, the response after the 334, and never the token in the transcript.
    auth = [line for line in lines if "> AUTH" in line]
    assert auth and all(line.rstrip().endswith(f"AUTH {mechanism}") for line in auth), lines
    assert any("< 235" in line for line in lines), lines
    assert not any(token[-40:] in line for line in lines)
    assert f"method={mechanism}" in dovecot.log.read_text()


def test_a_short_token_still_goes_on_the_auth_line(dovecot: Dovecot, only: Any) -> None:
    only("XOAUTH2")
    lines: list[str] = []
    with debug_output(lines.append):
        response = send(oauth_settings(dovecot, dovecot.token(), debug=True), "short")
    assert response.exitcode == 0, response.message
    assert any(line.endswith("AUTH XOAUTH2 ********") for line in lines), lines
    arrived(dovecot, response.message_id)


def test_the_old_behaviour_fails_at_dovecot_as_a_protocol_error_not_a_refused_token(
        dovecot: Dovecot, only: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What every smtp-magic did before: the 2 KB initial response on the AUTH line. Dovecot's
    500 is then reported as a command the server did not understand (exit 2), not as a
    refused token (exit 3, which sends the user to sign in again for nothing)."""
    only("XOAUTH2")
    monkeypatch.setattr(transport, "sasl_start", _on_the_line)
    response = send(oauth_settings(dovecot, dovecot.token(size=2048)), "old way")
    assert response.exitcode == 2, response.message
    assert "500 5.5.2 Line too long" in response.message
    assert "did not understand the sign-in command" in response.message
    assert "refused the OAuth2 token" not in response.message


def test_an_expired_token_is_refused_by_dovecot_with_exit_3(dovecot: Dovecot, only: Any) -> None:
    only("OAUTHBEARER")
    response = send(oauth_settings(dovecot, dovecot.token(size=2048, lifetime=-60)), "expired")
    assert response.exitcode == 3, response.message
    assert "refused the OAuth2 token" in response.message


def test_a_password_login_whose_plain_response_is_too_long_for_the_line(
        dovecot: Dovecot) -> None:
    user, password = LONG_LOGIN
    assert len(base64.b64encode(f"\0{user}\0{password}".encode())) > 500
    lines: list[str] = []
    with debug_output(lines.append):
        response = send(settings(dovecot, username=user, password=password, debug=True),
                        "long password")
    assert response.exitcode == 0, response.message
    assert any(line.endswith("> AUTH PLAIN") for line in lines), lines
    assert not any(password in line for line in lines)
    arrived(dovecot, response.message_id)


def test_a_short_password_login_at_dovecot(dovecot: Dovecot) -> None:
    response = send(settings(dovecot, password=dovecot.password), "password")
    assert response.exitcode == 0, response.message
    arrived(dovecot, response.message_id)


def test_check_signs_in_with_a_long_token(dovecot: Dovecot, only: Any) -> None:
    only("OAUTHBEARER")
    report = smtp_magic.check(oauth_settings(dovecot, dovecot.token(size=2500)))
    assert report.signed_in and "OAUTHBEARER" in report.signed_in


# -- PLAIN and LOGIN alone, at aiosmtpd (which also answers a command line over 512 octets with
# a 500): LOGIN's initial response is the user name --------------------------------------------
def _one_mechanism_server(tmp_path: Path, server_tls: Any, mechanism: str, user: str,
                          password: str) -> Any:
    from smtp_magic.server import CaptureServer

    class OneMechanism(CaptureServer):
        def _smtp_kwargs(self) -> dict[str, Any]:
            other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
            return {**super()._smtp_kwargs(), "auth_exclude_mechanism": [other]}

    return OneMechanism(tmp_path / mechanism, tls="starttls", ssl_context=server_tls,
                        users={user: password}, require_auth=True)


async def _on_the_line(smtp: Any, mechanism: bytes, response: bytes, **kw: Any) -> Any:
    """What smtp-magic (and aiosmtplib) did before: the initial response always on the line."""
    return await smtp.execute_command(b"AUTH", mechanism, response, **kw)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_password_login_too_long_for_the_auth_line(
        tmp_path: Path, server_tls: Any, client_ssl_env: Path, mechanism: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    user = ("u" * 400 if mechanism == "LOGIN" else "u") + "@example.test"
    password = "pw-" + "p" * (10 if mechanism == "LOGIN" else 400)
    with _one_mechanism_server(tmp_path, server_tls, mechanism, user, password) as server:
        values = {"host": server.host, "port": server.port, "security": "starttls",
                  "username": user, "password": password, "sender": "a@example.test"}
        lines: list[str] = []
        with debug_output(lines.append):
            response = smtp_magic.send("b@example.test", mechanism, "hi",
                                       config={**values, "debug": True})
        assert response.exitcode == 0, response.message
        assert server.wait_for(1)[0].subject == mechanism
        assert any(line.endswith(f"> AUTH {mechanism}") for line in lines), lines
        assert not any(password in line for line in lines)

        # The old way: the server's 500 is a command it did not understand (exit 2), not a
        # refused login (exit 3).
        monkeypatch.setattr(transport, "sasl_start", _on_the_line)
        old = smtp_magic.send("b@example.test", "old", "hi", config=values)
        assert old.exitcode == 2, old.message
        assert "did not understand the sign-in command" in old.message
        assert "500" in old.message and "refused the login" not in old.message


def test_sasl_start_splits_at_512_octets() -> None:
    sent: list[tuple[bytes, ...]] = []

    class Reply:
        def __init__(self, code: int) -> None:
            self.code, self.message = code, ""

    class Fake:
        async def execute_command(self, *args: bytes, **kw: Any) -> Reply:
            sent.append(args)
            return Reply(334 if args[0] == b"AUTH" and len(args) == 2 else 235)

    fits = b"A" * (512 - len(b"AUTH XOAUTH2 \r\n"))
    asyncio.run(transport.sasl_start(Fake(), b"XOAUTH2", fits))  # type: ignore[arg-type]
    asyncio.run(transport.sasl_start(Fake(), b"XOAUTH2", fits + b"A"))  # type: ignore[arg-type]
    assert sent == [(b"AUTH", b"XOAUTH2", fits), (b"AUTH", b"XOAUTH2"), (fits + b"A",)]


def test_a_merge_through_dovecot_arrives_whole(dovecot: Dovecot) -> None:
    """A bulk send over one connection, unpaced: every message relayed, none in doubt.
    Dovecot 2.3's submission service asserts (and drops the connection) when the next
    message's envelope arrives with the end of the data (RFC 2920 allows it), so smtp-magic
    does not send an envelope ahead to Dovecot."""
    values = settings(dovecot, password=dovecot.password)
    requests = [{"to": "boss@example.test", "subject": f"merge {n}", "body": f"<p>row {n}</p>"}
                for n in range(12)]
    responses = smtp_magic.send_many(requests, config=values)
    assert [r.exitcode for r in responses] == [0] * 12, [r.message for r in responses]
    for r in responses:
        arrived(dovecot, r.message_id)
    assert "Panic" not in dovecot.log.read_text()
