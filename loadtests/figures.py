"""Plotly figures of a load test's result, built in Python (as monitoring.figures does) and
drawn in the browser by the plotly.js the portal serves itself.

Two figures answer the approver's question:
- latency vs throughput: achieved rate on x, p50/p95/p99 on y, the SLO latency as a
  horizontal line and the highest rate that held the SLO marked. Past the knee the points
  turn back (achieved stops rising while latency climbs), which is the picture to look for.
- the latency percentile plot in the way HdrHistogram draws it (its plotFiles.html): the
  percentile axis is log-scaled on 1 / (1 - percentile), so 90 %, 99 %, 99.9 % ... are evenly
  spaced and the tail, where a stall shows, gets the room.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

COLORS = ["#1f5fbf", "#a86400", "#b42318", "#1d7f46", "#6941c6", "#0e7490"]
SLO_COLOR = "#b42318"
#: The percentile axis ends here (99.9999 %): the 100th percentile is infinitely far out on
#: a 1 / (1 - p) axis, so the maximum is drawn at the last tick the data reaches.
MAX_SPREAD = 1e6
PERCENTILE_TICKS = [
    (1, "0%"),
    (10, "90%"),
    (100, "99%"),
    (1_000, "99.9%"),
    (10_000, "99.99%"),
    (100_000, "99.999%"),
    (1_000_000, "99.9999%"),
]

#: When the SLO sits this far above the slowest latency drawn, the latency axis turns
#: logarithmic: on a linear one the measured curve would lie flat along the bottom.
LOG_AXIS_RATIO = 4.0

LAYOUT = {
    "margin": {"l": 60, "r": 10, "t": 48, "b": 50},
    "height": 340,
    "autosize": True,
    "template": "plotly_white",
    # Above the plot: below it, a legend collides with the axis title on a narrow screen.
    "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
    "hovermode": "closest",
}


def latency_axis(values: Sequence[float], slo_latency_ms: float | None) -> dict[str, Any]:
    """The latency (y) axis: from zero to a little above the slowest value and the SLO;
    logarithmic when the SLO is far above everything measured, so both stay readable."""
    measured = [v for v in values if v is not None and v > 0]
    top = max(measured, default=1.0)
    if slo_latency_ms and measured and slo_latency_ms > LOG_AXIS_RATIO * top:
        low = min(measured)
        return {
            "title": {"text": "latency (ms, log scale)"},
            "type": "log",
            "range": [math.log10(low * 0.7), math.log10(slo_latency_ms * 1.4)],
        }
    return {
        "title": {"text": "latency (ms)"},
        "range": [0, max(top, slo_latency_ms or 0) * 1.15],
    }


def _encode(figure: go.Figure) -> dict[str, Any]:
    """Plain JSON-ready data (plotly's own encoding), for json_script in a template."""
    return json.loads(figure.to_json())


def latency_throughput_figure(
    stages: Sequence[Any],
    *,
    slo_latency_ms: float | None,
    slo_percentile: str = "p99",
    best: Any | None = None,
) -> dict[str, Any]:
    """Achieved rate (x) against p50/p95/p99 latency (y), one point per finished stage in
    the order they ran. `stages` are LoadTestStage rows (or anything with achieved_rps,
    offered_rps, p50_ms, p95_ms, p99_ms, position); `best` is the stage whose rate the
    recommendation rests on."""
    finished = [s for s in stages if s.p50_ms is not None]
    figure = go.Figure()
    for index, (key, label) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
        figure.add_trace(
            go.Scatter(
                x=[round(s.achieved_rps, 3) for s in finished],
                y=[getattr(s, key) for s in finished],
                name=label,
                mode="lines+markers",
                line={"color": COLORS[index], "width": 2},
                marker={"size": 7},
                customdata=[[s.position + 1, s.offered_rps] for s in finished],
                hovertemplate=(
                    f"{label} %{{y:.1f}} ms<br>achieved %{{x:.1f}} req/s<br>"
                    "stage %{customdata[0]} (offered %{customdata[1]:g} req/s)<extra></extra>"
                ),
            )
        )
    if best is not None and getattr(best, slo_percentile + "_ms", None) is not None:
        figure.add_trace(
            go.Scatter(
                x=[round(best.achieved_rps, 3)],
                y=[getattr(best, slo_percentile + "_ms")],
                name=f"max sustainable ({best.achieved_rps:.1f} req/s)",
                mode="markers",
                marker={
                    "size": 16,
                    "symbol": "star",
                    "color": COLORS[3],
                    "line": {"width": 1, "color": "#fff"},
                },
                hovertemplate="highest rate that held the SLO: %{x:.1f} req/s<extra></extra>",
            )
        )
    if slo_latency_ms:
        figure.add_hline(
            y=slo_latency_ms,
            line={"color": SLO_COLOR, "dash": "dash", "width": 1.5},
            annotation_text=f"SLO: {slo_percentile} ≤ {slo_latency_ms:g} ms",
            annotation_position="top left",
            annotation_font={"color": SLO_COLOR, "size": 11},
        )
    drawn = [getattr(s, key) for s in finished for key in ("p50_ms", "p95_ms", "p99_ms")]
    figure.update_layout(
        xaxis={"title": {"text": "achieved rate (req/s)"}, "rangemode": "tozero"},
        yaxis=latency_axis(drawn, slo_latency_ms),
        **LAYOUT,
    )
    return _encode(figure)


def percentile_spread(percentile: float) -> float:
    """Where `percentile` (0-100) sits on the 1 / (1 - p) axis, capped at 99.9999 %."""
    remaining = 1.0 - percentile / 100.0
    if remaining <= 1.0 / MAX_SPREAD:
        return MAX_SPREAD
    return 1.0 / remaining


def percentile_figure(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    slo_latency_ms: float | None = None,
    slo_percentile: str = "p99",
) -> dict[str, Any]:
    """Latency by percentile for each (label, [(percentile, ms), ...]) curve, as
    loadgen.histograms.percentile_curve gives them, on HdrHistogram's log percentile axis.
    The 100th percentile (the maximum) is drawn one decade past the curve's last finite
    point, not at 99.9999 %, so a short stage's curve is not squeezed to the left."""
    figure = go.Figure()
    widest = 10.0
    drawn: list[float] = []
    for index, (label, curve) in enumerate(curves):
        points = sorted(curve)
        if points and points[0][0] > 0:
            # The iteration reports a value where its first bucket ends; the 0th percentile
            # (the fastest request) lies in that same bucket.
            points.insert(0, (0.0, points[0][1]))
        finite = [percentile_spread(p) for p, _ in points if percentile_spread(p) < MAX_SPREAD]
        ceiling = min(MAX_SPREAD, 10 * max(finite, default=1.0))
        xs = [min(percentile_spread(p), ceiling) for p, _ in points]
        widest = max(widest, max(xs, default=1.0))
        drawn.extend(ms for _, ms in points)
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=[ms for _, ms in points],
                customdata=[p for p, _ in points],
                name=label,
                mode="lines",
                line={"color": COLORS[index % len(COLORS)], "width": 2, "shape": "hv"},
                hovertemplate="%{customdata:.4g}th percentile: %{y:.2f} ms<extra>"
                + label
                + "</extra>",
            )
        )
    if slo_latency_ms:
        figure.add_hline(
            y=slo_latency_ms,
            line={"color": SLO_COLOR, "dash": "dash", "width": 1.5},
            annotation_text=f"SLO: {slo_percentile} ≤ {slo_latency_ms:g} ms",
            annotation_position="top left",
            annotation_font={"color": SLO_COLOR, "size": 11},
        )
    ticks = [(value, text) for value, text in PERCENTILE_TICKS if value <= widest * 1.0001]
    figure.update_layout(
        xaxis={
            "type": "log",
            "title": {"text": "percentile"},
            "tickvals": [value for value, _ in ticks],
            "ticktext": [text for _, text in ticks],
            "range": [0, math.log10(widest)],
        },
        yaxis=latency_axis(drawn, slo_latency_ms),
        **LAYOUT,
    )
    return _encode(figure)
