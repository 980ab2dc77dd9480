"""Property-based fuzzing of the REST API from its own OpenAPI schema, and hostile JSON bodies.

CI users generate their clients from `/api/schema/`, so the schema must tell the truth: every
status an operation can answer is documented, every answer matches its documented shape and
content type, requests the schema calls valid are not refused, requests it calls invalid are
refused, and nothing answers 5xx. Schemathesis generates the requests (valid and invalid)
from the schema drf-spectacular builds, sends them to the Django app in-process (WSGI), and
runs all its checks on each answer.

The run is bounded (a fixed number of examples per operation, no shrinking of failures) and
deterministic (derandomized), so CI neither flakes nor grows slow. It runs once as a CI user
(a data scientist's token) and once as an approver, against a world with a model, a packaged
version, a deployment and a pending promotion request, so that generated requests also reach
the successful answers and not only 404s: a path parameter is pointed at one of these objects
for half of the generated cases.

Operations that start background work only queue it on commit: these tests run inside a
transaction that is rolled back, so no task ever reaches a broker that a later test's real
worker reads.
"""

from __future__ import annotations

import json
import zlib

import pytest
import schemathesis
from django.contrib.auth.models import Group
from hypothesis import HealthCheck, Phase, settings
from rest_framework.test import APIClient

from deployments import services as deployment_services
from deployments.choices import DeploymentState
from deployments.models import Deployment, Endpoint
from deployments.tests.factories import RegisteredModelFactory, UserFactory, packaged_version
from portal.services import token_create

# Examples per operation and generation mode; with ~25 operations and two users this keeps
# the whole module around a minute on two cores.
MAX_EXAMPLES = 20


def user_with_token(group: str, username: str) -> tuple[object, str]:
    user = UserFactory(username=username)
    user.groups.add(Group.objects.get(name=group))
    _, raw = token_create(actor=user, name="fuzz")
    return user, raw


@pytest.fixture
def in_process_requests():
    """Requests sent straight to the WSGI application must not close the test's database
    connection when they finish (Django's own test client disconnects the same handlers)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(db, in_process_requests, settings, tmp_path):
    """Objects for path parameters to point at, and a token per role."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.BERTH_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.BERTH_DATAPLANE_STORE = str(tmp_path / "stores")
    settings.BERTH_ALLOWED_SOURCE_DIRS = [str(tmp_path / "allowed")]
    settings.BERTH_WEBHOOK_URLS = []
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    (tmp_path / "allowed").mkdir()
    scientist, scientist_token = user_with_token("data scientist", "ci-bot")
    approver, approver_token = user_with_token("approver", "alex")
    model = RegisteredModelFactory(name="iris", owner=scientist)
    version = packaged_version(model=model, registered_by=scientist)
    staging = Endpoint.objects.get(name="local-staging")
    production = Endpoint.objects.get(name="local-production")
    deployment = deployment_services.deployment_start(
        actor=scientist, endpoint=staging, version=version, source="api"
    )
    Deployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.SUCCEEDED)
    promotion = deployment_services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production, source="api"
    )
    return {
        "tokens": {"scientist": scientist_token, "approver": approver_token},
        "model": model.name,
        "version": version.version,
        "endpoint": staging.name,
        "environment": staging.environment.name,
        "deployment": deployment.pk,
        "promotion": promotion.pk,
    }


def openapi_document(*, only_under: str = "") -> dict:
    """The schema a client downloads; with `only_under`, only the operations under it."""
    from drf_spectacular.generators import SchemaGenerator

    # A JSON round trip turns lazy strings and tuples into what a client downloads.
    document = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    document["paths"] = {
        path: item for path, item in document["paths"].items() if path.startswith(only_under)
    }
    return document


def fuzz_schema(*, only_under: str = ""):
    """The schema a client downloads, sent to the app in-process (WSGI)."""
    from portal.wsgi import application

    config = schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                # PostgreSQL text cannot hold NUL, so the API refuses it in every string (the
                # schema's description says so); the tests below send it on purpose.
                "allow-x00": False,
            },
            "checks": {"enabled": True},
            "operations": [
                {
                    # Whether an archive is one (a tar or zip of a Triton repository) and
                    # whether a URI names one that exists are not things a schema can say:
                    # such a request, valid by the schema, is refused with 400 naming the
                    # field. Every other check still applies to this operation.
                    "include-name": "POST /api/v1/models/{name}/versions/",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "400", "401", "403", "404", "409"]
                        }
                    },
                }
            ],
        }
    )
    loaded = schemathesis.openapi.from_dict(openapi_document(only_under=only_under), config=config)
    loaded.app = application
    return loaded


schema = fuzz_schema()
promotion_schema = fuzz_schema(only_under="/api/v1/promotions/")


