"""Issue 19 (content) in a real kernel run headless: a Styler from untrusted strings, a
displayed SVG that points at an intranet URL and a local file, Markdown merges with hostile row
data, and a row whose subject holds terminal escapes, sent to a real SMTP server while a beacon
HTTP server on 127.0.0.1 watches: it records zero requests."""

from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest
from kernels import kernel_environment
from nbclient import NotebookClient
from test_trust_content import loads_from, red_pixels

from smtp_magic.server import CaptureServer

pytest.importorskip("pandas")
pytestmark = pytest.mark.kernel

CELLS = [
    "%load_ext smtp_magic",
    "%smtp_config --host 127.0.0.1 --port {port} --security none --from nb@example.test",
    ("import pandas as pd\n"
     "B = '{beacon}'\n"
     "frame = pd.DataFrame({'name': [f\"<iframe src='{B}/iframe'></iframe>\", "
     "f\"<img src='{B}/cell.png'>\", '<script>alert(1)</script>'], 'sales': [3, 9, 5]})\n"
     "table = (frame.style.set_table_attributes(f'background=\"{B}/table.png\"')\n"
     "         .set_table_styles([{'selector': 'td', 'props': f'background:u\\\\72l({B}/td.png)'}])\n"
     "         .highlight_max(subset=['sales'], color='yellow'))"),
    "%%smtp_send --to a@example.test --subject Styler\n{{ table }}",
    ("drawing = f'''<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"80\" height=\"40\">\n"
     "<rect width=\"80\" height=\"40\" fill=\"#00f\"/>\n"
     "<image href=\"{B}/intranet.png\" width=\"40\" height=\"40\"/>\n"
     "<image href=\"{secret}\" x=\"40\" width=\"40\" height=\"40\"/></svg>'''"),
    ("%%smtp_send --to a@example.test --subject SVG --capture\n"
     "from IPython.display import SVG, display\n"
     "display(SVG(drawing))"),
    ("rows = pd.DataFrame({'email': ['r1@example.test', 'r2@example.test'],\n"
     "                     'name': [f'![x]({B}/pixel.png)', '[click](http://evil.test/)']})"),
    ("%%smtp_send --each rows --to {email} --subject Merge --content-type text/markdown\n"
     "Hello **{{ name }}**\n\n{{ frame }}"),
    ("rows = pd.DataFrame({'email': ['e@example.test'], 'subject': ['Hi \\x1b]0;pwned\\x07']})"),
    "%%smtp_send --each rows --to {email} --subject {subject}\nHello",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import Beacon
    from PIL import Image

    root = tmp_path_factory.mktemp("trust-kernel")
    secret = root / "secret.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(secret)
    beacon = Beacon()
    try:
        with CaptureServer(root / "mail") as server:
            nb = nbformat.v4.new_notebook()
            for source in CELLS:
                source = (source.replace("{port}", str(server.port))
                          .replace("{beacon}", beacon.url).replace("{secret}", secret.as_uri()))
                nb.cells.append(nbformat.v4.new_code_cell(source))
            nb.cells[-1].metadata["tags"] = ["raises-exception"]  # the refused row
            NotebookClient(nb, timeout=180, kernel_name="python3",
                           resources={"metadata": {"path": str(root)}}).execute(
                env=kernel_environment(root))
            messages = server.wait_for(4)
            yield nb, messages, beacon.settle()
    finally:
        beacon.close()


def by_subject(messages: Any, subject: str) -> list[Any]:
    return [m.message for m in messages if m.subject == subject]


def test_nothing_was_fetched(run: Any) -> None:
    _, messages, hits = run
    assert len(messages) == 4  # Styler, SVG, two rows; not the row with ESC
    assert hits == []


def test_the_styler_arrived_escaped_and_inert(run: Any) -> None:
    _, messages, _ = run
    (msg,) = by_subject(messages, "Styler")
    html = str(msg.get_body(("html",)).get_content())
    assert "<iframe" not in html and "<img" not in html and "<script" not in html
    assert "&lt;iframe src=" in html and "background-color: yellow" in html
    assert not re.search(r"url\(|background=", html)


def test_the_svg_arrived_without_the_intranet_or_the_file(run: Any) -> None:
    _, messages, _ = run
    (msg,) = by_subject(messages, "SVG")
    (png,) = [p.get_payload(decode=True) for p in msg.walk()
              if p.get_content_type() == "image/png"]
    assert red_pixels(png) == 0 and red_pixels(png, blue=True) > 1000


def test_markdown_row_values_arrived_as_text(run: Any) -> None:
    nb, messages, _ = run
    merged = by_subject(messages, "Merge")
    assert len(merged) == 2
    beacon = re.search(r"B = '([^']+)'", nb.cells[2].source).group(1)  # type: ignore[union-attr]
    for msg in merged:
        html = str(msg.get_body(("html",)).get_content())
        assert "<img" not in html and "evil.test/\"" not in html
        assert not loads_from(html, beacon) and "<table" in html and "<strong>" in html
    texts = [str(m.get_body(("plain",)).get_content()) for m in merged]
    assert any(f"![x]({beacon}/pixel.png)" in t for t in texts)
    assert any("[click](http://evil.test/)" in t for t in texts)


def test_a_row_subject_with_escapes_is_refused_in_one_sentence(run: Any) -> None:
    nb, _, _ = run
    # IPython shows a UsageError as one line on stderr, without a traceback
    shown = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert shown.strip() == ("UsageError: Row 0: The subject contains the control character "
                             "U+001B (ESC), which is not allowed in a header.")
