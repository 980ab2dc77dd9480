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
from django.db.models import Q
from django.utils import timezone

from portal.audit import audit_record, field_changes, snapshot
from portal.choices import AuditAction
from portal.errors import Conflict, ServiceError

from ..choices import ACTIVE_DEPLOYMENT_STATES, Backend, Source
from ..models import Endpoint, Environment, LiveVersion, LiveVersionHistory, s3_bucket_of
from .common import (
    APPROVE_PERMISSION,
    DEPLOY_PERMISSION,
    _require,
    _validation_error,
    require_configure,
)

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
    "rollout_traffic",
    "rollout_step_type",
    "rollout_step_size",
    "rollout_wait_seconds",
    "rollout_termination_wait_seconds",
    "rollout_timeout_seconds",
    "rollback_alarms",
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
    # Rollout settings left empty (a form that does not show them) mean their defaults.
    for field in (
        "rollout_traffic",
        "rollout_step_type",
        "rollout_wait_seconds",
        "rollout_termination_wait_seconds",
    ):
        if getattr(endpoint, field) in (None, ""):
            setattr(endpoint, field, Endpoint._meta.get_field(field).get_default())
    if endpoint.backend == Backend.SAGEMAKER:
        from ..backends.sagemaker import (
            UnknownImageRegion,
            derived_name_problems,
            instance_type_problems,
            triton_image_uri,
        )

        endpoint.region = endpoint.region or settings.AWS_REGION
        for problem in derived_name_problems(endpoint.name):
            raise ServiceError(problem, field="name", code="name_too_long")
        for problem in instance_type_problems(endpoint.instance_type):
            raise ServiceError(problem, field="instance_type", code="not_offered")
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
        if not endpoint.image_uri:
            try:
                endpoint.image_uri = triton_image_uri(endpoint.region)
            except UnknownImageRegion as exc:
                raise ServiceError(str(exc), field="image_uri", code="no_image") from exc
        refusals = endpoint.environment.sagemaker_refusals(
            s3_prefix=endpoint.s3_prefix, execution_role_arn=endpoint.execution_role_arn
        )
        if refusals:
            field, message = next(iter(refusals.items()))
            raise ServiceError(message, field=field, code="not_allowed")
        _check_rollout(endpoint)
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
    if holder is None and endpoint.backend == Backend.SAGEMAKER:
        # SageMaker names are case-insensitive: `Prod` and `prod` would be one endpoint
        # there (and share their derived model and configuration names).
        holder = (
            Endpoint.objects.filter(backend=endpoint.backend)
            .filter(Q(target_name__iexact=endpoint.target_name) | Q(name__iexact=endpoint.name))
            .exclude(pk=endpoint.pk)
            .first()
        )
        if holder is not None:
            raise ServiceError(
                f"SageMaker names are case-insensitive: the endpoint {holder.name} (SageMaker "
                f"endpoint {holder.target_name}) already has this name.",
                field="target_name"
                if holder.target_name.lower() == endpoint.target_name.lower()
                else "name",
                code="target_taken",
            )
    if holder is not None:
        where = "data plane endpoint" if endpoint.backend == Backend.LOCAL else "SageMaker endpoint"
        raise ServiceError(
            f"The endpoint {holder.name} already maps to the {where} {endpoint.target_name}; "
            "each endpoint maps to one of its own.",
            field="target_name",
            code="target_taken",
        )


