"""The approval gate cannot be walked around.

The attack: a data scientist, who may deploy to staging without approval, creates a
*staging* endpoint that maps to the production data-plane endpoint (`local-production`), or
to a path (`../../x`), and deploys to it. Production then serves an unapproved version while
the portal shows nothing live there, or the package lands outside the model store. Each way
in (the API, the browser form, the deploy wizard, the Django admin) is tried: the creation is
refused with 403 and its reason, nothing is placed in or next to the model store, no
deployment exists and nothing is live. Admins, who may create endpoints, cannot map two
endpoints to one target or name a path (400, the field named). Turning production's
approval off leaves an audit record with the old and new value. SageMaker endpoints and
`s3://` sources may only name the S3 buckets and IAM roles the administrators allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from django.db import IntegrityError, transaction
from moto import mock_aws
from rest_framework.test import APIClient

from deployments import services
from deployments.admin import EnvironmentAdmin
from deployments.backends import DeploymentStepError
from deployments.backends.local import endpoint_store
from deployments.models import Deployment, Endpoint, Environment, LiveVersion
from deployments.tests.factories import (
    RegisteredModelFactory,
    allow,
    packaged_version,
    run,
    sagemaker_endpoint,
    user_in,
)
from portal.errors import PermissionDenied, ServiceError
from portal.models import AuditEvent
from portal.services import token_create
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db

AWS_REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/berth-sagemaker"


@pytest.fixture(autouse=True)
def stores(settings, tmp_path):
    """The data plane's model store two levels down, so writes next to it show too."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.BERTH_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.BERTH_DATAPLANE_STORE = str(tmp_path / "dataplane" / "stores")
    settings.BERTH_WEBHOOK_URLS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    (tmp_path / "dataplane" / "stores").mkdir(parents=True)
    return tmp_path


@pytest.fixture(autouse=True)
def eager_celery():
    """Anything queued runs at once, in process: a deployment the gate let through would
    place its package during the test, where the assertions see it."""
    from portal.celery import app

    previous = app.conf.task_always_eager
    app.conf.update(CELERY_TASK_ALWAYS_EAGER=True)
    yield
    app.conf.update(CELERY_TASK_ALWAYS_EAGER=previous)


@pytest.fixture
def aws(monkeypatch, settings):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    settings.AWS_REGION = AWS_REGION
    settings.AWS_ENDPOINT_URL = ""
    with mock_aws():
        s3 = boto3.client("s3", region_name=AWS_REGION)
        for bucket in ("berth-models", "someone-elses-bucket", "ci-uploads"):
            s3.create_bucket(Bucket=bucket)
        yield s3


@pytest.fixture
def scientist(db):
    # Staff too, so the Django admin's own login check is not what stops them.
    return user_in("data scientist", username="dana", is_staff=True)


@pytest.fixture
def admin(db):
    return user_in("admin", username="ada", is_staff=True)


@pytest.fixture
def version(scientist):
    return packaged_version(registered_by=scientist)


