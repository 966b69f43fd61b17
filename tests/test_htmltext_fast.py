"""The regex tokenizer of html_to_text gives exactly what the stdlib HTMLParser path gives."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smtp_magic import htmltext
from smtp_magic.htmltext import _html_to_text_reference, html_to_text

ROOT = Path(__file__).resolve().parent.parent


def outcome(convert: Callable[[str], str], html: str) -> tuple[str, str]:
    try:
        return ("ok", convert(html))
    except Exception as exc:  # noqa: BLE001 -- HTMLParser asserts on some <![...]> junk
        return ("raised", type(exc).__name__)


def same(html: str) -> None:
    """The fast path gives what HTMLParser gives; where HTMLParser raised, html_to_text must
    still return text with no markup left. (The pre-tokenizer implementation was an oracle too
    until headings got marked and paragraphs wrapped: its output differs on purpose now.)"""
    new = outcome(html_to_text, html)
    assert new[0] == "ok", html
    expected = outcome(_html_to_text_reference, html)
    if expected[0] == "ok":
        assert new == expected, html


# -- every HTML string literal of the other html tests ------------------------------------------
def _literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "<" in node.value
        }
    )


LITERALS = _literals(ROOT / "tests" / "test_htmltext.py") + _literals(
    ROOT / "tests" / "test_render.py"
)


def test_literals_were_found() -> None:
    assert len(LITERALS) > 50


@pytest.mark.parametrize("html", LITERALS)
def test_test_literals(html: str) -> None:
    same(html)


# -- hand-picked edge cases of the tokenizer ------------------------------------------------------
EDGES = [
    "", "<", "a<", "a <", "<<", "< p>", "a < b > c", "x<3 & y>2", "<p>1 < 2</p>", "<>", "</>",
    "</", "</p", "</ p>", "</p >", "</p foo>", "</p\n>", "</3>", "<!>", "<!x>", "<!-->", "<!--->",
    "<!-- a -- >b", "<!-- a", "<!doctype html><p>x", "<!DOCTYPE html", "<?xml version='1.0'?>x",
    "<?x", "<![CDATA[x]]>y", "<![if !mso]>x<![endif]>", "<![foo]>", "<!-- <p>hidden</p> -->x",
    "<p", "<p class", "<p class=", "<p class='x", "<p class=x", "<p/", "<br/>", "<br />", "<br/ >",
    "<p/>x</p>", "<div/>x", "<a href=x/>t</a>", "<a href=x />t</a>", "<a href=/>t</a>",
    "<a href=\"u\"title=t>x</a>", "<a href='u'/>x", "<a  href = 'u' >x</a>", "<a HREF=U>x</a>",
    "<A HREF='u'>x</A>", "<a href=u&amp;v>x</a>", "<a href='&lt;u&gt;'>x</a>", "<a href=a=b>x</a>",
    "<a href==u>x</a>", "<a href=`u`>x</a>", "<a href=u\"v>x</a>", "<a href=\xa0u>x</a>",
    "<a\xa0href=u>x</a>", "<a\x0bhref=u>x</a>", "<p\x00>x", "<td colspan=2 colspan=3>x",
    "<p\xa0>x</p>y", "<b\xa0>x</b>y", "<br\x0b>x", "</p\xa0>x",
    "<img alt='a' alt='b'>", "<img alt>", "<img alt=''>", "<o:p>x</o:p>", "<my-el a-b=c>x</my-el>",
    "<p title=\"a>b\">x</p>", "<p title='a\nb'>x</p>", "<p\ntitle=x\n>y</p>", "<p\t/>", "<p a=b/c>",
    "<script>if (a < b) document.write('<p>x</p>')</script>y", "<script>x", "<style>x</style >y",
    "<SCRIPT>x</script>y", "<script>a</scripts>b</script>c", "<script/>visible", "<style/>v",
    "<script >x</ script>y", "<script>x</script foo>y</script>z", "<title>a<b>c</title>d",
    "<div hidden><script>x</script>y</div>z", "<textarea><p>x</textarea>",
    "&", "&amp", "&amp;", "a &amp b", "&#", "&#x", "&#65", "&#x41;&#65;", "&nbsp;&shy;x", "&notit;",
    "&amp;lt;", "x &", "x &a", "x &am<b>p;</b>", "&#0;&#x110000;", "&;", "a&b;c",
    "<pre>\nx\n</pre>", "<pre>\n\nx</pre>", "<pre><\nx</pre>", "<pre>&#10;x</pre>", "<pre>\r\nx</pre>",
    "<head><body>x", "<head><title>t</title><p>x", "<ul><li>a<li>b</ul>", "<ol start=-2><li>a",
    "<table><tr><td>a<td>b<tr><td>c</table>", "<table><td rowspan=2>a<td>b<tr><td>c",
    "<p>\u65e5\u672c\u8a9e <b>\u0301x</b>\U0001f600</p>", "<p>a\u2028b\u00a0c</p>",
    "<script>a</\u017fcript>b</script>c", "<script>a</scr\u0130pt>b</script>c", "<\u017fcript>x",
    "<style>a</STYLE\n>b", "<script>a</style>b</script>c", "</cell>", "</row>", "<p hidden></row></p>",
]  # fmt: skip


@pytest.mark.parametrize("html", EDGES)
def test_edge_cases(html: str) -> None:
    same(html)


def test_edge_cases_take_the_fast_path_when_they_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback must stay the exception: well-formed email HTML never takes it."""
    calls: list[str] = []
    real = htmltext._stdlib_tokenize

    def spy(html: str, sink: Any) -> None:
        calls.append(html)
        real(html, sink)

    monkeypatch.setattr(htmltext, "_stdlib_tokenize", spy)
    html_to_text("<!DOCTYPE html><p class=a id='b' data-x=\"c\" hidden>x &amp; y<br/><br />z</p>")
    html_to_text("<!-- c --><?pi?><script>a < b</script><img alt=x/><a href=u>1 < 2 > 0</a>")
    assert calls == []
    html_to_text("a<b")
    assert calls == ["a<b"]


