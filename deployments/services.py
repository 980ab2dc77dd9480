"""Writes of the deployments app: endpoints, deployments and their execution, rollbacks,
promotion requests and their approval. Business rules live here once, so the browser, the
API and the admin obey the same ones (notably: the requester never approves their own
promotion request, and production deployments only start from an approved request)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from registry.choices import VersionStatus
from registry.models import ModelVersion, RegisteredModel
from runs import runner
from runs import selectors as run_selectors
from runs.choices import RunState
from runs.models import Run
from runs.plans import plan_for
from runs.services import run_cancel, run_create, run_log, run_set_state, runs_sweep

from . import plans, selectors
from .choices import (
    DEPLOYMENT_TRANSITIONS,
    FINISHED_DEPLOYMENT_STATES,
    PROMOTION_TRANSITIONS,
    Backend,
    DeploymentKind,
    DeploymentState,
    LogLevel,
    PromotionState,
    Source,
    StepState,
)
from .models import (
    Deployment,
    Endpoint,
    Environment,
    LiveVersion,
    PromotionRequest,
    s3_bucket_of,
)

logger = logging.getLogger(__name__)

APPROVE_PERMISSION = "deployments.approve_promotionrequest"
DEPLOY_PERMISSION = "deployments.add_deployment"
CONFIGURE_PERMISSION = "deployments.configure_endpoint"
PROMOTION_PERMISSION = "deployments.add_promotionrequest"


def _require(actor, permission: str, message: str) -> None:
    if actor is None or not actor.is_authenticated or not actor.has_perm(permission):
        raise PermissionDenied(message)


def _on_commit_task(task_name: str, *args: Any) -> None:
    """Queue a Celery task once the current transaction commits (the rows it reads exist)."""

    def send() -> None:
        from . import tasks

        getattr(tasks, task_name).delay(*args)

    transaction.on_commit(send)


# Endpoints and environments -----------------------------------------------------------
#
# What an endpoint maps to decides where a deployment lands, and an environment's approval
# setting is the gate in front of production: someone who may deploy to staging without
# approval must not be able to point a staging endpoint at production's data plane, or turn
# the gate off. So creating and changing endpoints and environments is one rule's business:
# the `configure_endpoint` permission (the admin group has it; superusers have every one).

CONFIGURE_REFUSAL = (
    "Only admins create and change endpoints and environments (permission "
    "deployments.configure_endpoint): what an endpoint maps to and whether an environment "
    "needs approval decide what reaches production."
)

ENDPOINT_FIELDS = {
    "description",
    "target_name",
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
}
# What may change on an existing endpoint: its name (the portal's key, part of its SageMaker
# model and configuration names) and backend stay.
ENDPOINT_UPDATE_FIELDS = ENDPOINT_FIELDS | {"environment"}
ENVIRONMENT_FIELDS = {
    "label",
    "requires_approval",
    "order",
    "description",
    "allowed_s3_buckets",
    "allowed_role_arns",
}


def may_configure(actor) -> bool:
    """Whether `actor` may create and change endpoints and environments."""
    return bool(
        actor is not None and actor.is_authenticated and actor.has_perm(CONFIGURE_PERMISSION)
    )


def require_configure(actor) -> None:
    """Refuse, with the reason, an actor who may not configure endpoints and environments."""
    if not may_configure(actor):
        raise PermissionDenied(CONFIGURE_REFUSAL, code="admin_only")


def _validation_error(exc: ValidationError) -> ServiceError:
    if hasattr(exc, "error_dict"):
        field, errors = next(iter(exc.error_dict.items()))
        message = " ".join(m for e in errors for m in e.messages)
        return ServiceError(message, field=None if field == "__all__" else field)
    return ServiceError(" ".join(exc.messages))


def endpoint_check(*, endpoint: Endpoint) -> None:
    """Every rule an endpoint (new or changed, not saved yet) obeys; fills in what defaults
    to something (its target name, a SageMaker endpoint's region and image). Raises a
    ServiceError naming the field at fault. The admin's form calls it to show the errors on
    its fields; `endpoint_create` and `endpoint_update` call it before they write."""
    endpoint.name = (endpoint.name or "").strip()
    endpoint.target_name = (endpoint.target_name or "").strip() or endpoint.name
    if endpoint.backend == Backend.SAGEMAKER:
        from .backends.sagemaker import triton_image_uri

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
    unknown = set(fields) - ENDPOINT_FIELDS
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
        action="endpoint.create",
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
        action="endpoint.update",
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
        action="endpoint.delete",
        target=endpoint,
        data=_endpoint_snapshot(endpoint),
        source=source,
    )
    endpoint.delete()


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


def _environment_snapshot(environment: Environment) -> dict[str, Any]:
    return {field: getattr(environment, field) for field in sorted(ENVIRONMENT_FIELDS)}


@transaction.atomic
def environment_create(
    *, actor, name: str, label: str, source: str = Source.BROWSER, **fields: Any
) -> Environment:
    """Create an environment (admins only)."""
    require_configure(actor)
    unknown = set(fields) - ENVIRONMENT_FIELDS
    if unknown:
        raise ServiceError(f"Unknown environment fields: {', '.join(sorted(unknown))}.")
    if Environment.objects.filter(name=name).exists():
        raise Conflict(f"An environment named {name} exists.", field="name")
    environment = Environment(name=name, label=label, **fields)
    environment_check(environment=environment)
    environment.save()
    audit_record(
        actor=actor,
        action="environment.create",
        target=environment,
        data={"name": name, **_environment_snapshot(environment)},
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
    unknown = set(fields) - ENVIRONMENT_FIELDS
    if unknown:
        raise ServiceError(
            f"These environment fields cannot be changed: {', '.join(sorted(unknown))}.",
            field=sorted(unknown)[0],
        )
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    before = _environment_snapshot(environment)
    for key, value in fields.items():
        setattr(environment, key, value)
    environment_check(environment=environment)
    after = _environment_snapshot(environment)
    changes = {
        key: {"before": before[key], "after": after[key]}
        for key in after
        if before[key] != after[key]
    }
    if not changes:
        return environment
    environment.save(update_fields=sorted(changes))
    approval_off = before["requires_approval"] and not after["requires_approval"]
    audit_record(
        actor=actor,
        action="environment.approval_off" if approval_off else "environment.update",
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
        action="environment.delete",
        target=environment,
        data={"name": environment.name, **_environment_snapshot(environment)},
        source=source,
    )
    environment.delete()


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
        action="endpoint.autoscaling",
        target=endpoint,
        data={"before": before, "after": after},
        source=source,
    )
    return endpoint


# Deployments -----------------------------------------------------------------------------


def _check_transition(deployment: Deployment, to_state: str) -> None:
    if to_state not in DEPLOYMENT_TRANSITIONS.get(deployment.state, set()):
        raise InvalidTransition(
            f"Deployment #{deployment.pk} is {deployment.get_state_display().lower()}; it cannot "
            f"become {DeploymentState(to_state).label.lower()}.",
            field="state",
        )


def _set_state(
    deployment: Deployment,
    to_state: str,
    *,
    actor=None,
    reason: str = "",
    source: str = Source.WORKER,
    fields: tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
) -> None:
    """Move a deployment (locked by the caller) to `to_state` and record it."""
    _check_transition(deployment, to_state)
    from_state = deployment.state
    deployment.state = to_state
    deployment.state_changed_at = timezone.now()
    if to_state in FINISHED_DEPLOYMENT_STATES and deployment.finished_at is None:
        deployment.finished_at = deployment.state_changed_at
        fields += ("finished_at",)
    deployment.save(update_fields=["state", "state_changed_at", *fields])
    audit_record(
        actor=actor,
        action=f"deployment.{to_state}",
        target=deployment,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        data=data,
        source=source,
    )


def _create_deployment(
    *,
    actor,
    endpoint: Endpoint,
    version: ModelVersion,
    source: str,
    kind: str = DeploymentKind.DEPLOY,
    promotion: PromotionRequest | None = None,
    reason: str = "",
) -> Deployment:
    """Create a pending deployment and queue its execution. The caller holds the transaction
    and has checked who may do this."""
    if version.status != VersionStatus.PACKAGED or not version.package_uri:
        raise ServiceError(
            f"{version} is {version.get_status_display().lower()}; only packaged versions deploy.",
            field="version",
            code="not_packaged",
        )
    live = LiveVersion.objects.filter(endpoint=endpoint, model=version.model).first()
    if kind == DeploymentKind.DEPLOY and live is not None and live.version_id == version.pk:
        raise Conflict(f"{version} is already live on {endpoint.name}.", code="already_live")
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                endpoint=endpoint,
                model=version.model,
                version=version,
                previous_version=live.version if live else None,
                kind=kind,
                promotion=promotion,
                reason=reason,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                source=source,
            )
    except IntegrityError as exc:
        running = selectors.active_deployment(endpoint=endpoint, model=version.model)
        raise Conflict(
            f"Deployment #{running.pk if running else '?'} of {version.model.name} to "
            f"{endpoint.name} is still {running.state if running else 'running'}; wait for it "
            "to finish.",
            code="deployment_running",
        ) from exc
    audit_record(
        actor=actor,
        action=f"deployment.{kind}",
        target=deployment,
        to_state=DeploymentState.PENDING,
        reason=reason,
        data={
            "endpoint": endpoint.name,
            "version": version.version,
            "previous_version": live.version.version if live else None,
            "promotion": promotion.pk if promotion else None,
        },
        source=source,
    )
    run_create(subject=deployment, plan=plans.DeploymentPlan)
    return deployment


@transaction.atomic
def deployment_start(
    *,
    actor,
    endpoint: Endpoint,
    version: ModelVersion,
    source: str = Source.BROWSER,
    reason: str = "",
) -> Deployment:
    """Deploy a packaged version to an endpoint whose environment needs no approval. The
    deployment runs in a worker; only one per (endpoint, model) runs at a time."""
    _require(actor, DEPLOY_PERMISSION, "You may not deploy.")
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if endpoint.environment.requires_approval:
        raise PermissionDenied(
            f"{endpoint.name} is a {endpoint.environment} endpoint: deployments there start from "
            "an approved promotion request.",
            field="endpoint",
            code="approval_required",
        )
    return _create_deployment(
        actor=actor, endpoint=endpoint, version=version, source=source, reason=reason
    )


@transaction.atomic
def deployment_rollback(
    *,
    actor,
    endpoint: Endpoint,
    model: RegisteredModel,
    source: str = Source.BROWSER,
    reason: str = "",
) -> Deployment:
    """Return the model on the endpoint to the version that served before the live one:
    a deployment of its own (kind rollback) that re-points the live pointer; the package is
    still in place, so nothing is copied when it is."""
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if endpoint.environment.requires_approval:
        # The version was approved for this environment once; rolling back to it is an
        # approver's call, not anyone's.
        _require(actor, APPROVE_PERMISSION, f"Only approvers roll back {endpoint.environment}.")
    else:
        _require(actor, DEPLOY_PERMISSION, "You may not roll back.")
    previous = selectors.rollback_target(endpoint=endpoint, model=model)
    if previous is None:
        raise ServiceError(
            f"{model.name} has no earlier version on {endpoint.name} to roll back to.",
            field="model",
            code="nothing_to_roll_back",
        )
    return _create_deployment(
        actor=actor,
        endpoint=endpoint,
        version=previous,
        source=source,
        kind=DeploymentKind.ROLLBACK,
        reason=reason or f"Roll back {model.name} on {endpoint.name} to v{previous.version}.",
    )


AUTOSCALING_FIELDS = (
    "autoscaling_min_instances",
    "autoscaling_max_instances",
    "target_invocations_per_instance",
    "scale_in_cooldown_seconds",
    "scale_out_cooldown_seconds",
)


def deployment_needs_approval(*, environment: Environment) -> bool:
    """Whether putting a version on an endpoint of `environment` goes through a promotion
    request (four eyes) instead of a deployment. `deployment_request` decides with it; the
    wizard's review page says beforehand what it will decide."""
    return bool(environment.requires_approval)


@transaction.atomic
def deployment_request(
    *,
    actor,
    version: ModelVersion,
    endpoint: Endpoint | None = None,
    new_endpoint: dict[str, Any] | None = None,
    autoscaling: dict[str, int] | None = None,
    reason: str = "",
    source: str = Source.BROWSER,
    request_promotion: bool = True,
) -> Deployment | PromotionRequest:
    """Put `version` on an endpoint as its environment allows: a deployment where no approval
    is needed; where it is, a promotion request for an approver, or, for a caller that only
    starts deployments (`request_promotion=False`: the deploy API, whose clients ask for
    promotion on the promotions route), the refusal `deployment_start` answers.

    `new_endpoint` (name, environment, backend and endpoint fields) creates the endpoint
    first (admins only); `autoscaling` (the endpoint's autoscaling fields) sizes a new
    endpoint, or changes an existing one where no approval is needed (a promotion request
    leaves production as it is). One transaction: a refusal anywhere leaves nothing behind."""
    if (endpoint is None) == (new_endpoint is None):
        raise ServiceError("Choose an endpoint or describe a new one.", field="endpoint")
    autoscaling = dict(autoscaling or {})
    unknown = set(autoscaling) - set(AUTOSCALING_FIELDS)
    if unknown:
        raise ServiceError(
            f"Unknown autoscaling fields: {', '.join(sorted(unknown))}.", field="autoscaling"
        )
    if new_endpoint is not None:
        fields = {**new_endpoint, **autoscaling}
        endpoint = endpoint_create(
            actor=actor,
            name=fields.pop("name", ""),
            environment=fields.pop("environment", None),
            backend=fields.pop("backend", None) or Backend.LOCAL,
            source=source,
            **fields,
        )
        autoscaling = {}
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if deployment_needs_approval(environment=endpoint.environment):
        if request_promotion:
            return promotion_request_create(
                actor=actor,
                version=version,
                target_endpoint=endpoint,
                comment=reason,
                source=source,
            )
    elif autoscaling:
        sizes = {
            field: autoscaling.get(field, getattr(endpoint, field)) for field in AUTOSCALING_FIELDS
        }
        endpoint_update_autoscaling(
            actor=actor,
            endpoint=endpoint,
            min_instances=sizes["autoscaling_min_instances"],
            max_instances=sizes["autoscaling_max_instances"],
            target_invocations_per_instance=sizes["target_invocations_per_instance"],
            scale_in_cooldown_seconds=sizes["scale_in_cooldown_seconds"],
            scale_out_cooldown_seconds=sizes["scale_out_cooldown_seconds"],
            source=source,
        )
    return deployment_start(
        actor=actor, endpoint=endpoint, version=version, source=source, reason=reason
    )


def deployment_log(
    deployment: Deployment, message: str, *, level: str = LogLevel.INFO, step: str = ""
) -> None:
    """Append a line to the deployment's run log (committed at once outside a transaction,
    so the progress page shows it while the deployment runs)."""
    run = run_selectors.run_of(deployment)
    if run is not None:
        run_log(run, message, level=level, step=step)


def deployment_execute(*, deployment_id: int, claim: str) -> Deployment | None:
    """Carry out a deployment's run in this worker (`claim`: the task message's id). Steps
    already done (by a worker that died) are not redone; the live pointer moves when the
    run succeeds, after the package was placed and answered its smoke test. Safe to call
    again with the same id. None when the run was not, or no longer, this worker's."""
    deployment = Deployment.objects.filter(pk=deployment_id).first()
    run = run_selectors.run_of(deployment) if deployment else None
    if run is None or runner.execute(run_id=run.pk, worker=claim) is None:
        return None
    return selectors.deployment_get(pk=deployment_id)


@transaction.atomic
def deployment_fail(
    *, actor, deployment: Deployment, reason: str, source: str = Source.WORKER
) -> Deployment:
    """Fail a deployment that cannot finish (its worker is gone for good), with its run.
    The live pointer stays where it was."""
    run = run_selectors.run_of(deployment)
    plan = plan_for(plans.DeploymentPlan.path())
    if run is not None:
        run = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
    if run is not None and run.is_active:
        run.steps.filter(state=StepState.RUNNING).update(state=StepState.FAILED, error=reason)
        run.error, run.claimed_by = reason, ""
        run_set_state(run, RunState.FAILED, fields=("error", "claimed_by"))
        run_log(run, reason, level=LogLevel.ERROR)
    plan.on_fail(run, deployment, step="", error=reason, actor=actor, source=source)
    return Deployment.objects.get(pk=deployment.pk)


def deployment_cancel(
    *, actor, deployment: Deployment, reason: str = "", source: str = Source.BROWSER
) -> Deployment:
    """Stop a pending or running deployment; whoever may deploy there may cancel. A running
    one stops after its current step; the live pointer stays where it was."""
    endpoint = deployment.endpoint
    if endpoint.environment.requires_approval:
        _require(actor, APPROVE_PERMISSION, f"Only approvers cancel {endpoint.environment}.")
    else:
        _require(actor, DEPLOY_PERMISSION, "You may not cancel deployments.")
    run = run_selectors.run_of(deployment)
    if run is None or not deployment.is_active:
        raise InvalidTransition(
            f"Deployment #{deployment.pk} is {deployment.get_state_display().lower()}.",
            field="state",
        )
    run_cancel(actor=actor, run=run, reason=reason, source=source)
    return Deployment.objects.get(pk=deployment.pk)


def deployments_resume_stuck(*, now: datetime | None = None) -> dict[str, list[int]]:
    """The engine's sweep over deployment runs, answered in deployment ids: those handed
    back to be resumed from their recorded steps, and those failed cleanly."""
    outcome = runs_sweep(now=now, plan=plans.DeploymentPlan)
    subject_of = dict(
        Run.objects.filter(pk__in=[pk for ids in outcome.values() for pk in ids]).values_list(
            "pk", "object_id"
        )
    )
    return {
        "resumed": [subject_of[pk] for pk in outcome["resumed"]],
        "failed": [subject_of[pk] for pk in outcome["failed"] + outcome["cancelled"]],
    }


# Promotion requests ----------------------------------------------------------------------


@transaction.atomic
def promotion_request_create(
    *,
    actor,
    version: ModelVersion,
    target_endpoint: Endpoint,
    comment: str = "",
    source: str = Source.BROWSER,
) -> PromotionRequest:
    """Ask for `version` to be deployed to a production endpoint. The version must have
    succeeded on a staging endpoint; the evidence (its tests, that deployment, load tests,
    the lineage diff against production) is attached here."""
    _require(actor, PROMOTION_PERMISSION, "You may not request promotions.")
    target_endpoint = Endpoint.objects.select_related("environment").get(pk=target_endpoint.pk)
    if not target_endpoint.environment.requires_approval:
        raise ServiceError(
            f"{target_endpoint.name} needs no approval: deploy to it directly.",
            field="target_endpoint",
        )
    staging = selectors.staging_success(version=version)
    if staging is None:
        raise ServiceError(
            f"{version} has not been deployed successfully to a staging endpoint yet.",
            field="version",
            code="not_on_staging",
        )
    if version.status != VersionStatus.PACKAGED:
        raise ServiceError(f"{version} is not packaged.", field="version", code="not_packaged")
    live = LiveVersion.objects.filter(endpoint=target_endpoint, model=version.model).first()
    if live is not None and live.version_id == version.pk:
        raise Conflict(f"{version} is already live on {target_endpoint.name}.", code="already_live")
    evidence = selectors.promotion_evidence(
        version=version, staging_deployment=staging, target_endpoint=target_endpoint
    )
    try:
        with transaction.atomic():
            promotion = PromotionRequest.objects.create(
                version=version,
                target_endpoint=target_endpoint,
                staging_deployment=staging,
                comment=comment.strip(),
                evidence=evidence,
                requested_by=actor,
                source=source,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"A promotion of {version} to {target_endpoint.name} is already waiting for approval.",
            code="promotion_pending",
        ) from exc
    audit_record(
        actor=actor,
        action="promotion.request",
        target=promotion,
        to_state=PromotionState.PENDING,
        reason=promotion.comment,
        data={"version": version.version, "endpoint": target_endpoint.name},
        source=source,
    )
    _on_commit_task("notify_approval_needed", promotion.pk)
    return promotion


def _decide(
    *, actor, promotion: PromotionRequest, to_state: str, comment: str, source: str
) -> PromotionRequest:
    promotion = (
        PromotionRequest.objects.select_for_update(of=("self",))
        .select_related("version__model", "target_endpoint__environment", "requested_by")
        .get(pk=promotion.pk)
    )
    if (
        to_state == PromotionState.APPROVED
        and actor is not None
        and actor.pk == promotion.requested_by_id
    ):
        # Four eyes: https://en.wikipedia.org/wiki/Two-man_rule — whatever the actor's rights.
        raise PermissionDenied(
            "You requested this promotion; another approver has to approve it.",
            code="own_request",
        )
    _require(actor, APPROVE_PERMISSION, "Only members of the approver group decide promotions.")
    if to_state not in PROMOTION_TRANSITIONS.get(promotion.state, set()):
        raise InvalidTransition(
            f"This promotion request is already {promotion.get_state_display().lower()}.",
            field="state",
        )
    from_state = promotion.state
    promotion.state = to_state
    promotion.decided_by = actor
    promotion.decided_at = timezone.now()
    promotion.decision_comment = comment.strip()
    promotion.save(update_fields=["state", "decided_by", "decided_at", "decision_comment"])
    audit_record(
        actor=actor,
        action=f"promotion.{to_state}",
        target=promotion,
        from_state=from_state,
        to_state=to_state,
        reason=promotion.decision_comment,
        source=source,
    )
    return promotion


@transaction.atomic
def promotion_approve(
    *, actor, promotion: PromotionRequest, comment: str = "", source: str = Source.BROWSER
) -> PromotionRequest:
    """Approve a promotion request and start the production deployment. The requester can
    never approve their own request."""
    promotion = _decide(
        actor=actor,
        promotion=promotion,
        to_state=PromotionState.APPROVED,
        comment=comment,
        source=source,
    )
    deployment = _create_deployment(
        actor=actor,
        endpoint=promotion.target_endpoint,
        version=promotion.version,
        source=source,
        promotion=promotion,
        reason=f"Promotion #{promotion.pk} approved by {actor.get_username()}.",
    )
    promotion.deployment = deployment
    promotion.save(update_fields=["deployment"])
    _on_commit_task("notify_promotion_decided", promotion.pk)
    return promotion


@transaction.atomic
def promotion_reject(
    *, actor, promotion: PromotionRequest, comment: str, source: str = Source.BROWSER
) -> PromotionRequest:
    """Reject a promotion request; say why."""
    if not comment.strip():
        raise ServiceError("Say why the request is rejected.", field="comment")
    promotion = _decide(
        actor=actor,
        promotion=promotion,
        to_state=PromotionState.REJECTED,
        comment=comment,
        source=source,
    )
    _on_commit_task("notify_promotion_decided", promotion.pk)
    return promotion
