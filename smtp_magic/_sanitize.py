"""Outgoing HTML made safe with nh3 (the Ammonia sanitiser): strict for objects, lenient for the user.

Two policies:

- objects (``_repr_html_``, captured outputs, Markdown reprs): an allowlist of what email clients
  render -- text, lists, tables, inline styles, ``cid:`` images, http(s)/mailto links. Scripts,
  event handlers, iframes, forms, ``javascript:`` URLs and remote (tracker) images are dropped.
- the user's own markup (templates, API bodies): every ordinary HTML element and attribute is
  kept, remote images included; only scripts, event handlers and script URLs are removed.

``removals`` says in words what a policy takes out, for ``--preview``.
"""

from __future__ import annotations

import functools
import html as _html
import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any, Literal

from ._layout import LABEL_CLASS, STACK_CLASS
from .errors import missing

__all__ = ["STYLE_BLOCK", "Policy", "clean", "clean_document", "css_loads", "removals", "safe_style",
           "safe_stylesheet", "safe_svg", "scope_styles"]

log = logging.getLogger(__name__)

Policy = Literal["object", "user"]

_STACK_CLASSES = frozenset({STACK_CLASS, LABEL_CLASS})

_OBJECT_TAGS = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption",
    "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li",
    "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u",
    "ul", "var", "wbr",
})  # fmt: skip
_OBJECT_ATTRIBUTES = {
    "*": {"style", "title", "align", "valign", "dir", "lang", "width", "height", "bgcolor"},
    "a": {"href"},
    "img": {"src", "alt", "border"},
    "table": {"border", "cellpadding", "cellspacing", "role", "summary", "class"},
    "span": {"class"},  # class: the narrow-screen stack's own two only (_object_filter)
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "scope", "nowrap"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type", "reversed"},
    "li": {"value"},
    "font": {"color", "face", "size"},
    "time": {"datetime"},
}
# The user's markup keeps everything a page may hold except what runs code; elements that are
# not listed (script, and unknown ones) go, their text stays (a script's is dropped).
_USER_TAGS = _OBJECT_TAGS | frozenset({
    "address", "area", "article", "aside", "audio", "button", "canvas", "data",
    "datalist", "dialog", "embed", "fieldset", "footer", "form", "frame", "frameset", "header",
    "hgroup", "iframe", "input", "label", "legend", "link", "main", "map", "menu", "meter",
    "nav", "noscript", "object", "optgroup", "option", "output", "param", "picture", "progress",
    "rp", "rt", "ruby", "section", "select", "source", "style", "textarea", "track", "video",
})  # fmt: skip
_USER_GENERIC = {
    "style", "title", "align", "valign", "dir", "lang", "width", "height", "bgcolor", "id",
    "class", "role", "hidden", "tabindex", "border", "color", "background", "name", "type",
    "value", "alt", "src", "href", "target", "colspan", "rowspan", "cellpadding", "cellspacing",
    "scope", "nowrap", "start", "span", "face", "size", "summary", "headers", "abbr", "datetime",
    "cite", "media", "rel", "srcset", "sizes", "poster", "controls", "action", "method", "for",
    "placeholder", "disabled", "checked", "selected", "label", "shape", "coords", "usemap",
    "frameborder", "allow", "sandbox", "data", "reversed", "open", "loading", "decoding",
    "crossorigin", "referrerpolicy", "charset", "http-equiv", "content", "download", "hreflang",
}  # fmt: skip
_OBJECT_SCHEMES = frozenset({"http", "https", "mailto", "cid"})
_USER_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid", "data", "ftp", "sms"})
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "background", "poster", "data",
                             "formaction", "srcset", "cite", "longdesc", "usemap"})
