"""One-click unsubscribe (RFC 8058): the List-Unsubscribe and List-Unsubscribe-Post headers."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from .config import ConnectionSettings
from .errors import InvalidRequest
from .models import SendRequest

__all__ = ["unsubscribe_header"]

log = logging.getLogger(__name__)

_NAMES = ("list-unsubscribe", "list-unsubscribe-post")
# Inside <...> in a header: no spaces, angle brackets, quotes or control characters.
_URI_CHARS = re.compile(r"[^\s<>\"\x00-\x1f\x7f]+\Z")


def _https(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url) if _URI_CHARS.match(url) else None
    if parts is not None and parts.scheme and parts.scheme.lower() != "https":
        hint = " (an address for unsubscribing by email goes in unsubscribe_mailto)" if \
            parts.scheme.lower() == "mailto" else ""
        raise InvalidRequest(f"The unsubscribe link {url[:80]!r} must be https: one-click "
                             f"unsubscribe (RFC 8058) allows only https URLs{hint}.")
    if parts is None or not parts.netloc:
        raise InvalidRequest(f"The unsubscribe link {url[:80]!r} is not a URL (it may not contain "
                             "spaces, quotes or angle brackets).")
    return url


def _mailto(value: str) -> str:
    value = value.strip()
    uri = value if value.lower().startswith("mailto:") else f"mailto:{value}"
    if not _URI_CHARS.match(uri) or "@" not in uri:
        raise InvalidRequest(f"unsubscribe_mailto {value[:80]!r} is not an email address or "
                             "mailto: URL.")
    return uri


_MAX_LINE = 998  # RFC 5322 §2.1.1


def unsubscribe_header(request: SendRequest, settings: ConnectionSettings) -> bytes | None:
    """The List-Unsubscribe header lines (``<URL>`` from the request's ``unsubscribe``, with
    List-Unsubscribe-Post: List-Unsubscribe=One-Click, and ``<mailto:...>`` from the
    ``unsubscribe_mailto`` setting), or None.

    Written here rather than by the email package: it folds a long header value without a space
    in it (a URL with a token) into RFC 2047 encoded words, which receivers do not decode in
    List-Unsubscribe (RFC 2369: URLs in angle brackets), so the link would not work. Here each
    entry stays whole on its line (folded between entries), within SMTP's 998 octets.
    """
    url = request.unsubscribe
    mailto = settings.unsubscribe_mailto
    if not url and not mailto:
        return None
    if url is not None and not isinstance(url, str):
        raise InvalidRequest(f"'unsubscribe' must be a URL, not {type(url).__name__}.")
    if any(name.lower() in _NAMES for name, _ in request.headers):
        raise InvalidRequest("List-Unsubscribe is set by 'unsubscribe' (and unsubscribe_mailto); "
                             "leave it out of 'headers'.")
    entries = []
    if url:
        entries.append(f"<{_https(url)}>")
    if mailto:
        entries.append(f"<{_mailto(mailto)}>")
    for entry in entries:
        if not entry.isascii() or len(entry) > _MAX_LINE - 20:
            what = "ASCII (percent-encode other characters)" if not entry.isascii() \
                else f"at most {_MAX_LINE - 22} characters"
            raise InvalidRequest(f"The unsubscribe link {entry[1:81]!r} must be {what}.")
    lines = "List-Unsubscribe: " + ",\r\n ".join(entries) + "\r\n"
    if url:
        lines += "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    return lines.encode("ascii")