# -- rendered emails ------------------------------------------------------------------------------
def _rendered() -> list[str]:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    from smtp_magic.render import email_document, markdown_to_html, render_object, render_template

    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "city": ["Paris", "Oslo <x>", "Kyoto \u4eac\u90fd", "S\u00e3o Paulo", "a & b"],
            "temp": [21.5, -3.25, 12.0, float("nan"), 1e9],
            "n": [1, 300, 7, 0, -4],
            "when": pd.date_range("2024-01-01", periods=5),
        }
    )
    index = pd.MultiIndex.from_product([["x", "y"], [1, 2]], names=["k", "j"])
    multi = pd.DataFrame({"A": range(4), "B": list("abcd")}, index=index)
    wide = pd.DataFrame(rng.normal(size=(30, 8)).round(3))
    styled = df.style.highlight_max(subset=["temp"], color="yellow").format({"temp": "{:.2f}"})
    markdown = (
        "# Report for <Ann>\n\n*Fine* and **bold**, [docs](https://example.org) & `code <b>`\n\n"
        "- one\n- two\n  1. nested\n\n> quoted\n> text\n\n```\npre  block\n```\n\n"
        "| a | b |\n|---|--:|\n| x | 1 |\n| y | 22 |\n\n---\n\n<div>raw html</div>\n"
    )
    frames = {"df": df, "multi": multi, "wide": wide, "styled": styled, "who": "<Ann & Bob>"}
    template = (
        "<h1>Weekly {{ who }}</h1><p>See <a href='https://example.org/r'>report</a></p>"
        "{{ df }}<h2>multi</h2>{{ multi }}{{ styled }}{{ wide }}"
    )
    fragments = [
        df.to_html(), multi.to_html(), wide.to_html(), styled.to_html(), df.to_html(index=False),
        render_object(df).html, render_object(styled).html, render_object(multi).html,
        markdown_to_html(markdown), render_template(markdown, frames, "text/markdown").html,
        render_template(template, frames).html, render_template(template, frames, max_rows=3).html,
    ]  # fmt: skip
    return fragments + [email_document(f, title="T <1>") for f in fragments]


def test_rendered_emails() -> None:
    for html in _rendered():
        same(html)


