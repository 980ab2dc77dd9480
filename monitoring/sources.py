"""Metric sources. Each answers the question CloudWatch's GetMetricData answers: these
metrics, for this endpoint (and target model), over this window, at this period and
statistic. CloudWatch is one source, the local data plane's admin API another.

https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from portal.dataplane import DataPlaneClient, DataPlaneError

from .choices import DEFAULT_VARIANT, METRICS, Statistic


class MetricSourceError(Exception):
    """A source could not answer (unreachable, refused, malformed answer)."""


@dataclass(frozen=True)
class MetricQuery:
    """One series to fetch: a metric, a statistic, and optionally one target model."""

    metric: str
    stat: str
    target_model: str = ""

    @property
    def key(self) -> str:
        return f"{self.metric}:{self.stat}"


@dataclass
class MetricSeries:
    """Datapoints of one query, oldest first."""

    query: MetricQuery
    timestamps: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def points(self) -> list[tuple[datetime, float]]:
        return list(zip(self.timestamps, self.values, strict=True))


def query_id(index: int, query: MetricQuery) -> str:
    """GetMetricData ids start with a lower-case letter and hold only letters, digits, '_'."""
    return f"q{index}_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{query.metric}_{query.stat}").lower()


def align(moment: datetime, period: int) -> datetime:
    """The start of the period that holds `moment` (periods are aligned on the epoch)."""
    moment = moment.astimezone(UTC)
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % period, tz=UTC)


def parse_time(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    text = str(value).replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def combine(stat: str, values: Sequence[float]) -> float:
    """One value for a coarser period from finer datapoints of the same statistic.

    Sums and counts add up; minimum and maximum carry over; an average of averages is a
    fair estimate when periods hold similar traffic. Percentiles cannot be recombined
    exactly: the worst (highest) finer percentile is kept, an upper bound, so a latency
    spike is never averaged away.
    """
    if stat in (Statistic.SUM, Statistic.SAMPLE_COUNT):
        return float(sum(values))
    if stat == Statistic.MINIMUM:
        return float(min(values))
    if stat == Statistic.AVERAGE:
        return float(sum(values)) / len(values)
    return float(max(values))


def rebucket(
    points: Iterable[tuple[datetime, float]], *, stat: str, period: int
) -> list[tuple[datetime, float]]:
    """Group datapoints into `period`-second buckets aligned on the epoch, oldest first."""
    buckets: dict[datetime, list[float]] = {}
    for moment, value in points:
        buckets.setdefault(align(moment, period), []).append(value)
    return [(moment, combine(stat, buckets[moment])) for moment in sorted(buckets)]


def merge(
    preferred: Iterable[tuple[datetime, float]], fallback: Iterable[tuple[datetime, float]]
) -> list[tuple[datetime, float]]:
    """Datapoints of both, the preferred one winning where both have a timestamp."""
    merged = dict(fallback)
    merged.update(dict(preferred))
    return sorted(merged.items())


class MetricSource(ABC):
    """Answers GetMetricData's question for one endpoint."""

    #: Whether the source can answer per target model (SageMaker cannot).
    per_model = False
    #: Whether the source keeps its own history (CloudWatch does; the data plane forgets,
    #: so the portal stores its statistics as they come).
    keeps_history = True
    kind = ""

    @abstractmethod
    def get_metric_data(
        self,
        *,
        endpoint: str,
        queries: Sequence[MetricQuery],
        start: datetime,
        end: datetime,
        period: int,
        variant: str = DEFAULT_VARIANT,
    ) -> list[MetricSeries]:
        """One series per query, in the queries' order; missing data is an empty series."""

    def target_models(self, *, endpoint: str) -> list[str]:
        """Target models the source has seen on the endpoint, where it can tell."""
        return []

    def loaded_models(self, *, endpoint: str) -> list[dict]:
        """Models loaded on the endpoint now, where the source can tell."""
        return []


@dataclass(frozen=True)
class MetricTarget:
    """Where an endpoint's metrics come from: a source, the name the source knows the
    endpoint by, and its variant. The endpoint's backend answers it
    (`EndpointBackend.metric_source`)."""

    endpoint: object
    source: MetricSource
    source_endpoint: str
    variant: str = DEFAULT_VARIANT

    @property
    def stores_history(self) -> bool:
        """Whether the portal stores this source's datapoints (it forgets them itself)."""
        return not self.source.keeps_history


