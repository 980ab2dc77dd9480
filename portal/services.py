"""Writes on project-wide objects: API tokens."""

from django.db import transaction
from django.utils import timezone

from .audit import audit_record
from .errors import NotFound, ServiceError
from .models import ApiToken, hash_token


@transaction.atomic
def token_create(*, actor, name: str) -> tuple[ApiToken, str]:
    """Create a token for `actor`. Returns the row and the raw token, which is never stored."""
    name = name.strip()
    if not name:
        raise ServiceError("Give the token a name, e.g. the CI job that uses it.", field="name")
    if len(name) > 100:
        raise ServiceError("Token names are at most 100 characters.", field="name")
    raw = ApiToken.generate()
    token = ApiToken.objects.create(
        user=actor, name=name, prefix=raw[:12], token_hash=hash_token(raw)
    )
    audit_record(actor=actor, action="token.create", target=token, source="browser")
    return token, raw


@transaction.atomic
def token_revoke(*, actor, token_id: int) -> ApiToken:
    """Revoke one of the actor's own tokens. Revoking twice is harmless."""
    token = ApiToken.objects.select_for_update().filter(pk=token_id, user=actor).first()
    if token is None:
        raise NotFound("No such token.", field="token")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="token.revoke", target=token, source="browser")
    return token
