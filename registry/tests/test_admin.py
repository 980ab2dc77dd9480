"""Django admin: models, versions (read-only lineage and artifact), test results, the audit
trail (read-only) and API tokens (list and revoke)."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal.models import ApiToken, AuditEvent
from portal.services import token_create
from registry.choices import VersionStatus

from .factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    client.admin = admin
    return client


def test_admin_pages_render(admin_client, model):
    version = ModelVersionFactory(model=model, version=1, status=VersionStatus.PACKAGED)
    version.test_results.create(name="case", outcome="passed")
    for name in [
        "registry_registeredmodel",
        "registry_modelversion",
        "registry_testresult",
        "portal_auditevent",
        "portal_apitoken",
    ]:
        assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    page = admin_client.get(reverse("admin:registry_modelversion_change", args=[version.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    # Lineage and artifact are shown, not editable.
    assert 'name="source_commit"' not in html and version.source_commit in html
    assert 'name="content_sha256"' not in html


def test_audit_events_are_read_only(admin_client, model):
    version = ModelVersionFactory(model=model, version=1)
    from portal.audit import audit_record

    event = audit_record(
        actor=None, action="version.transition", target=version, to_state="validating"
    )
    url = reverse("admin:portal_auditevent_change", args=[event.pk])
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"reason": "rewritten"})
    event.refresh_from_db()
    assert event.reason == ""
    assert admin_client.get(reverse("admin:portal_auditevent_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:portal_auditevent_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_admin_revokes_tokens(admin_client, user):
    token, _ = token_create(actor=user, name="ci")
    response = admin_client.post(
        reverse("admin:portal_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(action="token.revoke", target_id=str(token.pk))
    assert event.actor == admin_client.admin and event.source == "admin"
    assert ApiToken.objects.count() == 1


def test_admin_retry_action_goes_through_the_service(admin_client, model):
    failed = ModelVersionFactory(model=model, version=1, status=VersionStatus.TEST_FAILED)
    final = ModelVersionFactory(model=model, version=2, status=VersionStatus.INVALID)
    admin_client.post(
        reverse("admin:registry_modelversion_changelist"),
        {"action": "retry_pipeline", "_selected_action": [failed.pk, final.pk]},
    )
    assert AuditEvent.objects.filter(
        action="version.retry", target_id=str(failed.pk), source="admin"
    ).exists()
    assert not AuditEvent.objects.filter(action="version.retry", target_id=str(final.pk)).exists()


def test_admin_model_changes_go_through_the_service(admin_client, model):
    url = reverse("admin:registry_registeredmodel_change", args=[model.pk])
    response = admin_client.post(
        url,
        {
            "description": "New words",
            "tags": '["a", "b"]',
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    model.refresh_from_db()
    assert model.description == "New words" and model.tags == ["a", "b"]
    assert AuditEvent.objects.filter(action="model.update", source="admin").exists()


def test_roles_get_their_registry_permissions_back_after_a_flush():
    from django.apps import apps
    from django.contrib.auth.models import Group

    from registry.apps import grant_registry_roles

    Group.objects.filter(name__in=["data scientist", "approver", "admin"]).delete()
    grant_registry_roles(sender=apps.get_app_config("registry"))
    scientist = set(
        Group.objects.get(name="data scientist").permissions.values_list("codename", flat=True)
    )
    assert {"add_modelversion", "add_registeredmodel"} <= scientist
    approver = set(
        Group.objects.get(name="approver").permissions.values_list("codename", flat=True)
    )
    assert "add_modelversion" not in approver
    assert (
        Group.objects.get(name="admin").permissions.filter(codename="delete_modelversion").exists()
    )
