"""Messages as phones and dark-mode mail apps show them (issue 23), measured in Chromium: the
message is sent through %%smtp_send to a real SMTP server, and the HTML that arrived is shown.

- Phones: Gmail, Outlook and Yahoo on Android cannot scroll an overflow box, so every column of a
  wide table must lie within a 320 or 375 px screen with scrolling switched off; where the app
  keeps the message's <style>, a table too wide to read is stacked (each row a block of
  "column: value" lines) with no word cut in two.
- Dark mode: the message declares the light scheme it is made for; with the system in dark mode
  (prefers-color-scheme) and with Chromium's forced dark colours (which darkens pages as Gmail's
  and Outlook's apps do), every text run keeps its contrast, the table header stays apart from
  its rows, and a figure drawn without a background arrives on white.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lab import CHROMIUM, CHROMIUM_ARGS
from test_content import arrived, images, parts
from test_phone_browser import weekly_sales

from smtp_magic import _sanitize
from smtp_magic.server import CaptureServer

if TYPE_CHECKING:
    from conftest import TestingShell

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.browser

AA = 4.5
NO_SCROLLING = "*{overflow:visible!important}"  # what an app that cannot scroll shows


def sales(columns: int) -> Any:
    """The phone test's seven-column report, widened to ``columns`` with weekly figures."""
    df = weekly_sales()
    rng = np.random.default_rng(8)
    for i in range(df.shape[1], columns):
        df[f"week {i}"] = rng.normal(1e4, 2e3, 4).round(2)
    return df


def sent_html(ip: TestingShell, server: CaptureServer, cell: str) -> tuple[str, Any]:
    ip.run_cell(f"%%smtp_send --to a@example.test --subject Report\n{cell}")
    (msg,) = arrived(server)
    html, _, _ = parts(msg)
    return html, msg


# Cells whose text takes more than one line, and the smallest type size in a table.
LINES = """() => [...document.querySelectorAll('table:not([role]) td')].map(td => {
  const range = document.createRange(); range.selectNodeContents(td);
  const tops = new Set([...range.getClientRects()].filter(r => r.width).map(r => Math.round(r.top)));
  return [td.textContent.trim(), tops.size, parseFloat(getComputedStyle(td).fontSize),
          getComputedStyle(td).textAlign];
})"""


def wide_report(columns: int) -> Any:
    """A realistic wide report: the seven-column one, then text columns and numbers of up to
    seven digits under long headers, ``columns`` in all."""
    df = weekly_sales()
    rng = np.random.default_rng(9)
    extra = [
        ("product category", ["Garden furniture", "Kitchen", "Outdoor lighting", "Tools"]),
        ("revenue year to date (EUR)", rng.integers(1_000_000, 9_999_999, 4)),
        ("customer_satisfaction_score", rng.normal(4, 0.5, 4).round(2)),
        ("warehouse", ["Rotterdam", "Lyon", "Gdansk", "Porto"]),
        ("open tickets", rng.integers(0, 400, 4)),
        ("last audit", ["2024-03-01", "2024-02-11", "2023-12-19", "2024-01-30"]),
    ]
    for i in range(df.shape[1], columns):
        name, values = extra[i - 7] if i - 7 < len(extra) else (
            f"week {i} sales", rng.normal(1e5, 2e4, 4).round(2))
        df[name] = values
    return df


# The words of every table cell's shown text (a word: no space, hyphen or slash inside) that the
# screen cuts in two or that lie outside it, and each body cell's shown text (innerText skips
# what display:none hides).
WORDS = r"""width => {
  const broken = [], outside = [];
  for (const cell of document.querySelectorAll('table:not([role]) td, table:not([role]) th')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (!n.parentElement.getClientRects().length) continue;  // hidden
      for (const m of n.textContent.matchAll(/[^\s\-\/]+/g)) {
        const range = document.createRange();
        range.setStart(n, m.index); range.setEnd(n, m.index + m[0].length);
        const rects = [...range.getClientRects()].filter(r => r.width);
        if (new Set(rects.map(r => Math.round(r.top))).size > 1) broken.push(m[0]);
        if (rects.some(r => r.left < 0 || r.right > width + 0.5)) outside.push(m[0]);
      }
    }
  }
  const rows = [...document.querySelectorAll('table:not([role]) tbody tr')].map(
    tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()));
  return {broken, outside, rows};
}"""


FONT_SIZE = "() => parseFloat(getComputedStyle(document.querySelector('table:not([role]) td')).fontSize)"


def shown(browser: Any, html: str, width: int, name: str, tmp_path: Path) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 800}, device_scale_factor=2,
                            is_mobile=True)
    page.set_content(html, wait_until="load")
    page.add_style_tag(content=NO_SCROLLING)
    shot = Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / f"{name}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(page.screenshot(full_page=True))
    return page


