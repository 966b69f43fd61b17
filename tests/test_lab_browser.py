"""What smtp-magic shows in JupyterLab, in Debian's chromium: readable in the light and the dark
theme, and the quickstart run with Run All ending in its final state.

1. Theme: a notebook shows every kind of output the package makes (the settings table, a
   merge's status line with its bar, a failed send, --preview with its notes, a Response, the
   outbox and the inbox, the compose form with an invalid address and a refused setting). In
   JupyterLab Light, then Dark, the contrast of every piece of text in those outputs is
   measured from the computed styles (the text colour composited over the backgrounds under
   it) and must be at least 4.5:1 (WCAG AA). The message inside a preview's sandboxed frame is
   the email as recipients see it (white), so it is not measured; the chrome around it is.
   Screenshots of both themes go to $SCREENSHOT_DIR (default: the test's temp folder).
2. Run All: notebooks/quickstart.ipynb, outputs cleared, run with Run > Run All Cells as a user
   would: its %smtp_outbox lists the three sends as sent (none pending) and its %smtp_inbox
   shows the three messages.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from lab import jupyter_lab, log, wait_all_run, wait_kernel_ready, write_notebook

from smtp_magic.server import CaptureServer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
AA = 4.5

THEME_CELLS = [
    ("%load_ext smtp_magic\n"
     "%smtp_config --host 127.0.0.1 --port {port} --security none "
     "--from 'Theme <theme@example.test>' --attempts 1"),
    "%smtp_config",
    "people = [{{'to': f'p{{i}}@example.test', 'n': i}} for i in range(5)]",
    "%%smtp_send --each people --to {{to}} --subject 'Row {{n}}'\n{{{{ n }}}}",
    ("%%smtp_send --to bob@example.test --subject Careful --preview\n"
     "<p onclick='steal()'>Hello <b>Bob</b></p>"),
    "%smtp_config --port {closed}",
    "%%smtp_send --to bob@example.test --subject 'Not delivered'\nbody",
    "%smtp_config --port {port}",
    ("from smtp_magic.models import Response\n"
     "Response(exitcode=5, message='Refused for 1 of 2 recipients.',\n"
     "         refused={{'nobody@example.test': (550, '5.1.1 no such user')}})"),
    "%smtp_outbox",
    "%smtp_inbox --limit 2",
    "%smtp_compose --to bob@ --subject 'From the form'",
]

# Colour helpers of the measurements below (a function body's first lines).
COLOURS = """
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  // A CSS colour (any syntax the browser knows, alpha included) painted over an opaque rgb.
  const over = (css, under) => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = `rgb(${under.join(',')})`;
    ctx.fillRect(0, 0, 1, 1);
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    return Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3));
  };
  const opaque = css => over(css, [0, 0, 0]).join() === over(css, [255, 255, 255]).join();
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const bg = getComputedStyle(e).backgroundColor;
      layers.push(bg);
      if (opaque(bg)) break;
    }
    return layers.reverse().reduce((base, bg) => over(bg, base), [255, 255, 255]);
  };
  const lum = rgb => {
    const [r, g, b] = rgb.map(c => { c /= 255;
      return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
                            return (x + 0.05) / (y + 0.05); };
"""
# Every piece of text in smtp-magic's outputs, the form's labels, buttons and placeholders
# included: (what, its text, contrast ratio, colours).
MEASURE = "() => {" + COLOURS + """
  const visible = el => el.getClientRects().length > 0
                        && getComputedStyle(el).visibility !== 'hidden';
  // the form whole: its labels, buttons and section titles too
  const ours = '.jp-OutputArea .jp-RenderedHTMLCommon, .widget-html-content, .smtp-magic-form';
  const seen = [], done = new Set();
  for (const root of document.querySelectorAll(ours)) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (done.has(n) || !n.textContent.trim() || !visible(el)) continue;
      done.add(n);
      const bg = background(el);
      const fg = over(getComputedStyle(el).color, bg);
      seen.push({what: el.tagName.toLowerCase(), text: n.textContent.trim().slice(0, 60),
                 ratio: ratio(fg, bg), fg, bg, css: getComputedStyle(el).color});
    }
  }
  for (const el of document.querySelectorAll(
      '.smtp-magic-form input[placeholder], .smtp-magic-form textarea[placeholder]')) {
    if (el.value || !el.placeholder || !visible(el)) continue;
    const bg = background(el);
    const css = getComputedStyle(el, '::placeholder').color;
    const fg = over(css, bg);
    seen.push({what: 'placeholder', text: el.placeholder, ratio: ratio(fg, bg), fg, bg, css});
  }
  for (const el of document.querySelectorAll('.smtp-magic-invalid input')) {
    const bg = background(el);
    const fg = over(getComputedStyle(el).color, bg);
    seen.push({what: 'invalid input', text: el.value, ratio: ratio(fg, bg), fg, bg,
               css: getComputedStyle(el).color});
  }
  return seen;
}"""





# The element that has the keyboard focus: where it is, what it is, and its focus ring (the
# outline, drawn outside the control: measured against the background around the control).
# How a control is named in the reports below (its label, text, placeholder or tooltip).
NAME = """
  const NAME = el => {
    const row = el.closest('.widget-inline-hbox');
    const label = row && row.querySelector('.widget-label');
    const field = /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
    return ((field && label && label.textContent.trim()) || el.getAttribute('aria-label')
            || (!field && el.textContent.trim()) || el.placeholder || el.title
            || el.tagName).slice(0, 40);
  };
