"""The local data plane as a metric source, against a real gateway process (and the real
Triton it supervises): the gateway records, the portal reads, pulls and draws."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.urls import reverse

from dataplane.tests.gateway_fixtures import GatewayProcess, infer_body, python_package
from monitoring import tasks
from monitoring.models import MetricSample
from monitoring.sources import LocalDataPlaneSource, MetricQuery, MetricSourceError

pytestmark = pytest.mark.triton

ENDPOINT = "local-mon"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A gateway that served three requests to one model and one to a missing package."""
    process = GatewayProcess(
        Path(tmp_path_factory.mktemp("gateway")),
        [ENDPOINT],
        extra_args=["--sample-interval", "0.5"],
    ).start()
    try:
        target = python_package(process.store(ENDPOINT), "scaler", 1)
        for _ in range(3):
            status, _, answer = process.invoke(ENDPOINT, target, infer_body([1.0, 2.0, 3.0, 4.0]))
            assert status == 200, answer
        status, _, _ = process.invoke(ENDPOINT, "missing_1.tar.gz", infer_body([1.0] * 4))
        assert 400 <= status < 500
        time.sleep(1.5)  # a few utilization samples
        yield process
    finally:
        process.stop()


def window():
    now = datetime.now(UTC)
    return now - timedelta(minutes=10), now + timedelta(minutes=1)


def total(series) -> float:
    return sum(series.values)


def test_endpoint_and_per_model_series(gateway):
    source = LocalDataPlaneSource(gateway.url, token=gateway.admin_token)
    start, end = window()
    (
        invocations,
        client_errors,
        model_invocations,
        hits,
        lookups,
        loading,
        loaded,
        cpu,
    ) = source.get_metric_data(
        endpoint=ENDPOINT,
        queries=[
            MetricQuery("Invocations", "Sum"),
            MetricQuery("Invocation4XXErrors", "Sum"),
            MetricQuery("Invocations", "Sum", "scaler_1.tar.gz"),
            MetricQuery("ModelCacheHit", "Sum", "scaler_1.tar.gz"),
            MetricQuery("ModelCacheHit", "SampleCount", "scaler_1.tar.gz"),
            MetricQuery("ModelLoadingTime", "Maximum"),
            MetricQuery("LoadedModelCount", "Maximum"),
            MetricQuery("CPUUtilization", "Average"),
        ],
        start=start,
        end=end,
        period=60,
    )
    assert total(invocations) == 4
    assert total(client_errors) == 1
    assert total(model_invocations) == 3
    # The first request loaded the model (a miss); the next two found it loaded.
    assert (total(hits), total(lookups)) == (2, 3)
    assert loading.values and max(loading.values) > 0
    assert max(loaded.values) == 1
    assert cpu.values
    assert all(moment.second == 0 for moment in invocations.timestamps)
    assert source.target_models(endpoint=ENDPOINT) == ["scaler_1.tar.gz"]


def test_unknown_endpoint_is_a_source_error(gateway):
    with pytest.raises(MetricSourceError, match="EndpointNotFound"):
        LocalDataPlaneSource(gateway.url, token=gateway.admin_token).target_models(endpoint="nope")


@pytest.fixture
def portal_endpoint(db, settings, gateway):
    from deployments.models import Endpoint, Environment

    settings.BERTH_DATAPLANE_URL = gateway.url
    Endpoint.objects.all().delete()
    return Endpoint.objects.create(
        name="local-mon",
        environment=Environment.objects.get(name="staging"),
        backend="local",
        dataplane_endpoint=ENDPOINT,
    )


def test_metrics_pull_stores_minutes_and_is_idempotent(portal_endpoint):
    stored = tasks.metrics_pull()
    assert stored["local-mon"] > 0
    count = MetricSample.objects.count()

    def summed(**filters) -> float:
        return sum(
            MetricSample.objects.filter(endpoint_name=ENDPOINT, **filters).values_list(
                "value", flat=True
            )
        )

    assert summed(target_model="", metric="Invocations", stat="Sum") == 4
    assert summed(target_model="scaler_1.tar.gz", metric="Invocations", stat="Sum") == 3
    assert MetricSample.objects.filter(metric="ModelLatency", stat="p99").exists()
    # Endpoint-wide metrics are not stored per model.
    assert not MetricSample.objects.filter(
        target_model="scaler_1.tar.gz", metric="LoadedModelCount"
    ).exists()

    tasks.metrics_pull()
    assert summed(target_model="", metric="Invocations", stat="Sum") == 4
    # Only utilization samples of the current minute may have been added meanwhile.
    assert MetricSample.objects.count() - count <= 8


def test_dashboard_draws_a_model_on_the_live_data_plane(client, django_user_model, portal_endpoint):
    client.force_login(django_user_model.objects.create_user("viewer"))
    response = client.get(
        reverse("monitoring:dashboard"),
        {"endpoint": "local-mon", "model": "scaler_1.tar.gz", "window": "1h"},
    )
    assert response.status_code == 200
    board = response.context["board"]
    assert board.error == ""
    assert "scaler_1.tar.gz" in board.target_models
    charts = {chart["key"]: chart for chart in response.context["charts"]}
    invocations = charts["invocations"]["figure"]["data"][0]
    assert sum(invocations["y"]) == 3
    assert charts["latency"]["has_data"] and charts["loading"]["has_data"]


def test_dashboard_lists_what_the_data_plane_has_loaded(client, django_user_model, portal_endpoint):
    client.force_login(django_user_model.objects.create_user("viewer"))
    response = client.get(reverse("monitoring:dashboard"), {"endpoint": "local-mon"})
    (loaded,) = response.context["board"].loaded_models
    assert loaded["target_model"] == "scaler_1.tar.gz" and loaded["invocations"] == 3
    assert 'id="loaded-models"' in response.content.decode()