def _check_rollout(endpoint: Endpoint) -> None:
    """The endpoint's deployment guardrails as SageMaker would take them, and its rollback
    alarms as CloudWatch has them in the endpoint's region (DescribeAlarms)."""
    from ..backends.sagemaker.guardrails import missing_alarms, rollout_problems

    try:
        endpoint.full_clean(validate_constraints=False)
    except ValidationError as exc:
        raise _validation_error(exc) from exc
    for field, problem in rollout_problems(endpoint).items():
        raise ServiceError(problem, field=field, code="invalid_rollout")
    if endpoint.rollback_alarms:
        from portal import aws

        cloudwatch = aws.client("cloudwatch", region_name=endpoint.region)
        missing = _aws_call(
            "Reading the rollback alarms", missing_alarms, cloudwatch, endpoint.rollback_alarms
        )
        if missing:
            raise ServiceError(
                f"CloudWatch has no alarm {', '.join(missing)} in {endpoint.region}; create it "
                "first (SageMaker rolls an update back when one of these alarms fires).",
                field="rollback_alarms",
                code="unknown_alarm",
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
    return {**snapshot(endpoint, ENDPOINT_FIELDS), "environment": endpoint.environment.name}


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
    them somewhere they are not. A SageMaker endpoint's changed instance type, count, image,
    role or prefix rolls out at its next deployment (a new model and endpoint configuration
    through UpdateEndpoint). The audit record holds every changed field, before and
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
    changes = field_changes(before, after)
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
    values = {
        "autoscaling_min_instances": min_instances,
        "autoscaling_max_instances": max_instances,
        "target_invocations_per_instance": target_invocations_per_instance,
        "scale_in_cooldown_seconds": scale_in_cooldown_seconds,
        "scale_out_cooldown_seconds": scale_out_cooldown_seconds,
    }
    before = snapshot(endpoint, values)
    for field, value in values.items():
        setattr(endpoint, field, value)
    changes = field_changes(before, snapshot(endpoint, values))
    if not changes:
        return endpoint
    endpoint.save(update_fields=sorted(changes))
    audit_record(
        actor=actor,
        action=AuditAction.ENDPOINT_AUTOSCALING,
        target=endpoint,
        data={"changes": changes},
        source=source,
    )
    return endpoint


# SageMaker endpoints in AWS: recovery and decommissioning ---------------------------------


def _sagemaker_backend(endpoint: Endpoint):
    from ..backends.sagemaker import SageMakerBackend

    if endpoint.backend != Backend.SAGEMAKER:
        # The endpoint's kind, not the request, is at fault: a conflict with its state.
        raise Conflict(
            f"{endpoint.name} is not a SageMaker endpoint.", field="backend", code="not_sagemaker"
        )
    return SageMakerBackend()


def _aws_call(what: str, call, *args: Any, **kwargs: Any) -> Any:
    """Run an AWS call for a service; what AWS refuses becomes a ServiceError saying so."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ..backends.base import DeploymentStepError

    try:
        return call(*args, **kwargs)
    except DeploymentStepError as exc:
        raise Conflict(str(exc), code="endpoint_state") from exc
    except (ClientError, BotoCoreError) as exc:
        raise ServiceError(f"{what} failed in AWS: {exc}", code="aws_error") from exc


def endpoint_change_preview(*, endpoint: Endpoint) -> dict[str, Any] | None:
    """What the next deployment to a SageMaker endpoint rolls out, for the wizard's review:
    the current configuration (DescribeEndpoint, DescribeEndpointConfig, DescribeModel)
    against the endpoint's settings, each difference, the guardrail policy of the update, and
    `summary`, the sentence that says it. None for local endpoints. AWS that cannot be asked
    is said so in `error`, not raised: the review still shows the rest."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ..backends.base import DeploymentStepError

    if endpoint.backend != Backend.SAGEMAKER or endpoint.pk is None:
        return None
    backend = _sagemaker_backend(endpoint)
    try:
        change = backend.endpoint_change(endpoint)
    except (ClientError, BotoCoreError, DeploymentStepError) as exc:
        return {
            "error": f"The current configuration of {endpoint.target_name} could not be read "
            f"from AWS: {exc}",
            "changes": [],
            "policy": "",
            "summary": "",
        }
    name = endpoint.target_name
    if not change["exists"]:
        change["summary"] = (
            f"Create SageMaker endpoint {name}: {endpoint.initial_instance_count} × "
            f"{endpoint.instance_type} (first deployment; no update, no guardrails)."
        )
    elif change["status"] == "Failed":
        change["summary"] = (
            f"SageMaker endpoint {name} is Failed: recover it first; the deployment would stop."
        )
    elif not change["changes"]:
        change["summary"] = f"No endpoint change: {name} keeps {change['config']}."
    else:
        what = ", ".join(
            f"{c['label'].lower()} {c['current'] or '—'} → {c['new']}" for c in change["changes"]
        )
        change["summary"] = (
            f"Update SageMaker endpoint {name} from {change['config']} to a new endpoint "
            f"configuration ({what}); it stays in service during the update. {change['policy']}"
        )
    change["error"] = ""
    return change


def _require_operate(actor, endpoint: Endpoint) -> None:
    """Who recovers an endpoint: whoever deploys to it; where deployments need approval,
    admins only (the rule `endpoint_update_autoscaling` follows)."""
    if endpoint.environment.requires_approval:
        require_configure(actor)
    else:
        _require(actor, DEPLOY_PERMISSION, "You may not change endpoints.")


def endpoint_recover(
    *, actor, endpoint: Endpoint, reason: str = "", source: str = Source.BROWSER
) -> dict[str, Any]:
    """Delete a SageMaker endpoint AWS left `Failed` (quota, capacity, a bad image), so the
    next deployment creates it anew from the endpoint's settings; every deployment would
    otherwise meet the failed one. Refused while a deployment runs on it or when it is not
    Failed. Audited with SageMaker's failure reason."""
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    _require_operate(actor, endpoint)
    backend = _sagemaker_backend(endpoint)
    if endpoint.deployments.filter(state__in=ACTIVE_DEPLOYMENT_STATES).exists():
        raise Conflict(
            f"A deployment is running on {endpoint.name}; recover it when that one ends.",
            code="deployment_running",
        )
    outcome = _aws_call(f"Recovering {endpoint.name}", backend.recover, endpoint)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.ENDPOINT_RECOVER,
            target=endpoint,
            reason=reason,
            data=outcome,
            source=source,
        )
    return outcome


