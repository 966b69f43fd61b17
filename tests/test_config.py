"""Settings: traits, validation, sources and their precedence, JSON files, masking."""

from __future__ import annotations

import json
import re

import pytest
from traitlets.config import Config

from smtp_magic._views import settings_table
from smtp_magic.config import Secret, SmtpMagic, load_json, normalize_keys
from smtp_magic.credentials import resolve_password
from smtp_magic.errors import ConfigError

PASSWORD = "pw-config-7f3a"


def test_defaults_match_the_contract():
    s = SmtpMagic()
    assert (s.host, s.port, s.security, s.timeout, s.attachment_size) == ("localhost", 25, "auto", 30, 10)
    assert s.validate_certs is True and s.allow_plaintext_auth is False
    assert s.content_type == "text/html" and s.username is None and s.password is None


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("port", 0, "between 1 and 65535"),
        ("port", 70000, "between 1 and 65535"),
        ("timeout", 0, "more than 0"),
        ("attachment_size", 11, "at most 10"),
        ("attachment_size", 0, "more than 0"),
        ("security", "ssl", "auto, starttls, tls, none"),
        ("port", "abc", "'port'"),
    ],
)
def test_invalid_values_are_one_clear_sentence(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        SmtpMagic().update({key: value})
    message = str(info.value)
    assert fragment in message and key in message
    assert message.endswith(".") and "\n" not in message


def test_update_is_all_or_nothing():
    s = SmtpMagic()
    with pytest.raises(ConfigError):
        s.update({"host": "mail.example.test", "port": 0})
    assert s.host == "localhost"


def test_seed_json_with_the_misspelt_post_suggests_port(tmp_path):
    path = tmp_path / "conn.json"
    path.write_text(json.dumps({"target": "smtp.example.test", "username": "a@example.test",
                                "password": PASSWORD, "post": 25, "attachment_size": 0.5}))
    with pytest.raises(ConfigError, match=r"Unknown setting 'post' in .*conn.json; did you mean 'port'\?"):
        SmtpMagic().load_file(path)


def test_seed_json_and_trait_names_are_both_accepted(tmp_path):
    path = tmp_path / "conn.json"
    path.write_text(json.dumps({"target": "smtp.example.test", "port": 465, "password": PASSWORD,
                                "attachment_size": 0.5, "security": "tls", "from": "x@example.test"}))
    s = SmtpMagic().load_file(path)
    assert (s.host, s.port, s.attachment_size, s.security, s.sender) == (
        "smtp.example.test", 465, 0.5, "tls", "x@example.test")
    assert s.snapshot().attachment_limit == 512 * 1024


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json.*not valid JSON"):
        load_json(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_json(tmp_path / "missing.json")


def test_precedence_defaults_ipython_config_environment_file_options(tmp_path):
    cfg = Config()
    cfg.SmtpMagic.host = "from-ipython-config"
    cfg.SmtpMagic.port = 2525
    cfg.SmtpMagic.timeout = 12
    s = SmtpMagic(config=cfg)
    assert (s.host, s.port, s.timeout) == ("from-ipython-config", 2525, 12)
    s.load_env({"SMTP_HOST": "from-env", "SMTP_PORT": "587"})
    assert (s.host, s.port, s.timeout) == ("from-env", 587, 12)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"port": 465}))
    s.load_file(path)
    assert (s.host, s.port) == ("from-env", 465)
    s.update({"host": "from-option"})
    snap = s.snapshot({"port": 2465})  # one send's options win, for that send only
    assert (snap.host, snap.port) == ("from-option", 2465)
    assert s.port == 465


def test_password_is_masked_everywhere():
    s = SmtpMagic(password=PASSWORD, username="u@example.test")
    snap = s.snapshot()
    shown = [repr(s), str(s), settings_table(s)._repr_html_(), repr(snap), str(snap.password), repr(s.password),
             str(s.describe()), str(s.trait_values())]
    assert all(PASSWORD not in text for text in shown)
    assert isinstance(s.password, Secret) and s.password.reveal() == PASSWORD
    assert resolve_password(snap) == PASSWORD


def test_invalid_password_value_does_not_echo_it():
    with pytest.raises(ConfigError) as info:
        SmtpMagic().update({"password": 12345})
    assert "12345" not in str(info.value)


def test_password_from_environment_variable_is_read_at_send_time(monkeypatch):
    s = SmtpMagic(password_env="MY_SMTP_PW")
    monkeypatch.setenv("MY_SMTP_PW", PASSWORD)
    assert resolve_password(s.snapshot()) == PASSWORD
    monkeypatch.delenv("MY_SMTP_PW")
    with pytest.raises(ConfigError, match="'MY_SMTP_PW'.*not set"):
        resolve_password(s.snapshot())


def test_aliases_and_unknown_keys():
    assert normalize_keys({"target": "h", "from": "a@b.c", "content-type": "text/plain"}) == {
        "host": "h", "sender": "a@b.c", "content_type": "text/plain"}
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        normalize_keys({"timeot": 3})


@pytest.mark.parametrize("port, security, implicit", [(465, "auto", True), (587, "auto", False),
                                                      (2465, "tls", True), (465, "none", False)])
def test_implicit_tls_rule(port, security, implicit):
    assert SmtpMagic(port=port, security=security).snapshot().implicit_tls is implicit


# -- where each value came from, and --local that does not outlive the capture server ---------------

