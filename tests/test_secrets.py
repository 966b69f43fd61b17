"""The password never shows: reprs, %config, responses, errors, tracebacks, logs, outbox, CLI.

Every check scans for the password itself and for the base64 forms it takes on the wire
(AUTH PLAIN and AUTH LOGIN), so an encoded leak is caught too.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TmpData
from faults import FaultServer

from smtp_magic import SmtpMagic, check, connector, send, send_many
from smtp_magic._views import settings_table
from smtp_magic.config import Secret
from smtp_magic.errors import SmtpMagicError
from smtp_magic.outbox import history
from smtp_magic.transport import Session

USER = "alice"
PW = "pw-7f3a-SECRET"
OTHER_PW = "server-side-only-Q9"  # what the server expects in the bad-password case
FaultFactory = Callable[..., FaultServer]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(secret: str = PW, user: str = USER) -> list[str]:
    return [secret, b64(secret), b64(f"\0{user}\0{secret}"), b64(f"{user}\0{secret}"),
            secret.lower()]


def assert_clean(text: str, where: str) -> None:
    for form in forms():
        assert form not in text, f"the password ({form!r}) appears in {where}:\n{text[:2000]}"


def settings(server: Any, **extra: Any) -> SmtpMagic:
    port = server if isinstance(server, int) else server.port
    return SmtpMagic().update({"host": "127.0.0.1", "port": port, "sender": "nb@example.test",
                               "username": USER, "password": PW, "timeout": 5, **extra})


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def all_logs() -> Iterator[_Collect]:
    """Every log record of every logger at DEBUG (aiosmtplib, asyncio, smtp_magic, ...)."""
    handler = _Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def scan_logs(handler: _Collect) -> int:
    """Check every record from our side of the connection; returns how many records were seen."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    # The capture works: at least the server's own DEBUG records arrived here.
    assert handler.records, "no log record was captured at all"
    for record in handler.records:
        # aiosmtpd ("mail.log") is the test *server*: it logs what it receives, as servers do.
        if record.name.startswith("mail.log"):
            continue
        assert_clean(formatter.format(record), f"the log record {record.name}")
    return len(handler.records)


@pytest.fixture
def servers(fault_server: FaultFactory, client_ssl_env: Path) -> dict[str, FaultServer]:
    return {
        "ok": fault_server(tls="starttls", users={USER: PW}, require_auth=True),
        "bad-password": fault_server(tls="starttls", users={USER: OTHER_PW}, require_auth=True),
        "plaintext": fault_server(users={USER: PW}, require_auth=True),
        "deferred": fault_server(tls="starttls", users={USER: PW}, require_auth=True,
                                 data_reply=(451, "4.3.0 Later")),
        "stall": fault_server(tls="starttls", users={USER: PW}, require_auth=True, stall=3),
    }


# -- reprs and displays -----------------------------------------------------------------------
def test_reprs_and_displays_mask_the_password() -> None:
    cfg = SmtpMagic().update({"host": "mail.example.test", "username": USER, "password": PW})
    snap = cfg.snapshot()
    conn = connector({"target": "mail.example.test", "password": PW}).set("password", PW)
    texts = {
        "repr(SmtpMagic)": repr(cfg), "str(SmtpMagic)": str(cfg),
        "the settings table": settings_table(cfg)._repr_html_(), "describe()": repr(cfg.describe()),
        "trait_values()": repr(cfg.trait_values()), "repr(ConnectionSettings)": repr(snap),
        "str(ConnectionSettings)": str(snap), "repr(Secret)": repr(cfg.password),
        "str(Secret)": str(cfg.password), "f-string": f"{cfg.password} {snap.password!r}",
        "repr(Connector)": repr(conn), "repr(Session)": repr(Session(snap, PW)),
    }
    for where, text in texts.items():
        assert_clean(text, where)
    assert cfg.password.reveal() == PW  # still usable
    with pytest.raises(TypeError):
        pickle.dumps(cfg.password)


def test_invalid_password_value_error_does_not_echo_it() -> None:
    with pytest.raises(SmtpMagicError) as info:
        SmtpMagic().update({"password": [PW]})
    assert_clean(str(info.value), "the ConfigError")
    assert "password" in str(info.value)


