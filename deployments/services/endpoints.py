"""Endpoints and environments.

What an endpoint maps to decides where a deployment lands, and an environment's approval
setting is the gate in front of production: someone who may deploy to staging without
approval must not be able to point a staging endpoint at production's data plane, or turn
the gate off. So creating and changing endpoints and environments is one rule's business:
the `configure_endpoint` permission (the admin group has it; superusers have every one)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from portal.audit import audit_record
from portal.choices import AuditAction
from portal.errors import Conflict, ServiceError

from ..choices import Backend, Source
from ..models import Endpoint, Environment, LiveVersion, s3_bucket_of
from .common import DEPLOY_PERMISSION, _require, _validation_error, require_configure

# What an endpoint is configured with besides its name, environment and backend, in the
# order forms show it (the admin's form lists these).
ENDPOINT_FIELDS = (
    "target_name",
    "description",
    "memory_budget_bytes",
    "region",
    "instance_type",
    "initial_instance_count",
    "execution_role_arn",
    "s3_prefix",
    "image_uri",
    "variant_name",
    "autoscaling_min_instances",
    "autoscaling_max_instances",
    "target_invocations_per_instance",
    "scale_in_cooldown_seconds",
    "scale_out_cooldown_seconds",
)
# What may change on an existing endpoint: its name (the portal's key, part of its SageMaker
# model and configuration names) and backend stay.
ENDPOINT_UPDATE_FIELDS = frozenset(ENDPOINT_FIELDS) | {"environment"}


def endpoint_check(*, endpoint: Endpoint) -> None:
    """Every rule an endpoint (new or changed, not saved yet) obeys; fills in what defaults
    to something (its target name, a SageMaker endpoint's region and image). Raises a
    ServiceError naming the field at fault. The admin's form calls it to show the errors on
    its fields; `endpoint_create` and `endpoint_update` call it before they write."""
    endpoint.name = (endpoint.name or "").strip()
    endpoint.target_name = (endpoint.target_name or "").strip() or endpoint.name
    if endpoint.backend == Backend.SAGEMAKER:
        from ..backends.sagemaker import triton_image_uri

        endpoint.region = endpoint.region or settings.AWS_REGION
        if not endpoint.execution_role_arn:
            raise ServiceError(
                "A SageMaker endpoint needs an execution role ARN.", field="execution_role_arn"
            )
        if not s3_bucket_of(endpoint.s3_prefix):
            raise ServiceError(
                "A SageMaker endpoint needs an S3 prefix like s3://bucket/models/.",
                field="s3_prefix",
            )
        if not endpoint.s3_prefix.endswith("/"):
            endpoint.s3_prefix += "/"
        endpoint.image_uri = endpoint.image_uri or triton_image_uri(endpoint.region)
        refusals = endpoint.environment.sagemaker_refusals(
            s3_prefix=endpoint.s3_prefix, execution_role_arn=endpoint.execution_role_arn
        )
        if refusals:
            field, message = next(iter(refusals.items()))
            raise ServiceError(message, field=field, code="not_allowed")
    else:
        # GPU type and count are SageMaker's; a local endpoint serves on this machine.
        endpoint.instance_type = ""
    try:
        endpoint.full_clean(validate_constraints=False)
    except ValidationError as exc:
        raise _validation_error(exc) from exc
    holder = (
        Endpoint.objects.filter(backend=endpoint.backend, target_name=endpoint.target_name)
        .exclude(pk=endpoint.pk)
        .first()
    )
    if holder is not None:
        where = "data plane endpoint" if endpoint.backend == Backend.LOCAL else "SageMaker endpoint"
        raise ServiceError(
            f"The endpoint {holder.name} already maps to the {where} {endpoint.target_name}; "
            "each endpoint maps to one of its own.",
            field="target_name",
            code="target_taken",
        )


def _endpoint_save(endpoint: Endpoint, **kwargs: Any) -> None:
    """Save; a concurrent writer that took the same name or target loses cleanly."""
    try:
        with transaction.atomic():
            endpoint.save(**kwargs)
    except IntegrityError as exc:
        raise Conflict(
            f"Another endpoint took the name or target {endpoint.target_name} meanwhile.",
            field="target_name",
        ) from exc


def _endpoint_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    snapshot = {field: getattr(endpoint, field) for field in sorted(ENDPOINT_FIELDS)}
    snapshot["environment"] = endpoint.environment.name
    return snapshot


@transaction.atomic
def endpoint_create(
    *,
    actor,
    name: str,
    environment: Environment,
    backend: str = Backend.LOCAL,
    source: str = Source.BROWSER,
    **fields: Any,
) -> Endpoint:
    """Create an endpoint (admins only). What it maps to is its own name unless given, and
    unique; SageMaker endpoints need an execution role and an S3 prefix on their
    environment's allow-lists, and their Triton image defaults to the one for the region.
    Nothing is created in AWS until the first deployment."""
    require_configure(actor)
    unknown = set(fields) - set(ENDPOINT_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown endpoint fields: {', '.join(sorted(unknown))}.")
    endpoint = Endpoint(
        name=(name or "").strip(), environment=environment, backend=backend, created_by=actor
    )
    for key, value in fields.items():
        if value not in (None, ""):
            setattr(endpoint, key, value)
    if Endpoint.objects.filter(name=endpoint.name).exists():
        raise Conflict(f"An endpoint named {endpoint.name} exists.", field="name")
    endpoint_check(endpoint=endpoint)
    _endpoint_save(endpoint)
    audit_record(
        actor=actor,
        action=AuditAction.ENDPOINT_CREATE,
        target=endpoint,
        data={"backend": backend, **_endpoint_snapshot(endpoint)},
        source=source,
    )
    return endpoint


@transaction.atomic
def endpoint_update(
    *, actor, endpoint: Endpoint, source: str = Source.BROWSER, reason: str = "", **fields: Any
) -> Endpoint:
    """Change an endpoint (admins only), under the same rules as creating one. What it maps
    to stays while versions are live on it: they serve there, and the portal would show
    them somewhere they are not. The audit record holds every changed field, before and
    after."""
    require_configure(actor)
    unknown = set(fields) - ENDPOINT_UPDATE_FIELDS
    if unknown:
        raise ServiceError(
            f"These endpoint fields cannot be changed: {', '.join(sorted(unknown))}.",
            field=sorted(unknown)[0],
        )
    endpoint = (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("environment")
        .get(pk=endpoint.pk)
    )
    before = _endpoint_snapshot(endpoint)
    for key, value in fields.items():
        if value is None and key in ENDPOINT_FIELDS:
            value = Endpoint._meta.get_field(key).get_default()
        setattr(endpoint, key, value)
    endpoint_check(endpoint=endpoint)
    after = _endpoint_snapshot(endpoint)
    changes = {
        key: {"before": before[key], "after": after[key]}
        for key in after
        if before[key] != after[key]
    }
    if not changes:
        return endpoint
    if "target_name" in changes and LiveVersion.objects.filter(endpoint=endpoint).exists():
        raise Conflict(
            f"Versions are live on {endpoint.name} at {before['target_name']}; create another "
            "endpoint to serve from elsewhere.",
            field="target_name",
            code="endpoint_live",
        )
    _endpoint_save(endpoint)
    audit_record(
        actor=actor,
        action=AuditAction.ENDPOINT_UPDATE,
        target=endpoint,
        reason=reason,
        data={"changes": changes},
        source=source,
    )
    return endpoint


@transaction.atomic
def endpoint_delete(*, actor, endpoint: Endpoint, source: str = Source.BROWSER) -> None:
    """Delete an endpoint nothing was ever deployed to (admins only)."""
    require_configure(actor)
    endpoint = Endpoint.objects.select_for_update(of=("self",)).get(pk=endpoint.pk)
    if endpoint.deployments.exists() or endpoint.promotion_requests.exists():
        raise Conflict(
            f"{endpoint.name} has deployments or promotion requests; it stays for the record.",
            code="endpoint_in_use",
        )
    audit_record(
        actor=actor,
        action=AuditAction.ENDPOINT_DELETE,
        target=endpoint,
        data=_endpoint_snapshot(endpoint),
        source=source,
    )
    endpoint.delete()


@transaction.atomic
def endpoint_update_autoscaling(
    *,
    actor,
    endpoint: Endpoint,
    min_instances: int,
    max_instances: int,
    target_invocations_per_instance: int,
    scale_in_cooldown_seconds: int,
    scale_out_cooldown_seconds: int,
    source: str = Source.BROWSER,
) -> Endpoint:
    """Change an endpoint's autoscaling policy; the next deployment applies it in SageMaker.
    Whoever deploys to an endpoint sizes it; on an environment that needs approval, where
    nobody deploys directly, only admins do."""
    endpoint = (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("environment")
        .get(pk=endpoint.pk)
    )
    if endpoint.environment.requires_approval:
        require_configure(actor)
    else:
        _require(actor, DEPLOY_PERMISSION, "You may not change endpoints.")
    if min_instances < 1 or max_instances < min_instances:
        raise ServiceError(
            "Autoscaling needs 1 ≤ minimum ≤ maximum instances.", field="autoscaling_max_instances"
        )
    before = {
        "min": endpoint.autoscaling_min_instances,
        "max": endpoint.autoscaling_max_instances,
        "target": endpoint.target_invocations_per_instance,
        "scale_in": endpoint.scale_in_cooldown_seconds,
        "scale_out": endpoint.scale_out_cooldown_seconds,
    }
    after = {
        "min": min_instances,
        "max": max_instances,
        "target": target_invocations_per_instance,
        "scale_in": scale_in_cooldown_seconds,
        "scale_out": scale_out_cooldown_seconds,
    }
    if before == after:
        return endpoint
    endpoint.autoscaling_min_instances = min_instances
    endpoint.autoscaling_max_instances = max_instances
    endpoint.target_invocations_per_instance = target_invocations_per_instance
    endpoint.scale_in_cooldown_seconds = scale_in_cooldown_seconds
    endpoint.scale_out_cooldown_seconds = scale_out_cooldown_seconds
    endpoint.save(
        update_fields=[
            "autoscaling_min_instances",
            "autoscaling_max_instances",
            "target_invocations_per_instance",
            "scale_in_cooldown_seconds",
            "scale_out_cooldown_seconds",
        ]
    )
    audit_record(
        actor=actor,
        action=AuditAction.ENDPOINT_AUTOSCALING,
        target=endpoint,
        data={"before": before, "after": after},
        source=source,
    )
    return endpoint


# Deployments -----------------------------------------------------------------------------
