"""HTML to readable plain text for the text/plain alternative (placeholder until render lands)."""

from __future__ import annotations

import html as _html
import re


def html_to_text(markup: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", markup)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</tr>|</h\d>|</li>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return _html.unescape(text).strip()