def endpoint_decommission(
    *, actor, endpoint: Endpoint, reason: str, source: str = Source.BROWSER
) -> dict[str, Any]:
    """Delete the SageMaker endpoint, its endpoint configurations and models and its
    autoscaling registration, so nothing of it bills any more; the portal's endpoint stays
    for the record and its versions are no longer live anywhere. Admins decommission; on an
    environment that needs approval (production) an approver does, since it stops what
    serves there. Say why."""
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if endpoint.environment.requires_approval:
        _require(
            actor,
            APPROVE_PERMISSION,
            f"Only approvers decommission endpoints of {endpoint.environment}.",
        )
    else:
        require_configure(actor)
    backend = _sagemaker_backend(endpoint)
    if not (reason or "").strip():
        raise ServiceError("Say why the endpoint is decommissioned.", field="reason")
    if endpoint.deployments.filter(state__in=ACTIVE_DEPLOYMENT_STATES).exists():
        raise Conflict(
            f"A deployment is running on {endpoint.name}; decommission it when that one ends.",
            code="deployment_running",
        )
    deleted = _aws_call(f"Decommissioning {endpoint.name}", backend.decommission, endpoint)
    from ..backends.sagemaker.pricing import hourly_cost

    # What no longer bills, as the confirmation said it (kept in the audit record).
    deleted["hourly_cost_stopped"] = (
        str(hourly_cost(endpoint, deleted.get("instance_count") or None))
        if deleted.get("endpoint")
        else ""
    )
    with transaction.atomic():
        locked = Endpoint.objects.select_for_update(of=("self",)).get(pk=endpoint.pk)
        now = timezone.now()
        ended = sorted(
            f"{model}_{version}"
            for model, version in LiveVersion.objects.filter(endpoint=locked).values_list(
                "model__name", "version__version"
            )
        )
        LiveVersion.objects.filter(endpoint=locked).delete()
        LiveVersionHistory.objects.filter(endpoint=locked, until__isnull=True).update(until=now)
        locked.provisioned_at = None
        locked.save(update_fields=["provisioned_at"])
        audit_record(
            actor=actor,
            action=AuditAction.ENDPOINT_DECOMMISSION,
            target=locked,
            reason=reason.strip(),
            data={**deleted, "live_versions_ended": ended},
            source=source,
        )
    return {**deleted, "live_versions_ended": ended}


# Deployments -----------------------------------------------------------------------------
