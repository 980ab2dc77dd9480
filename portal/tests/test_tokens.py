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
