"""Plotly figures for the dashboards, built in Python and drawn in the browser by the
plotly.js the portal serves itself."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import plotly.graph_objects as go

from .choices import ChartSpec
from .sources import MetricSeries

COLORS = ["#1f5fbf", "#b42318", "#1d7f46", "#a86400", "#6941c6", "#0e7490"]


def chart_figure(
    chart: ChartSpec, series: Sequence[MetricSeries], *, start: datetime, end: datetime
) -> dict:
    """The figure of one chart as plain JSON-ready data (plotly's own encoding)."""
    figure = go.Figure()
    for index, (line, one) in enumerate(zip(chart.lines, series, strict=True)):
        figure.add_trace(
            go.Scatter(
                x=[moment.isoformat() for moment in one.timestamps],
                y=[value * chart.scale for value in one.values],
                name=line.label,
                mode="lines+markers" if len(one.values) < 30 else "lines",
                line={"color": COLORS[index % len(COLORS)], "width": 2},
                marker={"size": 4},
                connectgaps=False,
            )
        )
    figure.update_layout(
        title={"text": chart.title, "font": {"size": 14}},
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        height=280,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
        xaxis={"range": [start.isoformat(), end.isoformat()], "type": "date"},
        yaxis={"title": {"text": chart.y_title}, "rangemode": "tozero"},
        hovermode="x unified",
    )
    return json.loads(figure.to_json())


def has_data(series: Sequence[MetricSeries]) -> bool:
    return any(one.values for one in series)