def api_for(user) -> APIClient:
    _, raw = token_create(actor=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def tree(root: Path) -> set[str]:
    """Every path under `root` (the model store's parent)."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def assert_nothing_placed(stores: Path, before: set[str]) -> None:
    # Whatever was queued has run (eagerly); a deployment that exists now is executed as a
    # worker would, so a package it would place is on disk before the check.
    for deployment in Deployment.objects.all():
        run(deployment)
    assert tree(stores / "dataplane") == before
    assert not any(stores.parent.glob("x")) and not (stores / "x").exists()
    assert not Deployment.objects.exists()
    assert not LiveVersion.objects.exists()


ATTACK = {
    "name": "dana-staging",
    "environment": "staging",
    "backend": "local",
    "dataplane_endpoint": "local-production",
}


def browser_form(**overrides) -> dict:
    data = {
        "name": "dana-staging",
        "environment": "staging",
        "backend": "local",
        "description": "",
        "target_name": "local-production",
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 1,
    }
    data.update(overrides)
    return data


def admin_form(**overrides) -> dict:
    data = {
        "name": "dana-staging",
        "environment": Environment.objects.get(name="staging").pk,
        "backend": "local",
        "target_name": "local-production",
        "description": "",
        "memory_budget_bytes": "",
        "region": "",
        "instance_type": "",
        "initial_instance_count": 1,
        "execution_role_arn": "",
        "s3_prefix": "",
        "image_uri": "",
        "variant_name": "AllTraffic",
        "autoscaling_min_instances": 1,
        "autoscaling_max_instances": 2,
        "target_invocations_per_instance": 100,
        "scale_in_cooldown_seconds": 300,
        "scale_out_cooldown_seconds": 60,
        "reason": "",
    }
    data.update(overrides)
    return data


# The attack, by a data scientist --------------------------------------------------------


def test_api_refuses_a_scientist_mapping_staging_to_production(scientist, version, stores):
    before = tree(stores / "dataplane")
    api = api_for(scientist)
    created = api.post("/api/v1/endpoints/", ATTACK, format="json")
    assert created.status_code == 403, created.json()
    assert created.json()["code"] == "admin_only"
    assert "Only admins create and change endpoints" in created.json()["detail"]
    deployed = api.post(
        "/api/v1/deployments/",
        {"endpoint": "dana-staging", "model": version.model.name, "version": version.version},
        format="json",
    )
    assert deployed.status_code == 404 and deployed.json()["field"] == "endpoint"
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert Endpoint.objects.get(name="local-production").target_name == "local-production"
    assert not AuditEvent.objects.filter(action="endpoint.create").exists()
    assert_nothing_placed(stores, before)


def test_browser_form_refuses_a_scientist(client, scientist, version, stores):
    before = tree(stores / "dataplane")
    client.force_login(scientist)
    page = client.get("/endpoints/new/")
    assert page.status_code == 403 and b"Only admins create" in page.content
    posted = client.post("/endpoints/new/", browser_form())
    assert posted.status_code == 403 and b"Only admins create" in posted.content
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)


def test_deploy_wizard_refuses_a_new_endpoint_from_a_scientist(client, scientist, version, stores):
    before = tree(stores / "dataplane")
    client.force_login(scientist)
    client.get("/deployments/new/")
    assert client.post("/deployments/new/1/", {"version": version.pk}).status_code == 302
    step2 = client.post(
        "/deployments/new/2/",
        {"choice": "new", "name": "dana-staging", "environment": "staging", "backend": "local"},
    )
    assert step2.status_code == 403 and b"Only admins create" in step2.content
    # Step 4 never sees a new endpoint: the wizard goes back to choosing one.
    review = client.post("/deployments/new/4/", {"confirm": "1"})
    assert review.status_code == 302 and review.url == "/deployments/new/2/"
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)


def test_admin_site_refuses_a_scientist(client, scientist, version, stores):
    before = tree(stores / "dataplane")
    client.force_login(scientist)
    added = client.post("/admin/deployments/endpoint/add/", admin_form())
    assert added.status_code == 403
    staging = Endpoint.objects.get(name="local-staging")
    changed = client.post(
        f"/admin/deployments/endpoint/{staging.pk}/change/",
        admin_form(name="local-staging", target_name="local-production"),
    )
    assert changed.status_code == 403
    production = Environment.objects.get(name="production")
    env_changed = client.post(
        f"/admin/deployments/environment/{production.pk}/change/",
        {"label": "Production", "order": 20, "description": ""},  # requires_approval unticked
    )
    assert env_changed.status_code == 403
    assert Environment.objects.get(name="production").requires_approval
    assert Endpoint.objects.get(name="local-staging").target_name == "local-staging"
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)


def test_services_refuse_a_scientist_whatever_calls_them(scientist):
    staging = Environment.objects.get(name="staging")
    production = Environment.objects.get(name="production")
    endpoint = Endpoint.objects.get(name="local-staging")
    with pytest.raises(PermissionDenied):
        services.endpoint_create(
            actor=scientist, name="x1", environment=staging, target_name="local-production"
        )
    with pytest.raises(PermissionDenied):
        services.endpoint_update(actor=scientist, endpoint=endpoint, target_name="elsewhere")
    with pytest.raises(PermissionDenied):
        services.environment_update(
            actor=scientist, environment=production, requires_approval=False
        )
    with pytest.raises(PermissionDenied):
        services.endpoint_update(
            actor=scientist, endpoint=endpoint, environment=production, reason="move it"
        )
    assert Environment.objects.get(name="production").requires_approval


# Admins: a target is a name, and one endpoint's ----------------------------------------


@pytest.mark.parametrize(
    "target, expected",
    [
        ("local-production", "The endpoint local-production already maps to"),
        ("../../x", "Letters, digits and '-'"),
        ("..", "Letters, digits and '-'"),
        ("a/b", "Letters, digits and '-'"),
    ],
)
def test_api_refuses_a_taken_or_path_target_even_for_admins(admin, stores, target, expected):
    before = tree(stores / "dataplane")
    api = api_for(admin)
    legacy = api.post("/api/v1/endpoints/", {**ATTACK, "dataplane_endpoint": target}, format="json")
    assert legacy.status_code == 400, legacy.json()
    assert legacy.json()["field"] == "dataplane_endpoint"
    assert expected in legacy.json()["detail"]
    current = api.post(
        "/api/v1/endpoints/",
        {"name": "dana-staging", "environment": "staging", "target_name": target},
        format="json",
    )
    assert current.status_code == 400 and current.json()["field"] == "target_name"
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)


def test_the_default_target_is_taken_too(admin):
    """An empty target means the endpoint's own name, stored as such: a second endpoint
    naming that target, or an endpoint named like another one's target, is refused."""
    api = api_for(admin)
    created = api.post(
        "/api/v1/endpoints/", {"name": "team-a", "environment": "staging"}, format="json"
    )
    assert created.status_code == 201 and created.json()["target_name"] == "team-a"
    assert created.json()["dataplane_endpoint"] == "team-a"
    taken = api.post(
        "/api/v1/endpoints/",
        {"name": "team-b", "environment": "staging", "target_name": "team-a"},
        format="json",
    )
    assert taken.status_code == 400 and taken.json()["field"] == "target_name"
    assert "team-a already maps" in taken.json()["detail"]
    mapped = api.post(
        "/api/v1/endpoints/",
        {"name": "team-c", "environment": "staging", "target_name": "team-d"},
        format="json",
    )
    assert mapped.status_code == 201
    clash = api.post(
        "/api/v1/endpoints/", {"name": "team-d", "environment": "staging"}, format="json"
    )
    assert clash.status_code == 400 and "team-c already maps" in clash.json()["detail"]


def test_browser_form_refuses_a_taken_or_path_target_for_admins(client, admin, stores):
    before = tree(stores / "dataplane")
    client.force_login(admin)
    for target, expected in [
        ("local-production", "local-production already maps"),
        ("../../x", "Letters, digits"),
    ]:
        page = client.post("/endpoints/new/", browser_form(target_name=target))
        assert page.status_code == 400
        assert expected in " ".join(page.context["form"].errors["target_name"])
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)
    made = client.post("/endpoints/new/", browser_form(target_name=""))
    assert made.status_code == 302
    assert Endpoint.objects.get(name="dana-staging").target_name == "dana-staging"


