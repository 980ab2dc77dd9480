"""What the dashboards show: SageMaker's multi-model endpoint metrics, the windows a page
offers, and the charts built from them.

Names, namespaces and units follow SageMaker's own documentation:
https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html
https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoint-cloudwatch-metrics.html
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db import models

INVOCATION_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
DEFAULT_VARIANT = "AllTraffic"


class Statistic(models.TextChoices):
    SUM = "Sum", "Sum"
    SAMPLE_COUNT = "SampleCount", "Sample count"
    AVERAGE = "Average", "Average"
    MINIMUM = "Minimum", "Minimum"
    MAXIMUM = "Maximum", "Maximum"
    P50 = "p50", "p50"
    P90 = "p90", "p90"
    P99 = "p99", "p99"


class Window(models.TextChoices):
    HOUR = "1h", "1 hour"
    SIX_HOURS = "6h", "6 hours"
    DAY = "24h", "24 hours"
    WEEK = "7d", "7 days"


WINDOW_SPANS: dict[str, timedelta] = {
    Window.HOUR: timedelta(hours=1),
    Window.SIX_HOURS: timedelta(hours=6),
    Window.DAY: timedelta(hours=24),
    Window.WEEK: timedelta(days=7),
}
# Points per chart stay between 60 and 360; CloudWatch keeps one-minute data for 15 days.
WINDOW_PERIODS: dict[str, int] = {
    Window.HOUR: 60,
    Window.SIX_HOURS: 60,
    Window.DAY: 300,
    Window.WEEK: 3600,
}


@dataclass(frozen=True)
class MetricSpec:
    """One metric as SageMaker publishes it."""

    name: str
    namespace: str
    unit: str
    # SageMaker publishes per endpoint and variant only; the local data plane also per target model.
    per_model: bool = True


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec("Invocations", INVOCATION_NAMESPACE, "None"),
        MetricSpec("Invocation4XXErrors", INVOCATION_NAMESPACE, "None"),
        MetricSpec("Invocation5XXErrors", INVOCATION_NAMESPACE, "None"),
        MetricSpec("ModelLatency", INVOCATION_NAMESPACE, "Microseconds"),
        MetricSpec("OverheadLatency", INVOCATION_NAMESPACE, "Microseconds"),
        MetricSpec("ModelCacheHit", INVOCATION_NAMESPACE, "None"),
        MetricSpec("ModelLoadingWaitTime", INVOCATION_NAMESPACE, "Microseconds"),
        MetricSpec("ModelDownloadingTime", INVOCATION_NAMESPACE, "Microseconds"),
        MetricSpec("ModelLoadingTime", INVOCATION_NAMESPACE, "Microseconds"),
        MetricSpec("ModelUnloadingTime", INVOCATION_NAMESPACE, "Microseconds"),
        # Published per instance with the instance metrics, not with the invocation ones.
        # https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoint-cloudwatch-metrics.html
        MetricSpec("LoadedModelCount", INSTANCE_NAMESPACE, "None", per_model=False),
        # CPU and GPU utilization are sums over the instance's cores and GPUs (up to 100% ×
        # cores or GPUs); memory and disk are shares of the whole.
        MetricSpec("CPUUtilization", INSTANCE_NAMESPACE, "Percent", per_model=False),
        MetricSpec("MemoryUtilization", INSTANCE_NAMESPACE, "Percent", per_model=False),
        MetricSpec("GPUUtilization", INSTANCE_NAMESPACE, "Percent", per_model=False),
        MetricSpec("GPUMemoryUtilization", INSTANCE_NAMESPACE, "Percent", per_model=False),
        # A multi-model endpoint caches its target models on the instance's disk.
        MetricSpec("DiskUtilization", INSTANCE_NAMESPACE, "Percent", per_model=False),
    ]
}


@dataclass(frozen=True)
class ChartLine:
    metric: str
    stat: str
    label: str

    @property
    def query_id(self) -> str:
        return f"{self.metric}_{self.stat}"


@dataclass(frozen=True)
class ChartSpec:
    """One dashboard chart: its lines and how to show their values."""

    key: str
    title: str
    lines: tuple[ChartLine, ...]
    y_title: str
    # Microseconds are shown as milliseconds, ratios as percentages.
    scale: float = 1.0
    per_model: bool = True
    # Metrics drawn against a right-hand axis of their own (a few errors beside hundreds of
    # requests would otherwise lie flat on the floor).
    secondary_metrics: tuple[str, ...] = ()
    secondary_title: str = ""


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "invocations",
        "Invocations and errors",
        (
            ChartLine("Invocations", Statistic.SUM, "Invocations"),
            ChartLine("Invocation4XXErrors", Statistic.SUM, "4XX errors"),
            ChartLine("Invocation5XXErrors", Statistic.SUM, "5XX errors"),
        ),
        "requests per period",
        secondary_metrics=("Invocation4XXErrors", "Invocation5XXErrors"),
        secondary_title="errors per period",
    ),
    ChartSpec(
        "cache-hit",
        "Model cache-hit ratio",
        # The Average of ModelCacheHit is the share of requests whose model was already loaded.
        (ChartLine("ModelCacheHit", Statistic.AVERAGE, "cache hits"),),
        "% of requests",
        scale=100.0,
    ),
    ChartSpec(
        "latency",
        "Model and overhead latency",
        (
            ChartLine("ModelLatency", Statistic.P50, "ModelLatency p50"),
            ChartLine("ModelLatency", Statistic.P99, "ModelLatency p99"),
            ChartLine("OverheadLatency", Statistic.P50, "OverheadLatency p50"),
            ChartLine("OverheadLatency", Statistic.P99, "OverheadLatency p99"),
        ),
        "ms",
        scale=0.001,
    ),
    ChartSpec(
        "loading",
        "Model loading (average per load)",
        (
            ChartLine("ModelLoadingWaitTime", Statistic.AVERAGE, "wait"),
            ChartLine("ModelDownloadingTime", Statistic.AVERAGE, "download"),
            ChartLine("ModelLoadingTime", Statistic.AVERAGE, "load"),
            ChartLine("ModelUnloadingTime", Statistic.AVERAGE, "unload"),
        ),
        "ms",
        scale=0.001,
    ),
    ChartSpec(
        "loaded-models",
        "Loaded models",
        (ChartLine("LoadedModelCount", Statistic.MAXIMUM, "loaded models"),),
        "models",
        per_model=False,
    ),
    ChartSpec(
        "utilization",
        "CPU, memory, GPU and disk utilization (CPU and GPU summed over cores and GPUs)",
        (
            ChartLine("CPUUtilization", Statistic.AVERAGE, "CPU (sum over cores)"),
            ChartLine("MemoryUtilization", Statistic.AVERAGE, "memory"),
            ChartLine("GPUUtilization", Statistic.AVERAGE, "GPU (sum over GPUs)"),
            ChartLine("GPUMemoryUtilization", Statistic.AVERAGE, "GPU memory"),
            ChartLine("DiskUtilization", Statistic.AVERAGE, "disk (model cache)"),
        ),
        "% (CPU and GPU: 100% per core or GPU)",
        per_model=False,
    ),
)

# What the metrics pull stores for each metric: enough to redraw every chart from history.
PULLED_STATS: dict[str, tuple[str, ...]] = {}
for _chart in CHARTS:
    for _line in _chart.lines:
        PULLED_STATS.setdefault(_line.metric, ())
        if _line.stat not in PULLED_STATS[_line.metric]:
            PULLED_STATS[_line.metric] += (_line.stat,)
