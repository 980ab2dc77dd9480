"""Writing and reading the audit trail, and the one way a state machine moves: check the
move against the allowed transitions (data in the app's `choices.py`), save, record.

Actions and sources are the enumerations of `portal.choices` (`AuditAction`, `Source`)."""

from collections.abc import Collection, Mapping
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models

from .choices import AuditAction, Source
from .errors import InvalidTransition
from .models import AuditEvent


def audit_record(
    *,
    actor,
    action: AuditAction | str,
    target: models.Model,
    from_state: str = "",
    to_state: str = "",
    reason: str = "",
    data: dict[str, Any] | None = None,
    source: Source | str = "",
) -> AuditEvent:
    """Record one state change. Call inside the transaction that makes the change."""
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        target_type=ContentType.objects.get_for_model(target, for_concrete_model=False),
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        data=data or {},
        source=source,
    )


def audit_history(target: models.Model):
    """The audit events of one object, oldest first."""
    return (
        AuditEvent.objects.filter(
            target_type=ContentType.objects.get_for_model(target, for_concrete_model=False),
            target_id=str(target.pk),
        )
        .select_related("actor")
        .order_by("created_at", "id")
    )


def snapshot(instance: models.Model, fields: Collection[str]) -> dict[str, Any]:
    """The values of `fields` on `instance`, for an audit record's before and after."""
    return {field: getattr(instance, field) for field in sorted(fields)}


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What an update changed, as its audit record holds it: {field: {before, after}}."""
    return {
        key: {"before": before.get(key), "after": value}
        for key, value in after.items()
        if before.get(key) != value
    }


def state_transition(
    subject: models.Model,
    to_state: str,
    *,
    transitions: Mapping[str, Collection[str]],
    refusal: str,
    actor,
    action: AuditAction | str,
    source: Source | str,
    reason: str = "",
    data: dict[str, Any] | None = None,
    state_field: str = "state",
    changes: Mapping[str, Any] | None = None,
    fields: Collection[str] = (),
) -> str:
    """Move `subject` (locked by the caller, inside its transaction) to `to_state` if
    `transitions` allows the move from its current state, else raise InvalidTransition with
    `refusal`. Sets `changes` (fields that move with the state, such as its timestamp), saves
    the state, those and `fields` (already set by the caller) with `update_fields`, and
    writes the audit record. Returns the state it left."""
    from_state = getattr(subject, state_field)
    if to_state not in transitions.get(from_state, ()):
        raise InvalidTransition(refusal, field=state_field)
    setattr(subject, state_field, to_state)
    for name, value in (changes or {}).items():
        setattr(subject, name, value)
    subject.save(update_fields=[state_field, *(changes or {}), *fields])
    audit_record(
        actor=actor,
        action=action,
        target=subject,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        data=data,
        source=source,
    )
    return from_state