_SCRIPT_SCHEME = re.compile(r"^(?:javascript|vbscript|livescript):", re.IGNORECASE)
# What a browser ignores inside a URL's scheme: C0 controls and spaces around, tab/LF/CR inside.
_URL_NOISE = re.compile(r"[\x00-\x20]+")
STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
# Anything that could run code or fetch something; without any of it, the user's markup needs
# no parsing at all (the common case, and the bulk-send path).
_SUSPECT = re.compile(
    r"script|[\s/\"'`]on[a-z]+\s*=|&#|&(?:colon|tab|newline|lpar);|data:", re.IGNORECASE
)
# The same test on lowercased markup, without re.IGNORECASE (which makes the engine try every
# position the slow way: 150 us for a 7 KB email): a few substring checks and two regexes led by
# a literal. Lowercasing is exact here unless the markup holds one of the four characters that
# case-insensitive matching or lower() relate to ASCII letters (tests/test_sanitize.py lists them).
_ASCII_LOOKALIKES = re.compile("[\u0130\u0131\u017f\u212a]")  # İ ı ſ K
_LOWER_ENTITY = re.compile(r"&(?:colon|tab|newline|lpar);")
_LOWER_HANDLER = re.compile(r"on[a-z]+\s*=")  # then the character before it: space, / " ' `


def _suspect(html: str) -> bool:
    """Whether ``_SUSPECT`` finds anything in ``html``."""
    if not html.isascii() and _ASCII_LOOKALIKES.search(html):
        return _SUSPECT.search(html) is not None
    lowered = html.lower()
    if "script" in lowered or "&#" in lowered or "data:" in lowered:
        return True
    if "&" in lowered and _LOWER_ENTITY.search(lowered):
        return True
    for handler in _LOWER_HANDLER.finditer(lowered):
        before = lowered[handler.start() - 1] if handler.start() else ""
        if before.isspace() or before in ("/", '"', "'", "`"):
            return True
    return False

_DOCUMENT = re.compile(r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\b|html\b)", re.IGNORECASE | re.DOTALL)


def _nh3() -> Any:
    if importlib.util.find_spec("nh3") is None:
        raise missing("nh3", "Sending HTML safely")
    import nh3

    return nh3


def _plain_url(value: str) -> str:
    return _URL_NOISE.sub("", _html.unescape(value)).lower()


def _object_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src":
        return value if value.strip().lower().startswith("cid:") else None  # no remote images
    if attr == "style":
        return safe_style(value) or None
    if attr == "class":
        return value if value in _STACK_CLASSES else None
    return value


def _user_filter(tag: str, attr: str, value: str) -> str | None:
    if attr in _URL_ATTRIBUTES and _SCRIPT_SCHEME.match(_plain_url(value)):
        return None
    if attr in _URL_ATTRIBUTES and tag != "img" and _plain_url(value).startswith("data:"):
        return None  # a data: page opened from a link can run script; a data: image cannot
    if attr == "style" and re.search(r"expression\s*\(|javascript:|-moz-binding|behavior\s*:",
                                     _html.unescape(value), re.IGNORECASE):
        return None
    return value


@functools.lru_cache(maxsize=2)
def _cleaner(policy: Policy) -> Any:
    nh3 = _nh3()
    if policy == "object":
        return nh3.Cleaner(
            tags=set(_OBJECT_TAGS), clean_content_tags={"script", "style", "template"},
            attributes={k: set(v) for k, v in _OBJECT_ATTRIBUTES.items()},
            url_schemes=set(_OBJECT_SCHEMES), attribute_filter=_object_filter,
            link_rel="noopener noreferrer", strip_comments=True,
        )
    return nh3.Cleaner(
        tags=set(_USER_TAGS), clean_content_tags={"script"},
        attributes={"*": set(_USER_GENERIC)}, generic_attribute_prefixes={"data-", "aria-"},
        url_schemes=set(_USER_SCHEMES), attribute_filter=_user_filter, link_rel=None,
        strip_comments=False,  # Outlook's conditional comments are the user's business
    )


def clean(html: str, policy: Policy) -> str:
    """``html`` (a fragment) through the policy's allowlist."""
    if not html or (policy == "user" and not _suspect(html)):
        return html
    return str(_cleaner(policy).clean(html))


