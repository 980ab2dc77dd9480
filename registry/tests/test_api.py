"""Registry API v1: auth, registration (multipart and URI), 4xx with field and reason,
409s, filters, pagination and pinned query counts."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from registry.choices import VersionStatus
from registry.models import ModelVersion

from . import archives
from .conftest import LINEAGE
from .factories import ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db

MODELS = reverse("registry-api:model-list")


def versions_url(name: str) -> str:
    return reverse("registry-api:version-list", kwargs={"name": name})


def multipart(path, **extra):
    data = {
        "archive": SimpleUploadedFile(path.name, path.read_bytes()),
        "lineage": json.dumps(LINEAGE),
    }
    data.update(extra)
    return data


def test_api_needs_a_token():
    anonymous = APIClient()
    assert anonymous.get(MODELS).status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer berth_nope")
    assert bad.get(MODELS).status_code == 401


def test_users_without_the_registry_permissions_get_403(demo_tar, model):
    from portal.services import token_create

    from .factories import UserFactory

    _, raw = token_create(actor=UserFactory(username="viewer", scientist=False), name="ro")
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert viewer.get(MODELS).status_code == 200
    assert viewer.post(MODELS, {"name": "mine"}, format="json").status_code == 403
    response = viewer.post(versions_url("iris"), multipart(demo_tar), format="multipart")
    assert response.status_code == 403 and "data scientists" in response.json()["detail"]


def test_create_list_and_retrieve_models(api):
    response = api.post(
        MODELS, {"name": "iris", "description": "Iris", "tags": ["demo"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["owner"] == "dana" and response.json()["version_count"] == 0
    conflict = api.post(MODELS, {"name": "iris"}, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["field"] == "name"
    bad = api.post(MODELS, {"name": "no spaces allowed"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "name"
    missing = api.post(MODELS, {}, format="json")
    assert missing.status_code == 400 and "name" in missing.json()["errors"]
    assert api.get(MODELS + "?q=iri").json()["count"] == 1
    assert api.get(MODELS + "?tag=demo").json()["count"] == 1
    assert api.get(MODELS + "?tag=other").json()["count"] == 0
    detail = api.get(reverse("registry-api:model-detail", kwargs={"name": "iris"}))
    assert detail.json()["name"] == "iris"
    assert api.get(reverse("registry-api:model-detail", kwargs={"name": "nope"})).status_code == 404


def test_register_multipart_then_retrieve(api, model, demo_tar):
    response = api.post(
        versions_url("iris"), multipart(demo_tar, description="first"), format="multipart"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == 1 and body["status"] == "registered" and body["in_progress"] is False
    assert body["lineage"]["source_commit"] == LINEAGE["source_commit"]
    assert body["lineage"]["metrics"] == LINEAGE["metrics"]
    assert body["package"] is None and body["test_results"] == [] and body["problems"] == []
    detail = api.get(reverse("registry-api:version-detail", kwargs={"name": "iris", "version": 1}))
    assert detail.status_code == 200 and detail.json()["content_sha256"] == body["content_sha256"]


def test_register_duplicate_content_is_409_with_the_existing_version(api, model, demo_tar):
    assert (
        api.post(versions_url("iris"), multipart(demo_tar), format="multipart").status_code == 201
    )
    again = api.post(versions_url("iris"), multipart(demo_tar), format="multipart")
    assert again.status_code == 409
    body = again.json()
    assert body["code"] == "duplicate_content" and body["field"] == "archive"
    assert body["existing_version"]["version"] == 1


def test_register_existing_version_number_is_409(api, model, demo_tar, registry_dirs):
    api.post(versions_url("iris"), multipart(demo_tar), format="multipart")
    other = archives.repository_archive({"m/config.pbtxt": "x"}, registry_dirs / "o.tar.gz")
    response = api.post(versions_url("iris"), multipart(other, version=1), format="multipart")
    assert response.status_code == 409 and response.json()["field"] == "version"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"lineage": "{not json"}, "lineage", "Not valid JSON"),
        ({"lineage": json.dumps({"metrics": {"acc": "high"}})}, "lineage.metrics", "finite number"),
        (
            {"lineage": json.dumps({"parent": "iris:42"})},
            "lineage.parent",
            "not a registered version",
        ),
        ({"test_cases": json.dumps({"not": "a list"})}, "test_cases", "Must be a list"),
        ({"archive": None}, "archive", "Upload an archive"),
    ],
)
def test_register_bad_input_is_400_with_field_and_reason(api, model, demo_tar, data, field, reason):
    payload = multipart(demo_tar, **data)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = api.post(versions_url("iris"), payload, format="multipart")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in body["errors"], body
    assert reason in json.dumps(body)
    assert not ModelVersion.objects.exists()


def test_register_too_large_is_413(api, model, demo_tar, settings):
    settings.BERTH_UPLOAD_MAX_BYTES = 64
    response = api.post(versions_url("iris"), multipart(demo_tar), format="multipart")
    assert response.status_code == 413 and response.json()["field"] == "archive"


def test_register_by_uri_as_json(api, model, registry_dirs, demo_tar):
    allowed = registry_dirs / "allowed" / "demo.tar.gz"
    allowed.write_bytes(demo_tar.read_bytes())
    response = api.post(
        versions_url("iris"), {"uri": str(allowed), "lineage": LINEAGE}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert (
        response.json()["source_uri"] == str(allowed)
        and response.json()["artifact_source"] == "uri"
    )
    refused = api.post(versions_url("iris"), {"uri": "/etc/passwd", "lineage": {}}, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "uri"
    both = api.post(versions_url("iris"), {"lineage": {}}, format="json")
    assert both.status_code == 400 and both.json()["field"] == "archive"


def test_register_on_unknown_model_is_404(api, demo_tar):
    assert (
        api.post(versions_url("nope"), multipart(demo_tar), format="multipart").status_code == 404
    )


def test_version_filters_and_pagination(api, model):
    other = RegisteredModelFactory(name="resnet")
    ModelVersionFactory(
        model=model, version=1, status=VersionStatus.PACKAGED, tags=["prod"], source_commit="abc123"
    )
    ModelVersionFactory(
        model=model, version=2, status=VersionStatus.INVALID, tags=["dev"], source_commit="def456"
    )
    ModelVersionFactory(model=other, version=1, status=VersionStatus.PACKAGED, tags=["prod", "gpu"])
    url = reverse("registry-api:all-versions")
    assert api.get(url).json()["count"] == 3
    assert api.get(url + "?status=packaged").json()["count"] == 2
    assert api.get(url + "?status=packaged&status=invalid").json()["count"] == 3
    assert api.get(url + "?tag=prod").json()["count"] == 2
    assert api.get(url + "?tag=gpu").json()["count"] == 1
    assert [v["version"] for v in api.get(url + "?commit=abc").json()["results"]] == [1]
    assert api.get(url + "?model=resnet").json()["count"] == 1
    bad = api.get(url + "?status=sleeping")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    page = api.get(versions_url("iris") + "?page_size=1")
    assert page.json()["count"] == 2 and [v["version"] for v in page.json()["results"]] == [2]
    assert page.json()["next"]
    second = api.get(versions_url("iris") + "?page_size=1&page=2").json()
    assert [v["version"] for v in second["results"]] == [1]


def make_versions(count: int) -> None:
    parent = None
    for _ in range(count):
        model = RegisteredModelFactory()
        parent = ModelVersionFactory(model=model, version=1, parent=parent, tags=["t"])


@pytest.mark.parametrize("url_name", ["registry-api:all-versions", "registry-api:model-list"])
def test_list_query_count_does_not_grow_with_page_size(api, django_assert_num_queries, url_name):
    make_versions(30)
    url = reverse(url_name)
    api.get(url)  # token last-used touch happens at most once a minute
    # token lookup, count, page rows
    with django_assert_num_queries(3):
        small = api.get(url + "?page_size=5")
    with django_assert_num_queries(3):
        large = api.get(url + "?page_size=30")
    assert len(small.json()["results"]) == 5 and len(large.json()["results"]) == 30


def test_model_versions_query_count_is_pinned(api, model, django_assert_num_queries):
    for number in range(1, 21):
        ModelVersionFactory(model=model, version=number)
    api.get(versions_url("iris"))
    # token, model lookup, count, page rows
    with django_assert_num_queries(4):
        response = api.get(versions_url("iris") + "?page_size=20")
    assert len(response.json()["results"]) == 20


def test_version_detail_shows_problems_results_and_package(api, model):
    version = ModelVersionFactory(
        model=model,
        version=1,
        status=VersionStatus.PACKAGED,
        package_uri="/store/iris_1.tar.gz",
        package_sha256="ab" * 32,
        package_size_bytes=10,
        problems=[],
    )
    version.test_results.create(
        name="case", outcome="passed", actual={"Y": {"data": [1]}}, duration_ms=1.5
    )
    body = api.get(
        reverse("registry-api:version-detail", kwargs={"name": "iris", "version": 1})
    ).json()
    assert body["package"] == {
        "name": "iris_1.tar.gz",
        "uri": "/store/iris_1.tar.gz",
        "sha256": "ab" * 32,
        "size_bytes": 10,
    }
    assert (
        body["test_results"][0]["name"] == "case" and body["test_results"][0]["outcome"] == "passed"
    )
    missing = api.get(reverse("registry-api:version-detail", kwargs={"name": "iris", "version": 9}))
    assert missing.status_code == 404


def test_retry_endpoint(api, model):
    ModelVersionFactory(model=model, version=1, status=VersionStatus.TEST_FAILED)
    response = api.post(
        reverse("registry-api:version-retry", kwargs={"name": "iris", "version": 1})
    )
    assert response.status_code == 202
    ModelVersionFactory(model=model, version=2, status=VersionStatus.INVALID)
    response = api.post(
        reverse("registry-api:version-retry", kwargs={"name": "iris", "version": 2})
    )
    assert response.status_code == 409
    # Someone else's version: only its registrar, the model's owner or an admin may retry it.
    from portal.services import token_create

    from .factories import UserFactory

    _, raw = token_create(actor=UserFactory(username="mallory"), name="ci")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    url = reverse("registry-api:version-retry", kwargs={"name": "iris", "version": 1})
    assert other.post(url).status_code == 403


def test_openapi_schema_describes_multipart_registration(api):
    schema = api.get(reverse("api-schema") + "?format=json").json()
    operation = schema["paths"]["/api/v1/models/{name}/versions/"]["post"]
    content = operation["requestBody"]["content"]
    assert "multipart/form-data" in content and "application/json" in content
    ref = content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert properties["archive"]["format"] == "binary"
    assert {"lineage", "uri", "test_cases"} <= set(properties)
    assert "409" in operation["responses"] and "413" in operation["responses"]


def test_oversized_request_is_refused_before_reading_it(api, model, settings):
    settings.BERTH_UPLOAD_MAX_BYTES = 10
    body = b"x" * (2 * 1024 * 1024)
    response = api.generic(
        "POST",
        versions_url("iris"),
        body,
        content_type="multipart/form-data; boundary=nothing",
    )
    assert response.status_code == 413 and response.json()["field"] == "archive"


def test_list_rows_match_the_declared_serializer_fields(model):
    from rest_framework import serializers

    from registry import selectors
    from registry.api.serializers import ModelVersionSerializer, RegisteredModelSerializer

    parent = ModelVersionFactory(model=model, version=1, metrics={"acc": 0.5}, tags=["x"])
    ModelVersionFactory(
        model=model,
        version=2,
        parent=parent,
        package_uri="/p/iris_2.tar.gz",
        package_sha256="ef" * 32,
        package_size_bytes=5,
    )
    for row in selectors.version_list():
        serializer = ModelVersionSerializer(row)
        declared = serializers.ModelSerializer.to_representation(serializer, row)
        assert serializer.data == declared
    for row in selectors.model_list():
        serializer = RegisteredModelSerializer(row)
        declared = serializers.ModelSerializer.to_representation(serializer, row)
        assert serializer.data == declared
