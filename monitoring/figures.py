"""Plotly figures for the dashboards, built in Python and drawn in the browser by the
plotly.js the portal serves itself (its "basic" bundle: scatter traces only here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache

import plotly.io as pio

from .choices import ChartSpec, Statistic
from .selectors import ChangeEvent
from .sources import MetricSeries, align

COLORS = ["#1f5fbf", "#b42318", "#1d7f46", "#a86400", "#6941c6", "#0e7490"]
EVENT_COLORS = {"deploy": "#1d7f46", "rollback": "#b42318", "promotion": "#6941c6"}
# Fewer points than this in a window and each one is drawn as a marker too: a line alone
# would hide a single point.
SPARSE_POINTS = 30
COUNT_STATS = {Statistic.SUM, Statistic.SAMPLE_COUNT}
LABELLED_EVENTS = 6


def zero_filled(
    series: MetricSeries, *, start: datetime, end: datetime, period: int
) -> list[tuple[datetime, float]]:
    """A count's datapoints with every empty period of the window as 0.

    SageMaker (and the data plane) publish nothing for a minute without requests; drawn as
    is, one busy minute is a lone dot at the edge of an empty chart. For a count, "no
    datapoint" means zero, so the chart draws the whole window. Averages, percentiles and
    gauges are not filled: their absence is not a value."""
    values = dict(series.points())
    moment = align(start, period)
    if moment < start:
        moment += timedelta(seconds=period)
    filled = []
    while moment < end:
        filled.append((moment, values.pop(moment, 0.0)))
        moment += timedelta(seconds=period)
    # Anything off the period grid (it should not happen) is kept, not dropped.
    return sorted(filled + list(values.items()))


def chart_figure(
    chart: ChartSpec,
    series: Sequence[MetricSeries],
    *,
    start: datetime,
    end: datetime,
    period: int = 60,
    events: Sequence[ChangeEvent] = (),
) -> dict:
    """The figure of one chart as plain JSON-ready data (plotly's own encoding).

    Error counts get their own right-hand axis: a few 4XX beside hundreds of requests are
    otherwise a flat line on the floor. Deployments, rollbacks and promotions in the window
    are vertical markers, so a change that moved a line is next to it."""
    traces = []
    has_secondary = False
    for index, (line, one) in enumerate(zip(chart.lines, series, strict=True)):
        filled = line.stat in COUNT_STATS
        points = zero_filled(one, start=start, end=end, period=period) if filled else one.points()
        # A filled count is a continuous line already; a few gauge points need their markers.
        sparse = not filled and len(points) < SPARSE_POINTS
        secondary = line.metric in chart.secondary_metrics
        has_secondary = has_secondary or secondary
        traces.append(
            {
                "type": "scatter",
                "x": [moment.isoformat() for moment, _ in points],
                "y": [value * chart.scale for _, value in points],
                "name": line.label + (" (right axis)" if secondary else ""),
                "mode": "lines+markers" if sparse else "lines",
                "line": {"color": COLORS[index % len(COLORS)], "width": 2},
                "marker": {"size": 7 if sparse else 4},
                "connectgaps": False,
                "yaxis": "y2" if secondary else "y",
            }
        )
    layout = {
        # The title is the card's heading (it wraps on a phone; a plotly title is clipped).
        "margin": {"l": 50, "r": 50 if has_secondary else 10, "t": 24, "b": 40},
        "height": 260,
        "template": template_layout(),
        "legend": {"orientation": "h", "y": -0.25, "yanchor": "top"},
        "xaxis": {"range": [start.isoformat(), end.isoformat()], "type": "date"},
        "yaxis": {"title": {"text": chart.y_title}, "rangemode": "tozero"},
        "hovermode": "x unified",
        "shapes": [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": event.at.isoformat(),
                "x1": event.at.isoformat(),
                "y0": 0,
                "y1": 1,
                "line": {"color": EVENT_COLORS[event.kind], "width": 1.5, "dash": "dot"},
            }
            for event in events
        ],
        "annotations": [
            {
                "x": event.at.isoformat(),
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "text": event.label,
                "showarrow": False,
                "font": {"size": 10, "color": EVENT_COLORS[event.kind]},
                "hovertext": event.description,
            }
            # Every change gets its line; only the latest few their words, or a busy week
            # would be unreadable (the page lists them all under the headline).
            for event in events[-LABELLED_EVENTS:]
        ],
    }
    if has_secondary:
        layout["yaxis2"] = {
            "title": {"text": chart.secondary_title},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
        }
    # Plain data in plotly's JSON shape: building it through plotly.graph_objects validated
    # (and deep-copied the template) for 80 ms per chart, most of the page's server time.
    return {"data": traces, "layout": layout}


@cache
def template_layout() -> dict:
    """The layout part of plotly's "plotly_white" template (its per-trace-type defaults
    would be shipped six times per page for traces the basic bundle cannot draw)."""
    return {"layout": pio.templates["plotly_white"].layout.to_plotly_json()}


def has_data(series: Sequence[MetricSeries]) -> bool:
    return any(one.values for one in series)
