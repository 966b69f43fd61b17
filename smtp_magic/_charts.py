"""Charts drawn by JavaScript (Altair/Vega-Lite, Plotly, Bokeh) as static PNG images for email.

Email runs no JavaScript: such a chart must travel as a picture, or not at all. Each exporter
raises ``InvalidRequest`` with one sentence naming the chart and what to install when it cannot.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
from typing import Any

from . import _sanitize
from .errors import InvalidRequest, MissingDependency

__all__ = ["SCALE", "altair_png", "bokeh_png", "plotly_png", "svg_png", "vega_png"]

log = logging.getLogger(__name__)

SCALE = 2  # pixels per CSS pixel: sharp on high-density screens, shown at half the size


def _cannot(label: str, what: str, needs: str) -> MissingDependency:
    return MissingDependency(
        f"Cannot email {label} ({what} drawn by JavaScript, which email cannot run): "
        f"making it an image needs {needs}."
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:117] + "...") if len(text) > 120 else text or type(exc).__name__


def vega_png(spec: Any, label: str, *, vega_lite: bool = True) -> bytes:
    """A Vega-Lite (or Vega) specification, as a dict or JSON text, rendered by vl-convert.

    The chart gets an opaque white background unless it sets a colour of its own: a dark-mode
    mail app shows a transparent image on black. Nothing is fetched: data from a URL is refused
    (``allowed_base_urls=[]``), and the chart is drawn as SVG first, whose external references
    (an image mark's URLs, which vl-convert's PNG export would fetch whatever the allowed URLs)
    are removed before it is rasterised."""
    if importlib.util.find_spec("vl_convert") is None:
        raise _cannot(label, "an Altair/Vega-Lite chart" if vega_lite else "a Vega chart",
                      "vl-convert-python: pip install vl-convert-python")
    import vl_convert

    spec = _opaque(spec)
    convert = vl_convert.vegalite_to_svg if vega_lite else vl_convert.vega_to_svg
    try:
        svg = str(convert(spec, allowed_base_urls=[]))
    except Exception as exc:  # vl-convert raises plain ValueError/RuntimeError
        url = re.search(r"External data url not allowed: (\S+)", str(exc))
        if url:
            raise InvalidRequest(
                f"Cannot email {label}: its data is loaded from {url.group(1)}, and nothing is "
                "fetched while a message is made; put the data in the chart (e.g. "
                "alt.Chart(dataframe)).") from None
        raise InvalidRequest(f"Cannot email {label}: vl-convert could not draw the chart "
                             f"({_reason(exc)}).") from exc
    safe = _sanitize.safe_svg(svg.encode("utf-8"))
    if safe is None:
        raise InvalidRequest(f"Cannot email {label}: vl-convert drew it as an SVG that "
                             "cannot be read.")
    try:
        return bytes(vl_convert.svg_to_png(safe.decode("utf-8"), scale=SCALE))
    except Exception as exc:
        raise InvalidRequest(f"Cannot email {label}: vl-convert could not draw the chart "
                             f"({_reason(exc)}).") from exc


def _opaque(spec: Any) -> Any:
    """``spec`` with a white background where it has none or a transparent one."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return spec
    if not isinstance(spec, dict):
        return spec
    background = spec.get("background")
    if background is None or (isinstance(background, str) and _CLEAR.fullmatch(background)):
        return {**spec, "background": "white"}
    return spec


_CLEAR = re.compile(r"\s*(?:|transparent|none|rgba\(.*,\s*0(?:\.0*)?\s*\))\s*", re.IGNORECASE)


def altair_png(chart: Any, label: str) -> bytes:
    try:
        spec = chart.to_dict()
    except Exception as exc:  # e.g. an invalid encoding
        raise InvalidRequest(f"Cannot email {label}: the Altair chart is invalid "
                             f"({_reason(exc)}).") from exc
    return vega_png(spec, label)