"""
FOCUSED = "() => {" + COLOURS + NAME + """
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const form = el.closest('.smtp-magic-form');
  const cs = getComputedStyle(el);
  const label = NAME(el);
  const around = el.parentElement;
  const layers = [];
  for (let e = around; e; e = e.parentElement) {
    const bg = getComputedStyle(e).backgroundColor;
    layers.push(bg);
    if (opaque(bg)) break;
  }
  const bg = layers.reverse().reduce((base, c) => over(c, base), [255, 255, 255]);
  const ring = over(cs.outlineColor, bg);
  return {inForm: !!form, id: el.dataset.smtpMagicSeen || (el.dataset.smtpMagicSeen =
          String(Math.random())), tag: el.tagName.toLowerCase(), label,
          pressed: el.classList.contains('mod-active'),
          style: cs.outlineStyle, width: parseFloat(cs.outlineWidth), css: cs.outlineColor,
          ratio: ratio(ring, bg), bg};
}"""
# Every control of the form a user could operate (visible and enabled).
CONTROLS = "() => {" + NAME + """
  return [...document.querySelectorAll(
      '.smtp-magic-form button, .smtp-magic-form input, .smtp-magic-form textarea, '
      + '.smtp-magic-form select')]
    .filter(el => !el.disabled && el.getClientRects().length > 0
                  && getComputedStyle(el).visibility !== 'hidden')
    .map(el => el.tagName.toLowerCase() + ': ' + NAME(el));
}"""


def tab_through_the_form(page: Any) -> list[dict[str, Any]]:
    """From the form's first field, Tab (keyboard only) until the focus leaves the form; the
    settings are opened on the way with Enter on their button. Returns every stop."""
    page.locator(".smtp-magic-form input").first.focus()  # where a user's Tab would arrive
    stops, seen = [], set()
    for _ in range(80):
        here = page.evaluate(FOCUSED)
        if not here or not here["inForm"] or here["id"] in seen:
            break
        seen.add(here["id"])
        stops.append(here)
        if here["label"] == "Connection settings" and not here["pressed"]:
            page.keyboard.press("Enter")  # opens the settings, by keyboard
            page.locator(".smtp-magic-form .widget-inline-hbox", has_text="Host").first.wait_for(
                state="visible", timeout=10_000)  # the kernel has answered
        page.keyboard.press("Tab")
    return stops


# The notebook reopened untrusted: message frames still taking room (should be none), and the
# fallbacks shown instead.
UNTRUSTED = """() => {
  const shown = el => el.getClientRects().length > 0 && el.getBoundingClientRect().height > 0;
  const frames = [...document.querySelectorAll('.jp-OutputArea .smtp-magic-message')];
  const fallbacks = [...document.querySelectorAll('.jp-OutputArea .smtp-magic-untrusted')]
    .filter(shown);
  return {frames_shown: frames.filter(shown).length, hints: fallbacks.length,
          text: fallbacks.map(f => f.innerText).join(' | ')};
}"""
# Where the settings' fields and the outbox's last column end, at two window widths.
LAYOUT = """() => {
  const field = name => [...document.querySelectorAll('.smtp-magic-form .widget-inline-hbox')]
    .find(r => r.querySelector('.widget-label')
               && r.querySelector('.widget-label').textContent.trim() === name);
  const form = document.querySelector('.smtp-magic-form').getBoundingClientRect();
  const host = field('Host').getBoundingClientRect();
  const port = field('Port').getBoundingClientRect();
  const security = field('Security').getBoundingClientRect();
  return {form_right: form.right, host_right: host.right, host_top: host.top,
          port_top: port.top, security_right: security.right};
}"""
# The outbox table squeezed into 640 px (what a 1280 px window leaves a notebook beside the
# file browser, in a larger font): its last column (the reason) must stay inside.
OUTBOX = """() => {
  const table = [...document.querySelectorAll('.jp-OutputArea table')]
    .find(t => t.caption && t.caption.textContent.startsWith('Outbox ('));
  const output = table.closest('.jp-OutputArea-output');
  const before = output.style.cssText;
  output.style.width = '640px';
  output.style.flex = '0 0 640px';
  const cells = table.querySelectorAll('tr:last-child td');
  const found = {reason_right: cells[cells.length - 1].getBoundingClientRect().right,
                 output_right: output.getBoundingClientRect().right};
  output.style.cssText = before;
  return found;
}"""


def small_layout(page: Any) -> dict[str, float]:
    """The form at a phone-sized window (the settings then fit in 368-484 px), then the
    outbox at 1280 px."""
    size = page.viewport_size
    try:
        page.set_viewport_size({"width": 480, "height": size["height"]})
        page.wait_for_timeout(300)
        found = dict(page.evaluate(LAYOUT))
        log(f"at 480 px: {found}")
        page.set_viewport_size({"width": 1280, "height": size["height"]})
        page.wait_for_timeout(300)
        found.update(page.evaluate(OUTBOX))
        log(f"at 1280 px: {found}")
    finally:
        page.set_viewport_size(size)
    return found


def screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_notebook(browser: Any, base: str, token: str, name: str, height: int = 2600) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # only this notebook open
    wait_kernel_ready(page)
    return page


def save(page: Any, path: Path) -> None:
    before = path.stat().st_mtime_ns
    page.locator(".jp-Notebook").click(position={"x": 5, "y": 5})  # focus, command mode
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=15_000)
    deadline = time.monotonic() + 15
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, "the notebook was not saved"
        time.sleep(0.1)


def run_all(page: Any) -> None:
    """Run > Run All Cells, from the menu bar, as a user does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def measure(page: Any, theme: str) -> list[dict[str, Any]]:
    seen = page.evaluate(MEASURE)
    worst = min(seen, key=lambda s: s["ratio"])
    log(f"{theme}: {len(seen)} text runs, lowest contrast {worst['ratio']:.2f}:1 "
        f"({worst['text']!r}, {worst['css']} on rgb{tuple(worst['bg'])})")
    return seen  # type: ignore[no-any-return]