def test_each_setting_knows_where_its_value_came_from(tmp_path):
    cfg = Config()
    cfg.SmtpMagic.port = 2525
    path = tmp_path / "conn.json"
    path.write_text(json.dumps({"username": "ann@example.org"}))
    s = SmtpMagic(config=cfg).load_env({"SMTP_HOST": "env.example", "SMTP_SECURITY": "starttls"})
    s.load_file(path)
    s.update({"timeout": 30}, source="%smtp_config")  # the default value, but set on purpose
    s.attempts = 5  # as the form's settings panel or Python code does
    later = Config()
    later.SmtpMagic.connections = 2  # %config SmtpMagic.connections = 2
    s.update_config(later)
    assert s.source("port") == "IPython config" and s.source("connections") == "IPython config"
    assert s.source("host") == "environment (SMTP_HOST)"
    assert s.source("security") == "environment (SMTP_SECURITY)"
    assert s.source("username") == f"file {path}"
    assert s.source("timeout") == "%smtp_config" and s.source("attempts") == "Python or the form"
    assert s.source("cafile") == "default"
    rows = {name: (value, origin) for name, value, origin in s.rows()}
    assert rows["host"] == ("env.example", "environment (SMTP_HOST)")
    assert [name for name, _, _ in s.rows()] == [name for name, _ in s.describe()]
    shown = settings_table(s)._repr_html_()
    assert re.search(r"<th [^>]*>from</th>", shown) and "environment (SMTP_HOST)" in shown
    copy = s.copy()
    assert [r for r in copy.rows()] == s.rows()


def test_local_settings_end_when_the_host_changes():
    s = SmtpMagic().load_env({"SMTP_SECURITY": "starttls"})
    s.update({"password_env": "MY_PW"}, source="%smtp_config")
    s.use_local("127.0.0.1", 40025)
    assert (s.host, s.port, s.security, s.password_env) == ("127.0.0.1", 40025, "none", None)
    assert s.sender == "notebook@localhost.test" and s.source("sender") == "%smtp_config --local"
    s.update({"username": "bob"}, source="%smtp_config")  # still on the capture server
    assert s.security == "none" and s.sender == "notebook@localhost.test"

    s.update({"host": "real.example", "port": 587, "username": "u@example.org"},
             source="%smtp_config")
    assert (s.host, s.port, s.username) == ("real.example", 587, "u@example.org")
    assert s.security == "starttls" and s.source("security") == "environment (SMTP_SECURITY)"
    assert s.sender is None and s.source("sender") == "default"  # the username sends again
    # MY_PW was given for localhost:25, not for u@example.org at real.example:587: withheld.
    assert s.password_env is None and s.password.given_for == "localhost:25"
    assert "--local" not in " ".join(origin for _, _, origin in s.rows())


@pytest.mark.parametrize("provider, preset", [
    ("microsoft", ("smtp.office365.com", 587, "starttls")),
    ("google", ("smtp.gmail.com", 465, "tls"))])
def test_a_provider_after_local_replaces_what_local_set(provider: str, preset: tuple) -> None:
    """`--local`, then `--oauth2-provider microsoft`: the preset's host, port and security, not
    127.0.0.1 without TLS (where the token would never be accepted, or would go unencrypted)."""
    s = SmtpMagic()
    s.use_local("127.0.0.1", 40025)
    s.update({"oauth2_provider": provider, "oauth2_client_id": "app"}, source="%smtp_config")
    assert (s.host, s.port, s.security, s.auth) == (*preset, "oauth2")
    assert all(s.source(n) == "%smtp_config" for n in ("host", "port", "security"))
    assert s.sender is None  # the stand-in sender of --local is gone too


def test_a_provider_after_local_still_loses_to_what_the_same_line_gives() -> None:
    s = SmtpMagic()
    s.use_local("127.0.0.1", 40025)
    s.update({"oauth2_provider": "microsoft", "port": 2525, "security": "tls"},
             source="%smtp_config")
    assert (s.host, s.port, s.security) == ("smtp.office365.com", 2525, "tls")
    # What the user chose (not --local) before the provider also stays.
    s = SmtpMagic().update({"host": "relay.example", "port": 2587}, source="%smtp_config")
    s.update({"oauth2_provider": "microsoft"}, source="%smtp_config")
    assert (s.host, s.port, s.security) == ("relay.example", 2587, "starttls")


def test_a_provider_after_local_in_the_magic(ip) -> None:
    from smtp_magic import current
    from smtp_magic.server import local_server

    try:
        ip.run_line_magic("smtp_config", "--local")
        ip.run_line_magic("smtp_config", "--oauth2-provider microsoft --oauth2-client-id app "
                          "--username me@contoso.test")
        s = current()
        assert (s.host, s.port, s.security, s.auth) == ("smtp.office365.com", 587, "starttls",
                                                       "oauth2")
    finally:
        local_server().stop()  # the process-wide server: the next user gets a fresh one


def test_what_was_set_since_local_stays_and_any_way_of_leaving_restores():
    s = SmtpMagic()
    s.use_local("127.0.0.1", 40025)
    s.update({"security": "starttls"}, source="%smtp_config")  # chosen after --local
    s.use_local("127.0.0.1", 40025)  # a second --local remembers what came before the first
    s.port = 2525  # e.g. the form's settings panel
    assert s.host == "localhost" and s.source("host") == "default"  # from before the first
    assert s.port == 2525 and s.security == "starttls"
    assert s.sender == "notebook@localhost.test"  # the host is still this machine
    s.use_local("127.0.0.1", 40025)
    s.update({"security": "tls"}, source="%smtp_config")
    cfg = Config()
    cfg.SmtpMagic.host = "smtp.example"
    s.update_config(cfg)  # %config SmtpMagic.host = "smtp.example"
    assert (s.host, s.port, s.security) == ("smtp.example", 2525, "tls")