def test_benchmark_bodies(running: list[bool]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from scenarios import messages
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    bodies = [html for _, _, _, html in messages()]
    assert len(bodies) == 500
    for html in bodies:
        same(html)
    assert running == [True] * 500  # all taken as running text (_running_text), none tag by tag


# -- random markup --------------------------------------------------------------------------------
def _markup() -> Any:
    """Random tag soup: tags the converter knows, attributes, junk, entities, unicode."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    names = st.sampled_from(
        ["p", "div", "b", "a", "ul", "ol", "li", "table", "tr", "td", "th", "thead", "caption",
         "pre", "br", "img", "blockquote", "script", "style", "h2", "span", "head", "body", "title",
         "hr", "dl", "dt", "dd", "o:p", "x-y", "SCRIPT", "Td", "svg"]
    )  # fmt: skip
    attr_names = st.sampled_from(
        ["href", "alt", "style", "hidden", "colspan", "rowspan", "start", "value", "role",
         "aria-hidden", "class", "HREF", "data-x"]
    )  # fmt: skip
    values = st.sampled_from(
        ["https://x.org/a?b=1&amp;c=2", "display:none", "2", "0", "-1", "presentation", "true",
         "a>b", "a b", "x/", "/", "&lt;&#65;&", "", "mailto:a@b.c", "#top", "caf\u00e9"]
    )  # fmt: skip
    seps = st.sampled_from([" ", "\n", "  ", "\t", " / ", "/", "", "\xa0", "\x0b"])
    quotes = st.sampled_from(['"', "'", ""])

    @st.composite
    def attribute(draw: Any) -> str:
        name, value, quote = draw(attr_names), draw(values), draw(quotes)
        if draw(st.booleans()):
            return draw(seps) + name
        eq = draw(st.sampled_from(["=", " = ", "==", "=\n"]))
        return f"{draw(seps)}{name}{eq}{quote}{value}{quote}"

    endings = st.sampled_from(["", " ", "/", " /", "\n", "\xa0", "\x0b"])

    @st.composite
    def start_tag(draw: Any) -> str:
        attrs = "".join(draw(st.lists(attribute(), max_size=3)))
        return f"<{draw(names)}{attrs}{draw(endings)}>"

    end_tag = st.builds(lambda n, s: f"</{n}{s}>", names, st.sampled_from(["", " ", " x", "\n"]))
    junk = st.sampled_from(
        ["<", ">", "</", "<!-- c -->", "<!--", "-->", "<!doctype html>", "<?pi ?>", "<!x>", "&",
         "&amp;", "&lt;p&gt;", "&nbsp;", "&#8364;", "&#x41", "&shy;", "<3", "a<b", "< p>", "</>",
         "<![CDATA[x]]>", "\u65e5\u672c", "\U0001f600", "e\u0301", "\r\n", "  ", "\t"]
    )  # fmt: skip
    text = st.text(alphabet="ab <>&;#/\n\t\xa0\u00e9\u65e5", max_size=8)
    pieces = st.one_of(start_tag(), end_tag, junk, text)
    return st.lists(pieces, max_size=40).map("".join)


def test_random_markup() -> None:
    hypothesis = pytest.importorskip("hypothesis")

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(_markup())
    def check(html: str) -> None:
        same(html)

    check()


@pytest.mark.parametrize("html, text", [
    ("</cell>", ""), ("</row>", ""),  # once mistaken for the converter's own helpers
    ("<p>a &amp; b</p><![ y <b>z</b>", "a & b z"),  # HTMLParser asserts on "<![ y"
])
def test_markup_html_parser_cannot_take_still_gives_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


# -- whole data tables (_whole_table): the shortcut gives what the table's tags give --------------
@pytest.fixture
def whole_tables(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The layouts of the tables html_to_text took whole (tag by tag or as running text)."""
    taken: list[str] = []
    real = htmltext._Converter.whole_table

    def spy(self: Any, text: str) -> None:
        taken.append(text)
        real(self, text)

    monkeypatch.setattr(htmltext._Converter, "whole_table", spy)
    # _running_text takes its tables from _whole_table: they count if the document is taken.
    laid_out: list[str] = []
    whole_table, running_text = htmltext._whole_table, htmltext._running_text

    def table_spy(html: str, pos: int) -> tuple[str, int] | None:
        table = whole_table(html, pos)
        if table is not None:
            laid_out.append(table[0])
        return table

    def running_spy(html: str) -> str | None:
        laid_out.clear()
        text = running_text(html)
        if text is not None:
            taken.extend(laid_out)
        return text

    monkeypatch.setattr(htmltext, "_whole_table", table_spy)
    monkeypatch.setattr(htmltext, "_running_text", running_spy)
    return taken


def test_a_report_table_is_taken_whole(whole_tables: list[str]) -> None:
    rows = "".join(f"<tr><td>item {j}</td><td>{j * 7}</td></tr>" for j in range(20))
    html = f"<p>Numbers:</p><table>{rows}</table><p>Bye<br>me</p>"
    same(html)
    assert len(whole_tables) == 1 and whole_tables[0].splitlines()[-1] == "item 19  133"


def test_rendered_tables_are_taken_whole_with_their_hidden_labels(whole_tables: list[str]) -> None:
    pd = pytest.importorskip("pandas")
    from smtp_magic.render import render_object

    df = pd.DataFrame({"city": ["Paris", "Oslo &amp;", "\u4eac\u90fd"], "temp": [21.5, -3.25, None],
                       "share": ["1.5%", "-2%", ""]})
    for column in range(8):  # wide enough to be stacked on narrow screens: labelled cells
        df[f"column {column}"] = [123456.789 * column, -1.0, 0]
    html = render_object(df).html
    assert 'class="smx-label"' in html and "display:none" in html
    same(html)
    assert len(whole_tables) == 1
    assert "city:" not in whole_tables[0]  # the labels are not shown
    assert whole_tables[0].splitlines()[-1].split()[:3] == ["2", "\u4eac\u90fd", "NaN"]


def test_pandas_tables_are_taken_whole_unless_they_span(whole_tables: list[str]) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"city": ["Paris", "Oslo &", "\u4eac\u90fd"], "temp": [21.5, -3.25, None]})
    same(df.to_html())
    same(df.style.format({"temp": "{:.2f}"}).to_html())
    assert len(whole_tables) == 2
    index = pd.MultiIndex.from_product([["x", "y"], [1, 2]], names=["k", "j"])
    same(pd.DataFrame({"A": range(4)}, index=index).to_html())  # rowspan: tag by tag
    assert len(whole_tables) == 2


