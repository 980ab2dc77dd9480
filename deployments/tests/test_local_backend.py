"""The local backend against the REAL data plane: `python -m dataplane` (the gateway) in a
subprocess supervising a real Triton server. Deploy the demo ensemble, invoke it through
boto3's sagemaker-runtime client by version and by model name (the alias), roll back."""

import copy
import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config

from deployments import services
from deployments.choices import DeploymentState, StepState
from deployments.models import Endpoint, LiveVersion
from monitoring.sources import LocalDataPlaneSource
from portal.dataplane import DataPlaneClient, DataPlaneError
from toolkit.archive import sha256_file

from .factories import RegisteredModelFactory, packaged_version, run

pytestmark = [pytest.mark.django_db, pytest.mark.triton]


@pytest.fixture
def local(gateway, settings):
    settings.BERTH_DATAPLANE_URL = gateway.url
    settings.BERTH_DATAPLANE_STORE = str(gateway.store_root)
    return gateway


def invoke(gateway, endpoint: str, target: str, case: dict) -> dict:
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=gateway.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )
    inputs = [
        {
            "name": name,
            "datatype": spec["datatype"],
            "shape": spec["shape"],
            "data": np.ravel(spec["data"]).tolist(),
        }
        for name, spec in case["inputs"].items()
    ]
    answer = client.invoke_endpoint(
        EndpointName=endpoint,
        TargetModel=target,
        ContentType="application/json",
        Body=json.dumps({"inputs": inputs}).encode(),
    )
    return json.loads(answer["Body"].read())


def probabilities(answer: dict) -> list[float]:
    return next(o for o in answer["outputs"] if o["name"] == "PROBABILITIES")["data"]


def test_deploy_invoke_by_alias_and_roll_back(local, scientist):
    endpoint = Endpoint.objects.get(name="local-staging")
    model = RegisteredModelFactory(owner=scientist)
    v1, v2 = packaged_version(model=model), packaged_version(model=model)

    first = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=v1))
    assert first.state == DeploymentState.SUCCEEDED, first.error
    assert [s["state"] for s in first.steps] == [StepState.DONE] * 5

    placed = Path(local.store_root) / "local-staging" / "demo_ensemble_1.tar.gz"
    assert sha256_file(placed) == v1.package_sha256
    assert placed.with_name(placed.name + ".sha256").read_text().split()[0] == v1.package_sha256
    assert not list((Path(local.store_root) / ".incoming").iterdir())  # nothing half-placed left

    aliases = DataPlaneClient(local.url).aliases("local-staging")
    assert json.dumps(aliases).count("demo_ensemble_1.tar.gz") == 1
    case = v1.test_cases[1]
    expected = case["expected"]["PROBABILITIES"]["data"]
    by_name = invoke(local, "local-staging", "demo_ensemble", case)
    assert np.allclose(probabilities(by_name), np.ravel(expected), atol=1e-4)

    second = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=v2))
    assert second.state == DeploymentState.SUCCEEDED, second.error
    assert "demo_ensemble_2.tar.gz" in json.dumps(
        DataPlaneClient(local.url).aliases("local-staging")
    )

    rollback = run(services.deployment_rollback(actor=scientist, endpoint=endpoint, model=model))
    assert rollback.state == DeploymentState.SUCCEEDED, rollback.error
    # The package is still in place: rolling back copies nothing.
    assert rollback.steps[0]["state"] == StepState.SKIPPED
    assert "demo_ensemble_1.tar.gz" in json.dumps(
        DataPlaneClient(local.url).aliases("local-staging")
    )
    assert LiveVersion.objects.get(endpoint=endpoint, model=model).version == v1
    assert np.allclose(
        probabilities(invoke(local, "local-staging", "demo_ensemble", case)),
        np.ravel(expected),
        atol=1e-4,
    )