def clean_document(html: str) -> str:
    """The user policy for a fragment or a whole document (whose head keeps only its title,
    meta and style elements: a sanitiser parses fragments, so the head is rebuilt)."""
    if not html or not _suspect(html):
        return html
    if not _DOCUMENT.match(html):
        return clean(html, "user")
    head_end = re.search(r"<body\b[^>]*>", html, re.IGNORECASE)
    if head_end is None:
        return clean(html, "user")
    head, body = html[: head_end.start()], html[head_end.end():]
    body = re.split(r"</body\s*>", body, maxsplit=1, flags=re.IGNORECASE)[0]
    body_tag = clean(head_end.group(0).replace("<body", "<div", 1), "user")
    body_tag = body_tag[: body_tag.find(">") + 1].replace("<div", "<body", 1)
    kept = []
    for match in re.finditer(
        r"<title\b[^>]*>.*?</title\s*>|<meta\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>"
        r"|<style\b[^>]*>.*?</style\s*>", head, re.IGNORECASE | re.DOTALL,
    ):
        element = match.group(0)
        if element[:5].lower() == "<meta":
            if re.search(r"http-equiv\s*=\s*[\"']?refresh", element, re.IGNORECASE):
                continue
            element = re.sub(r"\s+on[a-z]+\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", "", element,
                             flags=re.IGNORECASE)
        elif element[:6].lower() == "<style" and re.search(
            r"expression\s*\(|javascript:|-moz-binding|behavior\s*:", element, re.IGNORECASE
        ):
            continue
        kept.append(element)
    doctype = "<!DOCTYPE html>\n" if html.lstrip()[:9].lower() == "<!doctype" else ""
    head_html = "<head>\n" + "\n".join(kept) + "\n</head>\n" if kept else ""
    return (f"{doctype}<html>\n{head_html}{body_tag}\n{clean(body, 'user')}\n</body>\n</html>\n")


def scope_styles(html: str) -> tuple[str, bool]:
    """Apply an object's ``<style>`` blocks to that object's own elements only (inlined into
    their style attributes), and drop the blocks. Returns (html, whether styles were lost
    because css-inline is not installed)."""
    blocks = STYLE_BLOCK.findall(html)
    if not blocks:
        return html, False
    rest = STYLE_BLOCK.sub("", html)
    if importlib.util.find_spec("css_inline") is None:
        return rest, True
    import css_inline

    # Filtered before css-inline copies the rules into style attributes.
    css = "\n".join(safe_stylesheet(block) for block in blocks)
    try:
        scoped = css_inline.inline_fragment(rest, css, load_remote_stylesheets=False)
    except (css_inline.InlineError, ValueError):
        return rest, True
    return str(scoped), False


# -- CSS that cannot load anything ---------------------------------------------------------------
#
# CSS is read with tinycss2, which tokenizes as a browser does: escapes are resolved
# (``u\72l(`` is ``url(``), comments and strings are where the browser sees them. A declaration
# goes if any of its values is a URL or a function that is not known to only compute a value
# (url(), image-set(), -webkit-image-set(), image(), cross-fade(), element(), src(), paint(),
# expression() and whatever comes next); at-rules other than @media/@supports go (@import,
# @font-face, @namespace...). Colours, sizes, borders, gradients and backgrounds without images
# stay, so a Styler's highlights still arrive.

_CSS_FUNCTIONS = frozenset({
    "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color", "color-mix",
    "light-dark", "calc", "min", "max", "clamp", "abs", "sign", "round", "mod", "rem", "sin",
    "cos", "tan", "asin", "acos", "atan", "atan2", "pow", "sqrt", "hypot", "log", "exp", "var",
    "linear-gradient", "radial-gradient", "conic-gradient", "repeating-linear-gradient",
    "repeating-radial-gradient", "repeating-conic-gradient", "-webkit-linear-gradient",
    "-webkit-radial-gradient", "-moz-linear-gradient", "-moz-radial-gradient",
    "translate", "translatex", "translatey", "translatez", "translate3d", "rotate", "rotatex",
    "rotatey", "rotatez", "rotate3d", "scale", "scalex", "scaley", "scalez", "scale3d", "skew",
    "skewx", "skewy", "matrix", "matrix3d", "perspective", "cubic-bezier", "steps", "blur",
    "brightness", "contrast", "drop-shadow", "grayscale", "hue-rotate", "invert", "opacity",
    "saturate", "sepia", "rect", "inset", "circle", "ellipse", "polygon", "counter", "counters",
    "repeat", "minmax", "fit-content",
})  # fmt: skip
_CSS_PROPERTIES_DROPPED = frozenset({"behavior", "-ms-behavior", "-moz-binding", "src"})
_CSS_BLOCKS = frozenset({"() block", "[] block", "{} block"})
_MAY_LOAD = re.compile(r"[(\\@]")


