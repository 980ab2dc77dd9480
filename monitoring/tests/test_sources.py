"""Where CloudWatch reads each SageMaker metric: the namespace SageMaker publishes it in
(a metric read from the wrong one is an empty chart on AWS, whatever moto accepts), and the
instance metrics a multi-model endpoint needs charted."""

from datetime import UTC, datetime, timedelta

from botocore.stub import Stubber

from monitoring.choices import CHARTS, INSTANCE_NAMESPACE, INVOCATION_NAMESPACE, METRICS
from monitoring.sources import CloudWatchSource, MetricQuery, align, query_id
from portal import aws as portal_aws

ENDPOINT = "berth-prod"


def test_instance_metrics_live_in_the_endpoints_namespace():
    # https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoint-cloudwatch-metrics.html
    for name in ("LoadedModelCount", "CPUUtilization", "GPUUtilization", "DiskUtilization"):
        assert METRICS[name].namespace == INSTANCE_NAMESPACE == "/aws/sagemaker/Endpoints"
    for name in ("Invocations", "ModelCacheHit", "ModelLoadingTime"):
        assert METRICS[name].namespace == INVOCATION_NAMESPACE == "AWS/SageMaker"


def test_the_utilization_chart_shows_disk_and_says_cpu_and_gpu_are_sums():
    chart = next(c for c in CHARTS if c.key == "utilization")
    assert "DiskUtilization" in {line.metric for line in chart.lines}
    labels = {line.metric: line.label for line in chart.lines}
    assert "sum over cores" in labels["CPUUtilization"]
    assert "sum over GPUs" in labels["GPUUtilization"]
    assert "summed" in chart.title and "per core or GPU" in chart.y_title


def test_loaded_model_count_and_disk_are_asked_for_where_sagemaker_writes_them(settings):
    """moto's GetMetricData ignores the namespace, so botocore's Stubber checks the request
    (against the real service model) instead."""
    settings.AWS_ENDPOINT_URL = ""
    client = portal_aws.client(
        "cloudwatch", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    start = align(datetime.now(UTC) - timedelta(minutes=30), 60)
    end = start + timedelta(minutes=10)
    minute = start + timedelta(minutes=1)
    dimensions = [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]

    def query(index, metric, stat):
        return {
            "Id": query_id(index, MetricQuery(metric, stat)),
            "MetricStat": {
                "Metric": {
                    "Namespace": INSTANCE_NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": dimensions,
                },
                "Period": 60,
                "Stat": stat,
            },
            "ReturnData": True,
        }

    queries = [query(0, "LoadedModelCount", "Maximum"), query(1, "DiskUtilization", "Average")]
    with Stubber(client) as stub:
        stub.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": queries[0]["Id"], "Timestamps": [minute], "Values": [7.0]},
                    {"Id": queries[1]["Id"], "Timestamps": [minute], "Values": [63.5]},
                ]
            },
            {
                "MetricDataQueries": queries,
                "StartTime": start,
                "EndTime": end,
                "ScanBy": "TimestampAscending",
            },
        )
        loaded, disk = CloudWatchSource(client).get_metric_data(
            endpoint=ENDPOINT,
            queries=[
                MetricQuery("LoadedModelCount", "Maximum"),
                MetricQuery("DiskUtilization", "Average"),
            ],
            start=start,
            end=end,
            period=60,
        )
        stub.assert_no_pending_responses()
    assert loaded.values == [7.0]
    assert disk.values == [63.5]
