"""Deployments end to end: a REAL Celery worker on the real broker, the REAL data plane
gateway (`python -m dataplane`) with a real Triton, the registry's real pipeline.

CI registers the demo ensemble with its token, deploys it to local-staging through the API,
follows the log, invokes it with boto3's sagemaker-runtime client; asks for promotion, which
its own identity cannot approve and an approver can; production answers; a rollback switches
back. A worker killed mid-deployment leaves a deployment that is resumed from its steps."""

import json
import time

import boto3
import numpy as np
import pytest
from botocore.config import Config
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.test import APIClient
from waiting import wait_for

from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from deployments.choices import DeploymentState, StepState
from deployments.models import Deployment, Endpoint, LiveVersion
from deployments.tests.factories import seed_reference_data
from portal.dataplane import DataPlaneClient
from portal.services import token_create
from registry import services as registry_services
from registry.choices import VersionStatus
from registry.models import ModelVersion
from toolkit.examples import build_demo_archive

pytestmark = [pytest.mark.worker, pytest.mark.triton]

LINEAGE = {
    "source_repository": "https://git.example.com/ml/demo",
    "source_commit": "9d1c0ffee0ddba11ab1e5eed5ca1ab1e00c0ffee",
    "dataset_uri": "s3://datasets/iris/iris.csv",
    "dataset_version": "sha256:51f3a2",
}


@pytest.fixture
def deploy_worker(celery_worker_factory, gateway, settings):
    """Reference data back in place (transactional tests flush it), the portal and the worker
    both pointed at the gateway."""
    seed_reference_data()
    settings.BERTH_DATAPLANE_URL = gateway.url
    settings.BERTH_DATAPLANE_STORE = str(gateway.store_root)

    def start(**env: str):
        return celery_worker_factory(
            BERTH_DATAPLANE_URL=gateway.url, BERTH_DATAPLANE_STORE=str(gateway.store_root), **env
        )

    return start


def user(name: str, *groups: str):
    account = get_user_model().objects.create_user(
        name, email=f"{name}@example.org", password="pw-123-berth"
    )
    account.groups.add(*Group.objects.filter(name__in=groups))
    return account


def api_for(account) -> APIClient:
    _, raw = token_create(actor=account, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def runtime(gateway):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=gateway.url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def invoke(gateway, endpoint: str, target: str, case: dict) -> list[float]:
    inputs = [
        {
            "name": n,
            "datatype": s["datatype"],
            "shape": s["shape"],
            "data": np.ravel(s["data"]).tolist(),
        }
        for n, s in case["inputs"].items()
    ]
    answer = runtime(gateway).invoke_endpoint(
        EndpointName=endpoint,
        TargetModel=target,
        ContentType="application/json",
        Body=json.dumps({"inputs": inputs}),
    )
    body = json.loads(answer["Body"].read())
    return next(o for o in body["outputs"] if o["name"] == "PROBABILITIES")["data"]


def register(api, berth_dirs, name: str, prefix: str, worker) -> dict:
    archive = build_demo_archive(berth_dirs / "build" / f"{prefix}.tar.gz", name_prefix=prefix)
    with open(archive, "rb") as handle:
        answer = api.post(
            f"/api/v1/models/{name}/versions/",
            {"archive": handle, "lineage": json.dumps(LINEAGE)},
            format="multipart",
        )
    assert answer.status_code == 201, answer.json()
    number = answer.json()["version"]

    def packaged():
        body = api.get(f"/api/v1/models/{name}/versions/{number}/").json()
        return (
            body
            if body["status"] in {"packaged", "invalid", "test_failed"} and not body["in_progress"]
            else None
        )

    body = wait_for(packaged, timeout=240, worker=worker, what=f"{name} v{number} to be packaged")
    assert body["status"] == "packaged", body
    return body


def follow(api, deployment_id: int, worker, timeout: float = 180) -> dict:
    """Follow the log like a CI job: ask for the lines after the last one seen."""
    state = {"since": 0, "lines": []}

    def finished():
        body = api.get(f"/api/v1/deployments/{deployment_id}/log/?since={state['since']}").json()
        state["lines"] += body["lines"]
        state["since"] = body["next"]
        return body if body["finished"] else None

    body = wait_for(
        finished, timeout=timeout, interval=0.3, worker=worker, what=f"deployment {deployment_id}"
    )
    body["all_lines"] = state["lines"]
    return body


def test_ci_deploys_to_staging_then_approval_promotes_to_production_and_rollback(
    deploy_worker, gateway, berth_dirs
):
    worker = deploy_worker()
    scientist = user("ci-bot", "data scientist")
    approver = user("alex", "approver")
    ci, approver_api = api_for(scientist), api_for(approver)

    assert ci.post("/api/v1/models/", {"name": "demo"}, format="json").status_code == 201
    register(ci, berth_dirs, "demo", "demo", worker)
    version = ModelVersion.objects.get(model__name="demo", version=1)
    case = version.repository_summary["tests"][1]
    expected = np.ravel(case["expected"]["PROBABILITIES"]["data"])

    started = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "local-staging", "model": "demo", "version": 1},
        format="json",
    )
    assert started.status_code == 202, started.json()
    result = follow(ci, started.json()["id"], worker)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    assert [s["state"] for s in result["steps"]] == ["done"] * 5
    assert any("Smoke test" in line["message"] for line in result["all_lines"])
    assert np.allclose(invoke(gateway, "local-staging", "demo", case), expected, atol=1e-4)
    assert np.allclose(invoke(gateway, "local-staging", "demo_1.tar.gz", case), expected, atol=1e-4)

    promotion = ci.post(
        "/api/v1/promotions/",
        {
            "model": "demo",
            "version": 1,
            "target_endpoint": "local-production",
            "comment": "green on staging",
        },
        format="json",
    )
    assert promotion.status_code == 201, promotion.json()
    pk = promotion.json()["id"]
    refused = ci.post(f"/api/v1/promotions/{pk}/approve/", {"comment": "self"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "own_request"
    approved = approver_api.post(
        f"/api/v1/promotions/{pk}/approve/", {"comment": "ok"}, format="json"
    )
    assert approved.status_code == 200, approved.json()
    production = follow(ci, approved.json()["deployment"], worker)
    assert production["state"] == "succeeded", (production, worker.log_tail())
    assert np.allclose(invoke(gateway, "local-production", "demo", case), expected, atol=1e-4)

    # A second version on staging, then one call rolls it back.
    register(ci, berth_dirs, "demo", "demo2", worker)
    second = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "local-staging", "model": "demo", "version": 2},
        format="json",
    )
    assert follow(ci, second.json()["id"], worker)["state"] == "succeeded"
    assert DataPlaneClient(gateway.url).aliases("local-staging") and "demo_2.tar.gz" in json.dumps(
        DataPlaneClient(gateway.url).aliases("local-staging")
    )
    rollback = ci.post(
        "/api/v1/endpoints/local-staging/rollback/", {"model": "demo"}, format="json"
    )
    assert rollback.status_code == 202, rollback.json()
    assert follow(ci, rollback.json()["id"], worker)["state"] == "succeeded"
    aliases = json.dumps(DataPlaneClient(gateway.url).aliases("local-staging"))
    assert "demo_1.tar.gz" in aliases and "demo_2.tar.gz" not in aliases
    assert np.allclose(invoke(gateway, "local-staging", "demo", case), expected, atol=1e-4)
    timeline = ci.get("/api/v1/endpoints/local-staging/timeline/?model=demo").json()
    assert [(p["version"], p["deployment_kind"]) for p in timeline] == [
        (1, "rollback"),
        (2, "deploy"),
        (1, "deploy"),
    ]
    assert Deployment.objects.get(pk=second.json()["id"]).state == DeploymentState.ROLLED_BACK


