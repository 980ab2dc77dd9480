import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal import services
from portal.errors import ServiceError
from portal.models import ApiToken, AuditEvent, hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user("dana", password="pw-dana-123")


def test_token_is_stored_hashed_and_authenticates(client, user):
    token, raw = services.token_create(actor=user, name="ci")
    assert token.token_hash == hash_token(raw)
    assert raw not in {token.token_hash, token.prefix}
    assert AuditEvent.objects.filter(action="token.create", target_id=str(token.pk)).exists()

    response = client.get(
        reverse("api-schema") + "?format=json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 200


def test_revoked_token_is_refused(client, user):
    token, raw = services.token_create(actor=user, name="ci")
    services.token_revoke(actor=user, token_id=token.pk)
    response = client.get(
        reverse("api-schema") + "?format=json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_token_needs_a_name(user):
    with pytest.raises(ServiceError) as error:
        services.token_create(actor=user, name="  ")
    assert error.value.field == "name"
    assert not ApiToken.objects.exists()


def test_user_cannot_revoke_someone_elses_token(user):
    other = get_user_model().objects.create_user("eve")
    token, _ = services.token_create(actor=user, name="ci")
    with pytest.raises(ServiceError):
        services.token_revoke(actor=other, token_id=token.pk)


def test_tokens_page_shows_the_new_token_once(client, user):
    client.force_login(user)
    response = client.post(reverse("token-list"), {"name": "monorepo-ci"})
    assert response.status_code == 200
    raw = response.context["new_token"]
    assert raw.startswith("berth_")
    again = client.get(reverse("token-list"))
    assert raw not in again.content.decode()


def test_admin_revokes_any_users_tokens_with_an_audit_record(admin_client, admin_user, user):
    """The admin's bulk action revokes other users' tokens through the same service rule:
    each still-active token once, recorded with the admin as actor and source "admin"."""
    active, _ = services.token_create(actor=user, name="ci")
    gone, _ = services.token_create(actor=user, name="old")
    services.token_revoke(actor=user, token_id=gone.pk)

    response = admin_client.post(
        reverse("admin:portal_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [active.pk, gone.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"1 token(s) revoked." in response.content
    active.refresh_from_db()
    assert active.revoked_at is not None
    (event,) = AuditEvent.objects.filter(action="token.revoke", target_id=str(active.pk))
    assert (event.actor, event.source) == (admin_user, "admin")
    assert AuditEvent.objects.filter(action="token.revoke", target_id=str(gone.pk)).count() == 1