def test_outputs_are_readable_in_the_light_and_the_dark_theme(
    browser: Any, tmp_path: Path
) -> None:
    from lab import free_port

    # storing where the lab's %smtp_inbox looks ($SMTP_MAGIC_CAPTURE_DIR, see lab.py)
    smtp = CaptureServer(tmp_path / "capture").start()
    write_notebook(tmp_path / "theme.ipynb",
                  [c.format(port=smtp.port, closed=free_port()) for c in THEME_CELLS])
    shots = screenshot_dir(tmp_path)
    results: dict[str, list[dict[str, Any]]] = {}
    focus: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
    with jupyter_lab(tmp_path, expose_app=True) as (base, token):
        page = open_notebook(browser, base, token, "theme.ipynb", height=4200)
        try:
            run_all(page)
            wait_all_run(page, len(THEME_CELLS))
            # the outcomes are in: the merge, the failed send, the form
            page.get_by_text("sent 5 messages in").wait_for(timeout=20_000)
            page.get_by_text("failed: ").first.wait_for(timeout=20_000)
            page.get_by_text("is not a valid email address").wait_for(timeout=20_000)
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")

            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                page.evaluate("t => window.jupyterapp.commands.execute("
                              "'apputils:change-theme', {theme: t})", theme)
                light = "true" if theme.endswith("Light") else "false"
                page.wait_for_function(
                    f"() => document.body.dataset.jpThemeLight === '{light}'")
                page.wait_for_timeout(500)  # the theme's stylesheet applied
                # Keyboard only: every control of the form, the settings' too, is reached by
                # Tab (the settings opened with Enter), each with a ring of 3:1 or more.
                stops = tab_through_the_form(page)
                controls = page.evaluate(CONTROLS)
                focus[theme] = (stops, controls)
                if light == "true":  # the settings are open now, by keyboard
                    port = page.locator(".widget-inline-hbox", has_text="Port").locator("input")
                    port.fill("0")
                    port.press("Enter")  # refused by the settings: an error line in the form
                    page.get_by_text("port must be between").wait_for(timeout=10_000)
                seen = measure(page, theme)
                results[theme] = seen
                name = "light" if light == "true" else "dark"
                page.locator(".jp-NotebookPanel").screenshot(
                    path=str(shots / f"notebook-{name}.png"))
                log(f"screenshot {shots / f'notebook-{name}.png'}")
            layout = small_layout(page)
            save(page, tmp_path / "theme.ipynb")
        except Exception:
            page.screenshot(path=str(shots / "theme-failure.png"))
            raise
        finally:
            page.close()
            smtp.stop()

        # The saved notebook as someone else opens it (a committed notebook, a download): not
        # trusted, so JupyterLab sanitises its HTML outputs and drops the colours it does not
        # understand (var()). Still in the dark theme (the setting was saved).
        nb = json.loads((tmp_path / "theme.ipynb").read_text())
        nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "A copy"})
        (tmp_path / "copy.ipynb").write_text(json.dumps(nb))
        page = open_notebook(browser, base, token, "copy.ipynb", height=4200)
        try:
            page.get_by_text("sent 5 messages in").wait_for(timeout=20_000)
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
            styles = page.evaluate("""() => [...document.querySelectorAll(
                '.jp-OutputArea .jp-RenderedHTMLCommon [style]')].map(e => e.style.cssText)""")
            # sanitised: the theme colours (var(--jp-...)) are gone, the text keeps the theme's
            assert styles and not any("var(--jp" in style for style in styles), styles
            results["JupyterLab Dark, reopened untrusted"] = measure(page, "untrusted, dark")
            untrusted = page.evaluate(UNTRUSTED)
            page.locator(".jp-NotebookPanel").screenshot(
                path=str(shots / "notebook-dark-untrusted.png"))
        finally:
            page.close()
    (shots / "contrast.json").write_text(json.dumps(
        {t: sorted(s, key=lambda x: x["ratio"])[:20] for t, s in results.items()}, indent=1))

    for theme, seen in results.items():
        texts = " ".join(s["text"] for s in seen)
        for expected in ("SmtpMagic settings", "sent 5 messages in", "failed: ",
                         "Removed before sending", "Refused for 1 of 2", "Outbox (",
                         "messages (the newest)"):
            assert expected in texts, f"{theme}: {expected!r} was not measured"
        if "untrusted" not in theme:  # the live form (a saved copy has no widget state)
            for expected in ("is not a valid email address", "port must be between",
                             "No attachments", "Ready."):
                assert expected in texts, f"{theme}: {expected!r} was not measured"
        low = [s for s in seen if s["ratio"] < AA]
        assert not low, f"{theme}: below {AA}:1: " + "; ".join(
            f"{s['text']!r} {s['ratio']:.2f}:1 ({s['css']} on rgb{tuple(s['bg'])})"
            for s in low)
    dark_bg = {tuple(s["bg"]) for s in results["JupyterLab Dark"]}
    assert any(sum(bg) < 3 * 60 for bg in dark_bg), dark_bg  # it really was dark

    for theme, (stops, controls) in focus.items():
        reached = [f"{s['tag']}: {s['label']}" for s in stops]
        log(f"{theme}: Tab reached {len(stops)} controls: {reached}")
        for label in ("Connection settings", "Host", "Port", "Security", "Username",
                      "Password", "Check connection", "Preview", "Upload files"):
            assert any(label in r for r in reached), f"{theme}: Tab never reached {label!r}"
        missing = sorted(set(controls) - set(reached))
        assert not missing, f"{theme}: not reachable by Tab: {missing} (reached: {reached})"
        weak = [s for s in stops if s["style"] == "none" or s["width"] < 2 or s["ratio"] < 3]
        assert not weak, f"{theme}: focus ring missing or under 3:1: " + "; ".join(
            f"{s['label']!r} {s['style']} {s['width']}px {s['css']} {s['ratio']:.2f}:1"
            for s in weak)
    # 368-484 px: the settings in one column, nothing cut off; the outbox's last column on
    # screen in a narrow output area.
    assert layout["host_right"] <= layout["form_right"] + 1, layout
    assert layout["security_right"] <= layout["form_right"] + 1, layout
    assert layout["port_top"] > layout["host_top"], layout  # wrapped under Host
    assert layout["reason_right"] <= layout["output_right"] + 1, layout
    # Untrusted: no empty frame box; the text part and how to trust instead.
    assert untrusted["frames_shown"] == 0, untrusted
    assert untrusted["hints"] >= 2, untrusted  # the preview and the inbox
    assert "Hello Bob" in untrusted["text"], untrusted


