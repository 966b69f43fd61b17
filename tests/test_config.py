"""Settings: traits, validation, sources and their precedence, JSON files, masking."""

from __future__ import annotations

import json

import pytest
from traitlets.config import Config

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
    shown = [repr(s), str(s), s._repr_html_(), repr(snap), str(snap.password), repr(s.password),
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
