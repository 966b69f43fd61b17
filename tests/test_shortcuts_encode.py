"""The composer's text encoder gives exactly what the stdlib's private one gives, for any text."""

from __future__ import annotations

import email.contentmanager
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtp_magic import _shortcuts
from smtp_magic.mime import POLICY


def stdlib(text: str) -> tuple[str, str]:
    return email.contentmanager._encode_text(text, "utf-8", None, POLICY)  # type: ignore[attr-defined]


def ours(text: str) -> tuple[str, str]:
    return _shortcuts.encode_text(text, POLICY)


# Lines around the wrap points (76, 77, 78, 79 columns and multiples of 77), with what
# quoted-printable treats specially at their ends: "=" (itself quoted), spaces and tabs.
EDGES = [
    "", "\n", "\r", "\r\n", "\n\n", "a", "a\n", "a\r", "a\r\r\n", "\r\n\r\n", "\n\r", "x\r\ny\rz\n",
    ".\n..\n", "From me\n", "a" * 78, "a" * 79, "a" * 77 + " ", "a" * 76 + " ", "a" * 75 + " ",
    "a" * 78 + " ", "a" * 77 + "\t", "é" * 30, "é" * 40 + "\n" + "x" * 100, "\u20ac " * 60,
    "Привет, мир! " * 20, "日本語のテキスト" * 20, "\x0b\x0c\x1c\x1d\x1e\x85 mixed", "tab\tend\t",
    "\n".join(["line"] * 11), "\n".join(["é"] * 11), "\n".join(["x" * 100] * 12),
    "<p>" + "z " * 999, "a=b " * 60, "\0nul", "\x7fdel",
    # The choice between quoted-printable and base64 looks at the first ten lines only.
    "ok\n" * 10 + "Я" * 300, "Я" * 30 + "\n" + "ok\n" * 9 + "Я" * 300, "Я\n" * 10 + "ok\n" * 40,
    "Я\n" * 9 + "ok " * 30 + "\n" + "Я" * 40,
]
for width in (74, 75, 76, 77, 78, 79, 150, 152, 153, 154, 155, 156, 231):
    for tail in ("", " ", "\t", "=", "é", "= ", "==", "=\t", "é ", " \n"):
        EDGES.append("a" * (width - len(tail)) + tail)
        for at in range(70, 80):  # an "=XX" cut by the wrap at every offset
            line = "b" * width
            EDGES.append(line[:at] + "=" + line[at + 1:] + tail)
            EDGES.append(line[:at] + "é" + line[at + 1:] + tail)


@pytest.mark.parametrize("text", EDGES)
def test_edges_encode_as_the_stdlib_does(text, monkeypatch):
    assert ours(text) == stdlib(text)
    # Both ways of quoting: a replace per distinct byte, and a table for many distinct ones.
    for replaces in (0, 1000):
        monkeypatch.setattr(_shortcuts, "_QP_REPLACES", replaces)
        assert ours(text) == stdlib(text)


CHARS = string.printable + "=é€\u00a0\t\r\n \x0b\x85\u2028Я日"


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.text(CHARS, max_size=20) | st.sampled_from(["=", " ", "\t", "\r\n", "\n", "\r",
                                                                "é", "a" * 70, "x" * 76]),
                max_size=40).map("".join))
@example("a" * 77 + "=")
def test_any_text_encodes_as_the_stdlib_does(text):
    assert ours(text) == stdlib(text)


LINES = st.sampled_from(["ok", "", "Я" * 5, "Привет мир", "é", "x" * 90, "a=b", "日本語"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(LINES, min_size=8, max_size=14), st.sampled_from(["\n", "\r\n", "\r"]))
def test_the_choice_of_encoding_as_the_stdlib_makes_it(lines, end):
    text = end.join(lines)
    assert ours(text) == stdlib(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_any_unicode_encodes_as_the_stdlib_does(text):
    try:
        expected = stdlib(text)
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeEncodeError):
            ours(text)
        return
    assert ours(text) == expected


def test_the_composers_policy_does_not_ask_the_stdlib(monkeypatch):
    def private(*args):
        raise AssertionError("the copy answers for the composer's policy")

    monkeypatch.setattr(email.contentmanager, "_encode_text", private)
    assert ours("a=b\n" * 12 + "é" * 90)[0] == "quoted-printable"


def test_other_policies_ask_the_stdlib():
    policy = POLICY.clone(max_line_length=40)
    text = "a" * 60 + "\n"
    assert _shortcuts.encode_text(text, policy) == email.contentmanager._encode_text(
        text, "utf-8", None, policy)  # type: ignore[attr-defined]
    assert _shortcuts.encode_text(text, policy)[1] != ours(text)[1]
