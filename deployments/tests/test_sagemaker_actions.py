"""Recovering and decommissioning SageMaker endpoints through the API and the admin: the
same services, the same rules (who may, a reason, nothing while a deployment runs),
against moto."""

from __future__ import annotations

import boto3
import pytest

from deployments import services
from deployments.choices import DeploymentState
from portal.choices import AuditAction
from portal.models import AuditEvent
from portal.services import token_create

from .factories import AWS_REGION, packaged_version, queue_answer, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db


def api_client(user):
    from rest_framework.test import APIClient

    _, raw = token_create(actor=user, name="ops")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def deployed(aws, scientist):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    result = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert result.state == DeploymentState.SUCCEEDED, result.error
    return endpoint


def sagemaker_endpoints() -> list[str]:
    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    return [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]


def test_the_api_decommissions_with_a_reason_and_only_for_admins(
    deployed, scientist, platform_admin
):
    url = f"/api/v1/endpoints/{deployed.name}/decommission/"
    refused = api_client(scientist).post(url, {"reason": "unused"}, format="json")
    assert refused.status_code == 403
    assert sagemaker_endpoints() == ["sm-staging"]

    admin = api_client(platform_admin)
    no_reason = admin.post(url, {}, format="json")
    assert (no_reason.status_code, no_reason.json()["field"]) == (400, "reason")

    answer = admin.post(url, {"reason": "unused since March"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["outcome"]["endpoint"] == "sm-staging"
    assert body["outcome"]["models"] == ["sm-staging-model"]
    # What stopped billing: the instances it ran when deleted, at the list price.
    assert body["outcome"]["hourly_cost_stopped"].endswith("× ml.g4dn.xlarge × $0.736/h = $0.74/h")
    assert sagemaker_endpoints() == []
    event = AuditEvent.objects.get(action=AuditAction.ENDPOINT_DECOMMISSION)
    assert (event.actor, event.reason, event.source) == (
        platform_admin,
        "unused since March",
        "api",
    )


def test_the_api_refuses_to_recover_an_endpoint_that_is_in_service(deployed, platform_admin):
    answer = api_client(platform_admin).post(
        f"/api/v1/endpoints/{deployed.name}/recover/", {}, format="json"
    )
    assert answer.status_code == 409
    assert "InService, not Failed" in answer.json()["detail"]
    assert sagemaker_endpoints() == ["sm-staging"]
    assert not AuditEvent.objects.filter(action=AuditAction.ENDPOINT_RECOVER).exists()


def test_nothing_is_decommissioned_while_a_deployment_runs(deployed, scientist, platform_admin):
    services.deployment_start(
        actor=scientist, endpoint=deployed, version=packaged_version(registered_by=scientist)
    )
    answer = api_client(platform_admin).post(
        f"/api/v1/endpoints/{deployed.name}/decommission/", {"reason": "x"}, format="json"
    )
    assert (answer.status_code, answer.json()["code"]) == (409, "deployment_running")
    assert sagemaker_endpoints() == ["sm-staging"]


def test_a_local_endpoint_has_nothing_in_aws_to_decommission(aws, platform_admin):
    answer = api_client(platform_admin).post(
        "/api/v1/endpoints/local-staging/decommission/", {"reason": "x"}, format="json"
    )
    assert (answer.status_code, answer.json()["code"]) == (409, "not_sagemaker")


def test_the_admin_action_asks_why_then_decommissions(client, deployed, platform_admin):
    client.force_login(platform_admin)
    url = "/admin/deployments/endpoint/"
    selected = {"action": "decommission_selected", "_selected_action": [deployed.pk]}
    form = client.post(url, selected)
    assert b'name="reason"' in form.content
    assert sagemaker_endpoints() == ["sm-staging"]
    done = client.post(url, {**selected, "apply": "1", "reason": "moved to sm-next"}, follow=True)
    assert b"1 endpoint(s) decommissioned." in done.content
    assert sagemaker_endpoints() == []
    event = AuditEvent.objects.get(action=AuditAction.ENDPOINT_DECOMMISSION)
    assert (event.reason, event.source) == ("moved to sm-next", "admin")


def test_the_endpoint_page_offers_the_actions_through_the_api(deployed, platform_admin):
    """The page's buttons post JSON to the API with the session and its CSRF token."""
    import re

    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(platform_admin)
    page = browser.get(f"/endpoints/{deployed.name}/").content.decode()
    assert 'id="decommission-endpoint"' in page
    action = re.search(r'data-aws-action="([^"]+/recover/)"', page).group(1)
    token = re.search(r'data-csrf="([^"]+)"', page).group(1)

    without_token = browser.post(action, {}, content_type="application/json")
    assert without_token.status_code == 403
    answer = browser.post(action, {}, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 409  # InService: nothing to recover
    assert "not Failed" in answer.json()["detail"]


def test_a_local_endpoint_page_has_no_aws_actions(client, platform_admin):
    client.force_login(platform_admin)
    page = client.get("/endpoints/local-staging/").content.decode()
    assert "sagemaker-actions" not in page