def _tinycss2() -> Any:
    if importlib.util.find_spec("tinycss2") is None:
        raise missing("tinycss2", "Sending HTML with CSS safely")
    import tinycss2

    return tinycss2


def _css_tokens_load(tokens: Iterable[Any], fragments: bool) -> bool:
    for token in tokens:
        kind = token.type
        if kind == "url":
            if not (fragments and token.value.lstrip().startswith("#")):
                return True
        elif kind == "function":
            if token.lower_name == "url" and fragments:
                args = [t for t in token.arguments if t.type not in ("whitespace", "comment")]
                if (len(args) == 1 and args[0].type == "string"
                        and args[0].value.lstrip().startswith("#")):
                    continue
            if token.lower_name not in _CSS_FUNCTIONS:
                return True
            if _css_tokens_load(token.arguments, fragments):
                return True
        elif kind in _CSS_BLOCKS:
            if _css_tokens_load(token.content, fragments):
                return True
        elif kind in ("error", "at-keyword"):
            return True  # a bad url(...), or something a declaration has no use for
    return False


def css_loads(css: str, *, fragments: bool = False) -> bool:
    """Whether the declarations ``css`` (a style attribute's value) hold anything that can
    load a resource. ``fragments``: ``url(#id)`` (an SVG gradient or clip path) is allowed."""
    return safe_style(css, fragments=fragments) != css


def safe_style(css: str, *, fragments: bool = False) -> str:
    """A style attribute's declarations without those that can load anything (``css`` itself
    when nothing goes)."""
    if not _MAY_LOAD.search(css):  # nothing loads without a function, an escape or an at-rule
        return css
    tinycss2 = _tinycss2()
    kept, dropped = [], False
    for item in tinycss2.parse_blocks_contents(css, skip_comments=True, skip_whitespace=True):
        if (item.type == "declaration" and item.lower_name not in _CSS_PROPERTIES_DROPPED
                and not _css_tokens_load(item.value, fragments)):
            kept.append(item)
        else:
            dropped = True
    if not dropped:
        return css
    return ";".join(item.serialize().strip() for item in kept)


def safe_stylesheet(css: str, *, fragments: bool = False) -> str:
    """A stylesheet (a ``<style>`` block's text) keeping only style rules (and @media/@supports
    around them) whose declarations cannot load anything."""
    tinycss2 = _tinycss2()
    out = []
    for rule in tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True):
        if rule.type == "qualified-rule":
            if _css_tokens_load(rule.prelude, False):
                continue
            body = safe_style(tinycss2.serialize(rule.content), fragments=fragments)
            text = f"{tinycss2.serialize(rule.prelude).strip()}{{{body}}}"
            if "<" not in text:  # a CSS escape (\3c) comes out as "<": it could end <style>
                out.append(text)
        elif (rule.type == "at-rule" and rule.lower_at_keyword in ("media", "supports")
              and rule.content is not None and not _css_tokens_load(rule.prelude, False)):
            inner = safe_stylesheet(tinycss2.serialize(rule.content), fragments=fragments)
            out.append(f"@{rule.lower_at_keyword}{tinycss2.serialize(rule.prelude)}{{{inner}}}")
    return "\n".join(out)


# -- SVG that cannot load anything ---------------------------------------------------------------
#
# A rasteriser follows an SVG's references (resvg in vl-convert fetches remote hrefs; both it
# and cairosvg read local files), so an SVG from anyone could make the kernel fetch an intranet
# URL or read a file and mail the picture. Before any rasteriser sees it, every reference that
# leaves the document goes: href/xlink:href/src other than ``#id`` (data: bitmaps stay), url()
# other than ``url(#id)`` in attributes, style attributes and <style>, @import and @font-face,
# <foreignObject>, <script>, XInclude, xml:base, processing instructions (<?xml-stylesheet?>).
# A DOCTYPE with declarations of its own (entities, which can name files) is not drawn at all.

_SVG_DROPPED = frozenset({"foreignobject", "script", "iframe", "video", "audio", "include"})
_DATA_BITMAP = re.compile(r"data:image/(?:png|jpe?g|gif|webp)[;,]", re.IGNORECASE)
_DOCTYPE = re.compile(rb"<!DOCTYPE\b(?:[^\[>\"']|\"[^\"]*\"|'[^']*')*>", re.IGNORECASE)
_DECLARATIONS = re.compile(rb"<!(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)\b", re.IGNORECASE)


