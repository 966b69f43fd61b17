"""Attachment specs -> Attachments: the one parser behind the API, the magics and the form.

A spec is any of:
- an :class:`~smtp_magic.models.Attachment`;
- a file path (``~`` expanded) or a glob (``reports/*.pdf``, one attachment per file);
- ``"var"`` or ``"var:name.ext"`` when a namespace is given and holds ``var``: a notebook value
  (DataFrame as .csv/.xlsx/.parquet..., figure as .png/.pdf/.svg, bytes/str with a file name);
- ``(filename, value)``: bytes, text, or any value ``var:filename`` would take;
- any other object (a DataFrame, a figure), named after ``name`` when given.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import InvalidRequest
from .models import Attachment

__all__ = ["AttachmentSpec", "is_single_spec", "resolve", "resolve_all"]

log = logging.getLogger(__name__)

AttachmentSpec = Any  # Attachment | str | os.PathLike[str] | tuple[str, Any] | a rich object


def resolve(spec: AttachmentSpec, namespace: Mapping[str, Any] | None = None, *,
            name: str | None = None) -> list[Attachment]:
    """The attachments of one spec (a glob may give several); raises InvalidRequest."""
    if isinstance(spec, Attachment):
        return [spec]
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        filename, value = spec
        if isinstance(value, (bytes, bytearray, memoryview, str)):
            return [Attachment.from_bytes(filename, bytes(value) if not isinstance(value, str)
                                          else value)]
        if isinstance(value, (int, float)):  # bytes(5) would be five NUL bytes: refuse plainly
            raise InvalidRequest(f"Attachment {filename!r} must hold bytes or text, not "
                                 f"{type(value).__name__}.")
        return [_from_object(value, filename, name=name)]
    if isinstance(spec, str):
        var, _, filename = spec.partition(":")
        if namespace is not None and var.isidentifier():
            if var in namespace:
                return [_from_object(namespace[var], filename or None, name=var)]
            if not os.path.exists(os.path.expanduser(spec)):
                raise InvalidRequest(f"Attachment {spec!r} is neither a notebook variable nor a "
                                     "file.")
        return _from_path(spec)
    if isinstance(spec, os.PathLike):
        return _from_path(os.fspath(spec))
    return [_from_object(spec, None, name=name)]


def resolve_all(specs: Iterable[AttachmentSpec] | AttachmentSpec | None,
                namespace: Mapping[str, Any] | None = None) -> tuple[Attachment, ...]:
    """Every attachment of ``specs``: a list of specs, or one spec given on its own."""
    if specs is None:
        return ()
    if is_single_spec(specs):
        specs = [specs]
    out: list[Attachment] = []
    for spec in specs:
        out.extend(resolve(spec, namespace))
    return tuple(out)


def is_single_spec(value: Any) -> bool:
    """Whether ``value`` is one spec rather than several (a list, tuple, set or iterator)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return not isinstance(value[1], str)  # ("a.pdf", "b.pdf") is two paths
    return not isinstance(value, (list, tuple, set, frozenset, Iterator))


def _from_path(path: str) -> list[Attachment]:
    expanded = os.path.expanduser(path)
    if glob.has_magic(expanded) and not os.path.exists(expanded):
        matches = sorted(p for p in glob.glob(expanded) if os.path.isfile(p))
        if not matches:
            raise InvalidRequest(f"No file matches the attachment pattern {path!r}.")
        return [Attachment.from_path(m) for m in matches]
    return [Attachment.from_path(expanded)]


def _from_object(value: Any, filename: str | None, *, name: str | None) -> Attachment:
    if isinstance(value, Attachment):
        return value if filename is None else Attachment(filename, value.data, value.path,
                                                         value.content_type)
    from .render import attachment_from_object  # pandas/matplotlib only when a value needs them

    return attachment_from_object(value, filename, name=name)
