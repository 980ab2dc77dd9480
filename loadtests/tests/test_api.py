"""The load tests API: start (201, field errors, 409), read with stages and links, list
filtered without N+1 queries, cancel, approve/reject, apply; errors in the one shape."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from deployments.models import Endpoint
from deployments.tests.factories import user_in
from loadtests import services
from loadtests.models import LoadTest
from portal.services import token_create

from .factories import config, live_version
from .test_services import finish, stage

pytestmark = pytest.mark.django_db


def api_for(account) -> APIClient:
    _, raw = token_create(actor=account, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def staging():
    return Endpoint.objects.get(name="local-staging")


@pytest.fixture
def version(staging):
    return live_version(staging)


def post(api, body):
    return api.post("/api/v1/loadtests/", body, format="json")


def test_start_answers_201_with_links(scientist, staging, version):
    api = api_for(scientist)
    answer = post(api, {"endpoint": "local-staging", "config": config(), "confirmed": True})
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["state"] == "pending" and body["model"] == version.model.name
    assert body["links"]["log"] == f"/api/v1/runs/{body['run']}/log/"
    assert body["config"]["stages"][1] == {"rate": 10.0, "duration_s": 1.0}
    again = post(api, {"endpoint": "local-staging", "config": config(), "confirmed": True})
    assert again.status_code == 409 and again.json()["code"] == "loadtest_active"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": config(), "confirmed": False}, "confirmed"),
        ({"config": config(slo={"latency_ms": -1}), "confirmed": True}, "slo.latency_ms"),
        (
            {
                "config": config(pattern={"kind": "constant", "rps": 1e9, "seconds": 1}),
                "confirmed": True,
            },
            "pattern.rps",
        ),
        (
            {
                "config": config(payloads={"source": "upload"}),
                "confirmed": True,
                "upload": "not json",
            },
            "upload",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(scientist, staging, version, body, field):
    answer = post(api_for(scientist), {"endpoint": "local-staging", **body})
    assert answer.status_code == 400, answer.json()
    assert answer.json()["field"] == field
    assert not LoadTest.objects.exists()


def test_unknown_endpoint_is_404(scientist):
    answer = post(api_for(scientist), {"endpoint": "nowhere", "config": {}, "confirmed": True})
    assert answer.status_code == 404


def test_list_filters_and_pins_queries(scientist, staging, version):
    api = api_for(scientist)
    for _ in range(3):
        load_test = services.loadtest_start(
            actor=scientist, endpoint=staging, config=config(), confirmed=True, source="api"
        )
        finish(load_test, [stage(0, 5, 5, 20)])
    api.get("/api/v1/loadtests/")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as queries:
        answer = api.get("/api/v1/loadtests/?endpoint=local-staging")
    assert answer.status_code == 200 and answer.json()["count"] == 3
    first = len(queries)
    load_test = services.loadtest_start(
        actor=scientist, endpoint=staging, config=config(), confirmed=True, source="api"
    )
    finish(load_test, [stage(0, 5, 5, 20)])
    with CaptureQueriesContext(connection) as queries:
        api.get("/api/v1/loadtests/?endpoint=local-staging")
    assert len(queries) == first  # no query per test
    by_version = api.get(f"/api/v1/loadtests/?model={version.model.name}&version=1").json()
    assert by_version["count"] == 4
    assert api.get(f"/api/v1/loadtests/?model={version.model.name}").json()["count"] == 4
    assert api.get(f"/api/v1/loadtests/?model={version.model.name}&version=9").status_code == 404


def test_cancel_approve_reject_apply(scientist, approver, platform_admin, staging, version):
    api = api_for(scientist)
    pk = post(api, {"endpoint": "local-staging", "config": config(), "confirmed": True}).json()[
        "id"
    ]
    answer = api.post(f"/api/v1/loadtests/{pk}/cancel/", {"reason": "oops"}, format="json")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    assert api.post(f"/api/v1/loadtests/{pk}/cancel/", {}, format="json").status_code == 409

    production = Endpoint.objects.get(name="local-production")
    live_version(production)
    admin_api = api_for(platform_admin)
    pk = post(admin_api, {"endpoint": "local-production", "config": config(), "confirmed": True})
    pk = pk.json()["id"]
    assert admin_api.post(f"/api/v1/loadtests/{pk}/approve/").status_code == 403
    approver_api = api_for(approver)
    rejected = approver_api.post(f"/api/v1/loadtests/{pk}/reject/", {}, format="json")
    assert rejected.status_code == 400 and rejected.json()["field"] == "reason"
    approved = approver_api.post(f"/api/v1/loadtests/{pk}/approve/")
    assert approved.status_code == 200 and approved.json()["approved_by"] == "alex"

    load_test = services.loadtest_start(
        actor=scientist, endpoint=staging, config=config(), confirmed=True, source="api"
    )
    finish(load_test, [stage(0, 10, 10, 20)])
    applied = api.post(
        f"/api/v1/loadtests/{load_test.pk}/apply/",
        {"safety_factor": 0.5, "peak_rps": 40},
        format="json",
    )
    assert applied.status_code == 200, applied.json()
    assert applied.json()["result"]["applied"]["target_invocations_per_instance"] == 300
    bad = api.post(f"/api/v1/loadtests/{load_test.pk}/apply/", {"safety_factor": 7}, format="json")
    assert bad.status_code == 400 and "safety_factor" in bad.json()["errors"]
    viewer = user_in("approver", username="viewer")
    assert api_for(viewer).get(f"/api/v1/loadtests/{load_test.pk}/").status_code == 200