@pytest.mark.parametrize("columns", [7, 12, 20])
def test_every_column_of_a_wide_table_is_readable_on_a_phone_without_scrolling(
        ip: TestingShell, to_server: CaptureServer, browser: Any, tmp_path: Path,
        columns: int) -> None:
    df = ip.user_ns["df"] = wide_report(columns)
    html, _ = sent_html(ip, to_server, "<h1>Weekly sales</h1><p>Hello team, the numbers by "
                                       "region:</p>\n{{ df }}\n<p>Thanks, Ann</p>")
    # One <style>, in the head, that only adds the narrow-screen stack; the rest is inline.
    head, body = html.split("</head>", 1)
    assert html.lower().count("<style") == 1 and "<style" in head and "<style" not in body
    stripped = _sanitize.STYLE_BLOCK.sub("", html)  # what Gmail shows for other accounts
    for width in (320, 375):
        # The stack (the <style> honoured): every word of every cell whole and on screen, and
        # each value under its column's name.
        page = shown(browser, html, width, f"table-{columns}-{width}px", tmp_path)
        try:
            words = page.evaluate(WORDS, width)
            assert page.evaluate(FONT_SIZE) == 14  # larger than the table's 12 px
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        finally:
            page.close()
        assert words["broken"] == [] and words["outside"] == [], (width, words)
        names = [str(c) for c in df.columns]
        assert [len(row) for row in words["rows"]] == [columns] * 4
        for row, (_, values) in zip(words["rows"], df.iterrows()):
            assert [t.split(": ", 1)[0] for t in row] == names
            assert row[0] == f"region: {values['region']}"
        # The fallback (no <style>): the wrapped table, every column inside the screen.
        page = shown(browser, stripped, width, f"table-{columns}-{width}px-nostyle", tmp_path)
        try:
            fallback = page.evaluate(WORDS, width)
            cells = page.evaluate(LINES)
        finally:
            page.close()
        assert fallback["outside"] == [], (width, fallback["outside"])
        assert [len(row) for row in fallback["rows"]] == [columns] * 4
        assert fallback["rows"][0][0] == "North-east"  # no label: the header names the column
        assert min(size for _, _, size, _ in cells) >= 12
        if columns == 7:  # room enough: every number stays on one line
            broken = [text for text, lines, _, align in cells if align == "right" and lines > 1]
            assert broken == []
        print(f"{columns} columns at {width} px: stacked, 0 words cut; without <style>, "
              f"{len(fallback['broken'])} words cut: {fallback['broken'][:12]}")
    # A desktop screen shows the table, not the stack: the same pixels as without the <style>.
    desktop = []
    for page_html in (html, stripped):
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        try:
            page.set_content(page_html, wait_until="load")
            desktop.append(page.screenshot(full_page=True))
        finally:
            page.close()
    assert desktop[0] == desktop[1]


def test_a_table_that_fits_a_phone_is_not_stacked(
        ip: TestingShell, to_server: CaptureServer) -> None:
    ip.user_ns["df"] = pd.DataFrame({"city": ["Oslo", "Lima"], "visits": [12, 7]})
    html, _ = sent_html(ip, to_server, "{{ df }}")
    assert "<style" not in html.lower() and "smx-" not in html


# -- dark mode ----------------------------------------------------------------------------------

def luminance(rgb: tuple[int, ...]) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    x, y = sorted((luminance(a), luminance(b)), reverse=True)
    return (x + 0.05) / (y + 0.05)