@pytest.mark.parametrize("html", [
    "<table><tr><td>&lt;b&gt;</td></tr></table>", "<table><tr><td>&lt; b</td><td>x</td></tr></table>",
    "<table><tr><td>a &lt;</td><td>&gt;</td></tr></table>", "<table><tr><td> a</td></tr></table>",
    "<table><tr><td>a </td><td>b</td></tr></table>", "<table><tr><td>a</td><td> b</td></tr></table>",
    "<table><tr><td>a</td><td>b </td></tr></table>", "<table><tr><td>\u3000a\u2028</td></tr></table>",
    "<table><tr><td>a\x0b</td><td>\x1fb</td></tr></table>", "<table><tr><td>&#32;a&#x3000;</td></tr></table>",
    "<table><tr><td>1</td><td>\u00e9</td></tr><tr><td></td><td></td></tr><tr><td>22</td><td></td></tr></table>",
    "<table><tr><td>\u65e5\u672c</td><td></td><td>x</td></tr></table>",
    "<table><tr><td>&amp; </td><td> &lt;x</td></tr><tr><td>&gt;</td><td>&amp;&amp;</td></tr></table>",
    "<table><tr><td>&#32;a</td><td>b&#32;</td></tr></table>", "<table><tr><td>a&#32; b</td></tr></table>",
    "<table><tr><td>&lt;</td></tr><tr><td>&#10;</td></tr></table>",
    # tags in any case: lowered before the header rows are told
    "<TABLE><TR><TH>name</TH></TR><TR><TD>1</TD></TR><TR><TH>x</TH></TR><TR><TD>22</TD></TR></TABLE>",
    "<table><thead><TR><td>a</td></TR><tr><td>bb</td></tr></thead><tr><td>0</td></tr></table>",
    "<table>\n<tr><Th>h</th></tr>\n<tr><td>-1</td></tr></table>",
    # numbers starting with each sign or currency (or a digit of another script), over longer ones
    ("<table><tr><td>$5</td><td>\u20ac1</td><td>\u00a33</td><td>\u00a5100</td><td>(2)</td><td>\u22127</td>"
    "<td>+4</td><td>-1</td><td>\u0661</td><td>x</td></tr><tr><td>12345</td><td>12345</td><td>12345</td>"
    "<td>12345</td><td>12345</td><td>12345</td><td>12345</td><td>12345</td><td>12345</td><td>12345</td></tr>"
     "</table>"),
])  # fmt: skip
def test_tables_the_shortcut_takes(html: str, whole_tables: list[str]) -> None:
    same(html)
    assert len(whole_tables) == 1


