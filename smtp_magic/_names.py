"""File names in one message: unique, and still saying what each file is."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

from .models import Attachment

__all__ = ["UniqueNames", "slug", "unique_attachments"]

log = logging.getLogger(__name__)


def slug(text: str) -> str:
    """A file-name stem from a title: "Revenue by region (EUR)" -> "revenue-by-region-eur"."""
    words = re.findall(r"\w+", text.lower())
    return "-".join(words)[:60].strip("-_")


class UniqueNames:
    """File names for one message: a second ``df.csv`` becomes ``df-2.csv`` (case-insensitive,
    as most file systems a recipient saves to)."""

    def __init__(self, used: Iterable[str] = ()) -> None:
        self._used: set[str] = {name.lower() for name in used}

    def unique(self, filename: str) -> str:
        stem, ext = os.path.splitext(filename)
        candidate, n = filename, 1
        while candidate.lower() in self._used:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        self._used.add(candidate.lower())
        return candidate


def unique_attachments(attachments: tuple[Attachment, ...]) -> tuple[Attachment, ...]:
    """Attachments with unique names: the same file twice (same name, same bytes) is attached
    once; files of one name from different folders are named after their folder
    (``a/report.csv``, ``b/report.csv`` -> ``a-report.csv``, ``b-report.csv``); anything else
    that still clashes gets a number (``df-2.csv``)."""
    names = [a.filename.lower() for a in attachments]
    if len(set(names)) == len(names):
        return attachments  # the common case: nothing to read or compare
    kept: list[Attachment] = []
    for att in attachments:
        twin = next((k for k in kept if k.filename.lower() == att.filename.lower()
                     and _same_content(k, att)), None)
        if twin is None:
            kept.append(att)
    groups: dict[str, list[int]] = {}
    for i, att in enumerate(kept):
        groups.setdefault(att.filename.lower(), []).append(i)
    renamed = list(kept)
    for indexes in groups.values():
        if len(indexes) < 2:
            continue
        folders = [_folder(kept[i]) for i in indexes]
        if all(folders) and len(set(folders)) == len(folders):
            for i, folder in zip(indexes, folders):
                renamed[i] = _named(kept[i], f"{folder}-{kept[i].filename}")
    seen = UniqueNames()
    return tuple(_named(att, seen.unique(att.filename)) for att in renamed)


def _folder(att: Attachment) -> str:
    return att.path.parent.name if att.path is not None else ""


def _named(att: Attachment, filename: str) -> Attachment:
    if filename == att.filename:
        return att
    return Attachment(filename, att.data, att.path, att.content_type)


def _same_content(a: Attachment, b: Attachment) -> bool:
    if a.path is not None and b.path is not None and a.path.resolve() == b.path.resolve():
        return True
    try:
        return a.size == b.size and a.read() == b.read()
    except (OSError, ValueError):  # unreadable: compose says so, naming the file
        return False
