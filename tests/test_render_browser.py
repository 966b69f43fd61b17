"""The Gmail-like check: an email looks the same in Chromium with its <style>/<script> removed."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from lab import chromium

from smtp_magic.render import Rendered, email_document, render_template

pd = pytest.importorskip("pandas")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image, ImageChops  # pillow is a dependency of matplotlib

VIEWPORT = {"width": 900, "height": 700}
MAX_DIFFERENCE = 0.01  # fraction of pixels

_STRIPPED = re.compile(r"<(style|script)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


@pytest.fixture
def email() -> Rendered:
    """A typical report: Markdown text, a styled DataFrame and a figure, as the magic renders it."""
    df = pd.DataFrame(
        {"region": ["North", "South", "East", "West"], "sales": [1250.5, 980.25, 1502.0, 730.75]}
    )
    styled = (
        df.style.highlight_max(subset=["sales"], color="#fff3b0")
        .highlight_min(subset=["sales"], color="#ffd7d5")
        .format({"sales": "{:,.2f}"})
        .set_properties(subset=["region"], **{"font-weight": "bold", "color": "#0550ae"})
    )
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.bar(df["region"], df["sales"], color="#0969da")
    ax.set_title("Sales by region")
    source = (
        "# Weekly sales\n\nHello *team*, the numbers for **{{ week }}** are in. "
        "Details on [the dashboard](https://example.org/sales).\n\n"
        "- best: East\n- worst: West\n\n{{ styled }}\n\n{{ fig }}\n\n> Sent from a notebook.\n"
    )
    rendered = render_template(
        source, {"week": "week 47", "styled": styled, "fig": fig}, "text/markdown"
    )
    plt.close(fig)
    return Rendered(email_document(rendered.html, title="Weekly sales"), rendered.images)


def resolve_cids(rendered: Rendered) -> str:
    """Only for this test's rendering: a browser cannot fetch cid: parts, so embed them."""
    html = rendered.html
    for image in rendered.images:
        data = base64.b64encode(image.data).decode()
        html = html.replace(f"cid:{image.cid}", f"data:image/{image.subtype};base64,{data}")
    return html


def screenshot(page: Any, html: str) -> Image.Image:
    page.set_content(html, wait_until="load")
    loaded = page.evaluate(
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded, "an image did not load"
    return Image.open(io.BytesIO(page.screenshot(full_page=True, animations="disabled"))).convert(
        "RGB"
    )


def difference(a: Image.Image, b: Image.Image) -> float:
    """Fraction of differing pixels; area that only one page covers counts as different."""
    width, height = max(a.width, b.width), max(a.height, b.height)
    canvas_a, canvas_b = (
        Image.new("RGB", (width, height)),
        Image.new("RGB", (width, height), "white"),
    )
    canvas_a.paste(a)
    canvas_b.paste(b)
    changed = (
        ImageChops.difference(canvas_a, canvas_b).convert("L").point(lambda v: 255 if v else 0)
    )
    return sum(changed.histogram()[255:]) / (width * height)


def test_the_email_looks_the_same_without_style_blocks(page: Any, email: Rendered) -> None:
    html = resolve_cids(email)
    assert "cid:" not in html and email.images
    original = screenshot(page, html)
    gmail_like = screenshot(page, _STRIPPED.sub("", html))
    assert original.size[0] == VIEWPORT["width"] and original.size[1] > 300
    diff = difference(original, gmail_like)
    assert diff < MAX_DIFFERENCE, f"{diff:.2%} of the pixels change without <style>"


def test_the_check_sees_styles_that_were_not_inlined(page: Any) -> None:
    """The control: pandas' own Styler HTML loses its highlights when <style> goes."""
    df = pd.DataFrame({"a": range(12), "b": range(12, 0, -1)})
    html = df.style.highlight_max(color="#ff0000").background_gradient().to_html()
    page_html = f"<!DOCTYPE html><html><body>{html}</body></html>"
    diff = difference(screenshot(page, page_html), screenshot(page, _STRIPPED.sub("", page_html)))
    assert diff > MAX_DIFFERENCE
