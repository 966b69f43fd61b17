"""Units of _sanitize: the quick test of whether markup needs sanitising at all."""

from __future__ import annotations

import re
import sys

import pytest

from smtp_magic import _sanitize
from smtp_magic._sanitize import _SUSPECT, _suspect


def test_the_lookalikes_are_all_the_characters_ignorecase_relates_to_ascii_letters() -> None:
    letter = re.compile(r"[a-z]", re.IGNORECASE)
    found = [
        c
        for c in map(chr, range(128, sys.maxunicode + 1))
        if letter.match(c) or any(ord(x) < 128 for x in c.lower())
    ]
    assert found == ["\u0130", "\u0131", "\u017f", "\u212a"]
    assert all(_sanitize._ASCII_LOOKALIKES.match(c) for c in found)


@pytest.mark.parametrize("html", [
    "<p>plain</p>", "<script>x</script>", "<SCRIPT>", "<\u017fcript>", "<p onclick=x>", "<p\nONLOAD = x>",
    "<p/onerror=x>", "<p title='a'onmouseover=x>", "<p data-on=x>", "<p on=x>", "<p one=1>",
    "<meta content=x>", "a&#106;", "&colon;", "&Tab;", "&newline", "DATA:x", "<p \u3000onclick=x>",
    "<p \xa0onclick=x>", "<p\x1conclick=x>", "<p xonclick=x>", "onclick=x", "<p \u212aonclick=x>",
    "<p on\u212a=x>", "<p onc\u0131ick=x>", "\u0130", "caf\u00e9 <b>", "<p \u2028onload=x>",
])  # fmt: skip
def test_suspect_is_the_case_insensitive_regex(html: str) -> None:
    assert _suspect(html) == bool(_SUSPECT.search(html)), html


def test_suspect_on_random_markup() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    pieces = st.one_of(
        st.sampled_from(
            ["on", "ON", "On", "click", "=", " = ", "script", "SCRIPT", "scr", "ipt", "data", ":",
             "&", "#", "&colon;", "&TAB;", "lpar", ";", "<", ">", "p", "\u017f", "\u212a", "\u0130",
             "\u0131", "\xa0", "\u3000", "\x1c", "\x0b", "/", '"', "'", "`", "\u00e9", "\u65e5"]
        ),
        st.text(alphabet="ab onc=\n\t", max_size=4),
    )  # fmt: skip

    @hypothesis.settings(max_examples=500, deadline=None)
    @hypothesis.given(st.lists(pieces, max_size=12))
    def check(parts: list[str]) -> None:
        html = "".join(parts)
        assert _suspect(html) == bool(_SUSPECT.search(html))

    check()
