"""Admin actions on load tests call the same services: four eyes hold there too."""

import pytest

from deployments.models import Endpoint
from deployments.tests.factories import user_in
from loadtests import services
from loadtests.choices import LoadTestState

from .factories import config, live_version

pytestmark = pytest.mark.django_db
URL = "/admin/loadtests/loadtest/"


@pytest.fixture
def awaiting():
    production = Endpoint.objects.get(name="local-production")
    live_version(production)
    requester = user_in("admin", username="owner", is_staff=True)
    return services.loadtest_start(
        actor=requester, endpoint=production, config=config(), confirmed=True, source="api"
    )


def act(client, action: str, load_test, reason: str = "admin says"):
    form = client.post(URL, {"action": action, "_selected_action": [load_test.pk]})
    assert b'name="comment"' in form.content
    return client.post(
        URL,
        {"action": action, "_selected_action": [load_test.pk], "apply": "1", "comment": reason},
        follow=True,
    )


def test_requester_cannot_approve_in_the_admin(client, awaiting):
    client.force_login(awaiting.created_by)
    page = act(client, "approve_selected", awaiting)
    assert b"another approver" in page.content
    awaiting.refresh_from_db()
    assert awaiting.state == LoadTestState.AWAITING_APPROVAL


def test_approver_approves_and_rejects_in_the_admin(client, awaiting):
    approver = user_in("approver", username="admin-approver", is_staff=True)
    client.force_login(approver)
    assert client.get(URL).status_code == 200
    assert client.get(f"{URL}{awaiting.pk}/change/").status_code == 200
    act(client, "approve_selected", awaiting)
    awaiting.refresh_from_db()
    assert awaiting.state == LoadTestState.PENDING and awaiting.approved_by == approver
    page = act(client, "reject_selected", awaiting, reason="too late")
    assert b"already" in page.content or b"cannot" in page.content