def test_failed_smoke_test_leaves_the_alias_alone(local, scientist):
    endpoint = Endpoint.objects.get(name="local-staging")
    model = RegisteredModelFactory(name="demo_wrong", owner=scientist)
    good = packaged_version(model=model)
    assert run(
        services.deployment_start(actor=scientist, endpoint=endpoint, version=good)
    ).state == (DeploymentState.SUCCEEDED)
    wrong_cases = copy.deepcopy(good.test_cases)
    wrong_cases[0]["expected"]["PROBABILITIES"]["data"] = [[0.0, 0.0, 1.0]]
    bad = packaged_version(model=model, test_cases=wrong_cases)
    failed = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=bad))

    assert failed.state == DeploymentState.FAILED
    assert {s["name"]: s["state"] for s in failed.steps}["smoke_test"] == StepState.FAILED
    assert {s["name"]: s["state"] for s in failed.steps}["activate"] == StepState.PENDING
    assert "PROBABILITIES" in failed.error
    aliases = json.dumps(DataPlaneClient(local.url).aliases("local-staging"))
    assert "demo_wrong_1.tar.gz" in aliases and "demo_wrong_2.tar.gz" not in aliases
    assert LiveVersion.objects.get(endpoint=endpoint, model=model).version == good


def test_unreachable_data_plane_fails_with_a_clear_reason(scientist, settings, tmp_path):
    settings.BERTH_DATAPLANE_URL = "http://127.0.0.1:9"
    endpoint = Endpoint.objects.get(name="local-staging")
    version = packaged_version(registered_by=scientist)
    failed = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert failed.state == DeploymentState.FAILED
    assert "did not answer" in failed.error
    assert {s["name"]: s["state"] for s in failed.steps}["ensure_endpoint"] == StepState.FAILED


ADMIN_TOKEN = "dataplane-admin-token-for-tests"


@pytest.fixture(scope="module")
def guarded_gateway(tmp_path_factory):
    """A data plane whose admin API asks for a token (as docker-compose runs it)."""
    from dataplane.tests.gateway_fixtures import GatewayProcess

    process = GatewayProcess(
        tmp_path_factory.mktemp("guarded"), [], extra_args=["--admin-token", ADMIN_TOKEN]
    )
    process.start()
    yield process
    process.stop()


def test_a_guarded_data_plane_serves_the_portal_and_refuses_everyone_else(
    guarded_gateway, settings, scientist
):
    settings.BERTH_DATAPLANE_URL = guarded_gateway.url
    settings.BERTH_DATAPLANE_STORE = str(guarded_gateway.store_root)
    settings.BERTH_DATAPLANE_ADMIN_TOKEN = ADMIN_TOKEN
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    endpoint = Endpoint.objects.get(name="local-staging")
    deployment = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert deployment.state == DeploymentState.SUCCEEDED, deployment.error

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        status, answer_headers, body = guarded_gateway.request(
            "GET", "/admin/endpoints/local-staging/aliases", headers=headers
        )
        assert (status, answer_headers["WWW-Authenticate"]) == (401, "Bearer")
        assert json.loads(body)["ErrorCode"] == "Unauthorized"
    with pytest.raises(DataPlaneError, match="answered 401"):
        DataPlaneClient(guarded_gateway.url, token="").aliases("local-staging")

    # Invocations, health and metrics stay open, as on a SageMaker container.
    case = version.test_cases[0]
    answer = invoke(guarded_gateway, "local-staging", "demo_ensemble", case)
    assert np.allclose(
        probabilities(answer), np.ravel(case["expected"]["PROBABILITIES"]["data"]), atol=1e-4
    )
    assert guarded_gateway.get("/ping")[0] == 200
    assert guarded_gateway.get("/metrics")[0] == 200
    source = LocalDataPlaneSource(guarded_gateway.url, token=ADMIN_TOKEN)
    assert source.target_models(endpoint="local-staging") == ["demo_ensemble_1.tar.gz"]
