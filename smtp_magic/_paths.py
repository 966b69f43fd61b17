"""Where smtp_magic keeps its files (the XDG base directories), and how it keeps them private."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["check_trusted", "open_private", "private_dir", "read_json", "user_path", "write_private"]

log = logging.getLogger(__name__)

_BASES = {"data": ("XDG_DATA_HOME", ".local/share"), "config": ("XDG_CONFIG_HOME", ".config")}
APP = "smtp_magic"  # our folder under each base


def user_path(override: str, base: str, name: str) -> Path:
    """``$<override>`` if set, else ``$XDG_DATA_HOME/smtp_magic/<name>`` (``base="data"``,
    default ``~/.local/share``) or ``$XDG_CONFIG_HOME/smtp_magic/<name>`` (``"config"``,
    default ``~/.config``). Read at each call, so a changed environment counts."""
    explicit = os.environ.get(override)
    if explicit:
        return Path(explicit).expanduser()
    variable, default = _BASES[base]
    home = os.environ.get(variable) or os.path.join("~", default)
    return Path(home).expanduser() / APP / name


# -- private files: mail, tokens and settings are the user's alone (0600 in 0700 folders) --------
# Modes are given to os.open/os.mkdir and set again with chmod, so the umask (0o000 included)
# never widens them.

def private_dir(path: str | os.PathLike[str], *, tighten: bool | None = None) -> Path:
    """Create ``path`` (and missing parents) as folders only the user can enter (0700).

    An existing folder is narrowed to 0700 when ``tighten`` (default: when it is inside our
    own ``smtp_magic`` folder, e.g. an outbox made 0755 by an older version), it is the user's
    and it has no sticky bit; a folder the user chose (``SMTP_MAGIC_OUTBOX=~/shared``) keeps
    its mode, and what we create in it is private.
    """
    p = Path(path)
    if tighten is None:
        tighten = APP in p.parts
    if p in _made_private and p.is_dir():  # made or narrowed by this process already
        return p
    missing = []
    for folder in (p, *p.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made by another process meanwhile
            continue
        os.chmod(folder, 0o700)
    if tighten and hasattr(os, "geteuid"):
        # This folder and those above it up to our own smtp_magic/ (which holds mail, tokens
        # and settings), unless they were just made private.
        ours = [p, *(f for f in p.parents if APP in f.parts)] if APP in p.parts else [p]
        for folder in ours:
            if folder in missing:
                continue
            try:
                st = folder.stat()
            except FileNotFoundError:
                continue
            if (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                    and not st.st_mode & stat.S_ISVTX and st.st_mode & 0o077):
                os.chmod(folder, 0o700)
    _made_private.add(p)
    return p


# Folders private_dir has seen to in this process: each outbox batch asks again, and checking
# the folder and its parents every time costs a few stat calls per send.
_made_private: set[Path] = set()


def open_private(path: str | os.PathLike[str],
                 flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` for a file only the user can read and write (0600, whatever the umask)."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    if hasattr(os, "fchmod"):  # POSIX; elsewhere the mode bits mean little
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its old mode with O_CREAT
        except BaseException:
            os.close(fd)
            raise
    return fd


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a new or truncated 0600 file."""
    with os.fdopen(open_private(path), "wb") as f:
        f.write(data)


def _private_group(st: os.stat_result) -> bool:
    """True when the file's group is its owner's own (a user private group with no other
    members), where group-writable is as private as user-writable (OpenSSH on Debian agrees)."""
    try:
        import grp
        import pwd
    except ImportError:  # pragma: no cover - not on POSIX
        return False
    try:
        owner = pwd.getpwuid(st.st_uid)
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    return owner.pw_gid == st.st_gid and set(group.gr_mem) <= {owner.pw_name}


def check_trusted(path: str | os.PathLike[str], what: str) -> None:
    """Refuse a settings file that someone else could have written, as ssh refuses a writable
    ~/.ssh/config: writable by its group or by everyone, owned by another user (root aside), or
    in a folder everyone may write to without the sticky bit. Only regular files are checked
    (``/dev/stdin`` and pipes are the caller's own). Raises ConfigError naming the fix."""
    p = Path(path)
    if not hasattr(os, "geteuid"):  # not POSIX: no owner and mode bits to go by
        return
    try:
        st = p.stat()
    except OSError:
        return  # the reader says what is wrong with a missing or unreadable file
    if not stat.S_ISREG(st.st_mode):
        return
    name = str(path)
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{what} {name!r} belongs to another user, who could change where "
                          f"mail and passwords go: copy it to a file of your own (or chown it).")
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st)):
        who = "everyone" if st.st_mode & 0o002 else "its group"
        raise ConfigError(f"{what} {name!r} is writable by {who}, who could change where mail "
                          f"and passwords go: make it yours alone with chmod go-w {name} "
                          "(or chmod 600).")
    # The folder of the name given and, for a symlink, of the file it points to: anyone who may
    # write to either can swap the file.
    for folder in dict.fromkeys((p.absolute().parent, p.resolve().parent)):
        try:
            dst = folder.stat()
        except OSError:
            continue
        if dst.st_mode & 0o002 and not dst.st_mode & stat.S_ISVTX:
            raise ConfigError(f"{what} {name!r} is in {str(folder)!r}, a folder everyone may "
                              f"write to, so anyone could replace it: move it to a folder of "
                              f"your own (or chmod o-w {folder}).")


def read_json(path: str | os.PathLike[str], what: str, *, trusted: bool = True,
              data: bytes | None = None) -> Any:
    """The JSON value in a file (or in ``data`` read from it already, e.g. standard input);
    every problem is one ConfigError sentence naming the file, never a traceback. ``trusted``:
    a settings file, which only its owner may be able to change (``check_trusted``)."""
    p = Path(path).expanduser()
    name = str(path)
    if trusted:
        check_trusted(p, what)
    try:
        data = p.read_bytes() if data is None else data
        data = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {name!r} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {name!r} is a folder, not a JSON file.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {name!r} is not UTF-8 text (byte {exc.start + 1} cannot "
                          "be decoded): save it as UTF-8 JSON.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} {name!r} is not valid JSON (line {exc.lineno}: {exc.msg})."
        ) from None
    except RecursionError:
        raise ConfigError(f"{what} {name!r} is nested too deeply to be settings: it must "
                          "hold one JSON object of settings.") from None
    except (ValueError, MemoryError) as exc:  # e.g. an integer with too many digits
        detail = str(exc).split(";")[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} {name!r} cannot be read as JSON ({detail}).") from None
    except OSError as exc:
        raise ConfigError(f"{what} {name!r} cannot be read: {exc.strerror}.") from None
    return data