def test_admin_site_refuses_a_taken_or_path_target_for_admins(client, admin, stores):
    before = tree(stores / "dataplane")
    client.force_login(admin)
    for target, expected in [
        ("local-production", "local-production already maps"),
        ("../../x", "Letters, digits"),
    ]:
        page = client.post("/admin/deployments/endpoint/add/", admin_form(target_name=target))
        assert page.status_code == 200  # the admin shows its form again, with the errors
        errors = page.context["adminform"].form.errors
        assert expected in " ".join(errors["target_name"])
    staging = Endpoint.objects.get(name="local-staging")
    page = client.post(
        f"/admin/deployments/endpoint/{staging.pk}/change/",
        admin_form(name="local-staging", target_name="local-production"),
    )
    assert "local-production already maps" in " ".join(
        page.context["adminform"].form.errors["target_name"]
    )
    assert Endpoint.objects.get(name="local-staging").target_name == "local-staging"
    assert not Endpoint.objects.filter(name="dana-staging").exists()
    assert_nothing_placed(stores, before)
    # A valid one is created through the service: audited, as the admin.
    made = client.post("/admin/deployments/endpoint/add/", admin_form(target_name=""))
    assert made.status_code == 302
    endpoint = Endpoint.objects.get(name="dana-staging")
    assert endpoint.target_name == "dana-staging" and endpoint.created_by == admin
    event = AuditEvent.objects.get(action="endpoint.create", target_id=str(endpoint.pk))
    assert (event.actor, event.source) == (admin, "admin")
    assert event.data["target_name"] == "dana-staging"


