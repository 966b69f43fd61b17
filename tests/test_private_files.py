"""Files that hold mail, tokens or settings are the user's alone; settings files others could
have written are refused; a broken config file is one sentence, never a traceback."""

from __future__ import annotations

import grp
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestingShell, TmpData
from faults import FaultServer
from IPython.core.error import UsageError
from test_cli_seed import run_cli

import smtp_magic
from smtp_magic import profiles
from smtp_magic.outbox import Batch, Outbox
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (root included) -> its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path, *, files: int) -> None:
    found = modes(root)
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (root / name).is_dir() else 0o600)}
    assert not wrong, wrong
    assert sum(1 for name in found if (root / name).is_file()) >= files


def test_mail_tokens_and_settings_are_private_whatever_the_umask(
        umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fault_server: Callable[..., FaultServer]) -> None:
    data, cfg = tmp_path / "data", tmp_path / "cfg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    for name in ("SMTP_MAGIC_OUTBOX", "SMTP_MAGIC_CAPTURE_DIR"):
        monkeypatch.delenv(name)  # the default places, under smtp_magic/
    # The capture server's Maildir: a message received.
    with CaptureServer() as server:
        r = smtp_magic.send("bob@example.test", "Captured", "hi", sender="a@example.test",
                            config={"host": server.host, "port": server.port, "security": "none"})
        assert r.exitcode == 0 and server.wait_for(1)
    # The outbox: a message the server keeps refusing for now (exit 7) stays, with its
    # envelope (Bcc included) in the sidecar; and a batch journal while it is being sent.
    busy = fault_server(data_reply=(451, "4.3.0 try later"))
    r = smtp_magic.send("bob@example.test", "Kept", "hi", sender="a@example.test",
                        bcc="secret@example.test",
                        config={"host": busy.host, "port": busy.port, "security": "none",
                                "attempts": 1})
    assert r.exitcode == 7, r
    batch = Batch(Outbox())
    batch.add([b"Subject: journal\r\n\r\nbody\r\n"], sender="a@example.test",
              recipients=("b@example.test",), message_id="<j@example.test>", subject="journal")
    batch.commit()
    # An OAuth2 sign-in without a keyring, and a saved profile.
    TokenStore(use_keyring=False).put("key", {"refresh_token": "rt"})
    profiles.save("work", {"host": "smtp.example.org", "port": 587})
    try:
        assert_private(data / "smtp_magic", files=5)  # .eml, message, sidecar, journal, tokens
        assert_private(cfg / "smtp_magic", files=1)
        assert (data / "smtp_magic" / "outbox" / "journal").is_dir()
    finally:
        batch.close()