@pytest.mark.parametrize("html", [
    "<table><tr><td colspan=2>a</td></tr><tr><td>1</td><td>2</td></tr></table>",
    "<table><tr><td>a</td></tr><tr><td>1</td><td>2</td></tr></table>",  # ragged rows
    "<table role=presentation><tr><td>a</td><td>1</td></tr></table>",
    "<table><tr><td>a</td><td style='display: none'>1</td></tr></table>",
    "<table><tr hidden><td>a</td></tr><tr><td>b</td></tr></table>",
    "<table><caption>c</caption><tr><td>a</td></tr></table>",
    "<table><tr><td><b>a</b></td></tr></table>",
    "<table><tr><td title='a>b'>a</td></tr></table>",
    "<table><tr><td>a<td>b</tr></table>",
    "<table><tr><td>a</td></tr>",
    "<table><tr><td>a</td></tr><p>x</p></table>", "<table><tr><td>a</td></tr>x</table>",
    "<pre><table><tr><td> a  b </td></tr></table></pre>",
    "<div hidden><table><tr><td>a</td></tr></table></div>c",
    "<script><table><tr><td>a</td></tr></table></script>c",
    # a cell may start with a hidden label (render.py's stacked tables), no other span
    "<table><tr><td a><span>x</span>1</td></tr></table>",
    "<table class=q><tr><td><span >x</span>1</td></tr></table>",
    "<table><tr><td a><span class=x>x</span>1</td></tr></table>",
    "<table><tr><td a><span aria-hidden=TRUE>x</span>1</td></tr></table>",
    "<table><tr><td a>1<span hidden>x</span></td></tr></table>",
    "<table><tr><td a><span hidden>x</span><span hidden>y</span>1</td></tr></table>",
    "<table><tr><td a><span hidden><b>x</b></span>1</td></tr></table>",
    "<table><tr><td a><SPAN hidden>x</SPAN>1</td></tr></table>",
    "<table><tr><td a><span hidden>x</span></td></tr><tr><td>1</td><td>2</td></tr></table>",
    # attributes the tokenizer would not read as the grammar's strict form does
    "<table><tr><td a=\"x\"b=c>1</td></tr></table>", "<table><tr><td a=b=c>1</td></tr></table>",
    "<table><tr><td =x>1</td></tr></table>", "<table><tr><tdx a>1</td></tr></table>",
    "<table><tr><td\xa0a=b>1</td></tr></table>", "<table><tr><td a=`b`>1</td></tr></table>",
    "<table><tr><td a='x'/>1</td></tr></table>", "<table x=\"a'><tr><td>1</td></tr></table>",
    "<table><tr><td style=\"dis play: NONE\">1</td></tr></table>",
    "<table><tr ROLE=row><td>1</td></tr></table>", "<table><tr><td ColSpan=1>1</td></tr></table>",
    "<table><tr><td title=\"a<b\">1</td></tr></table>", "<table x='</tr>'><tr><td>1</td></tr></table>",
    "<table><tr><td a='<td b'>1</td><td>2</td></tr></table>", "<table><tr><td a=<>1</td></tr></table>",
    "<table><tr><td a><span title='<'>x</span>1</td></tr></table>",
])  # fmt: skip
def test_tables_the_shortcut_leaves_to_the_converter(html: str, whole_tables: list[str]) -> None:
    same(html)
    assert whole_tables == []


# Cell texts for the random tables: numbers as reports write them (signs, percent, currency,
# separators), entities, no-break and other spaces, wide and combining characters, empty cells.
_CELL_TEXTS = [
    "", "", "0", "7", "12", "-3.25", "+4", "1,000", "1 000", "1'000", "(2)", "$5", "\u20ac12.50",
    "\u00a33", "\u00a5100", "-$1.5", "4%", "-12.5%", "1e9", "2.5E-3", "\u22127", "nan", "-", "x",
    "item 3", "a &amp; b", "&nbsp;", "&nbsp;5", "5&nbsp;%", "&#10;x", "&lt;b&gt;", "&amp;lt;",
    "&#0;", "&#x20;5", "&ampx", "&am", "p;", "\xa0y\xa0", " pad  ", "a\tb", "\u65e5\u672c\u8a9e",
    "\uff11\uff12", "e\u0301", "\u00e9t\u00e9", "\U0001f600", "\x0b", "a\u2028b", "\u3000",
    "\u0661", "2\u00b2", "\u00ad", "%s", "%d", "{0}", "a\x00b", "\r\n1\r\n", "  ", "\n",
]  # fmt: skip


