"""Metrics: one-minute statistics, GetMetricData's shape, Prometheus text."""

from __future__ import annotations

import math
import random
import re
import time

import numpy as np
import pytest

from dataplane.metrics import (
    _FOLD_EVERY,
    InvocationSeries,
    MetricsError,
    MetricsRegistry,
    endpoint_dimensions,
    model_dimensions,
)
from dataplane.tests.gateway_fixtures import (
    GatewayProcess,
    infer_body,
    python_package,
    shared_gateway,
)

EP = endpoint_dimensions("prod")
NOW = 1_800_000_000.0  # A fixed instant on a minute boundary.


def query(name: str, stat: str, dims=EP, period: int = 60, **extra):
    return {
        "MetricDataQueries": [
            {
                "Id": "q1",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
        ],
        "StartTime": NOW - 600,
        "EndTime": NOW + 600,
        **extra,
    }


def test_statistics_of_a_minute_match_the_samples() -> None:
    registry = MetricsRegistry()
    rng = random.Random(7)
    samples = [rng.lognormvariate(7, 0.6) for _ in range(5000)]
    for value in samples:
        registry.record("ModelLatency", EP, value, NOW + 1)
    arr = np.array(samples)

    def value(stat: str) -> float:
        (result,) = registry.get_metric_data(query("ModelLatency", stat))["MetricDataResults"]
        assert result["StatusCode"] == "Complete"
        assert result["Timestamps"] == ["2027-01-15T08:00:00Z"]
        return result["Values"][0]

    assert value("SampleCount") == 5000
    assert value("Sum") == pytest.approx(arr.sum())
    assert value("Average") == pytest.approx(arr.mean())
    assert value("Minimum") == arr.min() and value("Maximum") == arr.max()
    for q in (50, 90, 99):
        # Log buckets 2 % wide: the percentile read back is within about 1 % of the truth.
        assert value(f"p{q}") == pytest.approx(np.percentile(arr, q), rel=0.025)


def test_periods_merge_minutes_and_scan_order_is_honoured() -> None:
    registry = MetricsRegistry()
    for minute, count in enumerate((3, 4, 5)):
        for _ in range(count):
            registry.record("Invocations", EP, 1.0, NOW + 60 * minute + 5)
    results = registry.get_metric_data(query("Invocations", "Sum"))["MetricDataResults"][0]
    assert results["Values"] == [5.0, 4.0, 3.0]  # CloudWatch's default: newest first
    ascending = registry.get_metric_data(query("Invocations", "Sum", ScanBy="TimestampAscending"))[
        "MetricDataResults"
    ][0]
    assert ascending["Values"] == [3.0, 4.0, 5.0]
    merged = registry.get_metric_data(query("Invocations", "Sum", period=180))
    assert sum(merged["MetricDataResults"][0]["Values"]) == 12.0
    with pytest.raises(MetricsError):
        registry.get_metric_data(query("Invocations", "Sum", period=90))
    with pytest.raises(MetricsError):
        registry.get_metric_data(query("Invocations", "p100.5x"))


def test_dimensions_must_match_exactly_and_namespaces_are_checked() -> None:
    registry = MetricsRegistry()
    registry.record("Invocations", EP, 1.0, NOW)
    registry.record("Invocations", model_dimensions("prod", "a_1.tar.gz"), 1.0, NOW)
    registry.record("Invocations", model_dimensions("prod", "a_1.tar.gz"), 1.0, NOW)
    per_model = registry.get_metric_data(
        query("Invocations", "Sum", dims=model_dimensions("prod", "a_1.tar.gz"))
    )
    assert per_model["MetricDataResults"][0]["Values"] == [2.0]
    assert registry.get_metric_data(query("Invocations", "Sum"))["MetricDataResults"][0][
        "Values"
    ] == [1.0]
    wrong_namespace = query("Invocations", "Sum")
    wrong_namespace["MetricDataQueries"][0]["MetricStat"]["Metric"]["Namespace"] = "AWS/EC2"
    assert registry.get_metric_data(wrong_namespace)["MetricDataResults"][0]["Values"] == []


def test_minutes_older_than_the_window_are_dropped() -> None:
    registry = MetricsRegistry(window_minutes=2)
    registry.record("Invocations", EP, 1.0, NOW - 600)
    registry.record("Invocations", EP, 1.0, NOW)
    result = registry.get_metric_data(query("Invocations", "SampleCount"))["MetricDataResults"][0]
    assert result["Values"] == [1.0]


def test_prometheus_text_has_counters_summaries_and_gauges() -> None:
    registry = MetricsRegistry()
    now = time.time()
    dims = model_dimensions("prod", "a_1.tar.gz")
    for latency in (100.0, 200.0, 300.0):
        registry.record("Invocations", dims, 1.0, now)
        registry.record("ModelLatency", dims, latency, now)
    registry.record("LoadedModelCount", EP, 3.0, now)
    text = registry.prometheus_text()
    labels = 'endpoint="prod",target_model="a_1.tar.gz",variant="AllTraffic"'
    assert "# TYPE berth_invocations_total counter" in text
    assert f"berth_invocations_total{{{labels}}} 3" in text
    assert "# TYPE berth_model_latency_microseconds summary" in text
    assert f"berth_model_latency_microseconds_sum{{{labels}}} 600" in text
    assert f"berth_model_latency_microseconds_count{{{labels}}} 3" in text
    assert re.search(r'berth_model_latency_microseconds\{.*quantile="0.5"\} ', text)
    assert 'berth_loaded_model_count{endpoint="prod",variant="AllTraffic"} 3' in text


@pytest.mark.triton
def test_gateway_reports_invocations_latencies_and_utilization() -> None:
    gw: GatewayProcess = shared_gateway()
    package = python_package(gw.store("main"), "measured", 1)
    for _ in range(5):
        assert gw.invoke("main", package, infer_body([1.0, 2.0, 3.0, 4.0]))[0] == 200
    assert gw.invoke("main", package, infer_body([1.0], name="INPUT"))[0] == 424

    assert gw.metric("main", "Invocations", "Sum", package) == 6
    assert gw.metric("main", "Invocation4XXErrors", "Sum", package) == 1
    assert gw.metric("main", "Invocation5XXErrors", "Sum", package) == 0
    assert gw.metric("main", "ModelCacheHit", "Average", package) == pytest.approx(5 / 6)
    p50 = gw.metric("main", "ModelLatency", "p50", package)
    p99 = gw.metric("main", "ModelLatency", "p99", package)
    assert 0 < p50 <= p99 < 5_000_000  # microseconds
    overhead = gw.metric("main", "OverheadLatency", "Maximum", package)
    assert overhead is not None and overhead > 0
    assert gw.metric("main", "ModelLoadingTime", "SampleCount", package) == 1
    assert gw.metric("main", "ModelDownloadingTime", "SampleCount", package) == 1

    # The portal's per-endpoint query route answers the same numbers.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    status, data = gw.get(
        f"/admin/endpoints/main/metrics?metric=Invocations&stat=Sum&period=60"
        f"&start={start}&target_model={package}"
    )
    assert status == 200
    (result,) = data["MetricDataResults"]
    assert sum(result["Values"]) == 6 and len(result["Timestamps"]) == len(result["Values"])

    # Instance metrics live in SageMaker's other namespace, sampled by the gateway.
    now = time.time()
    status, data = gw.send_json(
        "POST",
        "/admin/metric-data",
        {
            "MetricDataQueries": [
                {
                    "Id": "cpu",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "/aws/sagemaker/Endpoints",
                            "MetricName": "MemoryUtilization",
                            "Dimensions": [
                                {"Name": "EndpointName", "Value": "main"},
                                {"Name": "VariantName", "Value": "AllTraffic"},
                            ],
                        },
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
            ],
            "StartTime": now - 3600,
            "EndTime": now + 60,
        },
    )
    assert status == 200
    values = data["MetricDataResults"][0]["Values"]
    assert values and all(0 < v <= 100 for v in values)

    status, _, body = gw.request("GET", "/metrics")
    text = body.decode()
    assert status == 200
    labels = f'endpoint="main",target_model="{package}",variant="AllTraffic"'
    assert f"berth_invocations_total{{{labels}}} 6" in text
    assert "berth_cpu_utilization_percent" in text
    assert "berth_disk_utilization_percent" in text
    assert not math.isnan(
        float(re.search(r"berth_memory_utilization_percent\{[^}]*\} (\S+)", text).group(1))
    )


