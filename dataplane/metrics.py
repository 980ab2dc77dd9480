"""In-memory endpoint metrics with SageMaker's names, units and meaning.

Each series (metric name + dimensions) keeps one-minute statistics for a configurable
window: Sum, SampleCount, Minimum, Maximum and a log-bucketed histogram from which
percentiles are read (about 1 % relative error, like CloudWatch's own percentile
estimates). Recording a sample is a few dictionary updates, never a sort, so the
invocation path stays cheap; percentiles are computed when someone reads them. An
invocation's dozen updates are batched (`MetricsRegistry.record_invocation`): a request
appends one tuple, and the batch is folded into its series when it is full or before
anything reads them.

Reads come in the shape of CloudWatch's GetMetricData
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html)
and as Prometheus text. Metric names and units follow SageMaker's endpoint metrics
(https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

INVOCATION_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
VARIANT_NAME = "AllTraffic"


@dataclass(frozen=True)
class MetricInfo:
    """What one SageMaker metric means here: its namespace, unit and Prometheus kind."""

    namespace: str
    unit: str
    kind: str  # "counter" (a count per sample), "latency" (a distribution), "gauge"
    help: str


METRICS: dict[str, MetricInfo] = {
    "Invocations": MetricInfo(
        INVOCATION_NAMESPACE, "None", "counter", "InvokeEndpoint requests sent to the endpoint."
    ),
    "Invocation4XXErrors": MetricInfo(
        INVOCATION_NAMESPACE, "None", "counter", "Requests answered with a 4xx status."
    ),
    "Invocation5XXErrors": MetricInfo(
        INVOCATION_NAMESPACE, "None", "counter", "Requests answered with a 5xx status."
    ),
    "ModelLatency": MetricInfo(
        INVOCATION_NAMESPACE, "Microseconds", "latency", "Time the model (Triton) took to answer."
    ),
    "OverheadLatency": MetricInfo(
        INVOCATION_NAMESPACE,
        "Microseconds",
        "latency",
        "Time added by the gateway on top of ModelLatency.",
    ),
    "ModelCacheHit": MetricInfo(
        INVOCATION_NAMESPACE,
        "None",
        "counter",
        "1 for a request whose model was already loaded, 0 otherwise; Average is the hit ratio.",
    ),
    "ModelLoadingWaitTime": MetricInfo(
        INVOCATION_NAMESPACE,
        "Microseconds",
        "latency",
        "Time a request waited for its target model to be downloaded and loaded.",
    ),
    "ModelDownloadingTime": MetricInfo(
        INVOCATION_NAMESPACE,
        "Microseconds",
        "latency",
        "Time to fetch, verify and unpack a model package.",
    ),
    "ModelLoadingTime": MetricInfo(
        INVOCATION_NAMESPACE, "Microseconds", "latency", "Time Triton took to load a model."
    ),
    "ModelUnloadingTime": MetricInfo(
        INVOCATION_NAMESPACE, "Microseconds", "latency", "Time Triton took to unload a model."
    ),
    # SageMaker publishes it with the instance metrics, not the invocation ones.
    "LoadedModelCount": MetricInfo(
        INSTANCE_NAMESPACE, "None", "gauge", "Models loaded for the endpoint."
    ),
    "CPUUtilization": MetricInfo(
        INSTANCE_NAMESPACE, "Percent", "gauge", "Sum of the utilization of each CPU core."
    ),
    "MemoryUtilization": MetricInfo(
        INSTANCE_NAMESPACE, "Percent", "gauge", "Share of host memory in use."
    ),
    "DiskUtilization": MetricInfo(
        INSTANCE_NAMESPACE, "Percent", "gauge", "Share of the state folder's disk in use."
    ),
    "GPUUtilization": MetricInfo(
        INSTANCE_NAMESPACE, "Percent", "gauge", "Sum of the utilization of each GPU."
    ),
    "GPUMemoryUtilization": MetricInfo(
        INSTANCE_NAMESPACE, "Percent", "gauge", "Sum of the share of memory used on each GPU."
    ),
}

# Histogram buckets grow by 2 %: a percentile read back is within about 1 % of the truth.
_GAMMA = 1.02
_INV_LOG_GAMMA = 1.0 / math.log(_GAMMA)
_ZERO_BUCKET = -(10**9)
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


def bucket(value: float) -> int:
    """The histogram bucket `value` is counted in."""
    if value == 1.0:
        return 0  # log(1) = 0: counts and hit flags skip the logarithm.
    if value > 0:
        return int(math.log(value) * _INV_LOG_GAMMA)
    return _ZERO_BUCKET


STATISTICS = ("Sum", "SampleCount", "Minimum", "Maximum", "Average")

Dimensions = tuple[tuple[str, str], ...]


class MinuteStats:
    """The statistics of one series over one minute."""

    __slots__ = ("sum", "count", "min", "max", "buckets")

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        self.sum += value
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        key = bucket(value)
        buckets = self.buckets
        buckets[key] = buckets.get(key, 0) + 1

    def merge(self, other: MinuteStats) -> None:
        self.sum += other.sum
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q < 100) read from the histogram, clamped to [min, max]."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                value = 0.0 if key == _ZERO_BUCKET else _GAMMA ** (key + 0.5)
                return min(max(value, self.min), self.max)
        return self.max

    def statistic(self, stat: str) -> float:
        if stat == "Sum":
            return self.sum
        if stat == "SampleCount":
            return float(self.count)
        if stat in ("Minimum", "Min"):
            return self.min
        if stat in ("Maximum", "Max"):
            return self.max
        if stat == "Average":
            return self.sum / self.count if self.count else math.nan
        match = _PERCENTILE.match(stat)
        if match:
            return self.percentile(float(match.group(1)))
        raise ValueError(f"unsupported statistic {stat!r}")


def is_valid_statistic(stat: str) -> bool:
    return stat in STATISTICS or stat in ("Min", "Max") or bool(_PERCENTILE.match(stat))


class Series:
    """One metric with one set of dimensions: its minutes, plus running totals for Prometheus."""

    __slots__ = ("name", "dimensions", "minutes", "total_sum", "total_count", "last")

    def __init__(self, name: str, dimensions: Dimensions) -> None:
        self.name = name
        self.dimensions = dimensions
        self.minutes: dict[int, MinuteStats] = {}
        self.total_sum = 0.0
        self.total_count = 0
        self.last = math.nan

    def add(self, value: float, minute: int) -> None:
        stats = self.minutes.get(minute)
        if stats is None:
            stats = self.minutes[minute] = MinuteStats()
        # MinuteStats.add inlined: this runs a dozen times per request.
        stats.sum += value
        stats.count += 1
        if value < stats.min:
            stats.min = value
        if value > stats.max:
            stats.max = value
        key = bucket(value)
        buckets = stats.buckets
        buckets[key] = buckets.get(key, 0) + 1
        self.total_sum += value
        self.total_count += 1
        self.last = value

    def add_flags(self, ones: int, count: int, last: float, minute: int) -> None:
        """`count` samples of 0 or 1, `ones` of them 1, as `count` calls of `add` would."""
        if count <= 0:
            return
        stats = self.minutes.get(minute)
        if stats is None:
            stats = self.minutes[minute] = MinuteStats()
        zeros = count - ones
        stats.sum += ones
        stats.count += count
        low = 0.0 if zeros else 1.0
        high = 1.0 if ones else 0.0
        if low < stats.min:
            stats.min = low
        if high > stats.max:
            stats.max = high
        buckets = stats.buckets
        if ones:
            buckets[0] = buckets.get(0, 0) + ones
        if zeros:
            buckets[_ZERO_BUCKET] = buckets.get(_ZERO_BUCKET, 0) + zeros
        self.total_sum += ones
        self.total_count += count
        self.last = last

    def add_batch(self, batch: ValueBatch, minute: int) -> None:
        """The values summarised in `batch`, as calls of `add` would file them."""
        stats = self.minutes.get(minute)
        if stats is None:
            stats = self.minutes[minute] = MinuteStats()
        stats.sum += batch.total
        stats.count += batch.count
        if batch.low < stats.min:
            stats.min = batch.low
        if batch.high > stats.max:
            stats.max = batch.high
        buckets = stats.buckets
        for key, count in batch.buckets.items():
            buckets[key] = buckets.get(key, 0) + count
        self.total_sum += batch.total
        self.total_count += batch.count
        self.last = batch.last


class ValueBatch:
    """Values summarised once (sum, extremes, histogram buckets) for every series they go
    to, as calls of `Series.add` would file them."""

    __slots__ = ("count", "total", "low", "high", "last", "buckets")

    def __init__(self, values: list[float]) -> None:
        self.count = len(values)
        self.total = sum(values)
        self.low = min(values)
        self.high = max(values)
        self.last = values[-1]
        buckets: dict[int, int] = {}
        for value in values:
            key = bucket(value)
            buckets[key] = buckets.get(key, 0) + 1
        self.buckets = buckets


# Invocations waiting to be folded into their series: (series, minute, status class, cache
# hit, model us, overhead us). At most this many wait; any read folds them first.
PendingInvocation = tuple[tuple["InvocationSeries", ...], int, int, "bool | None", float, float]
_FOLD_EVERY = 128


class InvocationSeries:
    """The per-request series of one set of dimensions, looked up once and kept."""

    __slots__ = ("invocations", "errors_4xx", "errors_5xx", "cache_hit", "latency", "overhead")

    def __init__(self, registry: MetricsRegistry, dimensions: Dimensions) -> None:
        self.invocations = registry.series("Invocations", dimensions)
        self.errors_4xx = registry.series("Invocation4XXErrors", dimensions)
        self.errors_5xx = registry.series("Invocation5XXErrors", dimensions)
        self.cache_hit = registry.series("ModelCacheHit", dimensions)
        self.latency = registry.series("ModelLatency", dimensions)
        self.overhead = registry.series("OverheadLatency", dimensions)


def endpoint_dimensions(endpoint: str) -> Dimensions:
    return (("EndpointName", endpoint), ("VariantName", VARIANT_NAME))


def model_dimensions(endpoint: str, target_model: str) -> Dimensions:
    # SageMaker reports per endpoint only; the target-model dimension is Berth's addition.
    return (
        ("EndpointName", endpoint),
        ("TargetModel", target_model),
        ("VariantName", VARIANT_NAME),
    )


def _normalize(dimensions: Iterable[tuple[str, str]]) -> Dimensions:
    return tuple(sorted((str(k), str(v)) for k, v in dimensions))


def _parse_time(value: Any) -> float:
    """Seconds since the epoch from an ISO 8601 string, a datetime or a number."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetricsError(ValueError):
    """A metric query that cannot be answered as asked."""