def test_worker_killed_mid_deployment_is_resumed_from_its_steps(deploy_worker, berth_dirs):
    scientist = user("dana", "data scientist")
    model = registry_services.model_create(actor=scientist, name="demo")
    archive = build_demo_archive(berth_dirs / "build" / "demo.tar.gz")
    first = deploy_worker()
    version = registry_services.version_register(
        actor=scientist, model=model, archive=archive, lineage=LINEAGE
    )

    def packaged():
        version.refresh_from_db()
        return version.status == VersionStatus.PACKAGED

    wait_for(packaged, timeout=240, worker=first, what="the version to be packaged")
    endpoint = Endpoint.objects.get(name="local-staging")
    deployment = deployment_services.deployment_start(
        actor=scientist, endpoint=endpoint, version=version
    )

    def warming():
        deployment.refresh_from_db()
        states = {s["name"]: s["state"] for s in deployment.steps}
        return (
            states.get("warm") == StepState.RUNNING or states.get("smoke_test") == StepState.RUNNING
        )

    # Loading into Triton takes a second or two: kill the worker (and its children) then.
    wait_for(warming, timeout=120, interval=0.02, worker=first, what="the warm step")
    first.kill()
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RUNNING
    assert not LiveVersion.objects.filter(endpoint=endpoint).exists()
    placed_at = deployment.steps[0]["finished_at"]

    # The beat task (run through the broker, in a new worker with a short stale threshold)
    # hands the deployment back; the worker resumes it after the recorded steps.
    second = deploy_worker(BERTH_DEPLOYMENT_STALE_SECONDS="2")
    time.sleep(2.5)
    deployment_tasks.deployment_resume_stuck.delay()

    def finished():
        deployment.refresh_from_db()
        return deployment.state not in (DeploymentState.PENDING, DeploymentState.RUNNING)

    wait_for(finished, timeout=180, worker=second, what="the resumed deployment")
    assert deployment.state == DeploymentState.SUCCEEDED, (deployment.error, second.log_tail())
    assert deployment.attempts == 2
    assert deployment.steps[0]["finished_at"] == placed_at  # the package was not placed twice
    assert LiveVersion.objects.get(endpoint=endpoint).version == version
    messages = list(deployment.log_lines.values_list("message", flat=True))
    assert any("resuming after place_package" in m for m in messages), messages