# The boxes of every element that holds text of its own (a text run), and of the table parts.
TEXT_BOXES = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(n);
    for (const r of range.getClientRects())
      if (r.width > 2 && r.height > 2)
        out.push({text: n.textContent.trim().slice(0, 40), x: r.left, y: r.top + scrollY,
                  w: r.width, h: r.height});
  }
  return out;
}"""
BOX = """sel => { const r = document.querySelector(sel).getBoundingClientRect();
                 return {x: r.left, y: r.top + scrollY, w: r.width, h: r.height}; }"""


def crop(shot: Any, box: dict[str, float], scale: int = 2) -> Any:
    return shot.crop((int(box["x"] * scale), int(box["y"] * scale),
                      int((box["x"] + box["w"]) * scale), int((box["y"] + box["h"]) * scale)))


def text_contrast(region: Any) -> float:
    """A text run as painted: its background (the commonest colour) against its ink (the
    colour farthest from it)."""
    colours = region.convert("RGB").getcolors(region.width * region.height)
    background = max(colours)[1]
    return max(contrast(background, c) for _, c in colours)


def commonest(region: Any) -> tuple[int, ...]:
    return max(region.convert("RGB").getcolors(region.width * region.height))[1]


@pytest.fixture
def dark_message(ip: TestingShell, to_server: CaptureServer) -> tuple[str, Any]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.5))
    fig.patch.set_alpha(0)  # drawn without a background, as many style sheets do
    ax.patch.set_alpha(0)
    ax.plot([3, 1, 2], color="black")
    ax.set_title("Orders per day")
    ip.user_ns.update(df=sales(7), fig=fig)
    try:
        return sent_html(ip, to_server, "<h1>Weekly sales</h1>\n<p>Hello team, the numbers:</p>"
                                        "\n{{ df }}\n<blockquote>Quoted from last week.</blockquote>"
                                        "\n<pre>code line</pre>\n{{ fig }}\n<p>Thanks, Ann</p>")
    finally:
        plt.close(fig)


def test_the_message_declares_its_light_scheme_and_opaque_images(
        dark_message: tuple[str, Any]) -> None:
    html, msg = dark_message
    assert '<meta name="color-scheme" content="light">' in html
    assert '<meta name="supported-color-schemes" content="light">' in html
    assert "color-scheme:light" in html.split("<body", 1)[1].split(">", 1)[0]
    (png,) = images(msg)
    image = Image.open(io.BytesIO(png.get_payload(decode=True)))
    alpha = image.convert("RGBA").getchannel("A")
    assert alpha.getextrema() == (255, 255), "the figure must not be transparent"


def render_dark(browser: Any, html: str, tmp_path: Path, name: str,
                emulate: bool) -> tuple[Any, list[dict[str, Any]], Any]:
    page = browser.new_page(viewport={"width": 700, "height": 900}, device_scale_factor=2,
                            color_scheme="dark" if emulate else "light")
    page.set_content(html.replace('src="cid:', 'data-cid="'), wait_until="load")
    boxes = page.evaluate(TEXT_BOXES)
    data = page.screenshot(full_page=True)
    shot_dir = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    shot_dir.mkdir(parents=True, exist_ok=True)
    (shot_dir / f"dark-{name}.png").write_bytes(data)
    return Image.open(io.BytesIO(data)), boxes, page


def assert_readable(shot: Any, boxes: list[dict[str, Any]], where: str) -> None:
    assert len(boxes) > 30, boxes  # headings, paragraphs, every table cell
    worst = min((text_contrast(crop(shot, b)), b["text"]) for b in boxes)
    assert worst[0] >= AA, f"{where}: {worst[1]!r} at {worst[0]:.2f}:1"


def test_readable_when_the_system_is_dark(browser: Any, dark_message: tuple[str, Any],
                                          tmp_path: Path) -> None:
    html, _ = dark_message
    shot, boxes, page = render_dark(browser, html, tmp_path, "prefers", emulate=True)
    try:
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        assert_readable(shot, boxes, "prefers-color-scheme: dark")
        # The header's grey stands apart from the white rows (#f6f8fa was 1.07:1).
        head = commonest(crop(shot, page.evaluate(BOX, "table:not([role]) thead th")))
        row = commonest(crop(shot, page.evaluate(BOX, "table:not([role]) tbody td")))
        assert contrast(head, row) >= 1.12, (head, row)
    finally:
        page.close()


FORCED_DARK = ["--force-dark-mode", "--enable-features=WebContentsForceDark"]


def test_readable_with_forced_dark_colours(browser: Any, dark_message: tuple[str, Any],
                                           tmp_path: Path) -> None:
    html, msg = dark_message
    (png,) = images(msg)
    cid = png["Content-ID"].strip("<>")
    dark = browser.browser_type.launch(executable_path=str(CHROMIUM),
                                       args=[*CHROMIUM_ARGS, *FORCED_DARK])
    try:
        page = dark.new_page(viewport={"width": 700, "height": 900}, device_scale_factor=2)
        try:
            # The figure as the app shows it: its bytes in place of the cid: reference.
            uri = "data:image/png;base64," + base64.b64encode(
                png.get_payload(decode=True)).decode()
            page.set_content(html.replace(f"cid:{cid}", uri), wait_until="load")
            boxes = page.evaluate(TEXT_BOXES)
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True)))
            shot_dir = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
            shot_dir.mkdir(parents=True, exist_ok=True)
            shot.save(shot_dir / "dark-forced.png")
            page_bg = commonest(shot)
            assert luminance(page_bg) < 0.1, "Chromium did not darken the page"  # forced dark is on
            assert_readable(shot, boxes, "forced dark")
            # The table's header stays apart from its rows.
            head = commonest(crop(shot, page.evaluate(BOX, "table:not([role]) thead th")))
            row = commonest(crop(shot, page.evaluate(BOX, "table:not([role]) tbody td")))
            # (#f6f8fa, the grey before issue 23, measured 1.16:1 here; #eaeef2 1.26:1)
            assert contrast(head, row) >= 1.2, (head, row)
            # The figure keeps its own white background, its black line readable on it.
            figure = crop(shot, page.evaluate(BOX, "img"))
            assert luminance(commonest(figure)) > 0.8, commonest(figure)
        finally:
            page.close()
    finally:
        dark.close()
