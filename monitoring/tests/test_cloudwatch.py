from datetime import UTC, datetime, timedelta

import pytest

from monitoring.sources import CloudWatchSource, MetricQuery, align
from portal import aws as portal_aws

pytestmark = pytest.mark.usefixtures("aws")

ENDPOINT = "berth-prod"


def put(client, namespace, metric, value, moment, *, endpoint=ENDPOINT, variant="AllTraffic"):
    client.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [
                    {"Name": "EndpointName", "Value": endpoint},
                    {"Name": "VariantName", "Value": variant},
                ],
                "Timestamp": moment,
                "Value": value,
            }
        ],
    )


@pytest.fixture
def client():
    return portal_aws.client("cloudwatch")


@pytest.fixture
def start():
    return align(datetime.now(UTC) - timedelta(minutes=30), 60)


def test_sums_and_averages_per_minute_for_the_endpoint_variant(client, start):
    for offset, values in [(1, [3, 4]), (2, [5])]:
        for value in values:
            put(
                client,
                "AWS/SageMaker",
                "Invocations",
                value,
                start + timedelta(minutes=offset, seconds=5),
            )
    put(client, "AWS/SageMaker", "ModelCacheHit", 1, start + timedelta(minutes=1, seconds=1))
    put(client, "AWS/SageMaker", "ModelCacheHit", 0, start + timedelta(minutes=1, seconds=2))
    put(client, "/aws/sagemaker/Endpoints", "GPUUtilization", 42.5, start + timedelta(minutes=2))
    # Another endpoint's data must not leak in.
    put(
        client, "AWS/SageMaker", "Invocations", 1000, start + timedelta(minutes=1), endpoint="other"
    )

    source = CloudWatchSource(client)
    invocations, cache_hit, gpu = source.get_metric_data(
        endpoint=ENDPOINT,
        queries=[
            MetricQuery("Invocations", "Sum"),
            MetricQuery("ModelCacheHit", "Average"),
            MetricQuery("GPUUtilization", "Average"),
        ],
        start=start,
        end=start + timedelta(minutes=10),
        period=60,
    )
    assert invocations.points() == [
        (start + timedelta(minutes=1), 7.0),
        (start + timedelta(minutes=2), 5.0),
    ]
    assert cache_hit.values == [0.5]
    assert gpu.points() == [(start + timedelta(minutes=2), 42.5)]


def test_a_coarser_period_aggregates_in_cloudwatch(client, start):
    for offset in range(6):
        put(
            client,
            "AWS/SageMaker",
            "ModelLatency",
            1000.0 * (offset + 1),
            start + timedelta(minutes=offset),
        )
    (latency,) = CloudWatchSource(client).get_metric_data(
        endpoint=ENDPOINT,
        queries=[MetricQuery("ModelLatency", "Maximum")],
        start=start,
        end=start + timedelta(minutes=6),
        period=360,
    )
    assert latency.values == [6000.0]


def test_other_variant_and_per_model_queries_have_no_data(client, start):
    put(client, "AWS/SageMaker", "Invocations", 9, start + timedelta(minutes=1), variant="Canary")
    source = CloudWatchSource(client)
    all_traffic, per_model = source.get_metric_data(
        endpoint=ENDPOINT,
        queries=[
            MetricQuery("Invocations", "Sum"),
            MetricQuery("Invocations", "Sum", target_model="demo_ensemble_1.tar.gz"),
        ],
        start=start,
        end=start + timedelta(minutes=5),
        period=60,
    )
    assert all_traffic.values == [] and per_model.values == []
    (canary,) = source.get_metric_data(
        endpoint=ENDPOINT,
        queries=[MetricQuery("Invocations", "Sum")],
        start=start,
        end=start + timedelta(minutes=5),
        period=60,
        variant="Canary",
    )
    assert canary.values == [9.0]
    assert source.per_model is False
