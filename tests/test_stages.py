"""The message stages: one forward pipeline, each stage once per message, in the declared order,
and a stage in the signing slot sees the bytes that are sent."""

from __future__ import annotations

import email
import hashlib
from collections import Counter
from collections.abc import Iterator
from email import policy
from typing import Any

import pytest

import smtp_magic
from smtp_magic import stages
from smtp_magic.api import build_message
from smtp_magic.errors import InvalidRequest
from smtp_magic.server import CaptureServer

SENDER = "reports@example.test"
DECLARED = ("normalise", "sanitise", "budget", "layout", "text_part", "mime", "headers", "sign")


def plain(server: CaptureServer, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "security": "none", "sender": SENDER,
            **extra}


def requests(count: int) -> list[dict[str, Any]]:
    """Request dicts with every stage given work: a body typed as text (laid out), one with a
    script (sanitised), Markdown, an unsubscribe link (a header after MIME)."""
    bodies = ["Hello {i},\n\nyour numbers: a < b & c.", "<p onclick='x()'>Hi {i}</p>",
              "# Week {i}\n\n* up\n* down"]
    return [{"to": f"user{i}@example.test", "subject": f"Report {i}",
             "body": bodies[i % 3].format(i=i),
             "content-type": "text/markdown" if i % 3 == 2 else "text/html",
             "unsubscribe": f"https://example.test/u?i={i}"} for i in range(count)]