def _local(name: str) -> str:
    return name.rpartition("}")[2].lower()


def safe_svg(svg: bytes) -> bytes | None:
    """``svg`` without anything that refers outside it, or None when it cannot be read (or
    declares entities): then it must not be rasterised."""
    import xml.etree.ElementTree as ET

    data = _DOCTYPE.sub(b"", svg, count=1)  # matplotlib's: a public identifier only
    if _DECLARATIONS.search(data):
        return None
    try:
        root = ET.fromstring(data)  # comments and processing instructions are not kept
    except ET.ParseError:
        return None
    if _local(root.tag) in _SVG_DROPPED:
        return None
    for parent in root.iter():
        for child in list(parent):
            if not isinstance(child.tag, str) or _local(child.tag) in _SVG_DROPPED:
                parent.remove(child)
    for element in root.iter():
        if _local(element.tag) == "style":
            element.text = safe_stylesheet(element.text or "", fragments=True)
            for child in list(element):
                element.remove(child)
        for name, value in list(element.attrib.items()):
            local = _local(name)
            stripped = value.strip()
            if local in ("href", "src"):
                keep = stripped.startswith("#") or (local == "href"
                                                    and _DATA_BITMAP.match(stripped))
            elif local == "base" or local.startswith("on"):
                keep = False
            elif local == "style":
                value = safe_style(value, fragments=True)
                keep = bool(value.strip())
            elif "(" in value or "\\" in value:
                keep = not css_loads(f"x:{value}", fragments=True)
            else:
                continue
            if keep:
                element.set(name, value)
            else:
                del element.attrib[name]
    return bytes(ET.tostring(root, encoding="utf-8"))


# -- what a policy removes, in words ------------------------------------------------------------

_NOTABLE = {
    "script": "a script", "iframe": "an embedded frame (<iframe>)", "object": "an <object>",
    "embed": "an <embed>", "form": "a form", "input": "a form field", "button": "a button",
    "frame": "a frame", "frameset": "a frameset", "link": "a <link> to a stylesheet",
    "meta": "a <meta> element", "base": "a <base> element", "svg": "an inline SVG drawing",
    "canvas": "a <canvas>", "video": "a video", "audio": "an audio player", "math": "MathML",
    "select": "a drop-down", "textarea": "a text box", "style": "a <style> block",
}


class _Scanner(HTMLParser):
    def __init__(self, policy: Policy) -> None:
        super().__init__(convert_charrefs=True)
        self.policy = policy
        self.found: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        allowed = _OBJECT_TAGS if self.policy == "object" else _USER_TAGS
        if tag not in allowed and tag in _NOTABLE:
            self.found[_NOTABLE[tag]] += 1
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.found[f"an {name} event handler"] += 1
            elif name in _URL_ATTRIBUTES and _SCRIPT_SCHEME.match(_plain_url(value)):
                self.found[f"a {_plain_url(value).partition(':')[0]}: URL"] += 1
            elif name in _URL_ATTRIBUTES and tag != "img" and _plain_url(value).startswith(
                    "data:"):
                self.found["a data: URL"] += 1
            elif self.policy == "object" and name == "style" and css_loads(value):
                self.found["a style that loads a URL"] += 1
            elif (self.policy == "object" and tag == "img" and name == "src"
                  and not value.strip().lower().startswith(("cid:", "data:"))):
                shown = value if len(value) <= 60 else value[:57] + "..."
                self.found[f"a remote image ({shown})"] += 1

    handle_startendtag = handle_starttag


def removals(html: str, policy: Policy) -> list[str]:
    """What :func:`clean` takes out of ``html`` that a reader or the sender would care about,
    e.g. ``["a script", "2 x an onclick event handler"]``."""
    if not html or (policy == "user" and not _suspect(html)):
        return []
    scanner = _Scanner(policy)
    try:
        scanner.feed(html)
        scanner.close()
    except (AssertionError, ValueError):  # HTMLParser on broken markup: report what it saw
        pass
    return _counted(scanner.found.items())


def _counted(items: Iterable[tuple[str, int]]) -> list[str]:
    return [what if n == 1 else f"{n} x {what}" for what, n in items]
