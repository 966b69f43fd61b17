"""One change of the settings as ``%smtp_config`` asks for it: staged, then applied at once."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import MAGIC, SmtpMagic, Withheld, withheld_password

log = logging.getLogger(__name__)

__all__ = ["Changed", "change_settings"]


@dataclass(frozen=True)
class Changed:
    """What a change did besides setting values, for the front end to say."""

    restored: list[str]  # settings --local had set that leaving the capture server gave back
    withheld: Withheld | None  # the password this change withheld (given for another server)
    saved: str | os.PathLike[str] | None  # where the profile was saved (``save``)


def change_settings(settings: SmtpMagic, values: Mapping[str, Any], *,
                    profile: str | None = None, file: str | os.PathLike[str] | None = None,
                    local: tuple[str, int] | None = None, save: bool = False,
                    password: Callable[[SmtpMagic], None] | None = None,
                    source: str = MAGIC) -> Changed:
    """Change ``settings`` all at once, or not at all (an error leaves them as they were).

    On a copy, in this order: the ``profile`` (unless ``save``), so that the ``file`` and the
    ``values`` win over it; the file; the values (the password source given last wins: a new
    password_env or keyring replaces the others); the capture server at ``local``; the
    ``password`` step (e.g. a prompt, given the staged settings); with ``save``, the settings
    saved as ``profile``. Then the copy is applied.
    """
    values = dict(values)
    if values.get("password_env"):
        values.update(password=None, use_keyring=False)
    if values.get("use_keyring"):
        values.update(password=None, password_env=None)
    staged = settings.copy()
    if profile and not save:
        staged.update({"profile": profile}, source=source)
    if file:
        staged.load_file(file)
    staged.update(values, source=source)
    if local is not None:  # until the host or port changes again
        staged.use_local(*local)
    if password is not None:
        password(staged)
    saved = None
    if save and profile:
        from .profiles import save as save_profile

        saved = save_profile(profile, staged.profiles.saved())
        staged.update({"profile": profile}, apply_profile=False)
    restored = staged.left_local()
    withheld = withheld_password(staged)
    if withheld == settings.password:
        withheld = None  # withheld before this change: nothing new to say
    settings.apply(staged)
    return Changed(restored, withheld, saved)
