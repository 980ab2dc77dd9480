"""The deployments REST API: what CI does with its token (deploy to staging, follow, request
promotion), what approvers do, the 409 on concurrent deployments, rollback and the
timeline, and the number of queries list endpoints make."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.choices import DeploymentState
from deployments.models import Deployment, PromotionRequest
from portal.services import token_create

from .factories import (
    RegisteredModelFactory,
    allow,
    environment,
    packaged_version,
    put_alarm,
    queue_answer,
    run,
    sagemaker_endpoint,
)

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    _, raw = token_create(actor=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def staging(aws):
    return sagemaker_endpoint("sm-staging", "staging")


@pytest.fixture
def production(aws):
    return sagemaker_endpoint("sm-production", "production")


def test_ci_deploys_to_staging_follows_and_requests_promotion(
    scientist, approver, staging, production
):
    ci = client_for(scientist)
    version = packaged_version(registered_by=scientist)

    answer = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "sm-staging", "model": "demo_ensemble", "version": 1},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    assert (body["state"], body["source"], body["target_model"]) == (
        "pending",
        "api",
        "demo_ensemble_1.tar.gz",
    )
    queue_answer(version.test_cases[0])
    run(Deployment.objects.get(pk=body["id"]))

    follow = ci.get(f"/api/v1/deployments/{body['id']}/log/").json()
    assert follow["finished"] and follow["state"] == "succeeded"
    assert len(follow["lines"]) >= 3
    later = ci.get(f"/api/v1/deployments/{body['id']}/log/?since={follow['next']}").json()
    assert later["lines"] == [] and later["next"] == follow["next"]
    middle = follow["lines"][1]["id"]
    assert [
        line["id"]
        for line in ci.get(f"/api/v1/deployments/{body['id']}/log/?since={middle}").json()["lines"]
    ] == [line["id"] for line in follow["lines"][2:]]

    # Straight to production is refused; a promotion request is the way.
    refused = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "sm-production", "model": "demo_ensemble", "version": 1},
        format="json",
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "approval_required"

    promotion = ci.post(
        "/api/v1/promotions/",
        {
            "model": "demo_ensemble",
            "version": 1,
            "target_endpoint": "sm-production",
            "comment": "CI",
        },
        format="json",
    )
    assert promotion.status_code == 201, promotion.json()
    promotion_id = promotion.json()["id"]
    assert promotion.json()["evidence"]["staging_deployment"]["id"] == body["id"]

    # CI's token belongs to the requester: approving is refused, whatever it tries.
    own = ci.post(f"/api/v1/promotions/{promotion_id}/approve/", {}, format="json")
    assert own.status_code == 403 and own.json()["code"] == "own_request"

    approved = client_for(approver).post(
        f"/api/v1/promotions/{promotion_id}/approve/", {"comment": "ok"}, format="json"
    )
    assert approved.status_code == 200, approved.json()
    assert approved.json()["state"] == "approved"
    production_deployment = Deployment.objects.get(pk=approved.json()["deployment"])
    assert production_deployment.endpoint == production


def test_concurrent_deployment_answers_409(scientist, staging):
    ci = client_for(scientist)
    model = RegisteredModelFactory(owner=scientist)
    packaged_version(model=model)
    packaged_version(model=model)
    first = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "sm-staging", "model": model.name, "version": 1},
        format="json",
    )
    second = ci.post(
        "/api/v1/deployments/",
        {"endpoint": "sm-staging", "model": model.name, "version": 2},
        format="json",
    )
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json()["code"] == "deployment_running"


def test_unknown_things_answer_404_and_bad_input_400(scientist, staging):
    ci = client_for(scientist)
    missing = ci.post(
        "/api/v1/deployments/", {"endpoint": "nope", "model": "x", "version": 1}, format="json"
    )
    assert missing.status_code == 404 and missing.json()["field"] == "endpoint"
    bad = ci.post("/api/v1/deployments/", {"endpoint": "sm-staging"}, format="json")
    assert bad.status_code == 400 and "model" in bad.json()["errors"]
    assert APIClient().get("/api/v1/deployments/").status_code in (401, 403)


def test_endpoints_create_list_retrieve(platform_admin, aws):
    ci = client_for(platform_admin)
    allow(
        environment("staging"),
        s3_prefix="s3://berth-models/",
        role="arn:aws:iam::123456789012:role/r",
    )
    created = ci.post(
        "/api/v1/endpoints/",
        {
            "name": "sm-new",
            "environment": "staging",
            "backend": "sagemaker",
            "instance_type": "ml.g5.xlarge",
            "execution_role_arn": "arn:aws:iam::123456789012:role/r",
            "s3_prefix": "s3://berth-models/new/",
            "autoscaling_max_instances": 3,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["image_uri"].endswith("sagemaker-tritonserver:24.09-py3")
    names = [e["name"] for e in ci.get("/api/v1/endpoints/").json()["results"]]
    assert {"local-staging", "local-production", "sm-new"} <= set(names)
    assert ci.get("/api/v1/endpoints/sm-new/").json()["instance_type"] == "ml.g5.xlarge"
    assert ci.get("/api/v1/endpoints/?environment=production").json()["count"] == 1
    bad = ci.post(
        "/api/v1/endpoints/",
        {"name": "x", "environment": "staging", "backend": "sagemaker"},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["field"] == "execution_role_arn"


def test_endpoints_take_their_rollout_guardrails_over_the_api(platform_admin, aws):
    ci = client_for(platform_admin)
    allow(
        environment("staging"),
        s3_prefix="s3://berth-models/",
        role="arn:aws:iam::123456789012:role/r",
    )
    put_alarm("sm-canary-errors")
    fields = {
        "environment": "staging",
        "backend": "sagemaker",
        "instance_type": "ml.g5.xlarge",
        "execution_role_arn": "arn:aws:iam::123456789012:role/r",
        "s3_prefix": "s3://berth-models/canary/",
        "rollout_traffic": "CANARY",
        "rollout_step_size": 25,
        "rollout_wait_seconds": 300,
    }
    missing = ci.post(
        "/api/v1/endpoints/",
        {"name": "sm-canary", **fields, "rollback_alarms": ["no-such-alarm"]},
        format="json",
    )
    assert missing.status_code == 400 and missing.json()["field"] == "rollback_alarms"
    created = ci.post(
        "/api/v1/endpoints/",
        {"name": "sm-canary", **fields, "rollback_alarms": ["sm-canary-errors"]},
        format="json",
    )
    assert created.status_code == 201, created.json()
    answer = ci.get("/api/v1/endpoints/sm-canary/").json()
    assert (answer["rollout_traffic"], answer["rollout_step_size"], answer["rollback_alarms"]) == (
        "CANARY",
        25,
        ["sm-canary-errors"],
    )


def test_rollback_and_timeline(scientist, staging):
    ci = client_for(scientist)
    model = RegisteredModelFactory(owner=scientist)
    for number in (1, 2):
        version = packaged_version(model=model)
        queue_answer(version.test_cases[0])
        answer = ci.post(
            "/api/v1/deployments/",
            {"endpoint": "sm-staging", "model": model.name, "version": number},
            format="json",
        )
        run(Deployment.objects.get(pk=answer.json()["id"]))
    middle = timezone.now()
    rollback = ci.post(
        "/api/v1/endpoints/sm-staging/rollback/", {"model": model.name}, format="json"
    )
    assert rollback.status_code == 202, rollback.json()
    assert (rollback.json()["kind"], rollback.json()["version"]) == ("rollback", 1)
    queue_answer(model.versions.get(version=1).test_cases[0])
    assert run(Deployment.objects.get(pk=rollback.json()["id"])).state == DeploymentState.SUCCEEDED

    timeline = ci.get(f"/api/v1/endpoints/sm-staging/timeline/?model={model.name}").json()
    assert [(p["version"], p["deployment_kind"]) for p in timeline] == [
        (1, "rollback"),
        (2, "deploy"),
        (1, "deploy"),
    ]
    at = ci.get(
        "/api/v1/endpoints/sm-staging/timeline/", {"model": model.name, "at": middle.isoformat()}
    ).json()
    assert [p["version"] for p in at] == [2]
    live = ci.get("/api/v1/endpoints/sm-staging/live/").json()
    assert [(x["model"], x["version"]) for x in live] == [(model.name, 1)]
    assert ci.get("/api/v1/endpoints/sm-staging/timeline/?at=yesterday").status_code == 400


def test_reject_through_the_api(scientist, approver, staging, production):
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    run(
        Deployment.objects.get(
            pk=client_for(scientist)
            .post(
                "/api/v1/deployments/",
                {"endpoint": "sm-staging", "model": version.model.name, "version": 1},
                format="json",
            )
            .json()["id"]
        )
    )
    promotion = client_for(scientist).post(
        "/api/v1/promotions/",
        {"model": version.model.name, "version": 1, "target_endpoint": "sm-production"},
        format="json",
    )
    pk = promotion.json()["id"]
    answer = client_for(approver).post(
        f"/api/v1/promotions/{pk}/reject/", {"comment": "not yet"}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["state"] == "rejected"
    again = client_for(approver).post(f"/api/v1/promotions/{pk}/approve/", {}, format="json")
    assert again.status_code == 409
    assert PromotionRequest.objects.get(pk=pk).deployment is None


def test_list_endpoints_make_a_fixed_number_of_queries(scientist, staging):
    ci = client_for(scientist)
    model = RegisteredModelFactory(owner=scientist)
    for _ in range(3):
        version = packaged_version(model=model)
        queue_answer(version.test_cases[0])
        deployment = Deployment.objects.get(
            pk=ci.post(
                "/api/v1/deployments/",
                {"endpoint": "sm-staging", "model": model.name, "version": version.version},
                format="json",
            ).json()["id"]
        )
        run(deployment)

    def count(url: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert ci.get(url).status_code == 200
        return len(queries)

    few = {
        url: count(url)
        for url in ("/api/v1/deployments/", "/api/v1/endpoints/", "/api/v1/promotions/")
    }
    for _ in range(3):
        sagemaker_endpoint(f"sm-extra-{_}", "staging")
    assert count("/api/v1/endpoints/") == few["/api/v1/endpoints/"]
    assert count("/api/v1/deployments/") == few["/api/v1/deployments/"] <= 8
