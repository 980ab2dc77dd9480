"""Cancelling a deployment from its page and through the runs API: the deployment's own
rule decides who may (deployers on staging, approvers on production)."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from deployments import services
from deployments.choices import DeploymentState
from portal.models import AuditEvent
from runs.choices import RunState

from .factories import UserFactory, packaged_version, sagemaker_endpoint


@pytest.fixture
def staging(aws):
    return sagemaker_endpoint("sm-staging", "staging")


@pytest.fixture
def pending(scientist, staging):
    version = packaged_version(registered_by=scientist)
    return services.deployment_start(actor=scientist, endpoint=staging, version=version)


@pytest.mark.django_db
def test_the_deployment_page_offers_cancel_to_deployers_only(scientist, pending):
    page = Client()
    page.force_login(scientist)
    shown = page.get(pending.get_absolute_url())
    assert b'id="run-cancel"' in shown.content
    reader = Client()
    reader.force_login(UserFactory(username="vic"))
    assert b'id="run-cancel"' not in reader.get(pending.get_absolute_url()).content
    refused = reader.post(f"/runs/{pending.run.pk}/cancel/")
    assert refused.status_code == 403

    answer = page.post(
        f"/runs/{pending.run.pk}/cancel/",
        {"reason": "Wrong version.", "next": "https://evil.example/"},
    )
    assert answer.status_code == 302 and answer["Location"] == pending.get_absolute_url()
    pending.refresh_from_db()
    assert pending.state == DeploymentState.FAILED and pending.error == "Wrong version."
    assert pending.run.state == RunState.CANCELLED
    assert AuditEvent.objects.filter(action="run.cancel", reason="Wrong version.").exists()
    assert b'id="run-cancel"' not in page.get(pending.get_absolute_url()).content


@pytest.mark.django_db
def test_the_runs_api_cancels_a_deployment_by_the_same_rule(scientist, pending):
    stranger = APIClient()
    stranger.force_authenticate(UserFactory(username="vic"))
    assert stranger.post(f"/api/v1/runs/{pending.run.pk}/cancel/").status_code == 403
    api = APIClient()
    api.force_authenticate(scientist)
    answer = api.post(f"/api/v1/runs/{pending.run.pk}/cancel/", {"reason": "stop"}, format="json")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    pending.refresh_from_db()
    assert pending.state == DeploymentState.FAILED
