"""A report with a wide table, as a phone shows it (Chromium at 375 px): the page keeps the
screen's width and its text stays readable; the table is stacked (each row a block of "column:
value" lines) and, where the <style> is dropped, fits the screen without scrolling sideways
(tests/test_message_browser.py checks both with scrolling switched off, at 320 px too)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import chromium

from smtp_magic.render import email_body, render_template

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="module")
def phone() -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True)


def weekly_sales() -> Any:
    """Four regions, seven columns: text, whole numbers, decimals."""
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "region": ["North-east", "South", "West coast", "Central"],
        "manager": ["Ann Lee", "Bob Ortiz", "Cy Nakamura", "Dee Okafor"],
        "orders": rng.integers(100, 9000, 4), "revenue": rng.normal(1e5, 2e4, 4).round(2),
        "margin %": rng.normal(20, 5, 4).round(1), "returns": rng.integers(0, 90, 4),
        "status": ["on track", "behind plan", "on track", "ahead"],
    })


def test_a_seven_column_table_on_a_phone(phone: Any, tmp_path: Path) -> None:
    df = weekly_sales()
    source = ("<h1>Weekly sales</h1><p>Hello team, here are this week's numbers by region. "
              "The table below has every region; the attached file has the daily detail.</p>"
              "{{ df }}<p>Thanks, Ann</p>")
    html = email_body(render_template(source, {"df": df}), title="Weekly sales").html
    phone.set_content(html, wait_until="load")
    page_width = phone.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"], f"the page is {page_width} px wide on a 375 px screen"
    for paragraph in phone.query_selector_all("p"):
        box = paragraph.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        size = phone.evaluate("e => parseFloat(getComputedStyle(e).fontSize)", paragraph)
        assert size >= 14
    scroller = phone.query_selector("table:not([role]) >> xpath=..")
    # The table fits: nothing hides behind the box that would scroll (Android apps cannot).
    assert phone.evaluate("e => e.scrollWidth <= e.clientWidth", scroller)
    assert phone.evaluate("e => getComputedStyle(e).overflowX", scroller) == "auto"
    # Too wide to read at 375 px with its words whole: stacked, each value under its column's name.
    first = phone.evaluate("""() => [...document.querySelector("table:not([role]) tbody tr")
        .querySelectorAll('td')].map(td => td.innerText.trim())""")
    assert first[0] == "region: North-east" and first[1] == "manager: Ann Lee", first
    shot = Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "phone-375px.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(phone.screenshot(full_page=True))
    print(f"screenshot: {shot}")
    # Where the app drops the <style>: the table, text left and numbers right, as pandas prints.
    phone.evaluate("() => document.querySelectorAll('style').forEach(s => s.remove())")
    assert phone.evaluate("e => e.scrollWidth <= e.clientWidth", scroller)
    aligned = phone.evaluate("""() => [...document.querySelectorAll("table:not([role]) tbody tr")][0]
        .querySelectorAll('td').values().map(td => getComputedStyle(td).textAlign).toArray()""")
    assert aligned == ["left", "left", "right", "right", "right", "right", "left"]
    assert base64.b64encode(shot.read_bytes())  # written
