"""Admin actions on promotion requests call the same services: the four-eyes rule holds."""

import pytest

from deployments import services
from deployments.choices import PromotionState
from deployments.models import PromotionRequest

from .factories import packaged_version, queue_answer, run, sagemaker_endpoint, user_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(aws, scientist):
    staging = sagemaker_endpoint("sm-staging", "staging")
    production = sagemaker_endpoint("sm-production", "production")
    requester = user_in("data scientist", username="owner", is_staff=True, is_superuser=True)
    version = packaged_version(registered_by=requester)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=requester, endpoint=staging, version=version))
    return services.promotion_request_create(
        actor=requester, version=version, target_endpoint=production
    )


def act(client, action: str, promotion: PromotionRequest, comment: str = "admin says"):
    """Choose the action, then answer its comment page, as an admin user does."""
    url = "/admin/deployments/promotionrequest/"
    form = client.post(url, {"action": action, "_selected_action": [promotion.pk]})
    assert b'name="comment"' in form.content
    return client.post(
        url,
        {"action": action, "_selected_action": [promotion.pk], "apply": "1", "comment": comment},
        follow=True,
    )


def test_requester_cannot_approve_in_the_admin_even_as_superuser(client, pending):
    client.force_login(pending.requested_by)
    page = act(client, "approve_selected", pending)
    assert "another approver has to approve it" in page.content.decode()
    pending.refresh_from_db()
    assert pending.state == PromotionState.PENDING


def test_approver_approves_in_the_admin_and_the_deployment_starts(client, pending):
    approver = user_in("approver", username="admin-approver", is_staff=True)
    client.force_login(approver)
    page = act(client, "approve_selected", pending)
    assert "1 request(s) approved" in page.content.decode()
    pending.refresh_from_db()
    assert pending.state == PromotionState.APPROVED
    assert pending.decided_by == approver
    assert pending.decision_comment == "admin says"
    assert pending.deployment.source == "admin"


def test_reject_in_the_admin(client, pending):
    approver = user_in("approver", username="admin-approver", is_staff=True)
    client.force_login(approver)
    act(client, "reject_selected", pending, comment="p99 regressed")
    pending.refresh_from_db()
    assert pending.state == PromotionState.REJECTED
    assert pending.decision_comment == "p99 regressed"
    assert (
        client.get(f"/admin/deployments/promotionrequest/{pending.pk}/change/").status_code == 200
    )
    assert client.get("/admin/deployments/deployment/").status_code == 200
