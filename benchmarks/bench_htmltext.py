"""Benchmark: CPU of html_to_text (the plain-text alternative of an HTML body), us per document.

    python benchmarks/bench_htmltext.py [REPEATS]

(a) the bulk benchmark's bodies (scenarios.messages), (b) a DataFrame as pandas' to_html and
as render_object renders it for email, (c) small notebook-ish fragments. Each is the minimum
of REPEATS timings (default 9): the machine's other work only ever adds time.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import numpy as np
import pandas as pd

from benchmarks.scenarios import messages
from smtp_magic.htmltext import html_to_text
from smtp_magic.render import render_object

FRAGMENTS = [
    ("<p>Hello <b>Ann</b>,</p><p>Here is the <a href='https://example.org/r'>report</a> for this"
    " week.</p><ul><li>one</li><li>two <i>items</i></li><li>three</li></ul><p>Regards,<br>Bob</p>"),
    ("<h2>Results</h2><table><thead><tr><th>name</th><th>value</th><th>change</th></tr></thead>"
    "<tbody><tr><td>alpha</td><td>1,234</td><td>+5%</td></tr><tr><td>beta</td><td>56</td>"
    "<td>-2%</td></tr><tr><td>gamma</td><td>7.5</td><td>0%</td></tr></tbody></table>"),
    ("<div><h1>Notebook</h1><p>Some <code>code</code> and text &amp; entities&nbsp;here.</p>"
    "<ol><li>first</li><li>second</li></ol><pre>x = 1\ny = 2</pre>"
    "<blockquote>quoted text</blockquote></div>"),
    "<p>Short note with a link: <a href=\"mailto:a@example.org\">a@example.org</a></p>",
]


def frame(rows: int) -> pd.DataFrame:
    """Mixed numbers and strings: signs, percents, dates, entities, non-ASCII text."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.integers(-1000, 1000, rows), "b": rng.normal(size=rows),
        "c": [f"name {i}" for i in range(rows)], "d": rng.random(rows) * 1e6,
        "e": ["x" * (i % 7) for i in range(rows)], "f": rng.integers(0, 10, rows),
        "g": [f"{v:.1%}" for v in rng.random(rows)],
        "h": ["\u03b1/\u03b2 & <x>" if i % 3 == 0 else "plain" for i in range(rows)],
        "i": rng.normal(size=rows) * 100,
        "j": pd.date_range("2020-01-01", periods=rows).astype(str),
    })  # fmt: skip


def per_document(documents: list[str], number: int, repeats: int) -> float:
    best = min(timeit.repeat(lambda: [html_to_text(d) for d in documents], number=number,
                             repeat=repeats))
    return best / number / len(documents) * 1e6


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    cases = {
        "(a) benchmark bodies": ([html for *_, html in messages()[:100]], 5),
        "(b) DataFrame(1000x10).to_html()": ([frame(1000).to_html()], 3),
        "(b) render_object(DataFrame 200x10)": ([render_object(frame(200)).html], 10),
        "(b) render_object(DataFrame 4x3)": ([render_object(frame(4).iloc[:, :3]).html], 500),
        "(c) small fragments": (FRAGMENTS, 2000),
    }
    for name, (documents, number) in cases.items():
        print(f"{name:38s} {per_document(documents, number, repeats):10.1f} us per document")


if __name__ == "__main__":
    main()
