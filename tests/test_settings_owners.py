"""The settings keep the settings: no views, no file reads in validators; where values came from
and what --local replaced live in helpers (smtp_magic._provenance)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from traitlets import TraitError
from traitlets.traitlets import ValidateHandler

from smtp_magic.config import SmtpMagic


def test_the_settings_layer_imports_no_views() -> None:
    """Neither at the top nor lazily inside a function: no display module, IPython or widgets."""
    tree = ast.parse((ROOT / "smtp_magic" / "config.py").read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not {m for m in imported if m.lstrip(".").startswith(
        ("_views", "_theme", "preview", "IPython", "ipywidgets"))}, imported


def test_no_validator_reads_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting each trait to a value goes through its validator; none of them opens a file."""
    import builtins
    import io

    profiles = tmp_path / "config" / "smtp_magic" / "profiles.json"
    profiles.parent.mkdir(parents=True)
    profiles.write_text(json.dumps({"work": {"host": "smtp.work.example", "port": 587}}))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    opened: list[str] = []
    real_open, real_io_open = builtins.open, io.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    settings = SmtpMagic()
    samples = {"port": 587, "timeout": 5.0, "attachment_size": 5.0, "attempts": 2,
               "connections": 2, "oauth2_provider": "google", "rate": "30/min",
               "dkim_domain": "example.org", "dkim_selector": "s1", "dkim_headers": "From, To",
               "imap_host": "imap.example.org", "host": "smtp.example.org", "profile": "work",
               "graph_endpoint": "https://graph.microsoft.com/v1.0"}
    # Every setting with a validator of its own has a sample here (a new one must be added).
    validated = {name for handler in vars(SmtpMagic).values()
                 if isinstance(handler, ValidateHandler) for name in handler.trait_names}
    assert validated <= set(samples), validated - set(samples)
    for name in validated & set(samples):
        settings.traits()[name]._validate(settings, samples[name])
    # The profile's validator checks the name only; choosing it reads the file (below).
    assert opened == [], opened
    monkeypatch.setattr(io, "open", real_io_open)
    monkeypatch.setattr(builtins, "open", real_open)
    settings.profile = "work"
    assert settings.host == "smtp.work.example" and settings.port == 587


def test_an_unknown_profile_set_directly_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    settings = SmtpMagic().update({"host": "smtp.example.org"}, source="the test")
    with pytest.raises(TraitError) as info:
        settings.profile = "nope"
    assert "nope" in str(info.value) and "\n" not in str(info.value)
    assert settings.profile is None and settings.source("profile") == "default"
    assert settings.host == "smtp.example.org" and settings.source("host") == "the test"


def test_provenance_and_local_are_helpers_the_settings_own() -> None:
    settings = SmtpMagic().update({"security": "starttls"}, source="%smtp_config")
    settings.use_local("127.0.0.1", 2525)
    assert settings.local and settings.provenance.get("security") == "%smtp_config --local"
    settings.host = "smtp.example.org"
    assert settings.security == "starttls" and settings.source("security") == "%smtp_config"
    assert "security" in settings.left_local()
    copy = settings.copy()
    assert copy.provenance is not settings.provenance and copy.rows() == settings.rows()


def test_displaying_the_settings_in_a_notebook_shows_their_table(ip: Any) -> None:
    from smtp_magic import config
    from smtp_magic.magics import unload_ipython_extension

    data, _ = ip.display_formatter.format(config.current())  # how Out[] shows them
    assert "SmtpMagic settings" in data["text/html"] and "<table" in data["text/html"]
    unload_ipython_extension(ip)
    data, _ = ip.display_formatter.format(config.current())
    assert "text/html" not in data  # the extension's: gone with it


def test_a_change_is_staged_and_applied_at_once(tmp_path: Path) -> None:
    """What %smtp_config does, without IPython: all or nothing, options over the file."""
    from smtp_magic._configure import change_settings
    from smtp_magic.errors import ConfigError

    settings = SmtpMagic().update({"host": "smtp.a.example", "port": 587, "username": "me",
                                   "password": "pw"}, source="the test")
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"host": "smtp.b.example", "port": 465}))
    with pytest.raises(ConfigError):
        change_settings(settings, {"port": 70000}, file=conn)
    assert (settings.host, settings.port) == ("smtp.a.example", 587)  # nothing changed
    changed = change_settings(settings, {"port": 2465}, file=conn)
    assert (settings.host, settings.port) == ("smtp.b.example", 2465)
    assert settings.source("port") == "%smtp_config" and settings.source("host") == f"file {conn}"
    assert changed.withheld is not None and changed.withheld.given_for == \
        "me at smtp.a.example:587"  # the password stays with its server
    changed = change_settings(settings, {"password_env": "MY_PW"})
    assert settings.password is None and settings.password_env == "MY_PW"  # the last source wins
    assert changed.withheld is None and changed.saved is None
