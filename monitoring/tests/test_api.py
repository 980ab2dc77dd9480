from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from monitoring.models import MetricSample
from monitoring.sources import align
from portal import aws as portal_aws
from portal import services as portal_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(user):
    _, raw = portal_services.token_create(actor=user, name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def url(endpoint) -> str:
    return reverse("monitoring-api:metric-data", kwargs={"name": endpoint.name})


def test_needs_authentication(client, local_endpoint):
    assert client.get(url(local_endpoint)).status_code == 401


@pytest.mark.usefixtures("aws")
def test_metric_data_from_cloudwatch_with_a_token(client, token, sagemaker_endpoint):
    minute = align(datetime.now(UTC) - timedelta(minutes=3), 60)
    portal_aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocation5XXErrors",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": sagemaker_endpoint.name},
                    {"Name": "VariantName", "Value": "AllTraffic"},
                ],
                "Timestamp": minute,
                "Value": 2,
            }
        ],
    )
    response = client.get(
        url(sagemaker_endpoint), {"query": ["Invocation5XXErrors:Sum", "Invocations"]}, **token
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["source"] == "cloudwatch" and body["period"] == 60
    errors, invocations = body["results"]
    assert errors["id"] == "Invocation5XXErrors:Sum" and errors["values"] == [2.0]
    assert datetime.fromisoformat(errors["timestamps"][0].replace("Z", "+00:00")) == minute
    assert invocations["stat"] == "Average" and invocations["values"] == []


@pytest.mark.usefixtures("aws")
def test_per_model_is_refused_for_sagemaker(client, token, sagemaker_endpoint):
    response = client.get(url(sagemaker_endpoint), {"target_model": "m_1.tar.gz"}, **token)
    assert response.status_code == 400
    assert response.json()["field"] == "target_model"


def test_bad_queries_name_the_field(client, token, local_endpoint):
    response = client.get(url(local_endpoint), {"query": "Bogus:Sum"}, **token)
    assert response.status_code == 400
    assert "query" in response.json()["errors"]
    response = client.get(url(local_endpoint), {"query": "ModelLatency:p42x"}, **token)
    assert response.status_code == 400
    response = client.get(url(local_endpoint), {"period": 90}, **token)
    assert "period" in response.json()["errors"]


def test_unknown_endpoint_is_404(client, token, local_endpoint):
    response = client.get(reverse("monitoring-api:metric-data", kwargs={"name": "nope"}), **token)
    assert response.status_code == 404
    assert response.json()["field"] == "endpoint"


def test_explicit_window_reads_stored_history(client, token, local_endpoint):
    start = align(datetime.now(UTC) - timedelta(days=2), 3600)
    for n in range(120):
        MetricSample.objects.create(
            endpoint_name="local-staging",
            metric="Invocations",
            stat="Sum",
            timestamp=start + timedelta(minutes=n),
            value=1.0,
        )
    response = client.get(
        url(local_endpoint),
        {
            "query": "Invocations:Sum",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=3)).isoformat(),
            "period": 3600,
        },
        **token,
    )
    body = response.json()
    assert response.status_code == 200
    assert body["results"][0]["values"] == [60.0, 60.0]
    assert "did not answer" in body["error"]