class MetricsRegistry:
    """All series of one gateway, pruned to `window_minutes` of one-minute statistics."""

    def __init__(self, window_minutes: int = 180) -> None:
        self.window_minutes = max(1, int(window_minutes))
        self._series: dict[tuple[str, Dimensions], Series] = {}
        # The metric names recorded under each set of dimensions, so a set can be dropped.
        self._names: dict[Dimensions, set[str]] = {}
        self._last_prune = 0
        # Invocations not yet in their series (see `record_invocation`).
        self._pending: list[PendingInvocation] = []

    def record_invocation(
        self,
        series: tuple[InvocationSeries, ...],
        minute: int,
        status_class: int,
        cache_hit: bool | None,
        model_us: float,
        overhead_us: float,
    ) -> None:
        """Count one invocation into each of `series`: its count, 4XX and 5XX flags, cache hit
        (when known) and latencies (when the model answered).

        An invocation updates a dozen statistics across two sets of dimensions; done per
        request that was the largest share of the gateway's own Python. Here a request
        appends one tuple, and a batch is folded in at once: counts and flags as sums, the
        latencies summarised once (sum, extremes, buckets) for all their series. Every read
        (`series`, `drop`, `prune`, GetMetricData, Prometheus) folds what is pending first,
        so no reader ever sees a stale figure, and at most `_FOLD_EVERY` invocations wait.
        """
        pending = self._pending
        pending.append((series, minute, status_class, cache_hit, model_us, overhead_us))
        if len(pending) >= _FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Fold the pending invocations into their series."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        groups: dict[tuple[tuple[InvocationSeries, ...], int], list[PendingInvocation]] = {}
        for entry in pending:
            key = (entry[0], entry[1])
            group = groups.get(key)
            if group is None:
                groups[key] = [entry]
            else:
                group.append(entry)
        for (targets, minute), entries in groups.items():
            count = len(entries)
            errors_4xx = errors_5xx = hits = lookups = 0
            latencies: list[float] = []
            overheads: list[float] = []
            last_hit = 0.0
            for _, _, status_class, cache_hit, model_us, overhead_us in entries:
                if status_class == 4:
                    errors_4xx += 1
                elif status_class == 5:
                    errors_5xx += 1
                if cache_hit is not None:
                    lookups += 1
                    if cache_hit:
                        hits += 1
                        last_hit = 1.0
                    else:
                        last_hit = 0.0
                if model_us:
                    latencies.append(model_us)
                    overheads.append(overhead_us)
            last_class = entries[-1][2]
            latency = ValueBatch(latencies) if latencies else None
            overhead = ValueBatch(overheads) if overheads else None
            for each in targets:
                each.invocations.add_flags(count, count, 1.0, minute)
                each.errors_4xx.add_flags(errors_4xx, count, float(last_class == 4), minute)
                each.errors_5xx.add_flags(errors_5xx, count, float(last_class == 5), minute)
                each.cache_hit.add_flags(hits, lookups, last_hit, minute)
                if latency is not None and overhead is not None:
                    each.latency.add_batch(latency, minute)
                    each.overhead.add_batch(overhead, minute)

    def series(self, name: str, dimensions: Dimensions) -> Series:
        """The series for `name` and `dimensions` (created on first use); keep it to record fast.

        Series live until `drop` removes them: callers create them only for dimensions they
        bound (an endpoint, a package that was staged), never for names clients made up.
        """
        if self._pending:
            self.fold()
        key = (name, _normalize(dimensions))
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(name, key[1])
            self._names.setdefault(key[1], set()).add(name)
        return found

    def drop(self, dimensions: Dimensions) -> int:
        """Forget every series recorded under `dimensions`; how many there were."""
        self.fold()
        dims = _normalize(dimensions)
        names = self._names.pop(dims, set())
        for name in names:
            self._series.pop((name, dims), None)
        return len(names)

    def __len__(self) -> int:
        return len(self._series)

    def maybe_prune(self, minute: int) -> None:
        if minute != self._last_prune:
            self.prune(minute)

    def record(
        self, name: str, dimensions: Dimensions, value: float, now: float | None = None
    ) -> None:
        minute = int((time.time() if now is None else now) // 60)
        self.series(name, dimensions).add(value, minute)
        if minute != self._last_prune:
            self.prune(minute)

    def prune(self, minute: int | None = None) -> None:
        self.fold()
        minute = int(time.time() // 60) if minute is None else minute
        self._last_prune = minute
        oldest = minute - self.window_minutes
        for series in self._series.values():
            stale = [m for m in series.minutes if m < oldest]
            for m in stale:
                del series.minutes[m]

    # -- GetMetricData --------------------------------------------------------------------

    def statistic_values(
        self,
        name: str,
        dimensions: Iterable[tuple[str, str]],
        stat: str,
        start: float,
        end: float,
        period: int = 60,
    ) -> tuple[list[float], list[float]]:
        """(timestamps, values) of `stat` per `period` seconds in [start, end), oldest first."""
        if period < 60 or period % 60:
            raise MetricsError("Period must be a multiple of 60 seconds")
        if not is_valid_statistic(stat):
            raise MetricsError(f"unsupported statistic {stat!r}")
        self.fold()
        series = self._series.get((name, _normalize(dimensions)))
        if series is None:
            return [], []
        periods: dict[int, MinuteStats] = {}
        for minute, stats in series.minutes.items():
            moment = minute * 60
            if moment < start or moment >= end:
                continue
            slot = int(moment // period) * period
            merged = periods.get(slot)
            if merged is None:
                merged = periods[slot] = MinuteStats()
            merged.merge(stats)
        timestamps: list[float] = []
        values: list[float] = []
        for slot in sorted(periods):
            value = periods[slot].statistic(stat)
            if math.isnan(value):
                continue
            timestamps.append(float(slot))
            values.append(value)
        return timestamps, values

    def get_metric_data(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a GetMetricData request body with MetricDataResults."""
        queries = body.get("MetricDataQueries")
        if not isinstance(queries, list) or not queries:
            raise MetricsError("MetricDataQueries must be a non-empty list")
        now = time.time()
        try:
            end = _parse_time(body.get("EndTime", now))
            start = _parse_time(body.get("StartTime", end - 3 * 3600))
        except ValueError as exc:
            raise MetricsError(str(exc)) from exc
        descending = body.get("ScanBy", "TimestampDescending") != "TimestampAscending"
        results = []
        for query in queries:
            if not isinstance(query, Mapping):
                raise MetricsError("each MetricDataQuery must be an object")
            query_id = str(query.get("Id", ""))
            stat_block = query.get("MetricStat")
            if not isinstance(stat_block, Mapping):
                raise MetricsError(f"query {query_id!r}: only MetricStat queries are supported")
            metric = stat_block.get("Metric") or {}
            name = str(metric.get("MetricName", ""))
            namespace = metric.get("Namespace")
            dims = [(d.get("Name", ""), d.get("Value", "")) for d in metric.get("Dimensions", [])]
            try:
                period = int(stat_block.get("Period", 60))
            except (TypeError, ValueError) as exc:
                raise MetricsError(f"query {query_id!r}: Period must be an integer") from exc
            stat = str(stat_block.get("Stat", "Average"))
            info = METRICS.get(name)
            if info is not None and namespace not in (None, info.namespace):
                timestamps: list[Any] = []
                values: list[float] = []
            else:
                timestamps, values = self.statistic_values(name, dims, stat, start, end, period)
            if descending:
                timestamps.reverse()
                values.reverse()
            if query.get("ReturnData", True) is False:
                continue
            results.append(
                {
                    "Id": query_id,
                    "Label": str(query.get("Label") or name),
                    "Timestamps": [_iso(t) for t in timestamps],
                    "Values": values,
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results, "Messages": []}

    # -- Prometheus -----------------------------------------------------------------------

    def prometheus_text(self, quantile_minutes: int = 5) -> str:
        """Prometheus exposition text: cumulative counts and sums, recent quantiles, gauges."""
        self.fold()
        now_minute = int(time.time() // 60)
        by_name: dict[str, list[Series]] = {}
        for series in self._series.values():
            by_name.setdefault(series.name, []).append(series)
        lines: list[str] = []
        for name in sorted(by_name):
            info = METRICS.get(name, MetricInfo("", "None", "gauge", name))
            base = "berth_" + _snake(name)
            if info.unit == "Microseconds":
                base += "_microseconds"
            elif info.unit == "Percent":
                base += "_percent"
            if info.kind == "counter":
                metric = base + "_total"
                lines.append(f"# HELP {metric} {info.help}")
                lines.append(f"# TYPE {metric} counter")
                for series in by_name[name]:
                    lines.append(f"{metric}{_labels(series.dimensions)} {_num(series.total_sum)}")
            elif info.kind == "latency":
                lines.append(f"# HELP {base} {info.help} Quantiles over the last minutes.")
                lines.append(f"# TYPE {base} summary")
                for series in by_name[name]:
                    recent = MinuteStats()
                    for minute, stats in series.minutes.items():
                        if minute > now_minute - quantile_minutes:
                            recent.merge(stats)
                    for q in (0.5, 0.9, 0.99):
                        if recent.count:
                            value = recent.percentile(q * 100)
                            labels = _labels(series.dimensions, quantile=str(q))
                            lines.append(f"{base}{labels} {_num(value)}")
                    labels = _labels(series.dimensions)
                    lines.append(f"{base}_sum{labels} {_num(series.total_sum)}")
                    lines.append(f"{base}_count{labels} {series.total_count}")
            else:
                lines.append(f"# HELP {base} {info.help}")
                lines.append(f"# TYPE {base} gauge")
                for series in by_name[name]:
                    lines.append(f"{base}{_labels(series.dimensions)} {_num(series.last)}")
        return "\n".join(lines) + "\n"


_LABEL_NAMES = {"EndpointName": "endpoint", "VariantName": "variant", "TargetModel": "target_model"}


def _snake(name: str) -> str:
    name = name.replace("4XX", "_4xx").replace("5XX", "_5xx").replace("CPU", "Cpu")
    name = name.replace("GPU", "Gpu")
    return re.sub(r"(?<!^)(?<!_)([A-Z])", r"_\1", name).lower()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(dimensions: Dimensions, **extra: str) -> str:
    pairs = [(_LABEL_NAMES.get(k, _snake(k)), v) for k, v in dimensions]
    pairs.extend(extra.items())
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