def _table_markup() -> Any:
    """Tables in and around the shortcut's grammar, in contexts that change what a table does."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    ws = st.sampled_from(["", "", " ", "\n", "\n  ", "\t"])
    cell_text = st.one_of(
        st.sampled_from(_CELL_TEXTS), st.text(alphabet="ab1 2.\n\t&;\xa0\u65e5", max_size=6)
    )
    # Each piece: markup the shortcut takes, then markup it must leave to the converter.
    label = '<span class="smx-label" style="display:none;mso-hide:all">col: </span>'
    plain_open = ["<td>", "<td>", "<th>", "<TD>", "<td >", "<td\nclass=x>",
                  "<th style='text-align: right'>", "<td nowrap>", f"<td style='a:b'>{label}",
                  f"<td class=x>{label}", "<td a=1><span hidden>x</span>", "<TH b><span hidden>y</span>"]
    cell_open = plain_open + ["<td colspan=2>", "<td rowspan='2'>", "<td style='display:none'>",
                              "<td aria-hidden=true>", "<td title='a>b'>", "<td a=&quot;>", "<td/>",
                              # labels and attributes just outside the shortcut's grammar
                              "<td a><span>x</span>", "<td a><span class=x>y</span>", "<td>" + label,
                              "<td a> <span hidden>x</span>", "<td a><SPAN hidden>x</SPAN>",
                              "<td a><span hidden><b>x</b></span>", "<td a><span hidden>x</span >",
                              "<td a>&am<span hidden>x</span>", "<td a><span title='>'>x</span>",
                              "<td a><span hidden aria-hidden=false>x</span>",
                              "<td a=\"x\"b=c>", "<td a='x\"'>", "<td a=b=c>", "<td =x>", "<tdx a>",
                              "<td\xa0a=b>", "<td a=`b`>", "<td a='<'>", "<td HIDDEN>", "<td ROLE=x>",
                              "<td COLSPAN=1>", "<td style='DISPLAY: NONE'>", "<td style=\"dis play:none\">"]
    plain_close, cell_close = ["</td>", "</td>", "</th>", "</TD >"], ["</td>", ""]
    plain_row = ["<tr>", "<tr>", "<TR>", "<tr style='text-align: right;'>", "<tr\n>"]
    row_open = plain_row + ["<tr hidden>"]
    plain_row_close, row_close = ["</tr>", "</tr>", "</tr >"], ["</tr>", ""]
    plain_table = ["<table>", "<table>", "<TABLE>", "<table border=1 class=\"dataframe\">",
                   "<table cellpadding=0>"]
    table_open = plain_table + ["<table role=presentation>", "<table role='grid'>",
                                "<table hidden>", "<table style='display: none'>"]
    plain_end, table_end = ["</table>", "</table>", "</Table >"], ["</table>", ""]

    @st.composite
    def row(draw: Any, ncols: int, plain: bool) -> str:
        n = ncols if plain or draw(st.integers(0, 4)) else draw(st.integers(0, ncols + 1))
        opening = st.sampled_from(plain_open if plain else cell_open + plain_open)
        closing = st.sampled_from(plain_close if plain else cell_close + plain_close)
        cells = "".join(draw(ws) + draw(opening) + draw(cell_text) + draw(closing) for _ in range(n))
        ends = plain_row_close if plain else row_close + plain_row_close
        return (draw(ws) + draw(st.sampled_from(plain_row if plain else row_open)) + cells
                + draw(ws) + draw(st.sampled_from(ends)))

    @st.composite
    def table(draw: Any) -> str:
        plain = draw(st.integers(0, 2)) > 0  # two in three tables are in the shortcut's grammar
        ncols = draw(st.integers(1, 4))
        head = ""
        if draw(st.booleans()):
            head = (draw(ws) + "<thead>" + "".join(draw(st.lists(row(ncols, plain), max_size=2)))
                    + draw(ws) + ("</thead>" if plain else draw(st.sampled_from(["</THEAD>", ""]))))
        body = "".join(draw(st.lists(row(ncols, plain), min_size=plain, max_size=5)))
        if draw(st.booleans()):
            body = f"<tbody>{body}{draw(ws)}</tbody>"
        opening = draw(st.sampled_from(plain_table if plain else table_open))
        caption = "" if plain else draw(st.sampled_from(["", "<caption>Totals</caption>"]))
        ending = draw(st.sampled_from(plain_end if plain else table_end))
        return opening + caption + head + body + draw(ws) + ending

    context = st.sampled_from(
        ["{}", "{}", "<p>before</p>{}<p>after</p>", "text{}text", "<br>{}<br><br>x",
         "<h2>{}</h2>", "<h1>T {}</h1>", "<a href='https://x.org'>{}</a>", "<blockquote>{}</blockquote>",
         "<ul><li>{}</li></ul>", "<table role=presentation><tr><td>{}</td></tr></table>",
         "<table><tr><td>{}</td><td>9</td></tr></table>", "<pre>{}</pre>", "<div hidden>{}</div>z",
         "<script>{}</script>z", "<table><caption>{}</caption></table>", "{}{}",
         "<table><tr><td>a</td></tr>{}</table>"]
    )  # fmt: skip
    return st.builds(lambda c, t: c.replace("{}", t), context, table())


def test_random_tables(whole_tables: list[str]) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    taken = 0

    @hypothesis.settings(max_examples=500, deadline=None)
    @hypothesis.given(_table_markup())
    def check(html: str) -> None:
        nonlocal taken
        before = len(whole_tables)
        same(html)
        taken += len(whole_tables) > before

    check()
    assert taken > 100  # the shortcut was exercised, not only the tag-by-tag path


def _compact_tables() -> Any:
    """Tables as a program writes them (lowercase tags, no attributes, nothing between tags),
    some with one tag changed so that the compact grammar refuses them."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    text = st.one_of(st.sampled_from(_CELL_TEXTS), st.text(alphabet="a1 .-%$&;#\xa0\u65e5", max_size=5))

    @st.composite
    def table(draw: Any) -> str:
        ncols = draw(st.integers(1, 4))

        def rows(count: int) -> str:
            return "".join(
                "<tr>"
                + "".join(
                    f"<{kind}>{draw(text)}</{draw(st.sampled_from([kind, kind, 'td', 'th']))}>"
                    for kind in draw(st.lists(st.sampled_from(["td", "td", "th"]),
                                              min_size=ncols, max_size=ncols))
                )
                + "</tr>"
                for _ in range(count)
            )

        head = f"<thead>{rows(draw(st.integers(0, 2)))}</thead>" if draw(st.booleans()) else ""
        body = rows(draw(st.integers(0, 6)))
        if draw(st.booleans()):
            body = f"<tbody>{body}</tbody>"
        markup = f"<table>{head}{body}</table>"
        mutation = draw(st.integers(0, 5))
        if mutation == 0:  # one tag changed: the general grammar or none takes it
            tags = [i for i, c in enumerate(markup) if c == "<"]
            at = draw(st.sampled_from(tags))
            change = draw(st.sampled_from(["<td ", "<TD>", "<td colspan=2>", "<th\n", "<b>", " <"]))
            markup = markup[:at] + change + markup[at + 1 :]
        elif mutation == 1 and "<td>" in markup:  # a row one cell short
            at = markup.index("<td>")
            markup = markup[:at] + markup[markup.index("</t", at) + 5 :]
        return markup

    context = st.sampled_from(["{}", "<p>a</p>{}<p>b</p>", "x{}y", "<h1>{}</h1>", "{} {}",
                               "<ul><li>{}</li></ul>", "<pre>{}</pre>", "<div hidden>{}</div>"])
    return st.builds(lambda c, t: c.replace("{}", t), context, table())


