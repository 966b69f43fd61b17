"""One source of truth: settings derived from the traits, exit codes, errors that keep their cause,
the attachment-spec parser shared by the API, the magics and the form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from conftest import PASSWORD, USER, TestingShell
from faults import FaultServer
from IPython.core.error import UsageError

from smtp_magic import Response, SmtpMagic, api, send
from smtp_magic.attachments import resolve, resolve_all
from smtp_magic.config import SETTINGS, ConnectionSettings, setting_options
from smtp_magic.errors import (
    AuthFailed,
    ConnectFailed,
    ExitCode,
    InvalidRequest,
    Rejected,
    error_for,
)
from smtp_magic.models import Attachment
from smtp_magic.server import CaptureServer

SENDER = "nb@example.test"

# A value for each setting that differs from its default, as typed after its option.
SAMPLE = {
    "host": ("mail.example.org", "mail.example.org"), "port": ("587", 587),
    "security": ("starttls", "starttls"), "username": ("ann@example.org", "ann@example.org"),
    "password_env": ("MY_PW", "MY_PW"), "sender": ("Ann <ann@example.org>", "Ann <ann@example.org>"),
    "cafile": ("/etc/ssl/private-ca.pem", "/etc/ssl/private-ca.pem"), "timeout": ("12.5", 12.5),
    "attempts": ("5", 5), "connections": ("2", 2), "attachment_size": ("4", 4.0),
    "content_type": ("text/plain", "text/plain"), "send_mode": ("sync", "sync"),
    "outbox_dir": ("/tmp/elsewhere", "/tmp/elsewhere"),
    "auth": ("oauth2", "oauth2"),
    "oauth2_provider": ("https://login.example.org/", "https://login.example.org"),
    "oauth2_client_id": ("0f3c-app", "0f3c-app"), "oauth2_tenant": ("contoso.example", "contoso.example"),
    "oauth2_scopes": ("openid email", "openid email"),
    "oauth2_token_command": ("pass show mail-token", "pass show mail-token"),
    "rate": ("30/min", "30/min"), "profile": ("work", "work"),  # "work" is saved by the test
    "dkim_domain": ("example.org", "example.org"), "dkim_selector": ("mail2026", "mail2026"),
    "dkim_key": ("/keys/dkim.pem", "/keys/dkim.pem"),
    "dkim_headers": ("From, To, Subject", "From, To, Subject"),
    "unsubscribe_mailto": ("leave@example.org", "leave@example.org"),
    "save_sent": ("Sent", "Sent"), "imap_host": ("imap.example.org", "imap.example.org"),
    "imap_port": ("143", 143), "imap_security": ("starttls", "starttls"),
    "reply_to": ("help@example.org", "help@example.org"),
    "transport": ("graph", "graph"),
    "graph_endpoint": ("https://graph.microsoft.us/v1.0/", "https://graph.microsoft.us/v1.0"),
}
# Settings that are not typed on a command line: secrets, and Python callables.
NO_OPTION = ("password", "oauth2_token_provider")


# -- settings ------------------------------------------------------------------------------------
def test_every_setting_is_in_the_snapshot_the_table_and_the_request_keys() -> None:
    settings = SmtpMagic()
    snapshot = settings.snapshot()
    assert [name for name, _ in settings.describe()] == list(SETTINGS)
    for name in SETTINGS:
        assert getattr(snapshot, name) == getattr(settings, name), name
        assert name in api.CONNECTION_FIELDS, name
    assert set(SETTINGS) == set(SmtpMagic.class_trait_names(config=True))


def test_every_setting_but_the_password_has_an_option_in_declaration_order() -> None:
    options = setting_options()
    assert [o.name for o in options] == [n for n in SETTINGS if n not in NO_OPTION]
    flags = {o.name: o.flag for o in options}
    assert flags["sender"] == "--from" and flags["use_keyring"] == "--keyring"
    assert flags["attachment_size"] == "--attachment-size" and flags["cafile"] == "--cafile"


@pytest.mark.parametrize("option", [o for o in setting_options() if o.kind is not bool],
                         ids=lambda o: o.flag)
def test_smtp_config_sets_each_setting(ip: TestingShell, option: Any) -> None:
    from smtp_magic.config import current

    typed, expected = SAMPLE[option.name]
    if option.name == "profile":
        from smtp_magic.profiles import save

        save("work", {"host": "mail.example.org"})
    ip.run_line_magic("smtp_config", f"{option.flag} '{typed}'")
    assert getattr(current(), option.name) == expected


def test_boolean_settings_take_yes_and_no_flags(ip: TestingShell) -> None:
    from smtp_magic.config import current

    ip.run_line_magic("smtp_config", "--no-validate-certs --allow-plaintext-auth")
    assert current().validate_certs is False and current().allow_plaintext_auth is True
    ip.run_line_magic("smtp_config", "--validate-certs")
    assert current().validate_certs is True


def test_a_bad_option_value_names_the_setting(ip: TestingShell) -> None:
    with pytest.raises(UsageError, match="attempts"):
        ip.run_line_magic("smtp_config", "--attempts 0")


def test_a_request_may_override_any_setting_for_one_send(smtp_server: CaptureServer) -> None:
    base = SmtpMagic().update({"host": "127.0.0.1", "port": 9, "sender": SENDER,
                               "security": "none"})
    r = api.send_many([{"to": "bob@example.test", "subject": "Override", "body": "hi",
                        "port": smtp_server.port, "attempts": 1, "timeout": 10}], config=base)[0]
    assert r.exitcode == 0, r
    assert smtp_server.wait_for(1)[0].subject == "Override"
    assert base.port == 9  # the settings themselves are untouched


def test_snapshots_are_immutable_hashable_and_masked() -> None:
    settings = SmtpMagic().update({"password": "pw-registry-1", "port": 2525})
    a, b = settings.snapshot(), settings.snapshot()
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.replace(port=2526) != a and a.replace(port=2526).port == 2526
    with pytest.raises(AttributeError):
        a.port = 1  # type: ignore[misc]
    assert "pw-registry-1" not in repr(a)
    with pytest.raises(TypeError):
        ConnectionSettings({"no_such_setting": 1})


def test_unknown_request_parameter_suggests_the_closest() -> None:
    r = api.send_many([{"to": "a@example.test", "subjet": "x"}])[0]
    assert r.exitcode == 1 and "did you mean 'subject'?" in r.message
    with pytest.raises(InvalidRequest, match="did you mean 'body'"):
        api.connector({}).set("bdy", "x")


# -- exit codes and errors ----------------------------------------------------------------------
def test_exit_codes_are_one_enum_used_by_responses_and_errors() -> None:
    assert [int(c) for c in ExitCode] == list(range(9))
    r = Response(exitcode=3, message="Login refused.")
    assert r.exitcode is ExitCode.AUTH and r.result == "not sent: authentication failed"
    assert json.loads(r.to_json())["exitcode"] == 3
    with pytest.raises(AuthFailed):
        r.raise_for_status()
    for code in ExitCode:
        if code is not ExitCode.SENT:
            assert error_for(code, "x").exitcode is code


def test_cli_help_lists_every_exit_code() -> None:
    out = subprocess.run([sys.executable, "-m", "smtp_magic", "send", "--help"],
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    for code in ExitCode:
        assert f"{int(code)} {code.meaning}" in flat


def test_a_refused_session_keeps_the_reply_and_its_cause(tmp_path: Path) -> None:
    server = FaultServer(tmp_path / "f", greeting=(554, "5.3.2 No SMTP service here")).start()
    try:
        with pytest.raises(ConnectFailed) as info:
            api.check({"host": "127.0.0.1", "port": server.port, "security": "none",
                       "timeout": 5})
    finally:
        server.stop()
    error = info.value
    assert error.code == 554 and error.reply == "554 5.3.2 No SMTP service here"
    assert isinstance(error.__cause__, aiosmtplib.SMTPConnectResponseError)


def test_a_refused_login_keeps_the_reply_and_its_cause(auth_server: CaptureServer,
                                                       client_ssl_env: Path) -> None:
    with pytest.raises(AuthFailed) as info:
        api.check({"host": "127.0.0.1", "port": auth_server.port, "username": USER,
                   "password": PASSWORD + "-wrong", "timeout": 5})
    assert info.value.code == 535 and info.value.reply.startswith("535")
    assert isinstance(info.value.__cause__, aiosmtplib.SMTPAuthenticationError)
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value.__cause__)


def test_refused_recipients_carry_the_reply(tmp_path: Path) -> None:
    server = FaultServer(tmp_path / "f", refuse_rcpt={"bob@example.test": (550, "5.1.1 No such user")}
                         ).start()
    try:
        r = send("bob@example.test", "x", "y", config={"host": "127.0.0.1", "port": server.port,
                                                       "security": "none", "sender": SENDER})
    finally:
        server.stop()
    assert r.exitcode is ExitCode.REJECTED
    with pytest.raises(Rejected) as info:
        r.raise_for_status()
    assert info.value.refused == {"bob@example.test": (550, "5.1.1 No such user")}


# -- attachment specs ---------------------------------------------------------------------------
def test_attachment_specs(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("y\n2\n")
    pattern = str(tmp_path / "*.csv")
    assert [a.filename for a in resolve(pattern)] == ["a.csv", "b.csv"]
    assert resolve(("note.txt", "hi"))[0].read() == b"hi"
    assert [a.filename for a in resolve_all(str(tmp_path / "a.csv"))] == ["a.csv"]
    assert [a.filename for a in resolve_all([str(tmp_path / "a.csv"), ("z.bin", b"\0")])] == [
        "a.csv", "z.bin"]
    ns = {"blob": b"\x00\x01", "text": "héllo"}
    assert resolve("blob:blob.bin", ns)[0].read() == b"\x00\x01"
    assert resolve("text:t.txt", ns)[0].read() == "héllo".encode()
    with pytest.raises(InvalidRequest, match="neither a notebook variable nor a file"):
        resolve("nothing_here", ns)
    with pytest.raises(InvalidRequest, match="No file matches"):
        resolve(str(tmp_path / "*.pdf"))
    with pytest.raises(InvalidRequest, match="must hold bytes or text"):
        resolve(("five.bin", 5))
    att = Attachment.from_bytes("x.txt", b"x")
    assert resolve(att) == [att]


def test_the_api_magics_and_form_share_the_spec_parser(ip: TestingShell, smtp_server: CaptureServer,
                                                       tmp_path: Path) -> None:
    """A DataFrame given by value (API), by name (magic) and picked (form) arrives alike."""
    pd = pytest.importorskip("pandas")
    from smtp_magic.widgets import compose

    df = pd.DataFrame({"region": ["N", "S"], "sales": [1, 2]})
    config = {"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
              "sender": SENDER}
    r = send("bob@example.test", "API", "x", attachments=[("sales.xlsx", df)], config=config)
    assert r.exitcode == 0, r
    ip.user_ns["df"] = df
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                      f"--security none --from {SENDER}")
    ip.run_cell_magic("smtp_send", "--to bob@example.test --subject Magic --attach df:sales.xlsx "
                      "--sync", "x")
    form = compose(to="bob@example.test", subject="Form", attachments=["df:sales.xlsx"],
                   namespace={"df": df})
    form._on_send()
    assert form._future is not None
    form._future.result(10)
    got = {m.subject: m for m in smtp_server.wait_for(3)}
    for subject in ("API", "Magic", "Form"):
        (part,) = got[subject].message.iter_attachments()
        assert part.get_filename() == "sales.xlsx", subject
        assert part.get_content_type().endswith("spreadsheetml.sheet"), subject
        assert part.get_content().startswith(b"PK"), subject
    form.close()


# -- the public names ---------------------------------------------------------------------------
def test_no_submodule_shadows_a_public_name() -> None:
    """``import smtp_magic.<module>`` binds the package attribute of that name: a submodule
    named like a public function (``compose``) would replace it after the first import."""
    import importlib
    import pkgutil

    import smtp_magic

    modules = {m.name for m in pkgutil.iter_modules(smtp_magic.__path__)}
    for name in modules - {"__main__"}:
        importlib.import_module(f"smtp_magic.{name}")
    assert callable(smtp_magic.compose) and smtp_magic.compose.__module__ == "smtp_magic"
    for name in smtp_magic.__all__:
        assert not isinstance(getattr(smtp_magic, name), type(smtp_magic)), name