def test_dropping_a_models_dimensions_forgets_all_its_series() -> None:
    registry = MetricsRegistry()
    dims = model_dimensions("prod", "a_1.tar.gz")
    for name in ("Invocations", "ModelLatency", "ModelLoadingTime"):
        registry.record(name, dims, 1.0, NOW)
    registry.record("Invocations", EP, 1.0, NOW)
    assert registry.drop(dims) == 3
    assert len(registry) == 1
    assert "a_1.tar.gz" not in registry.prometheus_text()


def test_only_staged_packages_get_series_and_at_most_so_many(tmp_path) -> None:
    from dataplane.gateway import Endpoint

    registry = MetricsRegistry()
    endpoint = Endpoint("prod", str(tmp_path), 10**9, max_model_series=3)
    # Names clients made up (no such package) count at the endpoint only.
    for i in range(2000):
        for series in endpoint.invocation_series(registry, f"missing{i}_1.tar.gz"):
            registry.record_invocation((series,), int(NOW // 60), 4, None, 0.0, 0.0)
    assert len(registry) == 6  # One InvocationSeries: the endpoint's.
    assert "missing" not in registry.prometheus_text()

    for i in range(5):
        endpoint.admit_model(registry, f"real{i}_1.tar.gz")
        for series in endpoint.invocation_series(registry, f"real{i}_1.tar.gz"):
            registry.record_invocation((series,), int(NOW // 60), 2, True, 100.0, 10.0)
        registry.record("ModelLoadingTime", endpoint.model_dims(f"real{i}_1.tar.gz"), 5.0, NOW)
    text = registry.prometheus_text()
    # The two least recently used packages lost their series; the three others kept theirs.
    assert "real0_1" not in text and "real1_1" not in text
    assert all(f"real{i}_1" in text for i in (2, 3, 4))
    assert len(registry) == 6 + 3 * 7
    endpoint_invocations = registry.series("Invocations", EP)
    assert endpoint_invocations.total_sum == 2005


def _snapshot(registry: MetricsRegistry) -> dict:
    return {
        key: (
            round(series.total_sum, 6),
            series.total_count,
            {
                minute: (round(st.sum, 6), st.count, st.min, st.max, dict(st.buckets))
                for minute, st in series.minutes.items()
            },
        )
        for key, series in registry._series.items()
    }


def _record_one(
    series: InvocationSeries,
    minute: int,
    status_class: int,
    cache_hit: bool | None,
    model_us: float,
    overhead_us: float,
) -> None:
    """One invocation added statistic by statistic: what batching must add up to."""
    series.invocations.add(1.0, minute)
    series.errors_4xx.add(1.0 if status_class == 4 else 0.0, minute)
    series.errors_5xx.add(1.0 if status_class == 5 else 0.0, minute)
    if cache_hit is not None:
        series.cache_hit.add(1.0 if cache_hit else 0.0, minute)
    if model_us:
        series.latency.add(model_us, minute)
        series.overhead.add(overhead_us, minute)


def test_batched_invocations_fold_into_the_same_statistics_as_one_by_one() -> None:
    one_by_one, batched = MetricsRegistry(), MetricsRegistry()
    model = model_dimensions("prod", "m_1.tar.gz")
    direct = (InvocationSeries(one_by_one, EP), InvocationSeries(one_by_one, model))
    folded = (InvocationSeries(batched, EP), InvocationSeries(batched, model))
    rng = random.Random(7)
    for i in range(3 * _FOLD_EVERY + 17):
        sample = (
            int(NOW // 60) + i // 150,  # Several minutes, folded in one batch too.
            rng.choice([2, 2, 4, 5]),
            rng.choice([True, False, None]),
            rng.choice([0.0, 1.0, rng.uniform(0.5, 50_000.0)]),
            rng.uniform(0.0, 300.0),
        )
        # Some requests name no staged package: they count at the endpoint only.
        targets = slice(None) if i % 3 else slice(0, 1)
        for each in direct[targets]:
            _record_one(each, *sample)
        batched.record_invocation(folded[targets], *sample)
    batched.fold()  # What every read does first.
    assert _snapshot(batched) == _snapshot(one_by_one)


def test_every_read_sees_invocations_not_yet_folded() -> None:
    registry = MetricsRegistry()
    series = (InvocationSeries(registry, EP),)
    minute = int(NOW // 60)
    for status_class in (2, 4, 5):
        registry.record_invocation(series, minute, status_class, True, 250.0, 20.0)
    assert len(registry._pending) == 3  # Below the batch size: still pending.
    # Prometheus text, GetMetricData and a series handed out all count them.
    assert 'berth_invocations_total{endpoint="prod",variant="AllTraffic"} 3' in (
        registry.prometheus_text()
    )
    registry.record_invocation(series, minute, 2, False, 300.0, 30.0)
    values = registry.statistic_values("Invocations", EP, "Sum", NOW - 60, NOW + 60)[1]
    assert values == [4.0]
    registry.record_invocation(series, minute, 2, None, 0.0, 0.0)
    assert registry.series("Invocation4XXErrors", EP).total_sum == 1
    assert registry.series("Invocations", EP).total_count == 5
    assert registry.series("ModelCacheHit", EP).total_count == 4
    assert registry.series("ModelLatency", EP).total_count == 4
    assert not registry._pending


def test_at_most_a_batch_of_invocations_waits() -> None:
    registry = MetricsRegistry()
    series = (InvocationSeries(registry, EP),)
    for i in range(5 * _FOLD_EVERY):
        registry.record_invocation(series, int(NOW // 60), 2, True, 100.0 + i, 10.0)
        assert len(registry._pending) < _FOLD_EVERY
    assert registry.series("Invocations", EP).total_count == 5 * _FOLD_EVERY
