"""A message made in one forward pipeline: each stage once, in the order of ``STAGES``."""

from __future__ import annotations

import html as _html
import logging
from collections.abc import Callable, Sequence

from . import _budget, _dkim, _shortcuts
from ._layout import email_document, text_to_html
from ._sanitize import clean_document
from ._unsubscribe import unsubscribe_header
from .config import ConnectionSettings
from .errors import InvalidRequest, SmtpMagicError
from .htmltext import text_alternative
from .mime import Composed, compose
from .models import Attachment, SendRequest

__all__ = ["STAGES", "Draft", "Stage", "prepare", "prepare_many"]

log = logging.getLogger(__name__)

# The content types whose body is HTML (multipart/alternative is HTML with its text part).
_HTML = frozenset({"text/html", "multipart/alternative"})


class Draft:
    """A message on its way through the stages: the request as the stages so far made it,
    then the MIME message (``composed``) once the MIME stage has run."""

    __slots__ = ("composed", "content_type", "from_text", "measured", "needs_layout", "request",
                 "settings", "shortcut", "text")

    def __init__(self, request: SendRequest, settings: ConnectionSettings,
                 shortcut: bool | None = None) -> None:
        self.request, self.settings = request, settings
        self.shortcut = shortcut  # the "compose" shortcut allowed for the batch (None: ask)
        self.content_type = ""
        self.from_text = False  # an HTML body typed as text, made paragraphs by normalise
        self.needs_layout = False  # set by the budget stage for the layout stage
        self.measured: tuple[str, str] | None = None  # (fragment, its page) the budget laid out
        self.text: str | None = None  # the plain-text alternative of an HTML body
        self.composed: Composed | None = None

    @property
    def html_body(self) -> str | None:
        """The body when it is HTML text, else None (text/plain, or not text at all: the MIME
        stage refuses that one)."""
        body = self.request.body
        return body if self.content_type in _HTML and isinstance(body, str) else None

    @property
    def message(self) -> Composed:
        assert self.composed is not None, "the MIME stage has not run"
        return self.composed


Stage = Callable[[Draft], Draft]


# -- before MIME: the body -------------------------------------------------------------------------

def normalise(draft: Draft) -> Draft:
    """The body as HTML or plain text: Markdown becomes HTML; an HTML body without any markup
    was typed as text, so it becomes paragraphs (line breaks kept, ``<``/``&`` shown as typed).
    Objects (tables, charts) arrive already rendered by the renderer."""
    request = draft.request
    content_type = (request.content_type or draft.settings.content_type).lower()
    body = request.body
    if content_type == "text/markdown":
        from .render import markdown_to_html  # markdown-it, imported on the first Markdown body

        content_type = "text/html"
        draft.request = request.replace(body=markdown_to_html(body or ""), content_type=content_type)
    elif (content_type in _HTML and isinstance(body, str) and body.strip()
          and _budget.is_plain_text(body, jinja=False)):  # sent as given: no templating
        draft.request = request.replace(body=text_to_html(_html.escape(body, quote=False)))
        draft.from_text = True
    draft.content_type = content_type
    return draft


def sanitise(draft: Draft) -> Draft:
    """No script, event handler or script URL leaves the machine. A body made from text holds
    no markup but the paragraphs made of it, so it has nothing to remove."""
    body = draft.html_body
    if body is not None and not draft.from_text:
        safe = clean_document(body)
        if safe is not body:
            draft.request = draft.request.replace(body=safe)
    return draft


def budget(draft: Draft) -> Draft:
    """A body over the size budget (what stays under Gmail's clipping once encoded) is cut at a
    sensible boundary with a note saying so, and the whole page is attached as an HTML file.
    The budget counts the laid-out page, so the pages measured here are kept for the layout."""
    body = draft.html_body
    if body is None or not (draft.from_text or _budget.utf8_size(body) > _budget.DEFAULT_MAX_BYTES):
        return draft
    title = draft.request.subject

    def measure(fragment: str) -> str:
        page = email_document(fragment, title=title)
        draft.measured = (fragment, page)
        return page

    page, filename = _budget.shorten(body, (), measure, limit=_budget.DEFAULT_MAX_BYTES,
                                     title=title)
    assert draft.measured is not None and draft.measured[1] is page
    fragment = draft.measured[0]
    if filename is None:
        if fragment is not body:
            draft.request = draft.request.replace(body=fragment)
    else:
        whole = Attachment.from_bytes(filename, email_document(body, title=title), "text/html")
        draft.request = draft.request.replace(
            body=fragment, attachments=(*draft.request.attachments, whole))
    draft.needs_layout = True
    return draft


