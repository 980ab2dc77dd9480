"""Writes of the monitoring app: copying the local data plane's one-minute statistics into
the database, so dashboards reach further back than the data plane's in-memory window.

Metric samples are telemetry, not state changes anyone made: they carry no audit record."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .choices import CHARTS, PULLED_STATS
from .models import MetricSample
from .selectors import endpoint_list, metric_target, target_model_choices
from .sources import MetricQuery, MetricSourceError, align

logger = logging.getLogger(__name__)

PULL_PERIOD = 60


def _queries(target_model: str) -> list[MetricQuery]:
    per_model_metrics = {line.metric for chart in CHARTS if chart.per_model for line in chart.lines}
    return [
        MetricQuery(metric, stat, target_model)
        for metric, stats in PULLED_STATS.items()
        if not target_model or metric in per_model_metrics
        for stat in stats
    ]


def metric_samples_pull(
    *, now: datetime | None = None, lookback: timedelta | None = None
) -> dict[str, int]:
    """Store the last minutes of every local endpoint's statistics, per endpoint and per
    target model. Re-pulling a minute overwrites it (the current minute fills up), so
    running this every minute, late or twice, is safe. Returns samples stored per endpoint."""
    now = now or timezone.now()
    lookback = lookback or timedelta(minutes=settings.BERTH_METRICS_PULL_LOOKBACK_MINUTES)
    end = align(now, PULL_PERIOD) + timedelta(seconds=PULL_PERIOD)
    start = end - lookback
    stored: dict[str, int] = {}
    for endpoint in endpoint_list():
        target = metric_target(endpoint)
        if not target.stores_history:
            continue
        samples: list[MetricSample] = []
        try:
            for target_model in ["", *target_model_choices(target=target)]:
                for series in target.source.get_metric_data(
                    endpoint=target.source_endpoint,
                    queries=_queries(target_model),
                    start=start,
                    end=end,
                    period=PULL_PERIOD,
                ):
                    samples.extend(
                        MetricSample(
                            endpoint_name=target.source_endpoint,
                            target_model=series.query.target_model,
                            metric=series.query.metric,
                            stat=series.query.stat,
                            timestamp=align(moment, PULL_PERIOD),
                            value=value,
                        )
                        for moment, value in series.points()
                    )
        except MetricSourceError as exc:
            # One unreachable data plane must not stop the others; the next pull catches up
            # on what is still in its window.
            logger.warning("metrics pull skipped endpoint %s: %s", endpoint.name, exc)
            continue
        with transaction.atomic():
            MetricSample.objects.bulk_create(
                samples,
                batch_size=500,
                update_conflicts=True,
                unique_fields=["endpoint_name", "target_model", "metric", "stat", "timestamp"],
                update_fields=["value"],
            )
        stored[endpoint.name] = len(samples)
    return stored


def metric_samples_prune(*, now: datetime | None = None) -> int:
    """Delete samples older than the retention setting. Returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BERTH_METRICS_RETENTION_DAYS)
    deleted, _ = MetricSample.objects.filter(timestamp__lt=cutoff).delete()
    return deleted