def test_old_folders_of_ours_are_narrowed_and_a_chosen_one_is_not(
        tmp_data: TmpData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SMTP_MAGIC_OUTBOX")
    old = tmp_path / "data" / "smtp_magic" / "outbox"
    (old / "new").mkdir(parents=True)
    for folder in (old.parent, old, old / "new"):
        folder.chmod(0o755)  # as an older version left them
    Outbox().add(b"Subject: x\r\n\r\ny\r\n", sender="a@example.test", recipients=("b@x.test",),
                 message_id="<x@example.test>", subject="x")
    assert {oct(m) for m in modes(old).values()} <= {"0o700", "0o600"}
    assert stat.S_IMODE(old.parent.parent.stat().st_mode) != 0o700  # $XDG_DATA_HOME: not ours
    assert stat.S_IMODE(old.parent.stat().st_mode) == 0o700  # smtp_magic/ itself too
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    Outbox(shared).add(b"Subject: x\r\n\r\ny\r\n", sender="a@example.test",
                       recipients=("b@x.test",), message_id="<y@example.test>", subject="x")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # the user's choice
    assert {oct(m) for n, m in modes(shared).items() if n != "."} <= {"0o700", "0o600"}


# -- settings files others could have written are refused ----------------------------------------

def a_config(folder: Path, mode: int = 0o600) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "conn.json"
    path.write_text(json.dumps({"target": "smtp.example.org", "port": 587}))
    path.chmod(mode)
    return path


def other_group() -> int:
    for name in ("staff", "nogroup", "users", "daemon"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    pytest.skip("no second group on this machine")


def test_a_writable_config_file_is_refused_everywhere(
        ip: TestingShell, tmp_path: Path) -> None:
    world = a_config(tmp_path / "w", 0o666)
    expected = (f"Configuration file {str(world)!r} is writable by everyone, who could change "
                f"where mail and passwords go: make it yours alone with chmod go-w {world} "
                "(or chmod 600).")
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("smtp_config", f"--file {world}")
    assert str(info.value) == expected
    assert smtp_magic.current().host == "localhost"  # nothing changed
    r = smtp_magic.send("a@example.test", "s", "b", config=str(world))
    assert r.exitcode == 1 and r.message == expected
    rc, answer, _ = run_cli("check", "--config", str(world), cwd=tmp_path)
    assert rc == 1 and answer["message"] == expected

    group = a_config(tmp_path / "g", 0o660)
    os.chown(group, -1, other_group())
    r = smtp_magic.send("a@example.test", "s", "b", config=str(group))
    assert r.exitcode == 1 and "is writable by its group" in r.message

    # Anyone may swap a file in a world-writable folder without the sticky bit (unlike /tmp).
    folder = tmp_path / "open"
    path = a_config(folder)
    folder.chmod(0o777)
    r = smtp_magic.send("a@example.test", "s", "b", config=str(path))
    assert r.exitcode == 1 and f"is in {str(folder)!r}, a folder everyone may write to" in r.message
    folder.chmod(0o1777)  # sticky, as /tmp: only the owner may replace the file
    assert smtp_magic.SmtpMagic().load_file(path).host == "smtp.example.org"
    folder.chmod(0o700)

    # Another user's file (root's aside): they could change it.
    theirs = a_config(tmp_path / "theirs")
    try:
        os.chown(theirs, 65534, -1)  # nobody
    except PermissionError:
        pass  # not root: cannot give a file away here
    else:
        r = smtp_magic.send("a@example.test", "s", "b", config=str(theirs))
        assert r.exitcode == 1 and "belongs to another user" in r.message, r.message

    # The user's own group (a user private group) may write: as private as the user.
    own = a_config(tmp_path / "own", 0o620)
    assert smtp_magic.SmtpMagic().load_file(own).port == 587
    # A symlink to a private file, in a folder where anyone could swap the link, is refused.
    swap = tmp_path / "swap"
    swap.mkdir()
    (swap / "conn.json").symlink_to(own)
    swap.chmod(0o777)
    r = smtp_magic.send("a@example.test", "s", "b", config=str(swap / "conn.json"))
    assert r.exitcode == 1 and f"is in {str(swap)!r}, a folder everyone may write" in r.message
    swap.chmod(0o700)


def test_a_writable_profiles_file_is_refused(ip: TestingShell, tmp_data: TmpData) -> None:
    ip.run_line_magic("smtp_config", "--host smtp.example.org --port 587 --profile work --save")
    path = profiles.profiles_path()
    path.chmod(0o646)
    with pytest.raises(UsageError, match=r"The profiles file '.*profiles\.json' is writable by "
                                         r"everyone.*chmod go-w"):
        ip.run_line_magic("smtp_config", "--profile work")
    r = smtp_magic.send("a@example.test", "s", "b", profile="work")
    assert r.exitcode == 1 and "chmod go-w" in r.message
    path.chmod(0o600)
    ip.run_line_magic("smtp_config", "--profile work")
    assert smtp_magic.current().host == "smtp.example.org"


# -- broken config files: one sentence --------------------------------------------------------------

BROKEN = {
    "deep.json": ("[" * 100_000 + "]" * 100_000).encode(),
    "deep-object.json": ('{"host": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
    "latin1.json": '{"host": "café"}'.encode("latin-1"),
    "not-json.json": b"host = smtp.example.org\n",
    "list.json": b'["smtp.example.org", 587]',
    "huge-number.json": b'{"port": ' + b"9" * 5000 + b"}",
    "nested-value.json": ('{"host": ' + "[" * 500 + "]" * 500 + "}").encode(),
    "folder.json": b"",
}
SENTENCES = {
    "deep.json": "is nested too deeply to be settings",
    "deep-object.json": "is nested too deeply to be settings",
    "latin1.json": "is not UTF-8 text (byte 14 cannot be decoded): save it as UTF-8 JSON.",
    "not-json.json": "is not valid JSON (line 1: Expecting value).",
    "list.json": "must hold a JSON object of settings ({\"host\": ...}), not a list.",
    "huge-number.json": "cannot be read as JSON (Exceeds the limit",
    "nested-value.json": "Invalid value [[[...]]] for setting 'host'",
    "folder.json": "is a folder, not a JSON file.",
}


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "configs"
    folder.mkdir()
    out = {}
    for name, data in BROKEN.items():
        path = folder / name
        if name == "folder.json":
            path.mkdir()
        else:
            path.write_bytes(data)
        out[name] = path
    return out


def test_broken_config_files_are_one_sentence_in_every_face(
        ip: TestingShell, broken: dict[str, Path], tmp_path: Path) -> None:
    for name, path in broken.items():
        sentence = SENTENCES[name]
        with pytest.raises(UsageError) as info:
            ip.run_line_magic("smtp_config", f"--file {path}")
        text = str(info.value)
        assert sentence in text and (str(path) in text or "nested-value" in name), text
        assert "\n" not in text and len(text) < 400, text
        r = smtp_magic.send("a@example.test", "s", "b", config=str(path))
        assert r.exitcode == 1 and sentence in r.message, (name, r.message)
        rc, answer, _ = run_cli("check", "--config", str(path), cwd=tmp_path)  # no traceback
        assert rc == 1 and sentence in answer["message"], (name, answer)
    # The CLI's request file, too (it is no settings file: others may write it).
    good = a_config(tmp_path / "good")
    for name in ("deep.json", "latin1.json", "not-json.json"):
        rc, answer, _ = run_cli("send", "--config", str(good), "--request", str(broken[name]),
                                cwd=tmp_path)
        assert rc == 1 and answer["message"].startswith(f"The request file {str(broken[name])!r} ")
        assert SENTENCES[name] in answer["message"], answer
