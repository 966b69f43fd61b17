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


def vega_png(spec: Any, label: str, *, vega_lite: bool = True, offline: bool = False) -> bytes:
    """A Vega-Lite (or Vega) specification, as a dict or JSON text, rendered by vl-convert.

    The chart gets an opaque white background unless it sets a colour of its own: a dark-mode
    mail app shows a transparent image on black. ``offline``: data is never fetched from a URL
    (a specification taken from a notebook's HTML)."""
    if importlib.util.find_spec("vl_convert") is None:
        raise _cannot(label, "an Altair/Vega-Lite chart" if vega_lite else "a Vega chart",
                      "vl-convert-python: pip install vl-convert-python")
    import vl_convert

    spec = _opaque(spec)
    convert = vl_convert.vegalite_to_png if vega_lite else vl_convert.vega_to_png
    try:
        if offline:
            return bytes(convert(spec, scale=SCALE, allowed_base_urls=[]))
        return bytes(convert(spec, scale=SCALE))
    except Exception as exc:  # vl-convert raises plain ValueError/RuntimeError
        url = _REMOTE.search(str(exc)) if offline else None
        if url is not None:
            raise InvalidRequest(
                f"Cannot email {label}: the chart loads its data from {url.group(1)}, which is "
                "not fetched when drawing a notebook's chart; put the data in the chart "
                "(alt.Chart(df)) and run the notebook again.") from exc
        raise InvalidRequest(f"Cannot email {label}: vl-convert could not draw the chart "
                             f"({_reason(exc)}).") from exc


_REMOTE = re.compile(r"url not allowed: (\S+)", re.IGNORECASE)


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

    try:
        if not hasattr(figure, "to_image"):
            figure = pio.from_json(json.dumps(figure), skip_invalid=True)
        return bytes(figure.to_image(format="png", scale=SCALE))
    except Exception as exc:  # kaleido raises assorted errors without a browser
        raise _cannot(label, "a Plotly chart", f"{_PLOTLY_NEEDS}; the export said: "
                      f"{_reason(exc)}") from exc


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
    """An SVG rasterised at SCALE (cairosvg, else vl-convert's resvg); None if neither is here."""
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