def layout(draft: Draft) -> Draft:
    """The body the budget stage kept, in the email layout with its CSS inlined (a body given
    as HTML within the budget is sent as written)."""
    if draft.needs_layout:
        body = draft.request.body
        measured = draft.measured
        page = measured[1] if measured is not None and measured[0] == body else \
            email_document(body, title=draft.request.subject)
        draft.request = draft.request.replace(body=page)
    return draft


def text_part(draft: Draft) -> Draft:
    """An HTML body travels with a plain-text alternative, for text-only clients: the one
    given, else one made from the HTML."""
    body = draft.html_body
    if body is not None:
        given = draft.request.text
        draft.text = text_alternative(body) if given is None else given
    return draft


# -- MIME, then what is added to the finished message ------------------------------------------

def mime(draft: Draft) -> Draft:
    """The request checked and written as MIME (``mime.compose``)."""
    draft.composed = compose(draft.request, draft.settings, text=draft.text,
                             shortcut=draft.shortcut)
    return draft


def headers(draft: Draft) -> Draft:
    """Headers written after MIME, in front of it: List-Unsubscribe (one-click)."""
    lines = unsubscribe_header(draft.request, draft.settings)
    if lines is not None:
        draft.message.add_header(lambda _: lines)
    return draft


def sign(draft: Draft) -> Draft:
    """The signing slot: a DKIM-Signature over the final bytes, when the settings ask for it.
    Nothing may change the message after this stage."""
    message = draft.message
    signer = _dkim.signer_for(draft.settings, message.sender.rpartition("@")[2])
    if signer is not None:
        message.add_header(signer.sign)
    return draft


STAGES: tuple[Stage, ...] = (normalise, sanitise, budget, layout, text_part, mime, headers, sign)


def prepare(request: SendRequest, settings: ConnectionSettings,
            stages: Sequence[Stage] | None = None) -> Composed:
    """The message ``request`` makes with ``settings``: every stage of ``stages`` (default
    ``STAGES``) once, in order. Raises InvalidRequest (or ConfigError for the signing settings)
    with one sentence."""
    (made,) = prepare_many([(request, settings)], stages)
    if isinstance(made, SmtpMagicError):
        raise made
    return made


def prepare_many(items: Sequence[tuple[SendRequest, ConnectionSettings]],
                 stages: Sequence[Stage] | None = None) -> list[Composed | SmtpMagicError]:
    """``prepare`` for each (request, settings): the message, or the error (InvalidRequest,
    ConfigError) that stopped it, in order.

    Each stage runs over every message before the next stage starts: every message still goes
    through every stage once, in order, but a stage's code and data stay in the CPU's caches
    while it runs: about a sixth less CPU than taking the messages one by one through all the
    stages (``benchmarks/bench_stages.py``). A message a stage refused skips the stages after it."""
    # Whether the fast composer may be used, asked once for the batch (it reads the
    # environment: SMTP_MAGIC_NO_SHORTCUTS set meanwhile applies from the next batch on).
    shortcut = _shortcuts.allowed("compose")
    drafts: list[Draft | SmtpMagicError] = [Draft(request, settings, shortcut)
                                            for request, settings in items]
    for stage in STAGES if stages is None else stages:
        for i, draft in enumerate(drafts):
            if isinstance(draft, Draft):
                try:
                    drafts[i] = stage(draft)
                except SmtpMagicError as exc:
                    drafts[i] = exc
                except (ValueError, TypeError, UnicodeError) as exc:  # what the email package refused
                    drafts[i] = InvalidRequest(f"The message cannot be built: {exc}.")
    return [draft.message if isinstance(draft, Draft) else draft for draft in drafts]
