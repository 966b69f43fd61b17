"""What kind of object is this? Answered by class names along the MRO, importing nothing."""

from __future__ import annotations

import functools
import logging
from typing import Any

from ._shortcuts import figure_suptitle

__all__ = ["CHARTS", "FIGURES", "PANDAS", "kind_of", "kind_of_type", "title_of"]

log = logging.getLogger(__name__)

# (top-level package, class name) -> the kind, for every class in an object's MRO. Matching by
# name means pandas, matplotlib or a chart library is never imported just to look at a value.
_KINDS = {
    ("pandas", "DataFrame"): "DataFrame",
    ("pandas", "Series"): "Series",
    ("pandas", "Styler"): "Styler",
    ("matplotlib", "Figure"): "Figure",
    ("matplotlib", "SubFigure"): "SubFigure",
    ("matplotlib", "_AxesBase"): "Axes",
    ("altair", "TopLevelMixin"): "Altair chart",
    ("plotly", "BaseFigure"): "Plotly figure",
    ("bokeh", "LayoutDOM"): "Bokeh plot",
}
PANDAS = frozenset({"DataFrame", "Series", "Styler"})
FIGURES = frozenset({"Figure", "SubFigure", "Axes"})  # matplotlib
CHARTS = frozenset({"Altair chart", "Plotly figure", "Bokeh plot"})  # drawn by JavaScript


def kind_of(obj: Any) -> str | None:
    """``"DataFrame"``, ``"Series"``, ``"Styler"``, ``"Figure"``, ``"SubFigure"``, ``"Axes"``,
    ``"Altair chart"``, ``"Plotly figure"``, ``"Bokeh plot"``, or None for anything else."""
    return kind_of_type(type(obj))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=512)
def kind_of_type(cls: type) -> str | None:
    try:
        mro = cls.__mro__
    except AttributeError:  # an exotic metaclass
        return None
    for base in mro:
        module = getattr(base, "__module__", None)
        if not isinstance(module, str):
            continue
        kind = _KINDS.get((module.partition(".")[0], base.__name__))
        if kind is not None:
            return kind
    return None


def title_of(obj: Any) -> str:
    """The title a figure or chart shows (its alt text and image name); "" if none."""
    kind = kind_of(obj)
    try:
        if kind in FIGURES:
            figure = obj
            while getattr(figure, "figure", None) not in (None, figure):  # Axes -> its figure
                figure = figure.figure
            suptitle = figure_suptitle(figure)
            if suptitle:
                return suptitle
            for axes in figure.get_axes():
                if axes.get_title():
                    return str(axes.get_title())
            return ""
        if kind == "Altair chart":
            title = obj.title
            title = getattr(title, "text", title)
        elif kind == "Plotly figure":
            title = obj.layout.title.text
        elif kind == "Bokeh plot":
            title = getattr(getattr(obj, "title", None), "text", None)
        else:
            return ""
    except Exception:  # noqa: BLE001 - a title is a nicety; a broken object has none
        return ""
    if isinstance(title, (list, tuple)):  # Altair's multi-line titles
        title = " ".join(str(t) for t in title)
    return title.strip() if isinstance(title, str) else ""
