"""The notebook's colours (smtp_magic._theme): computed here for the themes they must work on,
and kept in one place. tests/test_lab_browser.py measures them in a real JupyterLab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtp_magic import _theme

PACKAGE = Path(_theme.__file__).parent
AA = 4.5
# What shows HTML in a notebook (message HTML, an email's own styles, is not themed: render.py,
# _layout.py, _tables.py, nbreport.py make the email, shown as recipients see it).
NOTEBOOK_FACING = ("_kernel.py", "_relay.py", "_views.py", "magics.py", "models.py", "config.py",
                   "preview.py", "oauth.py", "conversation.py", "api.py",
                   *(f"widgets/{p.name}" for p in sorted((PACKAGE / "widgets").glob("*.py"))))


def rgb(hex_colour: str) -> tuple[float, float, float]:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def luminance(c: tuple[float, float, float]) -> float:
    def lin(v: float) -> float:
        v /= 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = map(lin, c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def shown(hue: str, share: float, text: tuple[float, float, float], text_alpha: float,
          background: str) -> tuple[float, float, float]:
    """color-mix(in srgb, hue share%, currentcolor) painted on the background (CSS Color 5:
    premultiplied alpha)."""
    p, q = share / 100, 1 - share / 100
    alpha = p + q * text_alpha
    mixed = [(p * h + q * text_alpha * t) / alpha for h, t in zip(rgb(hue), text)]
    return tuple(m * alpha + b * (1 - alpha) for m, b in zip(mixed, rgb(background)))  # type: ignore[return-value]


def jupyterlab_hues(theme: str) -> dict[str, str]:
    """--jp-*-color1 of an installed JupyterLab theme (its CSS, as shipped)."""
    jupyterlab = pytest.importorskip("jupyterlab")
    css = (Path(jupyterlab.__file__).parent / "themes" / "@jupyterlab"
           / f"theme-{theme}-extension" / "index.css").read_text()
    found = {}
    for variable, _ in _theme.HUES.values():
        m = re.search(re.escape(variable) + r"\s*:\s*(?:var\([^,]+,\s*)?(#[0-9a-fA-F]{3,6})", css)
        assert m, f"{variable} not in JupyterLab's {theme} theme"
        found[variable] = m.group(1)
    return found


# (where, background, text colour, its alpha)
JUPYTERLAB = [("light", "#ffffff", (0, 0, 0), 0.87), ("dark", "#111111", (255, 255, 255), 0.87)]
OTHERS = [("classic Notebook / nbviewer", "#ffffff", (0, 0, 0), 1.0),
          ("VS Code Dark+", "#1e1e1e", (204, 204, 204), 1.0),
          ("a black page", "#111111", (255, 255, 255), 1.0)]


@pytest.mark.parametrize("kind", sorted(_theme.HUES))
def test_every_colour_reads_at_aa_in_both_jupyterlab_themes(kind: str) -> None:
    variable, _ = _theme.HUES[kind]
    for theme, background, text, alpha in JUPYTERLAB:
        hue = jupyterlab_hues(theme)[variable]
        ratio = contrast(shown(hue, _theme.HUE_SHARE, text, alpha, background), rgb(background))
        assert ratio >= AA, f"{kind} in JupyterLab {theme}: {ratio:.2f}:1"


@pytest.mark.parametrize("kind", sorted(_theme.HUES))
def test_the_fallbacks_read_at_aa_elsewhere(kind: str) -> None:
    _, fallback = _theme.HUES[kind]
    for where, background, text, alpha in OTHERS:
        ratio = contrast(shown(fallback, _theme.HUE_SHARE, text, alpha, background),
                         rgb(background))
        assert ratio >= AA, f"{kind} on {where}: {ratio:.2f}:1"


def test_jupyterlabs_own_colours_would_not() -> None:
    """Why the mix: JupyterLab's light theme colours alone are below AA on white."""
    hues = jupyterlab_hues("light")
    assert contrast(rgb(hues["--jp-warn-color1"]), rgb("#ffffff")) < AA
    assert contrast(rgb(hues["--jp-success-color1"]), rgb("#ffffff")) < AA


def test_colours_live_in_one_place() -> None:
    """No module that shows HTML in a notebook states a colour of its own."""
    colour = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b(?![\w-])|\brgba?\(")
    found = []
    for name in NOTEBOOK_FACING:
        for n, line in enumerate((PACKAGE / name).read_text().splitlines(), 1):
            if colour.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_status_lines_are_live_regions() -> None:
    assert 'role="status" aria-live="polite"' in _theme.line("ok", "sent", live=True)
    assert 'role="alert"' in _theme.line("error", "failed", live=True)
    assert "&lt;b&gt;" in _theme.line("info", "<b>")  # text, not markup


# Every mark the notebook shows next to a status, a header or a hint (the form and the magics).
STATUS_GLYPHS = "".join(_theme.ICONS.values()) + "\u2709\u21bb\u2014\u2026\u00d7\u2192"


@pytest.mark.parametrize("glyph", sorted(set(STATUS_GLYPHS.replace(" ", ""))))
def test_status_glyphs_are_in_an_ordinary_font(glyph: str) -> None:
    """In DejaVu Sans (Debian's and chromium's fallback font there), so no mark needs an emoji
    font: without one "\u23f3" was an empty box."""
    import shutil
    import subprocess

    if not shutil.which("fc-list"):
        pytest.skip("fontconfig's fc-list is missing")
    found = subprocess.run(["fc-list", f"DejaVu Sans:charset={ord(glyph):x}", "family"],
                           capture_output=True, text=True, check=True).stdout
    assert found.strip(), f"{glyph!r} (U+{ord(glyph):04X}) is not in DejaVu Sans"
