"""Reads for the dashboards and the metric API: which endpoints there are, which source
answers for each, and metric series over a window (live data merged with stored history)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from deployments.backends import backend_for
from deployments.models import Endpoint, LiveVersionHistory
from portal.errors import NotFound

from .choices import CHARTS, WINDOW_PERIODS, WINDOW_SPANS, ChartSpec, Window
from .models import MetricSample
from .sources import (
    MetricQuery,
    MetricSeries,
    MetricSourceError,
    MetricTarget,
    align,
    merge,
    parse_time,
    rebucket,
)


def endpoint_list():
    """Endpoints the dashboards offer, in the order the deployments pages show them."""
    return Endpoint.objects.select_related("environment").order_by("environment__order", "name")


def metric_target(endpoint: Endpoint) -> MetricTarget:
    """The metric source of an endpoint: its backend answers."""
    return backend_for(endpoint).metric_source(endpoint)


def window_bounds(window: str, *, now: datetime | None = None) -> tuple[datetime, datetime, int]:
    """Start, end and period of a dashboard window; the end is the next period boundary,
    so the current (still filling) period is included."""
    period = WINDOW_PERIODS[window]
    end = align(now or timezone.now(), period) + timedelta(seconds=period)
    return end - WINDOW_SPANS[window], end, period


def stored_series(
    *,
    endpoint_name: str,
    queries: Sequence[MetricQuery],
    start: datetime,
    end: datetime,
    period: int,
) -> list[MetricSeries]:
    """Series from the stored one-minute samples, regrouped to `period`. One query."""
    wanted = {(q.target_model, q.metric, q.stat) for q in queries}
    rows = (
        MetricSample.objects.filter(
            endpoint_name=endpoint_name,
            target_model__in={q.target_model for q in queries},
            metric__in={q.metric for q in queries},
            stat__in={q.stat for q in queries},
            timestamp__gte=start,
            timestamp__lt=end,
        )
        .order_by("timestamp")
        .values_list("target_model", "metric", "stat", "timestamp", "value")
    )
    points: dict[tuple[str, str, str], list[tuple[datetime, float]]] = {}
    for target_model, metric, stat, moment, value in rows:
        if (target_model, metric, stat) in wanted:
            points.setdefault((target_model, metric, stat), []).append((moment, value))
    series = []
    for query in queries:
        grouped = rebucket(
            points.get((query.target_model, query.metric, query.stat), []),
            stat=query.stat,
            period=period,
        )
        series.append(MetricSeries(query, [m for m, _ in grouped], [v for _, v in grouped]))
    return series


def metric_data(
    *,
    target: MetricTarget,
    queries: Sequence[MetricQuery],
    start: datetime,
    end: datetime,
    period: int,
) -> tuple[list[MetricSeries], str]:
    """Series for `queries` over [start, end): the source's answer, and for the local data
    plane the stored history filling what its in-memory window no longer holds.

    Returns the series and an error message ('' when the source answered)."""
    error = ""
    try:
        live = target.source.get_metric_data(
            endpoint=target.source_endpoint,
            queries=queries,
            start=start,
            end=end,
            period=period,
            variant=target.variant,
        )
    except MetricSourceError as exc:
        live = [MetricSeries(query) for query in queries]
        error = str(exc)
    if not target.stores_history:
        return live, error
    history = stored_series(
        endpoint_name=target.source_endpoint, queries=queries, start=start, end=end, period=period
    )
    combined = []
    for fresh, old in zip(live, history, strict=True):
        points = merge(rebucket(fresh.points(), stat=fresh.query.stat, period=period), old.points())
        combined.append(MetricSeries(fresh.query, [m for m, _ in points], [v for _, v in points]))
    return combined, error


def chart_queries(chart: ChartSpec, *, target_model: str = "") -> list[MetricQuery]:
    return [MetricQuery(line.metric, line.stat, target_model) for line in chart.lines]


def dashboard_charts(*, per_model: bool) -> list[ChartSpec]:
    return [chart for chart in CHARTS if chart.per_model or not per_model]


def target_model_choices(*, target: MetricTarget) -> list[str]:
    """Target models to offer on an endpoint's dashboard: what is or was live there, what
    the data plane has loaded, and what has stored history."""
    names: set[str] = set()
    if not target.source.per_model:
        return []
    for model_name, version in (
        LiveVersionHistory.objects.filter(endpoint=target.endpoint)
        .values_list("version__model__name", "version__version")
        .distinct()
    ):
        names.add(f"{model_name}_{version}.tar.gz")
    # The data plane being down must not hide the rest of the page.
    with contextlib.suppress(MetricSourceError):
        names.update(target.source.target_models(endpoint=target.source_endpoint))
    names.update(
        MetricSample.objects.filter(endpoint_name=target.source_endpoint)
        .exclude(target_model="")
        .values_list("target_model", flat=True)
        .distinct()
    )
    return sorted(names)


@dataclass
class Dashboard:
    """Everything the dashboard page shows for one endpoint (or one model on it)."""

    window: str = Window.HOUR
    endpoints: list = field(default_factory=list)
    endpoint: object | None = None
    target_model: str = ""
    target_models: list[str] = field(default_factory=list)
    per_model_supported: bool = False
    charts: list[tuple[ChartSpec, list[MetricSeries]]] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None
    period: int = 60
    error: str = ""
    source_kind: str = ""
    loaded_models: list[dict] = field(default_factory=list)


def dashboard_get(
    *, endpoint_name: str = "", target_model: str = "", window: str = Window.HOUR
) -> Dashboard:
    """The dashboard of one endpoint (the first one when none is named), over a window."""
    if window not in WINDOW_SPANS:
        window = Window.HOUR
    board = Dashboard(window=window, endpoints=list(endpoint_list()))
    if not board.endpoints:
        return board
    if endpoint_name:
        board.endpoint = next((e for e in board.endpoints if e.name == endpoint_name), None)
        if board.endpoint is None:
            raise NotFound(f"No endpoint named {endpoint_name!r}.", field="endpoint")
    else:
        board.endpoint = board.endpoints[0]
    target = metric_target(board.endpoint)
    board.source_kind = target.source.kind
    board.per_model_supported = target.source.per_model
    board.target_models = target_model_choices(target=target)
    # What the source holds in memory now (the data plane can tell), most recently used first.
    with contextlib.suppress(MetricSourceError):
        board.loaded_models = target.source.loaded_models(endpoint=target.source_endpoint)
        for model in board.loaded_models:
            for key in ("loaded_at", "last_used"):
                model[key] = parse_time(model[key]) if model.get(key) else None
    board.target_model = target_model if board.per_model_supported else ""
    board.start, board.end, board.period = window_bounds(window)
    charts = dashboard_charts(per_model=bool(board.target_model))
    queries = [q for chart in charts for q in chart_queries(chart, target_model=board.target_model)]
    series, board.error = metric_data(
        target=target, queries=queries, start=board.start, end=board.end, period=board.period
    )
    position = 0
    for chart in charts:
        board.charts.append((chart, series[position : position + len(chart.lines)]))
        position += len(chart.lines)
    return board