def test_quickstart_run_all_shows_the_final_state(browser: Any, tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, tmp_path / "quickstart.ipynb")
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    with jupyter_lab(tmp_path) as (base, token):
        page = open_notebook(browser, base, token, "quickstart.ipynb")
        try:
            run_all(page)
            wait_all_run(page, code_cells)
            cells = page.locator(".jp-CodeCell")

            def output_of(source: str) -> str:
                cell = cells.filter(has=page.locator(".jp-InputArea", has_text=source)).last
                return str(cell.locator(".jp-OutputArea").inner_text())

            outbox = output_of("%smtp_outbox")
            inbox = output_of("%smtp_inbox")
            shot = screenshot_dir(tmp_path) / "quickstart-run-all.png"
            page.locator(".jp-NotebookPanel").screenshot(path=str(shot))
            log(f"screenshot {shot}")
        except Exception:
            page.screenshot(path=str(screenshot_dir(tmp_path) / "quickstart-failure.png"))
            raise
        finally:
            page.close()
    log(f"outbox: {outbox!r}")
    assert "3 sent" in outbox and "pending" not in outbox, outbox
    for subject in ("Sales, week 12", "Revenue by region", "Sales data, week 12"):
        assert subject in outbox and subject in inbox, (subject, outbox, inbox)
    assert "3 message(s)" in inbox, inbox
