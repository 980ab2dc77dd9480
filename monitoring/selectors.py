"""Reads for the dashboards and the metric API: which endpoints there are, which source
answers for each, and metric series over a window (live data merged with stored history)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from deployments.backends import backend_for
from deployments.choices import DeploymentKind, DeploymentState
from deployments.models import Deployment, Endpoint, LiveVersionHistory
from portal.errors import NotFound

from .choices import CHARTS, WINDOW_PERIODS, WINDOW_SPANS, ChartSpec, Statistic, Window
from .models import MetricSample
from .sources import (
    MetricQuery,
    MetricSeries,
    MetricSourceError,
    MetricTarget,
    align,
    combine,
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


@dataclass(frozen=True)
class ChangeEvent:
    """A change on an endpoint the charts mark: a deployment, a rollback or a promotion
    (a production deployment an approver started), at the moment it finished."""

    at: datetime
    kind: str  # "deploy", "rollback" or "promotion"
    label: str
    description: str


# Deployments that reached their endpoint (a later rollback or a newer deployment does not
# undo that they happened).
_REACHED_STATES = (
    DeploymentState.SUCCEEDED,
    DeploymentState.SUPERSEDED,
    DeploymentState.ROLLED_BACK,
)


def change_events(
    *, endpoint: Endpoint, start: datetime, end: datetime, target_model: str = ""
) -> list[ChangeEvent]:
    """Deployments, rollbacks and promotions that finished on `endpoint` in [start, end),
    oldest first; on a target model's dashboard only that model's. One query."""
    deployments = (
        Deployment.objects.filter(
            endpoint=endpoint,
            state__in=_REACHED_STATES,
            finished_at__gte=start,
            finished_at__lt=end,
        )
        .select_related("version__model", "previous_version")
        .order_by("finished_at")
    )
    events = []
    for deployment in deployments:
        version = deployment.version
        if target_model and target_model != f"{version.model.name}_{version.version}.tar.gz":
            continue
        if deployment.kind == DeploymentKind.ROLLBACK:
            kind, label = "rollback", f"rollback to v{version.version}"
        elif deployment.promotion_id:
            kind, label = "promotion", f"promoted v{version.version}"
        else:
            kind, label = "deploy", f"v{version.version} deployed"
        before = deployment.previous_version
        description = f"{version.model.name}: " + (
            f"v{before.version} → v{version.version}" if before else f"v{version.version}"
        )
        events.append(
            ChangeEvent(at=deployment.finished_at, kind=kind, label=label, description=description)
        )
    return events


@dataclass(frozen=True)
class Headline:
    """The window in a few figures, above the charts. None: no data for that figure."""

    requests: float | None = None
    errors_4xx: float | None = None
    errors_5xx: float | None = None
    error_rate: float | None = None  # share of requests, 0..1
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    cache_hit_ratio: float | None = None  # 0..1
    loaded_models: float | None = None

    @property
    def error_rate_percent(self) -> float | None:
        return None if self.error_rate is None else self.error_rate * 100

    @property
    def cache_hit_percent(self) -> float | None:
        return None if self.cache_hit_ratio is None else self.cache_hit_ratio * 100


def headline(charts: Sequence[tuple[ChartSpec, Sequence[MetricSeries]]]) -> Headline:
    """Figures for the whole window from the charts' own series, each combined by the same
    rule that coarsens periods (`sources.combine`): counts add up; a percentile keeps its
    worst period (an upper bound: percentiles cannot be recombined exactly); the cache-hit
    ratio is weighted by each period's requests when they are known."""
    found: dict[tuple[str, str], MetricSeries] = {}
    for chart, series in charts:
        for line, one in zip(chart.lines, series, strict=True):
            found.setdefault((line.metric, line.stat), one)

    def total(metric: str, stat: str) -> float | None:
        one = found.get((metric, stat))
        return combine(stat, one.values) if one is not None and one.values else None

    requests = total("Invocations", Statistic.SUM)
    errors_4xx = total("Invocation4XXErrors", Statistic.SUM)
    errors_5xx = total("Invocation5XXErrors", Statistic.SUM)
    error_rate = None
    if requests:
        error_rate = ((errors_4xx or 0) + (errors_5xx or 0)) / requests
    p50 = total("ModelLatency", Statistic.P50)
    p99 = total("ModelLatency", Statistic.P99)
    cache_hit = None
    hits = found.get(("ModelCacheHit", Statistic.AVERAGE))
    if hits is not None and hits.values:
        weights = dict(found[("Invocations", Statistic.SUM)].points()) if requests else {}
        weighted = [(value, weights.get(moment, 0.0)) for moment, value in hits.points()]
        weight = sum(w for _, w in weighted)
        cache_hit = (
            sum(v * w for v, w in weighted) / weight
            if weight
            else combine(Statistic.AVERAGE, hits.values)
        )
    loaded = found.get(("LoadedModelCount", Statistic.MAXIMUM))
    return Headline(
        requests=requests,
        errors_4xx=errors_4xx,
        errors_5xx=errors_5xx,
        error_rate=error_rate,
        latency_p50_ms=p50 / 1000 if p50 is not None else None,
        latency_p99_ms=p99 / 1000 if p99 is not None else None,
        cache_hit_ratio=cache_hit,
        # What is loaded now: the newest period's count.
        loaded_models=loaded.values[-1] if loaded is not None and loaded.values else None,
    )


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
    events: list[ChangeEvent] = field(default_factory=list)
    headline: Headline = field(default_factory=Headline)


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
    board.headline = headline(board.charts)
    board.events = change_events(
        endpoint=board.endpoint, start=board.start, end=board.end, target_model=board.target_model
    )
    return board