@pytest.mark.parametrize("ncols", [32, 33])  # cells written out in the grammar, or repeated
def test_wide_compact_tables(ncols: int, whole_tables: list[str]) -> None:
    rows = "".join(
        "<tr>" + "".join(f"<td>{r * c if c % 3 else f'x{r}'}</td>" for c in range(ncols)) + "</tr>"
        for r in range(3)
    )
    same(f"<table>{rows}</table>")
    same(f"<table>{rows}<tr><td>short row</td></tr></table>")
    assert len(whole_tables) == 1 and len(whole_tables[0].splitlines()) == 3


class _Spy:
    """A compiled pattern that counts its findall calls."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.calls = pattern, 0

    def findall(self, source: str, *bounds: int) -> list[Any]:
        self.calls += 1
        return self.pattern.findall(source, *bounds)


def test_random_compact_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    spy, td_spy = _Spy(htmltext._COMPACT_CELL_TEXT), _Spy(htmltext._COMPACT_TD_TEXT)
    monkeypatch.setattr(htmltext, "_COMPACT_CELL_TEXT", spy)
    monkeypatch.setattr(htmltext, "_COMPACT_TD_TEXT", td_spy)

    @hypothesis.settings(max_examples=600, deadline=None)
    @hypothesis.given(_compact_tables())
    def check(html: str) -> None:
        same(html)

    check()
    # Many took the compact grammar, some of them tables without <th> (about 1 in 30 here).
    assert spy.calls > 100 and td_spy.calls >= 5


# -- running text (_running_text): paragraphs, line breaks and whole tables, written directly ----
@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each html_to_text call, whether _running_text took the document."""
    taken: list[bool] = []
    real = htmltext._running_text

    def spy(html: str) -> str | None:
        text = real(html)
        taken.append(text is not None)
        return text

    monkeypatch.setattr(htmltext, "_running_text", spy)
    return taken


_LONG = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor " * 3