def test_percent_config_lists_the_setting_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """The mechanism %config uses (shell.configurables), without needing the magics module."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        cfg = SmtpMagic(parent=shell)
        shell.configurables.append(cfg)
        shell.run_line_magic("config", f"SmtpMagic.password = {PW!r}")
        assert cfg.password is not None and cfg.password.reveal() == PW
        capsys.readouterr()
        shell.run_line_magic("config", "SmtpMagic")
        out = capsys.readouterr().out
        assert "SmtpMagic.password" in out
        assert_clean(out, "%config SmtpMagic")
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.skipif(importlib.util.find_spec("smtp_magic.magics") is None,
                    reason="smtp_magic.magics is not there yet")
def test_percent_config_with_the_extension_loaded(capsys: pytest.CaptureFixture[str],
                                                  tmp_data: TmpData) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.extension_manager.load_extension("smtp_magic")
        shell.run_line_magic("config", f"SmtpMagic.password = {PW!r}")
        capsys.readouterr()
        shell.run_line_magic("config", "SmtpMagic")
        out = capsys.readouterr().out
        assert "SmtpMagic" in out
        assert_clean(out, "%config SmtpMagic (extension loaded)")
        shell.run_line_magic("smtp_config", "")
        captured = capsys.readouterr()
        assert_clean(captured.out + captured.err, "%smtp_config")
    finally:
        shell.extension_manager.unload_extension("smtp_magic")
        InteractiveShell.clear_instance()


# -- responses, exceptions, tracebacks and logs of failed sends ----------------------------------
@pytest.mark.parametrize(
    ("name", "code", "extra"),
    [("ok", 0, {"security": "starttls"}),
     ("bad-password", 3, {"security": "starttls"}),
     ("plaintext", 3, {"security": "auto"}),
     ("refused", 2, {"security": "starttls"}),
     ("deferred", 7, {"security": "starttls"}),
     ("stall", 6, {"security": "starttls", "timeout": 1})],
)
def test_responses_and_logs_never_hold_the_password(
    servers: dict[str, FaultServer], refused_port: int, tmp_data: TmpData, all_logs: _Collect,
    name: str, code: int, extra: dict[str, Any],
) -> None:
    server: Any = refused_port if name == "refused" else servers[name]
    r = send("bob@example.test", f"Secret test {name}", "hello", config=settings(server, **extra))
    assert r.exitcode == code, r
    for where, text in {"Response JSON": r.to_json(), "repr(Response)": repr(r),
                        "str(Response)": str(r), "Response HTML": r._repr_html_(),
                        "send history": repr(history.records()[-3:])}.items():
        assert_clean(text, where)
    if code:
        with pytest.raises(SmtpMagicError) as info:
            r.raise_for_status()
        assert_clean("".join(traceback.format_exception(info.value)), "raise_for_status traceback")
    scan_logs(all_logs)


@pytest.mark.parametrize(
    ("name", "code", "extra"),
    [("bad-password", 3, {"security": "starttls"}),
     ("plaintext", 3, {"security": "auto"}),
     ("refused", 2, {"security": "starttls"})],
)
def test_exceptions_and_tracebacks_never_hold_the_password(
    servers: dict[str, FaultServer], refused_port: int, tmp_data: TmpData, all_logs: _Collect,
    name: str, code: int, extra: dict[str, Any],
) -> None:
    server: Any = refused_port if name == "refused" else servers[name]
    with pytest.raises(SmtpMagicError) as info:
        check(settings(server, **extra))
    exc = info.value
    assert exc.exitcode == code
    assert_clean(str(exc), "the exception message")
    assert_clean(repr(exc), "the exception repr")
    assert_clean("".join(traceback.format_exception(exc)), "the formatted traceback")
    # Also every exception in the chain, including the ones suppressed with "from None".
    seen, cause = 0, exc.__cause__ or exc.__context__
    while cause is not None and seen < 10:
        assert_clean(f"{cause!r} {cause}", f"the chained {type(cause).__name__}")
        assert_clean("".join(traceback.format_exception(cause)), "a chained traceback")
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    scan_logs(all_logs)


def test_request_level_password_is_not_echoed(servers: dict[str, FaultServer],
                                              tmp_data: TmpData) -> None:
    # The seed lets a request carry its own username/password.
    server = servers["bad-password"]
    base = {"target": "127.0.0.1", "port": server.port, "security": "starttls",
            "from": "nb@example.test"}
    (r,) = send_many([{"to": "bob@example.test", "subject": "s", "body": "b",
                       "username": USER, "password": PW}], config=base)
    assert r.exitcode == 3
    assert_clean(r.to_json(), "the Response of a request-level password")
    c = connector(base).set("to", "bob@example.test").set("subject", "s").set("password", PW)
    c.set("username", USER)
    assert_clean(repr(c), "repr(Connector) with a request password")
    r2 = c.sync()
    assert r2.exitcode == 3
    assert_clean(r2.to_json(), "the connector's Response")


# -- files on disk ------------------------------------------------------------------------------
def test_outbox_files_never_hold_the_password(servers: dict[str, FaultServer],
                                              tmp_data: TmpData) -> None:
    send("bob@example.test", "Kept 7", "hello",
         config=settings(servers["deferred"], security="starttls"))
    send("bob@example.test", "Kept 6", "hello",
         config=settings(servers["stall"], security="starttls", timeout=1))
    (r,) = send_many([{"to": "bob@example.test", "subject": "Kept, request password",
                       "body": "b", "username": USER, "password": PW}],
                     config={"target": "127.0.0.1", "port": servers["deferred"].port,
                             "security": "starttls", "from": "nb@example.test"})
    assert r.exitcode == 7
    files = [p for p in tmp_data.outbox.rglob("*") if p.is_file()]
    assert len([p for p in files if p.parent.name == "meta"]) == 3
    for path in files:
        assert_clean(path.read_bytes().decode("utf-8", "replace"), f"the outbox file {path}")


# -- the command line -----------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", *args], check=False, cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


def test_cli_output_never_holds_the_password(servers: dict[str, FaultServer], refused_port: int,
                                             tmp_data: TmpData, tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"to": "bob@example.test", "from": "nb@example.test",
                                   "subject": "CLI", "body": "hello"}))
    cases = {"bad-password": "starttls", "plaintext": "auto", "deferred": "starttls",
             "refused": "starttls"}
    for name, security in cases.items():
        port = refused_port if name == "refused" else servers[name].port
        conn = tmp_path / f"{name}.json"
        conn.write_text(json.dumps({"target": "127.0.0.1", "port": port, "username": USER,
                                    "password": PW, "security": security}))
        out = _cli("send", "--config", str(conn), "--request", str(request), cwd=tmp_path)
        assert '"exitcode"' in out
        assert_clean(out, f"smtp-magic send ({name})")
        assert_clean(_cli("check", "--config", str(conn), cwd=tmp_path), f"smtp-magic check ({name})")
    # A typo next to the password: the error names the key, not the value.
    conn = tmp_path / "typo.json"
    conn.write_text(json.dumps({"target": "127.0.0.1", "passwrod": PW}))
    out = _cli("send", "--config", str(conn), "--request", str(request), cwd=tmp_path)
    assert "passwrod" in out
    assert_clean(out, "smtp-magic send (unknown key)")
    assert_clean(_cli("outbox", cwd=tmp_path), "smtp-magic outbox")


def test_secret_type_is_masked_everywhere_python_formats_it() -> None:
    s = Secret(PW)
    percent = "%s %r" % (s, s)  # noqa: UP031 - %-formatting is what is tested here
    for text in (repr(s), str(s), f"{s}", percent, repr([s]), repr({"p": s})):
        assert_clean(text, "Secret formatting")


# -- the DKIM private key ---------------------------------------------------------------------------
def _dkim_key_forms(path: Path) -> list[str]:
    """The key as it could leak: PEM lines, its DER in base64, the raw Ed25519 seed (what dkimpy
    is given) and the RSA private exponent, in decimal and hex."""
    pem = path.read_text()
    der = base64.b64decode("".join(pem.splitlines()[1:-1]))
    forms = [line for line in pem.splitlines()[1:-1] if len(line) > 20]
    forms += [base64.b64encode(der).decode()[:40], base64.b64encode(der[-32:]).decode(),
              der[-32:].hex()]
    if b"\x2b\x65\x70" not in der[:16]:  # RSA: the private exponent too
        from dkim.crypto import parse_private_key

        d = parse_private_key(der)["privateExponent"]
        forms += [str(d)[:40], f"{d:x}"[:40]]
    return forms


@pytest.fixture(params=["ed25519", "rsa"])
def dkim_key(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"{request.param}.pem"
    args = (["genpkey", "-algorithm", "ED25519"] if request.param == "ed25519"
            else ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"])
    subprocess.run(["openssl", args[0], "-out", str(path), *args[1:]], check=True,
                   capture_output=True)
    return path


def test_dkim_key_never_shows(dkim_key: Path, tmp_data: TmpData, tmp_path: Path,
                              all_logs: _Collect, refused_port: int) -> None:
    """Reprs, tables, responses and errors, DEBUG logs, the outbox and the CLI show the key's
    path at most, never the key."""
    from smtp_magic._dkim import load_key, signer_for
    from smtp_magic.server import CaptureServer

    forms = _dkim_key_forms(dkim_key)

    def clean(text: str, where: str) -> None:
        for form in forms:
            assert form not in text, f"the DKIM key ({form[:12]}...) appears in {where}"

    dkim = {"sender": "nb@example.test", "dkim_domain": "example.test", "dkim_selector": "s1",
            "dkim_key": str(dkim_key)}
    with CaptureServer(tmp_path / "capture") as server:
        config = SmtpMagic().update({**dkim, "host": server.host, "port": server.port,
                                     "security": "none", "debug": True})
        snapshot = config.snapshot()
        key = load_key(snapshot)
        signer = signer_for(snapshot, "example.test")
        for text in (repr(config), str(config.describe()), settings_table(config)._repr_html_(), repr(snapshot),
                     repr(key), str(key), repr(signer)):
            clean(text, "a repr")
        with pytest.raises(TypeError):
            pickle.dumps(key)
        r = send("bob@example.test", "signed", "hello", config=config)
        assert r.exitcode == 0, r
        clean(server.wait_for(1)[0].path.read_text(), "the sent message")
        for change in ({"dkim_domain": "other.test"}, {"port": refused_port},
                       {"dkim_selector": None}):
            r = send("bob@example.test", "x", "y", config=config.copy().update(change))
            clean(f"{r!r} {r.message} {r.to_dict()}", f"the response to {change}")
    assert scan_logs(all_logs)
    for record in all_logs.records:
        clean(logging.Formatter("%(message)s").format(record), f"the log record {record.name}")
    for path in (p for p in tmp_data.outbox.rglob("*") if p.is_file()):
        clean(path.read_bytes().decode("utf-8", "replace"), f"the outbox file {path}")
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({**dkim, "target": "127.0.0.1", "port": refused_port,
                                "dkim_domain": "elsewhere.test"}))
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"to": "bob@example.test", "subject": "CLI", "body": "b"}))
    out = _cli("send", "--config", str(conn), "--request", str(request), cwd=tmp_path)
    assert '"exitcode": 1' in out
    clean(out, "smtp-magic send")


def test_dkim_key_file_problems_do_not_echo_it(tmp_path: Path, refused_port: int) -> None:
    """A key that cannot be used (too short, wrong kind) is named by its path only."""
    short = tmp_path / "short.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(short), "512"], check=True,
                   capture_output=True)
    r = send("bob@example.test", "x", "y", config={
        "host": "127.0.0.1", "port": refused_port, "sender": "nb@example.test",
        "dkim_domain": "example.test", "dkim_selector": "s", "dkim_key": str(short)})
    assert r.exitcode == 1 and str(short) in r.message
    for line in short.read_text().splitlines()[1:-1]:
        assert line not in r.message
