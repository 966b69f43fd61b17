"""The TLS context: built only when a connection negotiates TLS, shared, and re-read when its CA file changes."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtp_magic import SmtpMagic, send, transport
from smtp_magic.server import CaptureServer

SENDER, BOB = "nb@example.test", "bob@example.test"


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ssl.SSLContext]]:
    """Every SSL context made by ``ssl.create_default_context`` from now on, cache emptied."""
    made: list[ssl.SSLContext] = []
    original: Callable[..., ssl.SSLContext] = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(original(*args, **kwargs))
        return made[-1]

    transport._tls_context.cache_clear()
    monkeypatch.setattr(ssl, "create_default_context", counting)
    yield made
    transport._tls_context.cache_clear()


def settings(server: CaptureServer, **extra: Any) -> SmtpMagic:
    return SmtpMagic().update({"host": "127.0.0.1", "port": server.port, "sender": SENDER,
                               "timeout": 10, **extra})


def test_a_plain_server_with_default_security_costs_no_tls_context(
        smtp_server: CaptureServer, contexts_built: list[ssl.SSLContext]) -> None:
    # security "auto" (the default) on a server that offers no STARTTLS: nothing to encrypt with.
    for n in range(3):
        assert send(BOB, f"plain {n}", "hello", config=settings(smtp_server)).exitcode == 0
    assert len(smtp_server.wait_for(3)) == 3
    assert contexts_built == []


def test_starttls_connections_share_one_context(
        starttls_server: CaptureServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch,
        contexts_built: list[ssl.SSLContext]) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    for n in range(3):
        r = send(BOB, f"tls {n}", "hello",
                 config=settings(starttls_server, security="starttls", cafile=str(ca_file)))
        assert r.exitcode == 0, r
    assert len(starttls_server.wait_for(3)) == 3
    assert len(contexts_built) == 1


def test_a_rewritten_ca_file_is_read_again(
        starttls_server: CaptureServer, ca: trustme.CA, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, contexts_built: list[ssl.SSLContext]) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cafile = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(cafile))  # the wrong CA first
    config = settings(starttls_server, security="starttls", cafile=str(cafile))
    assert send(BOB, "untrusted", "hello", config=config).exitcode == 2
    ca.cert_pem.write_to_path(str(cafile))  # fixed by the user, in the same process
    st = cafile.stat()
    os.utime(cafile, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    r = send(BOB, "trusted now", "hello", config=config)
    assert r.exitcode == 0, r
    assert [m.subject for m in starttls_server.wait_for(1)] == ["trusted now"]
