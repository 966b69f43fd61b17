"""Benchmark: a 1000 x 10 DataFrame to email HTML, beside pandas' own to_html and Styler.to_html."""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import numpy as np
import pandas as pd

from smtp_magic.render import email_document, render_object

ROWS, COLUMNS, RUNS = 1000, 10, 7
GOAL_SECONDS, GOAL_BYTES = 0.200, 1_000_000


def make_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        rng.normal(size=(ROWS, COLUMNS - 2)), columns=[f"x{i}" for i in range(COLUMNS - 2)]
    )
    frame.insert(0, "city", rng.choice(["Paris", "Oslo", "Lima", "Kyoto"], ROWS))
    frame.insert(1, "count", rng.integers(0, 10_000, ROWS))
    return frame


def email_html(frame: object) -> str:
    return email_document(render_object(frame, name="frame").html)


def styled(frame: pd.DataFrame) -> object:
    """A typical report styling: highlights, a colour gradient's worth of cells, formats."""
    numbers = [c for c in frame.columns if c.startswith("x")]
    return (
        frame.style.highlight_max(subset=numbers, color="#fff3b0")
        .map(lambda v: "color: #cf222e" if v < -2 else "", subset=numbers)
        .format("{:.3f}", subset=numbers)
    )


def measure(func: Callable[[], object]) -> tuple[float, int]:
    """Median wall time over RUNS, and the largest tracemalloc peak (measured in separate runs)."""
    func()  # warm caches and imports
    times = []
    for _ in range(RUNS):
        gc.collect()
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    peaks = []
    for _ in range(3):  # tracemalloc slows the code down: time and memory are measured apart
        gc.collect()
        tracemalloc.start()
        func()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times), max(peaks)


def main() -> int:
    frame = make_frame()
    html = email_html(frame)
    cases = {
        "smtp_magic email HTML": lambda: email_html(frame),
        "df.to_html()": frame.to_html,
        "df.style.to_html()": lambda: frame.style.to_html(),
        "smtp_magic, styled": lambda: email_html(styled(frame)),  # for information: no goal
        "styled.to_html()": lambda: styled(frame).to_html(),
    }
    results = {label: measure(func) for label, func in cases.items()}
    ours_time, ours_peak = results["smtp_magic email HTML"]
    print(f"{ROWS} x {COLUMNS} DataFrame, median of {RUNS} runs, peak memory by tracemalloc")
    print(
        f"email HTML: {len(html.encode()):,} bytes "
        "(body budget 102 KB; the rest of the rows go in the CSV)"
    )
    print(f"{'':24}{'median ms':>10}{'peak KB':>10}{'time ratio':>12}{'memory ratio':>14}")
    for label, (seconds, peak) in results.items():
        print(
            f"{label:24}{seconds * 1e3:10.1f}{peak / 1e3:10.0f}"
            f"{ours_time / seconds:12.2f}{ours_peak / peak:14.2f}"
        )
    ok = ours_time <= GOAL_SECONDS and ours_peak <= GOAL_BYTES
    print(
        f"goal: <= {GOAL_SECONDS * 1e3:.0f} ms and <= {GOAL_BYTES / 1e6:.0f} MB: "
        f"{'met' if ok else 'NOT met'} ({ours_time * 1e3:.1f} ms, {ours_peak / 1e6:.2f} MB)"
    )
    print("(ratio = smtp_magic / that row)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
