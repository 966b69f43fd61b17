"""Requests and settings as callers give them: a dict, a JSON file, keyword arguments."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .attachments import AttachmentSpec, resolve_all
from .config import ALIASES, SETTINGS, SmtpMagic, current
from .errors import InvalidRequest, did_you_mean
from .models import SendRequest, as_address_list, assemble_request

__all__ = ["ConfigLike", "as_request", "load_settings", "make_request", "request_from_dict",
           "with_profile"]

log = logging.getLogger(__name__)

ConfigLike = SmtpMagic | Mapping[str, Any] | str | os.PathLike[str] | None
AttachmentLike = AttachmentSpec

# A request's parameters in its JSON form (plus a few natural spellings) and what they map to.
_REQUEST_FIELDS = {
    "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject", "body": "body",
    "from": "sender", "sender": "sender", "attachments": "attachments",
    "content-type": "content_type", "content_type": "content_type", "headers": "headers",
    "unsubscribe": "unsubscribe", "reply_to": "reply_to", "reply-to": "reply_to",
}
# Any other setting (or its JSON name: target, port, username, password...) in a request
# changes the connection for that one send.
CONNECTION_FIELDS = frozenset(SETTINGS) | frozenset(ALIASES)
KNOWN_FIELDS = frozenset({*_REQUEST_FIELDS, *CONNECTION_FIELDS, "action", "template"})
# The keys of a request given as make_request's keyword arguments.
_KEYWORDS = frozenset({"to", "subject", "body", "cc", "bcc", "sender", "attachments",
                       "content_type", "headers", "unsubscribe", "reply_to"})


def load_settings(config: ConfigLike = None) -> SmtpMagic:
    """Settings from ``config``: an SmtpMagic, a dict (JSON or trait names) or a JSON file path.

    A dict or a file is layered over the current settings (defaults < IPython config <
    environment), so an environment password still applies unless the file sets another.
    """
    if config is None:
        return current()
    if isinstance(config, SmtpMagic):
        return config
    if isinstance(config, Mapping):
        return current().copy().update(config, source="the connector configuration")
    if isinstance(config, (str, os.PathLike)):
        return current().copy().load_file(config)
    raise InvalidRequest(f"config must be settings, a dict or a JSON file path, not {type(config).__name__}.")


def with_profile(settings: SmtpMagic, profile: str | None) -> SmtpMagic:
    """``settings`` with the saved profile ``profile`` applied (a copy), or as they are."""
    if not profile:
        return settings
    return settings.copy().update({"profile": profile}, source="profile=")


def make_request(
    to: Any, subject: Any, body: Any = "", *, cc: Any = None, bcc: Any = None, sender: Any = None,
    attachments: Any = (), content_type: str | None = None, headers: Any = (),
    unsubscribe: str | None = None, reply_to: Any = None,
) -> SendRequest:
    # Values of the wrong JSON type must be exit 1, not a TypeError from deep inside. (The
    # common values, a string or nothing, are let through before the slower ABC checks.)
    if not (type(to) is str and cc is None and bcc is None and reply_to is None):
        for name, value in (("to", to), ("cc", cc), ("bcc", bcc), ("reply_to", reply_to)):
            if value is not None and not isinstance(value, (str, Iterable)):
                raise InvalidRequest(f"{name!r} must be an address or a list of addresses, not "
                                     f"{type(value).__name__}.")
    pairs: tuple[Any, ...] = ()
    if not (type(headers) is tuple and not headers):
        if headers is not None and not isinstance(headers, Iterable):
            raise InvalidRequest(f"'headers' must map header names to values, not {type(headers).__name__}.")
        pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers or ())
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InvalidRequest("'headers' must map header names (text) to values, e.g. "
                                 "{\"X-Report\": \"weekly\"}.")
    if content_type is not None and not isinstance(content_type, str):
        raise InvalidRequest(f"The content type must be text, not {type(content_type).__name__}.")
    if not (type(attachments) is tuple and not attachments):
        attachments = resolve_all(attachments)  # a tuple
    # What SendRequest(...) makes of these values (its __post_init__), made in one go: the
    # address fields in order (to, cc, bcc, reply_to: the first bad one is reported).
    return assemble_request(
        to=_addresses(to), cc=_addresses(cc), bcc=_addresses(bcc),
        reply_to=_addresses(reply_to), subject=subject, body=body, sender=sender,
        attachments=attachments, content_type=content_type, headers=pairs,
        unsubscribe=unsubscribe,
    )


def _addresses(value: Any) -> tuple[str, ...]:
    """An address field as SendRequest keeps it (None: none)."""
    return () if value is None or (type(value) is tuple and not value) else as_address_list(value)


def request_from_dict(data: Mapping[str, Any]) -> tuple[SendRequest, dict[str, Any]]:
    """A request in its JSON form -> (SendRequest, connection overrides)."""
    if type(data) is not dict and not isinstance(data, Mapping):  # a dict: no ABC check
        raise InvalidRequest("The request must be a JSON object.")
    action = data.get("action", "send")
    if action != "send":
        raise InvalidRequest(f"Unknown action {action!r}: the only action is 'send'.")
    fields: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        field = _REQUEST_FIELDS.get(key)
        if field is not None:
            fields[field] = value
        elif key == "action":
            continue
        elif key == "template":  # a request's body is sent as written: never a Jinja template
            if value is not False:
                raise InvalidRequest("A request's body is sent as written (no Jinja), so "
                                     "'template' can only be false; fill a template with "
                                     "smtp_magic.render.render_template first.")
        elif key in CONNECTION_FIELDS:
            overrides[key] = value
        else:
            raise InvalidRequest(f"Unknown request parameter {key!r}"
                                 f"{did_you_mean(str(key), KNOWN_FIELDS)}")
    for required in ("to", "subject"):
        if required not in fields:
            raise InvalidRequest(f"The request has no {required!r} (it is required).")
    return make_request(**fields), overrides


def as_request(item: SendRequest | Mapping[str, Any]) -> tuple[SendRequest, dict[str, Any]]:
    if isinstance(item, SendRequest):
        return item, {}
    if type(item) is dict or isinstance(item, Mapping):  # a dict first: no ABC check
        if "from" in item or "content-type" in item or "action" in item or not (
            item.keys() <= _KEYWORDS
        ):
            return request_from_dict(item)
        return make_request(**item), {}
    raise InvalidRequest(f"A request must be a dict or a SendRequest, not {type(item).__name__}.")