def test_the_stages_are_the_declared_ones_in_order() -> None:
    assert tuple(stage.__name__ for stage in stages.STAGES) == DECLARED


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every stage call, as (stage name, the message's subject), by the stages in use."""
    calls: list[tuple[str, str]] = []

    def recording(stage: stages.Stage) -> stages.Stage:
        def run(draft: stages.Draft) -> stages.Draft:
            calls.append((stage.__name__, draft.request.subject))
            return stage(draft)
        run.__name__ = stage.__name__
        return run

    monkeypatch.setattr(stages, "STAGES", tuple(recording(s) for s in stages.STAGES))
    yield calls


def test_a_bulk_send_runs_each_stage_once_per_message_in_order(
        smtp_server: CaptureServer, recorded: list[tuple[str, str]]) -> None:
    responses = smtp_magic.send_many(requests(6), config=plain(smtp_server))
    assert [r.ok for r in responses] == [True] * 6
    by_message: dict[str, list[str]] = {}
    for name, subject in recorded:
        by_message.setdefault(subject, []).append(name)
    assert sorted(by_message) == [f"Report {i}" for i in range(6)]
    assert all(tuple(names) == DECLARED for names in by_message.values())


def test_a_message_a_stage_refuses_fails_alone_and_goes_no_further(
        smtp_server: CaptureServer, recorded: list[tuple[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The messages of a window are made together: one that a stage refuses is exit 1 with the
    stage's sentence, skips the stages after it, and the others are made and delivered."""
    budget = stages.STAGES[2]

    def refusing(draft: stages.Draft) -> stages.Draft:
        if draft.request.subject == "Report 2":
            raise InvalidRequest("Report 2 is refused by the test.")
        return budget(draft)
    refusing.__name__ = "budget"
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:2], refusing, *stages.STAGES[3:]))

    responses = smtp_magic.send_many(requests(5), config=plain(smtp_server))
    assert [r.exitcode for r in responses] == [0, 0, 1, 0, 0]
    assert responses[2].message == "Report 2 is refused by the test."
    assert sorted(m.message["Subject"] for m in smtp_server.messages()) == [
        "Report 0", "Report 1", "Report 3", "Report 4"]
    assert [name for name, subject in recorded if subject == "Report 2"] == [
        "normalise", "sanitise"]  # (the refusing stage replaced the recorded budget)


def test_the_work_of_each_stage_is_done_once_per_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the stages call (the sanitiser, the layout, html_to_text, MIME, the headers, the
    signer lookup) runs once per message: nothing goes back to an earlier step."""
    counts: Counter[str] = Counter()

    def counted(name: str) -> None:
        real = getattr(stages, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(stages, name, wrapper)

    for name in ("clean_document", "email_document", "text_alternative", "compose",
                 "unsubscribe_header"):
        counted(name)
    signer_for = stages._dkim.signer_for

    def counted_signer(*args: Any) -> Any:
        counts["signer_for"] += 1
        return signer_for(*args)
    monkeypatch.setattr(stages._dkim, "signer_for", counted_signer)

    markup = {"to": "a@example.test", "subject": "S", "body": "<p onclick='x()'>Hi</p>",
              "unsubscribe": "https://example.test/u"}
    typed = {"to": "a@example.test", "subject": "S", "body": "Hi,\n\nthe numbers."}
    for request in (markup, typed):
        counts.clear()
        raw = build_message(request, config={"sender": SENDER}).as_bytes()
        assert b"List-Unsubscribe" in raw or request is typed
        sanitised = 1 if request is markup else 0  # a body made from text has no markup
        laid_out = 1 if request is typed else 0  # a body given as HTML is sent as written
        assert counts == Counter({"clean_document": sanitised, "email_document": laid_out,
                                  "text_alternative": 1, "compose": 1,
                                  "unsubscribe_header": 1, "signer_for": 1}) - Counter()


def test_a_stage_in_the_signing_slot_sees_the_bytes_that_are_sent(
        smtp_server: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def test_signer(draft: stages.Draft) -> stages.Draft:
        def header(chunks: Iterator[bytes]) -> bytes:
            data = b"".join(chunks)
            seen.append(data)
            return b"X-Test-Signature: " + hashlib.sha256(data).hexdigest().encode() + b"\r\n"
        draft.message.add_header(header)
        return draft

    assert stages.STAGES[-1] is stages.sign
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:-1], test_signer))
    responses = smtp_magic.send_many(requests(3), config=plain(smtp_server))
    assert [r.ok for r in responses] == [True] * 3
    assert len(seen) == 3
    got = {m.message["Subject"]: m.path.read_bytes()
           for m in smtp_server.messages()}
    for data in seen:
        # what the signer hashed is the whole message after its own header, headers added
        # after MIME (List-Unsubscribe) included, byte for byte as the server got it
        signature = b"X-Test-Signature: " + hashlib.sha256(data).hexdigest().encode() + b"\r\n"
        assert b"List-Unsubscribe: <https://example.test/u?i=" in data
        (arrived,) = [raw for raw in got.values() if signature in raw]
        assert arrived.endswith(signature + data.rstrip(b"\r\n") + b"\r\n")


def parts(raw: bytes) -> list[tuple[str, str | None, bytes]]:
    message = email.message_from_bytes(raw, policy=policy.default)
    return [(p.get_content_type(), p.get_filename(), p.get_payload(decode=True))
            for p in message.walk() if not p.is_multipart()]


def test_an_over_budget_body_is_sanitised_before_it_is_cut() -> None:
    """The budget counts what is sent, and the whole page attached to a shortened message
    carries no script either (it was the unsanitised page while sanitising came after)."""
    rows = "".join(f"<tr><td>row {i}</td><td>{i * i}</td></tr>\n" for i in range(4000))
    body = f"<script>alert(1)</script><p onclick='steal()'>Totals</p><table>{rows}</table>"
    raw = build_message({"to": "a@example.test", "subject": "Totals", "body": body},
                        config={"sender": SENDER}).as_bytes()
    (text, _, _), (html, _, shown), (page, name, whole) = parts(raw)
    assert (text, html, page, name) == ("text/plain", "text/html", "text/html", "totals.html")
    assert b"row 3999" in whole and b"row 3999" not in shown  # cut, and attached whole
    for data in (shown, whole):
        assert b"<script" not in data and b"alert(1)" not in data and b"onclick" not in data


@pytest.mark.parametrize("word", ["Job description", "Javascript", "see data: below"])
def test_a_body_typed_as_text_keeps_its_layout_whatever_words_it_holds(word: str) -> None:
    """Words the sanitiser looks at twice ("script", "data:") in a body typed as text: it is
    laid out after sanitising, so the page keeps its layout (the sanitiser used to rebuild the
    laid-out page's head, dropping the light colour scheme of <html>)."""
    raw = build_message({"to": "a@example.test", "subject": "S", "body": f"{word}\n\nthanks"},
                        config={"sender": SENDER}).as_bytes()
    (_, _, text), (_, _, html) = parts(raw)
    assert html.startswith(b'<!DOCTYPE html><html lang="en" style="color-scheme:light;')
    assert word.encode() in html and word.encode() in text