def test_the_database_and_the_store_refuse_a_path_target_on_their_own(stores, tmp_path):
    """Defense in depth: a row written around the services, and the one function that
    owns the store path."""
    staging = Endpoint.objects.get(name="local-staging")
    with pytest.raises(IntegrityError), transaction.atomic():
        Endpoint.objects.filter(pk=staging.pk).update(target_name="../../x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Endpoint.objects.filter(pk=staging.pk).update(target_name="local-production")
    for bad in ("../../x", "..", "/etc", ""):
        staging.target_name = bad
        with pytest.raises(DeploymentStepError):
            endpoint_store(staging)
    # A link in the store that leads out of it is not followed.
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, Path(stores / "dataplane" / "stores" / "linked"))
    staging.target_name = "linked"
    with pytest.raises(DeploymentStepError, match="outside"):
        endpoint_store(staging)
    staging.target_name = "local-staging"
    assert endpoint_store(staging) == (stores / "dataplane" / "stores" / "local-staging").resolve()


# Environments: the gate's own switch ----------------------------------------------------


def test_environment_admin_has_no_list_editable_and_the_changelist_changes_nothing(client, admin):
    assert not EnvironmentAdmin.list_editable
    client.force_login(admin)
    production = Environment.objects.get(name="production")
    client.post(
        "/admin/deployments/environment/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": production.pk,
            "form-0-order": 20,
            "_save": "Save",
        },
    )
    assert Environment.objects.get(name="production").requires_approval


def test_admin_turning_approval_off_is_audited_with_old_and_new_value(client, admin):
    client.force_login(admin)
    production = Environment.objects.get(name="production")
    page = client.post(
        f"/admin/deployments/environment/{production.pk}/change/",
        {
            "label": "Production",
            "order": 20,
            "description": "",
            "allowed_s3_buckets": "",
            "allowed_role_arns": "",
            "loadtest_max_rps": 200,
            "loadtest_max_seconds": 600,
            "reason": "Load-test week",
        },  # requires_approval unticked
    )
    assert page.status_code == 302
    production.refresh_from_db()
    assert not production.requires_approval
    event = AuditEvent.objects.get(target_id=str(production.pk), action="environment.approval_off")
    assert event.actor == admin and event.source == "admin"
    assert event.data["changes"]["requires_approval"] == {"before": True, "after": False}
    assert event.reason == "Load-test week"
    # And back on: audited as a change, with the old and new value.
    services.environment_update(actor=admin, environment=production, requires_approval=True)
    back = AuditEvent.objects.get(target_id=str(production.pk), action="environment.update")
    assert back.data["changes"]["requires_approval"] == {"before": False, "after": True}


