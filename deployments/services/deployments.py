"""Deployments: starting one, rolling back, carrying out its run in a worker, cancelling,
and the sweep over runs whose worker went away."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit import audit_record, state_transition
from portal.choices import AuditAction
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from registry.choices import VersionStatus
from registry.models import ModelVersion, RegisteredModel
from runs import runner
from runs import selectors as run_selectors
from runs.models import Run
from runs.services import run_cancel, run_create, runs_sweep

from .. import plans, selectors
from ..choices import (
    DEPLOYMENT_TRANSITIONS,
    FINISHED_DEPLOYMENT_STATES,
    DeploymentKind,
    DeploymentState,
    Source,
)
from ..models import Deployment, Endpoint, LiveVersion, PromotionRequest
from .common import APPROVE_PERMISSION, DEPLOY_PERMISSION, _require


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
    now = timezone.now()
    changes: dict[str, Any] = {"state_changed_at": now}
    if to_state in FINISHED_DEPLOYMENT_STATES and deployment.finished_at is None:
        changes["finished_at"] = now
    state_transition(
        deployment,
        to_state,
        transitions=DEPLOYMENT_TRANSITIONS,
        refusal=(
            f"Deployment #{deployment.pk} is {deployment.get_state_display().lower()}; it "
            f"cannot become {DeploymentState(to_state).label.lower()}."
        ),
        actor=actor,
        action=AuditAction.of("deployment", to_state),
        source=source,
        reason=reason,
        data=data,
        changes=changes,
        fields=fields,
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
        action=AuditAction.of("deployment", kind),
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


def _cancel_rule(deployment: Deployment) -> tuple[str, str]:
    """Who may cancel a deployment: whoever may deploy there (on an environment that needs
    approval, where nobody deploys directly, approvers)."""
    environment = deployment.endpoint.environment
    if environment.requires_approval:
        return APPROVE_PERMISSION, f"Only approvers cancel deployments to {environment}."
    return DEPLOY_PERMISSION, "You may not cancel deployments."


def deployment_may_cancel(*, actor, deployment: Deployment) -> bool:
    permission, _ = _cancel_rule(deployment)
    return (
        deployment.is_active
        and actor is not None
        and actor.is_authenticated
        and actor.has_perm(permission)
    )


def deployment_cancel(
    *, actor, deployment: Deployment, reason: str = "", source: str = Source.BROWSER
) -> Deployment:
    """Stop a pending or running deployment. A running one stops after its current step;
    the live pointer stays where it was."""
    _require(actor, *_cancel_rule(deployment))
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