_PLOTLY_NEEDS = "kaleido and Chrome or Chromium: pip install kaleido (Debian: apt install chromium)"


def plotly_png(figure: Any, label: str) -> bytes:
    """A plotly Figure, or its JSON (a captured output's bundle), via plotly's static export."""
    if importlib.util.find_spec("plotly") is None or importlib.util.find_spec("kaleido") is None:
        raise _cannot(label, "a Plotly chart", _PLOTLY_NEEDS)
    import plotly.io as pio

    spec = json.loads(figure.to_json()) if hasattr(figure, "to_json") else figure
    remote = _plotly_remote(spec)
    if remote:
        raise InvalidRequest(f"Cannot email {label}: it shows {remote}, and nothing is fetched "
                             "while a message is made (an image can be put in as a data: URI).")
    try:
        if not hasattr(figure, "to_image"):
            figure = pio.from_json(json.dumps(figure), skip_invalid=True)
        return bytes(figure.to_image(format="png", scale=SCALE))
    except Exception as exc:  # kaleido raises assorted errors without a browser
        raise _cannot(label, "a Plotly chart", f"{_PLOTLY_NEEDS}; the export said: "
                      f"{_reason(exc)}") from exc


def _plotly_remote(spec: Any) -> str | None:
    """What a Plotly figure would fetch while it is exported (its browser loads layout images
    and map tiles), in words; None if nothing."""
    if not isinstance(spec, dict):
        return None
    for image in (spec.get("layout") or {}).get("images") or ():
        source = image.get("source") if isinstance(image, dict) else None
        if isinstance(source, str) and not source.strip().lower().startswith("data:"):
            return f"an image from {_reason(ValueError(source))}"
    for trace in spec.get("data") or ():
        if isinstance(trace, dict) and "map" in str(trace.get("type", "")):
            return "a map, whose tiles come from the network"
    return None


_BOKEH_NEEDS = ("selenium and a chromedriver: pip install selenium "
                "(Debian: apt install chromium-driver)")


def bokeh_png(plot: Any, label: str) -> bytes:
    """A Bokeh layout through bokeh's own export, which drives a browser with selenium."""
    if importlib.util.find_spec("selenium") is None:
        raise _cannot(label, "a Bokeh plot", _BOKEH_NEEDS)
    from bokeh.io.export import get_screenshot_as_png

    try:
        image = get_screenshot_as_png(plot, scale_factor=SCALE)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
    except Exception as exc:  # no driver, no browser, a timeout
        raise _cannot(label, "a Bokeh plot", f"{_BOKEH_NEEDS}; the export said: "
                      f"{_reason(exc)}") from exc
    return buf.getvalue()


def svg_png(svg: bytes) -> bytes | None:
    """An SVG rasterised at SCALE (cairosvg, else vl-convert's resvg); None if neither is here,
    or if the SVG cannot be read. Whatever refers outside the SVG is removed first: the
    rasterisers would fetch remote hrefs and read local files (see ``_sanitize.safe_svg``)."""
    safe = _sanitize.safe_svg(svg)
    if safe is None:
        return None
    svg = safe
    if importlib.util.find_spec("cairosvg") is not None:
        import cairosvg

        return bytes(cairosvg.svg2png(bytestring=svg, scale=SCALE))
    if importlib.util.find_spec("vl_convert") is not None:
        import vl_convert

        try:
            return bytes(vl_convert.svg_to_png(svg.decode("utf-8"), scale=SCALE))
        except Exception:  # noqa: BLE001 - an SVG resvg cannot read: attach it instead
            return None
    return None


def missing_bokeh(label: str) -> MissingDependency:
    """A captured Bokeh output (only its JavaScript is left): the figure object is needed."""
    return _cannot(label, "a Bokeh plot", f"the plot object and {_BOKEH_NEEDS}; put it in the "
                   "template as {{ plot }} instead of capturing its display")
