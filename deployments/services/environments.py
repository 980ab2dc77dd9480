"""Environments: their approval gate and their AWS allow-lists, changed by admins only (see
`common.require_configure`)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from portal.audit import audit_record, field_changes, snapshot
from portal.choices import AuditAction
from portal.errors import Conflict, ServiceError

from ..choices import Source
from ..models import Environment
from .common import _validation_error, require_configure

# What an admin sets on an environment, in the order forms show it.
ENVIRONMENT_FIELDS = (
    "label",
    "requires_approval",
    "requires_load_test",
    "order",
    "description",
    "allowed_s3_buckets",
    "allowed_role_arns",
    "loadtest_max_rps",
    "loadtest_max_seconds",
)


def environment_check(*, environment: Environment) -> None:
    """Every rule an environment (new or changed, not saved yet) obeys; raises a
    ServiceError naming the field at fault."""
    environment.allowed_s3_buckets = sorted(
        {item.strip() for item in environment.allowed_s3_buckets or [] if str(item).strip()}
    )
    environment.allowed_role_arns = sorted(
        {item.strip() for item in environment.allowed_role_arns or [] if str(item).strip()}
    )
    try:
        environment.full_clean()
    except ValidationError as exc:
        raise _validation_error(exc) from exc


@transaction.atomic
def environment_create(
    *, actor, name: str, label: str, source: str = Source.BROWSER, **fields: Any
) -> Environment:
    """Create an environment (admins only)."""
    require_configure(actor)
    unknown = set(fields) - set(ENVIRONMENT_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown environment fields: {', '.join(sorted(unknown))}.")
    if Environment.objects.filter(name=name).exists():
        raise Conflict(f"An environment named {name} exists.", field="name")
    environment = Environment(name=name, label=label, **fields)
    environment_check(environment=environment)
    environment.save()
    audit_record(
        actor=actor,
        action=AuditAction.ENVIRONMENT_CREATE,
        target=environment,
        data={"name": name, **snapshot(environment, ENVIRONMENT_FIELDS)},
        source=source,
    )
    return environment


@transaction.atomic
def environment_update(
    *,
    actor,
    environment: Environment,
    source: str = Source.BROWSER,
    reason: str = "",
    **fields: Any,
) -> Environment:
    """Change an environment (admins only). The audit record holds every changed field with
    its old and new value; turning approval off, the one change that opens the gate, is
    also its own action (`environment.approval_off`), so a search for it finds it."""
    require_configure(actor)
    unknown = set(fields) - set(ENVIRONMENT_FIELDS)
    if unknown:
        raise ServiceError(
            f"These environment fields cannot be changed: {', '.join(sorted(unknown))}.",
            field=sorted(unknown)[0],
        )
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    before = snapshot(environment, ENVIRONMENT_FIELDS)
    for key, value in fields.items():
        setattr(environment, key, value)
    environment_check(environment=environment)
    after = snapshot(environment, ENVIRONMENT_FIELDS)
    changes = field_changes(before, after)
    if not changes:
        return environment
    environment.save(update_fields=sorted(changes))
    approval_off = before["requires_approval"] and not after["requires_approval"]
    audit_record(
        actor=actor,
        action=AuditAction.ENVIRONMENT_APPROVAL_OFF
        if approval_off
        else AuditAction.ENVIRONMENT_UPDATE,
        target=environment,
        from_state="approval required" if approval_off else "",
        to_state="no approval" if approval_off else "",
        reason=reason,
        data={"changes": changes},
        source=source,
    )
    return environment


@transaction.atomic
def environment_delete(*, actor, environment: Environment, source: str = Source.BROWSER) -> None:
    """Delete an environment without endpoints (admins only)."""
    require_configure(actor)
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    if environment.endpoints.exists():
        raise Conflict(
            f"{environment} still has endpoints; move or delete them first.",
            code="environment_in_use",
        )
    audit_record(
        actor=actor,
        action=AuditAction.ENVIRONMENT_DELETE,
        target=environment,
        data={"name": environment.name, **snapshot(environment, ENVIRONMENT_FIELDS)},
        source=source,
    )
    environment.delete()
