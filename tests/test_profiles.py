"""Named profiles: several accounts saved without passwords, chosen per session or per send."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestingShell, TmpData
from faults import PASSWORD, USER
from IPython.core.error import UsageError
from traitlets.config import Config

import smtp_magic
from smtp_magic import SmtpMagic, send, send_many
from smtp_magic.errors import ConfigError
from smtp_magic.profiles import profiles_path
from smtp_magic.server import CaptureServer

TYPED = "typed-for-personal-91"  # a password typed for the personal account only


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def work_server(tmp_path: Path, server_tls: Any) -> Iterator[CaptureServer]:
    """The 'work' account: STARTTLS and AUTH as alice, required."""
    with CaptureServer(tmp_path / "work", tls="starttls", ssl_context=server_tls,
                       users={USER: PASSWORD}, require_auth=True) as server:
        yield server


@pytest.fixture
def personal_server(tmp_path: Path, server_tls: Any) -> Iterator[CaptureServer]:
    """The 'personal' account: another server, another login (bob / TYPED)."""
    with CaptureServer(tmp_path / "personal", tls="starttls", ssl_context=server_tls,
                       users={"bob": TYPED}, require_auth=True) as server:
        yield server


@pytest.fixture
def two_profiles(ip: TestingShell, work_server: CaptureServer, personal_server: CaptureServer,
                 ca_file: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> Path:
    """'work' (password from $WORK_PW) and 'personal' (password typed), saved as users do."""
    monkeypatch.setenv("WORK_PW", PASSWORD)
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {work_server.port} --username "
                      f"{USER} --password-env WORK_PW --from alice@work.test --cafile {ca_file} "
                      "--rate 30/s --profile work --save")
    assert "Saved the settings as profile 'work'" in capsys.readouterr().out
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {personal_server.port} "
                      "--username bob --password-env '' --from bob@home.test --rate ''")
    smtp_magic.current().password = TYPED  # as --password-prompt would, for this server
    ip.run_line_magic("smtp_config", "--profile personal --save")
    out = capsys.readouterr().out
    assert "Saved the settings as profile 'personal'" in out and "password is not in it" in out
    return profiles_path()


def test_the_profiles_file_is_json_in_the_config_dir_without_a_password(
        two_profiles: Path, tmp_data: TmpData) -> None:
    assert two_profiles == tmp_data.root / "xdg-config" / "smtp_magic" / "profiles.json"
    text = two_profiles.read_text()
    data = json.loads(text)
    assert set(data) == {"work", "personal"}
    assert data["work"]["password_env"] == "WORK_PW" and data["work"]["rate"] == "30/s"
    assert "password" not in data["personal"] and "rate" not in data["personal"]
    for secret in (PASSWORD, TYPED):
        for form in (secret, b64(secret), b64(f"\0bob\0{secret}"), b64(f"\0{USER}\0{secret}")):
            assert form not in text
    assert stat.S_IMODE(two_profiles.stat().st_mode) == 0o600


def test_sends_land_on_the_profile_s_server(ip: TestingShell, two_profiles: Path,
                                            work_server: CaptureServer,
                                            personal_server: CaptureServer) -> None:
    assert smtp_magic.current().profile == "personal"
    ip.run_cell_magic("smtp_send", "--to friend@example.test --subject Personal --sync", "hi")
    ip.run_cell_magic("smtp_send", "--profile work --to boss@example.test --subject Work --sync",
                      "report")
    (work,) = work_server.wait_for(1)
    (personal,) = personal_server.wait_for(1)
    assert (work.subject, work.mail_from) == ("Work", "alice@work.test")
    assert (personal.subject, personal.mail_from) == ("Personal", "bob@home.test")
    # The work send logged in with $WORK_PW: the password typed for personal never went there
    # (the work server would have refused it: exit 3).
    assert smtp_magic.current().profile == "personal"  # --profile is for that one send

    # The API: profile= and a per-request "profile" key.
    assert send("boss@example.test", "API work", "x", profile="work").ok
    out = send_many([{"to": "a@example.test", "subject": "Many work", "body": "x",
                      "profile": "work"}])
    assert out[0].ok, out
    assert {m.subject for m in work_server.wait_for(3)} == {"Work", "API work", "Many work"}


def test_switching_profile_replaces_the_account(ip: TestingShell, two_profiles: Path,
                                                work_server: CaptureServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("smtp_config", "--profile work")
    assert f"Using profile 'work': 127.0.0.1:{work_server.port} as {USER}." in capsys.readouterr().out
    s = smtp_magic.current()
    assert (s.port, s.username, bool(s.password), s.password_env, s.rate) == (
        work_server.port, USER, False, "WORK_PW", "30/s")
    ip.run_line_magic("smtp_config", "--profile personal")
    s = smtp_magic.current()
    # Settings the profile leaves out take their defaults: no rate, no password source.
    assert (s.username, s.rate, s.password_env, bool(s.password)) == ("bob", None, None, False)
    # Options given with --profile win over it, for this session.
    ip.run_line_magic("smtp_config", "--profile work --timeout 7")
    assert (smtp_magic.current().timeout, smtp_magic.current().profile) == (7, "work")
    # %config sets the trait: the profile applies too.
    ip.run_line_magic("config", "SmtpMagic.profile = 'personal'")
    assert smtp_magic.current().username == "bob"


def test_unknown_profile_names_suggest_the_closest(ip: TestingShell, two_profiles: Path,
                                                   tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"There is no profile 'wrok' in .*profiles\.json'; "
                                         r"did you mean 'work'\?"):
        ip.run_line_magic("smtp_config", "--profile wrok")
    with pytest.raises(UsageError, match=r"did you mean 'work'\?"):
        ip.run_cell_magic("smtp_send", "--profile wokr --to a@example.test --subject x", "x")
    r = send("a@example.test", "x", "x", profile="persnal")
    assert r.exitcode == 1 and "did you mean 'personal'?" in r.message
    with pytest.raises(ConfigError, match="the saved ones are personal, work"):
        SmtpMagic().update({"profile": "ses"})
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "check", "--profile", "wrk"],
                          capture_output=True, text=True, env=os.environ, timeout=60,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "did you mean 'work'?" in json.loads(proc.stdout)["message"]


def test_save_needs_a_name_and_nothing_saved_yet_says_how(ip: TestingShell) -> None:
    with pytest.raises(UsageError, match="--save needs the name"):
        ip.run_line_magic("smtp_config", "--save")
    with pytest.raises(UsageError, match=r"none is saved yet .* --profile work --save"):
        ip.run_line_magic("smtp_config", "--profile work")


def test_a_hand_written_password_is_refused(tmp_data: TmpData) -> None:
    path = profiles_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"leaky": {"target": "smtp.example.test", "password": "pw"},
                                "typo": {"hots": "smtp.example.test"}}))
    with pytest.raises(ConfigError, match="sets a password, which a profile never holds"):
        SmtpMagic().update({"profile": "leaky"})
    with pytest.raises(ConfigError, match=r"Unknown setting 'hots' in profile 'typo'.*"
                                          r"did you mean 'host'\?"):
        SmtpMagic().update({"profile": "typo"})


def test_cli_check_with_a_profile(two_profiles: Path, work_server: CaptureServer,
                                  tmp_path: Path) -> None:
    env = {**os.environ, "WORK_PW": PASSWORD}
    proc = subprocess.run([sys.executable, "-m", "smtp_magic", "check", "--profile", "work"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Connected to 127.0.0.1:{work_server.port}" in proc.stdout
    assert "Login: succeeded" in proc.stdout


def test_ipython_config_profile_with_other_values_winning(two_profiles: Path,
                                                          work_server: CaptureServer) -> None:
    cfg = Config()
    cfg.SmtpMagic.profile = "work"
    cfg.SmtpMagic.timeout = 9.0
    s = SmtpMagic.from_ipython_config(cfg)
    assert (s.profile, s.port, s.username, s.timeout) == ("work", work_server.port, USER, 9.0)
