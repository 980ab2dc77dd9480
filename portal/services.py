"""Writes on project-wide objects: API tokens."""

from django.db import transaction
from django.utils import timezone

from .audit import audit_record
from .choices import AuditAction, Source
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
    audit_record(actor=actor, action=AuditAction.TOKEN_CREATE, target=token, source=Source.BROWSER)
    return token, raw


def _token_revoke(token: ApiToken, *, actor, source: str, reason: str = "") -> bool:
    """Revoke `token` (locked by the caller) and record it; False when it already was."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor, action=AuditAction.TOKEN_REVOKE, target=token, source=source, reason=reason
    )
    return True


@transaction.atomic
def token_revoke(*, actor, token_id: int) -> ApiToken:
    """Revoke one of the actor's own tokens. Revoking twice is harmless."""
    token = ApiToken.objects.select_for_update().filter(pk=token_id, user=actor).first()
    if token is None:
        raise NotFound("No such token.", field="token")
    _token_revoke(token, actor=actor, source=Source.BROWSER)
    return token


@transaction.atomic
def tokens_revoke_by_admin(*, actor, token_ids: list[int]) -> int:
    """Revoke any users' tokens from the Django admin (whose site already admitted the
    actor); returns how many were still active."""
    reason = f"Revoked by administrator {actor.get_username()}."
    return sum(
        _token_revoke(token, actor=actor, source=Source.ADMIN, reason=reason)
        for token in ApiToken.objects.select_for_update().filter(
            pk__in=token_ids, revoked_at__isnull=True
        )
    )