def point_at_known_objects(case, world: dict) -> None:
    """For about half the cases (chosen from the generated value, so deterministically),
    replace generated path parameters with objects that exist, so that answers other than
    404 are checked too."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    path = case.operation.path
    for name, value in list((case.path_parameters or {}).items()):
        if zlib.crc32(repr(value).encode()) % 2:
            continue
        if name == "name":
            if path.startswith("/api/v1/models/"):
                case.path_parameters[name] = world["model"]
            elif path.startswith("/api/v1/endpoints/"):
                case.path_parameters[name] = world["endpoint"]
            elif path.startswith("/api/v1/environments/"):
                case.path_parameters[name] = world["environment"]
        elif name == "version":
            case.path_parameters[name] = world["version"]
        elif name == "id":
            if path.startswith("/api/v1/deployments/"):
                case.path_parameters[name] = world["deployment"]
            elif path.startswith("/api/v1/promotions/"):
                case.path_parameters[name] = world["promotion"]


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=True,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_answers_ci_as_its_schema_says(case, fuzz_world):
    """Every operation, with a CI user's token (a data scientist's)."""
    point_at_known_objects(case, fuzz_world)
    case.call_and_validate(headers=bearer(fuzz_world["tokens"]["scientist"]))


@promotion_schema.parametrize()
@FUZZ_SETTINGS
def test_promotion_api_answers_an_approver_as_its_schema_says(case, fuzz_world):
    """The promotion operations, with an approver's token: approvals and rejections that
    succeed, then conflict."""
    point_at_known_objects(case, fuzz_world)
    case.call_and_validate(headers=bearer(fuzz_world["tokens"]["approver"]))


# Hostile JSON bodies --------------------------------------------------------------------

JSON_ENDPOINTS = [
    "/api/v1/models/",
    "/api/v1/models/iris/versions/",
    "/api/v1/deployments/",
    "/api/v1/promotions/",
    "/api/v1/endpoints/local-staging/rollback/",
]


@pytest.fixture
def ci_client(fuzz_world) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {fuzz_world['tokens']['scientist']}")
    return client


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_deeply_nested_json_answers_400(ci_client, url):
    """50,000 nested arrays overflow a recursive decoder (RecursionError, 500 before)."""
    body = "[" * 50_000 + "]" * 50_000
    response = ci_client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nest" in response.json()["detail"].lower()


def test_deeply_nested_object_in_a_field_answers_400(ci_client):
    """Nesting inside a member the serializer accepts as an object (lineage)."""
    body = '{"uri": "x", "lineage": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
    response = ci_client.post(
        "/api/v1/models/iris/versions/", data=body, content_type="application/json"
    )
    assert response.status_code == 400, response.content[:300]
    assert "nest" in response.json()["detail"].lower()


def test_oversized_json_answers_413(ci_client, settings):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE answered Django's HTML 400 page."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = json.dumps({"name": "big", "description": "x" * (128 * 1024)})
    response = ci_client.post("/api/v1/models/", data=body, content_type="application/json")
    assert response.status_code == 413, response.content[:300]
    assert response.json()["code"] == "too_large"
    assert "65536 bytes" in response.json()["detail"]


def test_deep_json_within_the_limit_is_accepted(ci_client):
    """Ordinary nesting (a rank-4 tensor in a test case) still registers."""
    lineage = {"metrics": {"accuracy": 0.9}, "tags": ["a"]}
    body = {"name": "nested-ok", "description": "", "tags": ["x"]}
    response = ci_client.post("/api/v1/models/", data=body, format="json")
    assert response.status_code == 201, response.content[:300]
    from portal.parsers import json_loads_bounded

    assert json_loads_bounded(json.dumps([[[[[lineage]]]]])) == [[[[[lineage]]]]]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/models/iris%00/",
        "/api/v1/models/iris/versions/1%00/",
        "/api/v1/endpoints/local-staging%00/",
        "/api/v1/environments/staging%00/",
        "/api/v1/deployments/1%00/",
        "/api/v1/endpoints/local-staging%00/metric-data/",
    ],
)
def test_nul_in_a_path_answers_json_404(ci_client, url):
    """PostgreSQL refuses NUL in text: a name with one reached the query and answered 500."""
    response = ci_client.get(url)
    assert response.status_code == 404, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_nul_in_a_name_given_as_a_query_answers_404(ci_client):
    """The timeline's `model` went straight to a query: 500 on PostgreSQL."""
    response = ci_client.get("/api/v1/endpoints/local-staging/timeline/", {"model": "iris\x00"})
    assert response.status_code == 404, response.content[:300]
    assert response.json()["field"] == "model"


def test_nul_in_a_query_or_body_answers_400(ci_client):
    response = ci_client.get("/api/v1/deployments/", {"model": "iris\x00"})
    assert response.status_code == 400, response.content[:300]
    response = ci_client.post(
        "/api/v1/models/iris/versions/",
        data='{"uri": "/x", "lineage": {"source_repository": "a\\u0000b"}}',
        content_type="application/json",
    )
    assert response.status_code == 400, response.content[:300]
    assert "NUL" in response.json()["detail"]


def test_unknown_api_address_answers_json_404(ci_client):
    response = ci_client.post("/api/v1/no-such-thing/", data={}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "No API operation at this address.", "code": "not_found"}