@pytest.mark.parametrize("html", [
    "", "x", " x ", "\n", "a&amp;b", "&nbsp;", "&#32;", "a &lt;p&gt; b", "a > b", "<p>x</p>",
    "<html><body><p>Hello user 7,</p><p>Your numbers:</p><p>Regards,<br>the robot</p></body></html>",
    "<br>", "<br><br>x", "<p><br>x</p>", "x<br>", "a<br><br><p>b", "a<p><br><br><br><div>b", "a<br><br>b", "a<br><p>b", "a<p><br>b",
    "<p>a</p><br><p>b</p>", "a<br/>b<br />c", "<p/>x<div/>y", "a <br> b", "a\n<br>\nb",
    "<p> a </p> <p> b </p>", "<div>\n  a\n  b\n</div>\n<div>c</div>", "a<b>b</b>c",
    "a <b>b</b> c", "a<b> </b>c", "<b>a</b><i>b</i>", "<p><strong>Total:</strong> 5</p>",
    "<span>a</span>\xa0<span>b</span>", "a\xa0\n", "x\u00ady", "\u00ad", "a\x0b", "a\u2028b",
    "\u65e5\u672c\u8a9e " * 30, "e\u0301 " * 40, _LONG, f"<p>{_LONG}</p>", f"a<br>{_LONG}",
    f"<b>{_LONG}</b>{_LONG}", f"{'x' * 75} y", f"{'x' * 76} y", f"{'x' * 77} y", "x" * 200,
    f"{'x' * 70}<b>yyyyyy zz</b>", f"{'x' * 70} <b>yyyyy</b>", f"{'x' * 70}<b> yyyyyy</b>",
    f"{'x' * 70} <b>yyyyyy</b>", f"{'x' * 74}<b> </b>y", f"{'a ' * 37}b<br>c",
    "<section><header>h</header><main>m</main><footer>f</footer></section><center>c</center>",
    "<p>a</p><table><tr><td>x</td><td>1</td></tr></table><p>b<br>c</p>",
    "a<table><tr><td>x</td></tr></table>b", "<br><table><tr><td>x</td></tr></table>",
    "<br><br><table><tr><td>x</td></tr></table><br>y",
    "<table><tr><td></td></tr></table>x", "x<table><tr><td></td></tr></table><br>y",
    "<table><tr><td> 5</td><td>-1</td></tr></table>x<table><tr><td>a</td></tr></table>",
    "<p>a <table><tr><td>x</td></tr></table> b</p>",
])  # fmt: skip
def test_running_text_is_written_as_the_converter_writes_it(html: str, running: list[bool]) -> None:
    same(html)
    assert running[0]


@pytest.mark.parametrize("html", [
    "<P>x</P>", "<p class=a>x</p>", "<p >x</p>", "<h1>x</h1>", "<ul><li>x</li></ul>", "<a>x</a>",
    "<p>x<!-- c --></p>", "<!doctype html><p>x</p>", "a < b", "a <", "<", "<>", "</p", "<br>x<hr>",
    "<head><title>t</title></head><p>x</p>", "<pre>a  b</pre>", "<blockquote>q</blockquote>",
    "<p>a</p><table role=presentation><tr><td>x</td></tr></table>",
    "<table><tr><td colspan=2>x</td></tr></table>", "<table><tr><td>x</td></tr></table><h2>y</h2>",
    "<TABLE><tr><td>x</td></tr></TABLE>", "<tablex>", "<table", "<p>x</p><script>y</script>",
])  # fmt: skip
def test_running_text_leaves_other_documents_to_the_converter(html: str, running: list[bool]) -> None:
    same(html)
    assert running == [False]


def _running_documents() -> Any:
    """Documents of running text, some with a tag it does not take."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    tags = st.one_of(
        st.sampled_from(sorted(htmltext._RUNNING_TAGS)).map(lambda name: f"<{name}>"),
        st.sampled_from(["<br>", "<p>", "</p>", "<b>", "</b>"]),  # the common ones, more often
    )
    others = st.sampled_from(
        ["<P>", "<p class=x>", "<h2>", "</h2>", "<ul><li>", "<a href=u>", "<!-- c -->", "<",
         "<table role=none><tr><td>1</td></tr></table>", "<hr>", "<br >", "</br>", "1 < 2"]
    )  # fmt: skip
    words = st.sampled_from(
        ["a", "bb", "Hello", "x" * 30, "y" * 75, "z" * 80, "&amp;", "&nbsp;", "&lt;p&gt;", "&#10;",
         "1 &lt; 2", "\xa0", "\u00ad", "\u65e5\u672c\u8a9e", "e\u0301", "\U0001f600", "caf\u00e9", ">"]
    )  # fmt: skip
    separators = st.sampled_from([" ", " ", "", "  ", "\n", "\t", "\r\n", "\xa0", "\x0b"])
    text = st.lists(st.tuples(separators, words), max_size=30).map(
        lambda pairs: "".join(s + w for s, w in pairs)
    )
    compact_table = st.builds(
        lambda rows: "<table>" + rows + "</table>",
        st.lists(st.sampled_from(["<tr><td>a</td><td>1</td></tr>", "<tr><td>bb b</td><td></td></tr>",
                                  "<tr><td>&amp;</td><td>-22</td></tr>"]), min_size=1, max_size=4).map("".join),
    )  # fmt: skip
    piece = st.one_of(tags, tags, text, text, compact_table)
    clean = st.lists(piece, max_size=25).map("".join)
    spoilt = st.tuples(clean, others, clean).map("".join)
    return st.one_of(clean, clean, clean, spoilt)


def test_random_running_text(running: list[bool]) -> None:
    hypothesis = pytest.importorskip("hypothesis")

    @hypothesis.settings(max_examples=1500, deadline=None)
    @hypothesis.given(_running_documents())
    def check(html: str) -> None:
        same(html)

    check()
    assert sum(running) > len(running) / 4  # many took the shortcut
