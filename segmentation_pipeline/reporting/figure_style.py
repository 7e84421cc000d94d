"""The house style every report figure shares: white, system font, left-aligned title, compact margins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

# plotly_white's layout only: its per-trace defaults (colour scales of every trace type) made each figure cost
# 50 ms to style and embedded them all in every figure; the report's traces set their own colours.
TEMPLATE = "segmentation_house"
pio.templates[TEMPLATE] = go.layout.Template(layout=pio.templates["plotly_white"].layout)

FONT = '-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
GRID = "#e6e9ef"


def house_style(figure: go.Figure, title: str, height: int, **layout: object) -> go.Figure:
    """The house style: white, system font, left-aligned title, compact margins."""
    settings: dict[str, object] = {
        "template": TEMPLATE,
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        "font": {"family": FONT, "size": 12, "color": "#1f2937"},
        "height": height,
        "margin": {"l": 60, "r": 30, "t": 70, "b": 50},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        "hoverlabel": {"font": {"family": FONT}},
    }
    settings.update(layout)  # a figure's own margin/legend replaces the house default
    figure.update_layout(**settings)
    return figure


@dataclass(frozen=True)
class PointsFigure:
    """A figure and, beside it, the per-point tooltip values of some of its traces (trace index -> one row of
    short texts per point), which the written figure holds as the traces' ``customdata``.

    Plotly copies an object array value by value when a trace takes it and again when the figure is written (the
    map's 20,000 points of nine values each: writing it took 0.27 s, now about 0.1 s). Kept beside the figure, they
    go into its JSON once, as it is written (:meth:`spec`)."""

    figure: go.Figure
    customdata: dict[int, np.ndarray]

    def spec(self) -> dict[str, object]:
        """The figure as plotly's JSON-ready dict with every trace's tooltip values in place."""
        spec = self.figure.to_dict()
        for index, rows in self.customdata.items():
            spec["data"][index]["customdata"] = rows.tolist()
        return spec