class CloudWatchSource(MetricSource):
    """CloudWatch metrics of a SageMaker endpoint variant (namespaces AWS/SageMaker and
    /aws/sagemaker/Endpoints, dimensions EndpointName and VariantName)."""

    kind = "cloudwatch"
    per_model = False
    max_queries = 500  # GetMetricData's limit per call.

    def __init__(self, client):
        self.client = client

    def get_metric_data(self, *, endpoint, queries, start, end, period, variant=DEFAULT_VARIANT):
        series = [MetricSeries(query) for query in queries]
        requests = []
        by_id: dict[str, int] = {}
        for index, query in enumerate(queries):
            spec = METRICS.get(query.metric)
            if spec is None or query.target_model:
                # CloudWatch has no per-target-model dimension; an unknown metric has no data.
                continue
            by_id[query_id(index, query)] = index
            requests.append(
                {
                    "Id": query_id(index, query),
                    "MetricStat": {
                        "Metric": {
                            "Namespace": spec.namespace,
                            "MetricName": spec.name,
                            "Dimensions": [
                                {"Name": "EndpointName", "Value": endpoint},
                                {"Name": "VariantName", "Value": variant},
                            ],
                        },
                        "Period": period,
                        "Stat": query.stat,
                    },
                    "ReturnData": True,
                }
            )
        for offset in range(0, len(requests), self.max_queries):
            chunk = requests[offset : offset + self.max_queries]
            token = None
            while True:
                kwargs = {
                    "MetricDataQueries": chunk,
                    "StartTime": start,
                    "EndTime": end,
                    "ScanBy": "TimestampAscending",
                }
                if token:
                    kwargs["NextToken"] = token
                try:
                    answer = self.client.get_metric_data(**kwargs)
                except Exception as exc:  # botocore raises many kinds; all mean "no answer".
                    raise MetricSourceError(f"CloudWatch GetMetricData failed: {exc}") from exc
                for result in answer.get("MetricDataResults", []):
                    target = series[by_id[result["Id"]]]
                    for moment, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    ):
                        if value is None:
                            continue
                        target.timestamps.append(parse_time(moment))
                        target.values.append(float(value))
                token = answer.get("NextToken")
                if not token:
                    break
        for one in series:
            ordered = sorted(one.points())
            one.timestamps = [moment for moment, _ in ordered]
            one.values = [value for _, value in ordered]
        return series


class LocalDataPlaneSource(MetricSource):
    """The local data plane's in-memory one-minute statistics, read through its admin API
    (`POST /admin/metric-data`, GetMetricData's request and answer shape, with an extra
    `TargetModel` dimension for per-model series)."""

    kind = "local"
    per_model = True
    keeps_history = False

    def __init__(
        self, base_url: str | None = None, *, token: str | None = None, timeout: float = 5.0
    ):
        self.client = DataPlaneClient(base_url, token=token, timeout=timeout)

    def get_metric_data(self, *, endpoint, queries, start, end, period, variant=DEFAULT_VARIANT):
        series = [MetricSeries(query) for query in queries]
        if not queries:
            return series
        requests = []
        for index, query in enumerate(queries):
            spec = METRICS.get(query.metric)
            dimensions = [
                {"Name": "EndpointName", "Value": endpoint},
                {"Name": "VariantName", "Value": variant},
            ]
            if query.target_model:
                dimensions.append({"Name": "TargetModel", "Value": query.target_model})
            requests.append(
                {
                    "Id": query_id(index, query),
                    "MetricStat": {
                        "Metric": {
                            "Namespace": spec.namespace if spec else "AWS/SageMaker",
                            "MetricName": query.metric,
                            "Dimensions": dimensions,
                        },
                        "Period": period,
                        "Stat": query.stat,
                    },
                }
            )
        try:
            answer = self.client.metric_data(
                {
                    "MetricDataQueries": requests,
                    "StartTime": start.astimezone(UTC).isoformat(),
                    "EndTime": end.astimezone(UTC).isoformat(),
                    "ScanBy": "TimestampAscending",
                }
            )
        except DataPlaneError as exc:
            raise MetricSourceError(str(exc)) from exc
        by_id = {request["Id"]: index for index, request in enumerate(requests)}
        for result in answer.get("MetricDataResults", []):
            index = by_id.get(result.get("Id"))
            if index is None:
                continue
            points = sorted(
                (parse_time(moment), float(value))
                for moment, value in zip(
                    result.get("Timestamps", []), result.get("Values", []), strict=False
                )
                if value is not None
            )
            series[index].timestamps = [moment for moment, _ in points]
            series[index].values = [value for _, value in points]
        return series

    def loaded_models(self, *, endpoint: str) -> list[dict]:
        """Models loaded on the endpoint now: target model, size, last use, invocations."""
        try:
            return self.client.loaded_models(endpoint)
        except DataPlaneError as exc:
            raise MetricSourceError(str(exc)) from exc

    def target_models(self, *, endpoint: str) -> list[str]:
        return sorted(
            {
                str(item["target_model"])
                for item in self.loaded_models(endpoint=endpoint)
                if item.get("target_model")
            }
        )
