import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from monitoring.models import MetricSample
from monitoring.sources import align
from portal import aws as portal_aws

pytestmark = pytest.mark.django_db


def figure(response, key: str) -> dict:
    html = response.content.decode()
    marker = f'<script id="figure-{key}" type="application/json">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start : html.index("</script>", start)])


def test_dashboard_needs_login(client):
    response = client.get(reverse("monitoring:dashboard"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_dashboard_without_endpoints_says_so(client, user):
    from deployments.models import Endpoint

    Endpoint.objects.all().delete()
    client.force_login(user)
    response = client.get(reverse("monitoring:dashboard"))
    assert response.status_code == 200
    assert "No endpoints yet" in response.content.decode()


@pytest.mark.usefixtures("aws")
def test_sagemaker_endpoint_charts_come_from_cloudwatch(client, user, sagemaker_endpoint):
    cloudwatch = portal_aws.client("cloudwatch")
    minute = align(datetime.now(UTC) - timedelta(minutes=5), 60)
    dims = [
        {"Name": "EndpointName", "Value": sagemaker_endpoint.name},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Timestamp": minute, "Value": 12},
            {"MetricName": "ModelCacheHit", "Dimensions": dims, "Timestamp": minute, "Value": 1},
            {"MetricName": "ModelCacheHit", "Dimensions": dims, "Timestamp": minute, "Value": 0},
            {
                "MetricName": "ModelLoadingTime",
                "Dimensions": dims,
                "Timestamp": minute,
                "Value": 2500,
            },
        ],
    )
    # SageMaker publishes LoadedModelCount with the instance metrics.
    cloudwatch.put_metric_data(
        Namespace="/aws/sagemaker/Endpoints",
        MetricData=[
            {"MetricName": "LoadedModelCount", "Dimensions": dims, "Timestamp": minute, "Value": 3},
        ],
    )
    client.force_login(user)
    response = client.get(
        reverse("monitoring:dashboard"), {"endpoint": sagemaker_endpoint.name, "window": "1h"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
    # The basic bundle (scatter traces), not the 4.8 MB full one.
    assert "/static/vendor/plotly/plotly-basic.min.js" in sources
    assert all(src.startswith("/static/") for src in sources), sources

    invocations = figure(response, "invocations")["data"]
    assert invocations[0]["name"] == "Invocations"
    # A count is drawn over the whole window: the minute with requests, zeros elsewhere.
    requests = dict(zip(invocations[0]["x"], invocations[0]["y"], strict=True))
    assert requests[minute.isoformat()] == 12.0
    assert len(requests) == 60 and sum(requests.values()) == 12.0
    assert response.context["board"].headline.requests == 12.0
    # The cache-hit ratio is shown as a percentage; loading times in milliseconds.
    assert figure(response, "cache-hit")["data"][0]["y"] == [50.0]
    loading = {trace["name"]: trace["y"] for trace in figure(response, "loading")["data"]}
    assert loading["load"] == [2.5] and loading["wait"] == []
    assert figure(response, "loaded-models")["data"][0]["y"] == [3.0]
    # SageMaker has no per-target-model metrics: the model selector is disabled.
    assert response.context["board"].per_model_supported is False


@pytest.mark.usefixtures("aws")
def test_window_picks_the_period(client, user, sagemaker_endpoint):
    client.force_login(user)
    response = client.get(
        reverse("monitoring:dashboard"), {"endpoint": sagemaker_endpoint.name, "window": "7d"}
    )
    board = response.context["board"]
    assert board.period == 3600
    assert board.end - board.start == timedelta(days=7)


def test_unknown_endpoint_is_404(client, user, local_endpoint):
    client.force_login(user)
    response = client.get(reverse("monitoring:dashboard"), {"endpoint": "nope"})
    assert response.status_code == 404


def test_local_endpoint_falls_back_to_stored_history_when_the_data_plane_is_down(
    client, user, local_endpoint
):
    minute = align(datetime.now(UTC) - timedelta(hours=3), 60)
    MetricSample.objects.bulk_create(
        [
            MetricSample(
                endpoint_name="local-staging",
                metric="Invocations",
                stat="Sum",
                timestamp=minute + timedelta(minutes=n),
                value=float(n + 1),
            )
            for n in range(10)
        ]
        + [
            MetricSample(
                endpoint_name="local-staging",
                target_model="demo_ensemble_1.tar.gz",
                metric="ModelLatency",
                stat="p99",
                timestamp=minute,
                value=1500.0,
            )
        ]
    )
    client.force_login(user)
    response = client.get(reverse("monitoring:dashboard"), {"window": "6h"})
    assert response.status_code == 200
    board = response.context["board"]
    assert board.endpoint == local_endpoint
    assert "did not answer" in board.error
    assert "did not answer" in response.content.decode()
    # 6h is drawn at one-minute points: the ten stored minutes come back as they were.
    drawn = figure(response, "invocations")["data"][0]
    stored = {(minute + timedelta(minutes=n)).isoformat(): float(n + 1) for n in range(10)}
    assert {x: y for x, y in zip(drawn["x"], drawn["y"], strict=True) if y} == stored
    assert "demo_ensemble_1.tar.gz" in board.target_models

    response = client.get(
        reverse("monitoring:dashboard"),
        {"window": "24h", "model": "demo_ensemble_1.tar.gz"},
    )
    # The 24h window uses five-minute points: sums add up per period.
    invocations = figure(response, "invocations")["data"][0]["y"]
    # Nothing stored for the model's invocations: a zero line over the 288 five-minute periods.
    assert len(invocations) == 288 and not any(invocations)
    latency = {t["name"]: t["y"] for t in figure(response, "latency")["data"]}
    assert latency["ModelLatency p99"] == [1.5]
    # Per-model dashboards leave out the endpoint-wide charts.
    keys = [chart["key"] for chart in response.context["charts"]]
    assert "loaded-models" not in keys and "utilization" not in keys


def test_htmx_refresh_returns_only_the_charts(client, user, local_endpoint):
    client.force_login(user)
    response = client.get(reverse("monitoring:dashboard"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'class="charts"' in html and "<html" not in html


@pytest.mark.usefixtures("aws")
def test_dashboard_query_count_does_not_grow_with_endpoints(client, user, sagemaker_endpoint):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deployments.models import Endpoint

    client.force_login(user)
    params = {"endpoint": sagemaker_endpoint.name}
    client.get(reverse("monitoring:dashboard"), params)  # warm caches (content types, session)
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("monitoring:dashboard"), params)
    for n in range(5):
        Endpoint.objects.create(
            name=f"sm-extra-{n}",
            environment=sagemaker_endpoint.environment,
            backend="sagemaker",
            region="us-east-1",
        )
    with CaptureQueriesContext(connection) as many:
        response = client.get(reverse("monitoring:dashboard"), params)
    assert len(response.context["board"].endpoints) >= 6
    assert len(many) == len(few)