# Allow-lists: S3 buckets and IAM roles ---------------------------------------------------


def test_sagemaker_endpoint_bucket_and_role_must_be_on_the_environments_allow_list(aws, admin):
    api = api_for(admin)
    body = {
        "name": "sm-staging",
        "environment": "staging",
        "backend": "sagemaker",
        "instance_type": "ml.g4dn.xlarge",
        "execution_role_arn": ROLE,
        "s3_prefix": "s3://someone-elses-bucket/models/",
    }
    refused = api.post("/api/v1/endpoints/", body, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "s3_prefix"
    assert (
        "someone-elses-bucket is not on the staging environment's allow-list"
        in (refused.json()["detail"])
    )
    staging = allow(Environment.objects.get(name="staging"), s3_prefix="s3://berth-models/")
    body["s3_prefix"] = "s3://berth-models/staging/"
    refused = api.post("/api/v1/endpoints/", body, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "execution_role_arn"
    assert "not on the staging environment's allow-list of IAM roles" in refused.json()["detail"]
    allow(staging, role=ROLE)
    assert api.post("/api/v1/endpoints/", body, format="json").status_code == 201
    # Production's lists are its own.
    body.update(name="sm-production", environment="production")
    refused = api.post("/api/v1/endpoints/", body, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "s3_prefix"
    # Allow-list entries are checked as what they are.
    with pytest.raises(ServiceError) as error:
        services.environment_update(
            actor=admin, environment=staging, allowed_role_arns=["arn:aws:iam::1:user/x"]
        )
    assert error.value.field == "allowed_role_arns"


def test_a_narrowed_allow_list_stops_the_next_deployment_before_any_upload(aws, admin):
    endpoint = sagemaker_endpoint("sm-staging", "staging", execution_role_arn=ROLE)
    version = packaged_version(model=RegisteredModelFactory(owner=admin))
    services.environment_update(
        actor=admin, environment=endpoint.environment, allowed_s3_buckets=[], reason="moved"
    )
    deployment = run(services.deployment_start(actor=admin, endpoint=endpoint, version=version))
    assert deployment.state == "failed"
    assert "not on the staging environment's allow-list of S3 buckets" in deployment.error
    assert "Contents" not in aws.list_objects_v2(Bucket="berth-models")
    assert not LiveVersion.objects.exists()


def test_s3_sources_come_only_from_allowed_buckets(aws, settings, scientist, stores):
    from registry import services as registry_services

    aws.put_object(Bucket="someone-elses-bucket", Key="secret/model.tar.gz", Body=b"x" * 10)
    model = RegisteredModelFactory(name="iris", owner=scientist)
    settings.BERTH_SOURCE_S3_BUCKETS = []
    with pytest.raises(ServiceError) as error:
        registry_services.version_register(
            actor=scientist, model=model, uri="s3://ci-uploads/build.tar.gz", lineage={}
        )
    assert error.value.field == "uri" and "BERTH_SOURCE_S3_BUCKETS" in error.value.message
    settings.BERTH_SOURCE_S3_BUCKETS = ["ci-uploads"]
    answer = api_for(scientist).post(
        "/api/v1/models/iris/versions/",
        {"uri": "s3://someone-elses-bucket/secret/model.tar.gz", "lineage": "{}"},
        format="json",
    )
    assert answer.status_code == 400 and answer.json()["field"] == "uri"
    assert (
        "someone-elses-bucket is not one versions may be registered from"
        in (answer.json()["detail"])
    )
    assert "Allowed: ci-uploads" in answer.json()["detail"]
    assert not ModelVersion.objects.filter(model=model).exists()
    # Nothing was fetched: no staged archive, no stored source.
    assert not [p for p in (stores / "scratch").rglob("*") if p.is_file()]
    assert not [p for p in (stores / "artifacts").rglob("*") if p.is_file()]
