"""Writes of the load tests app: start (confirmed; production waits for an approver),
approve, reject, cancel, and apply a recommendation to the endpoint's autoscaling. Each in
one transaction with its audit record; the browser, the API and the admin call these.

Who may do what, decided here once:
- start: whoever may deploy to the endpoint (`deployments.add_deployment`); an endpoint
  whose environment needs approval (production) waits for an approver.
- approve / reject: holders of `loadtests.approve_loadtest` or of the promotion approvers'
  permission (`deployments.approve_promotionrequest`): the people who already decide what
  reaches production decide what load it takes. Never the requester (four eyes).
- cancel: the requester, approvers and admins (`loadtests.plans.may_cancel`).
- apply: whoever may change the endpoint's autoscaling (`endpoint_update_autoscaling`
  decides: deployers on staging, admins where approval is needed).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from deployments.models import Deployment, Endpoint
from portal.audit import audit_record
from portal.choices import AuditAction, Source
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from runs.services import run_cancel, run_create

from . import recommend
from .choices import ACTIVE_LOADTEST_STATES, FINISHED_LOADTEST_STATES
from .choices import LoadTestState as State
from .config import parse_config
from .models import LoadTest
from .plans import LoadTestPlan, may_cancel, set_state, stage_dict

APPROVE_LOADTEST_PERMISSION = "loadtests.approve_loadtest"


def may_approve(actor) -> bool:
    from deployments.services import APPROVE_PERMISSION

    return bool(
        actor is not None
        and actor.is_authenticated
        and (actor.has_perm(APPROVE_LOADTEST_PERMISSION) or actor.has_perm(APPROVE_PERMISSION))
    )


def may_start(actor) -> bool:
    from deployments.services import DEPLOY_PERMISSION

    return bool(actor is not None and actor.is_authenticated and actor.has_perm(DEPLOY_PERMISSION))


def _version_under_test(endpoint: Endpoint, models: list[str], deployment: Deployment | None):
    if deployment is not None:
        return deployment.version
    if len(models) == 1:
        from deployments.models import LiveVersion

        for live in LiveVersion.objects.filter(endpoint=endpoint).select_related("version__model"):
            if live.version.package_name == models[0]:
                return live.version
    return None


@transaction.atomic
def loadtest_start(
    *,
    actor,
    endpoint: Endpoint,
    config: dict,
    upload: bytes | None = None,
    deployment: Deployment | None = None,
    confirmed: bool,
    source: str = Source.BROWSER,
) -> LoadTest:
    """Start a load test of `endpoint`: refused without the confirmation, for whoever may
    not deploy there, while another test of the endpoint is active (409). Production
    waits for an approver (awaiting_approval); elsewhere it is queued at once."""
    if not may_start(actor):
        raise PermissionDenied("You may not load-test endpoints (you may not deploy to them).")
    if not confirmed:
        raise ServiceError(
            "Confirm that this endpoint may take the load: a load test sends real requests.",
            field="confirmed",
            code="confirmation_required",
        )
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if deployment is not None and deployment.endpoint_id != endpoint.pk:
        raise ServiceError("The deployment is not on this endpoint.", field="deployment")
    parsed = parse_config(config, endpoint=endpoint, upload=upload)
    needs_approval = bool(endpoint.environment.requires_approval)
    try:
        with transaction.atomic():
            load_test = LoadTest.objects.create(
                endpoint=endpoint,
                deployment=deployment,
                version=_version_under_test(endpoint, parsed.models, deployment),
                state=State.AWAITING_APPROVAL if needs_approval else State.PENDING,
                config=parsed.as_dict(),
                payload_upload=upload if parsed.uploaded else None,
                created_by=actor,
                source=source,
            )
    except IntegrityError as exc:
        active = LoadTest.objects.filter(endpoint=endpoint, state__in=ACTIVE_LOADTEST_STATES)
        active = active.first()
        raise Conflict(
            f"Load test #{active.pk if active else '?'} of {endpoint.name} is still "
            f"{active.get_state_display().lower() if active else 'active'}; one at a time.",
            code="loadtest_active",
        ) from exc
    audit_record(
        actor=actor,
        action=AuditAction.LOADTEST_START,
        target=load_test,
        to_state=load_test.state,
        data={
            "endpoint": endpoint.name,
            "pattern": parsed.pattern["kind"],
            "max_rps": parsed.max_rps,
            "planned_seconds": parsed.planned_seconds,
        },
        source=source,
    )
    if not needs_approval:
        run_create(subject=load_test, plan=LoadTestPlan)
    return load_test


def _locked(load_test: LoadTest) -> LoadTest:
    return (
        LoadTest.objects.select_for_update(of=("self",))
        .select_related("endpoint__environment")
        .get(pk=load_test.pk)
    )


@transaction.atomic
def loadtest_approve(*, actor, load_test: LoadTest, source: str = Source.BROWSER) -> LoadTest:
    """An approver lets a production load test run: it is queued."""
    load_test = _locked(load_test)
    if actor is not None and actor.pk == load_test.created_by_id:
        raise PermissionDenied(
            "You asked for this load test; another approver has to approve it.",
            code="own_request",
        )
    if not may_approve(actor):
        raise PermissionDenied("Only approvers let load tests of production endpoints run.")
    set_state(
        load_test,
        State.PENDING,
        actor=actor,
        source=source,
        changes={"approved_by": actor, "approved_at": timezone.now()},
    )
    run_create(subject=load_test, plan=LoadTestPlan)
    return load_test


@transaction.atomic
def loadtest_reject(
    *, actor, load_test: LoadTest, reason: str, source: str = Source.BROWSER
) -> LoadTest:
    """An approver refuses a production load test; say why."""
    if not (reason or "").strip():
        raise ServiceError("Say why the load test is rejected.", field="reason")
    load_test = _locked(load_test)
    if not may_approve(actor):
        raise PermissionDenied("Only approvers decide load tests of production endpoints.")
    set_state(
        load_test,
        State.REJECTED,
        actor=actor,
        reason=reason.strip(),
        source=source,
        fields=("error",),
        changes={"error": reason.strip()},
    )
    return load_test


@transaction.atomic
def loadtest_cancel(
    *, actor, load_test: LoadTest, reason: str = "", source: str = Source.BROWSER
) -> LoadTest:
    """Stop a load test. Awaiting approval or pending: cancelled at once. Running: its run
    is cancelled; the worker's next heartbeat (at most 0.2 s away) stops the generator."""
    load_test = _locked(load_test)
    if not may_cancel(actor, load_test):
        raise PermissionDenied("Only the requester, approvers and admins cancel a load test.")
    if load_test.state in FINISHED_LOADTEST_STATES:
        raise InvalidTransition(
            f"Load test #{load_test.pk} is already {load_test.get_state_display().lower()}.",
            field="state",
        )
    reason = (reason or "").strip() or f"Cancelled by {actor.get_username()}."
    run = load_test.runs.order_by("-pk").first()
    if load_test.state == State.RUNNING and run is not None and run.is_active:
        run_cancel(actor=actor, run=run, reason=reason, source=source)
        load_test.refresh_from_db()
        return load_test
    if run is not None and run.is_active:
        # Pending: the run closes at once and its plan's hook cancels the test.
        run_cancel(actor=actor, run=run, reason=reason, source=source)
        load_test.refresh_from_db()
        if load_test.state in FINISHED_LOADTEST_STATES:
            return load_test
    set_state(load_test, State.CANCELLED, actor=actor, reason=reason, source=source)
    return load_test


@transaction.atomic
def loadtest_apply(
    *,
    actor,
    load_test: LoadTest,
    safety_factor: float | None = None,
    peak_rps: float | None = None,
    source: str = Source.BROWSER,
) -> Endpoint:
    """Put the test's recommendation, recomputed with these inputs, into the endpoint's
    autoscaling (target, and min/max instances when a peak rate is known) and into effect
    where the backend scales (SageMaker: the scalable target and policy; local: recorded)."""
    from deployments.backends import backend_for
    from deployments.services import endpoint_update_autoscaling

    load_test = _locked(load_test)
    if load_test.state != State.SUCCEEDED or not (load_test.result or {}).get("recommendation"):
        raise ServiceError(
            "Only a finished load test with a recommendation can be applied.",
            field="load_test",
            code="no_recommendation",
        )
    config = load_test.config
    safety = float(safety_factor if safety_factor is not None else config.get("safety_factor", 0.5))
    if not 0 < safety <= 1:
        raise ServiceError("The safety factor is above 0 and at most 1.", field="safety_factor")
    peak = peak_rps if peak_rps is not None else config.get("peak_rps")
    if peak is not None and not (0 < float(peak) < 1e9):
        raise ServiceError("The peak rate is a positive number of requests/s.", field="peak_rps")
    stages = [stage_dict(s) for s in load_test.stages.filter(finished=True)]
    instances = load_test.result["recommendation"].get("instances_during_test", 1)
    recommendation = recommend.recommend(
        stages, slo=config["slo"], safety_factor=safety, instances=instances, peak_rps=peak
    )
    if recommendation is None:
        raise ServiceError("No stage held the SLO: nothing to apply.", field="load_test")
    endpoint = load_test.endpoint
    before = {
        "min": endpoint.autoscaling_min_instances,
        "max": endpoint.autoscaling_max_instances,
        "target": endpoint.target_invocations_per_instance,
    }
    endpoint = endpoint_update_autoscaling(
        actor=actor,
        endpoint=endpoint,
        min_instances=recommendation["min_instances"] or endpoint.autoscaling_min_instances,
        max_instances=max(
            recommendation["max_instances"] or endpoint.autoscaling_max_instances,
            recommendation["min_instances"] or endpoint.autoscaling_min_instances,
        ),
        target_invocations_per_instance=recommendation["target_invocations_per_instance"],
        scale_in_cooldown_seconds=endpoint.scale_in_cooldown_seconds,
        scale_out_cooldown_seconds=endpoint.scale_out_cooldown_seconds,
        source=source,
    )
    applied: dict[str, Any] = backend_for(endpoint).apply_autoscaling(endpoint)
    after = {
        "min": endpoint.autoscaling_min_instances,
        "max": endpoint.autoscaling_max_instances,
        "target": endpoint.target_invocations_per_instance,
    }
    load_test.applied_at = timezone.now()
    load_test.applied_by = actor
    load_test.result = {**load_test.result, "applied": {**recommendation, "backend": applied}}
    load_test.save(update_fields=["applied_at", "applied_by", "result"])
    audit_record(
        actor=actor,
        action=AuditAction.LOADTEST_APPLY,
        target=load_test,
        data={
            "endpoint": endpoint.name,
            "before": before,
            "after": after,
            "safety_factor": safety,
            "peak_rps": peak,
            "backend": applied,
        },
        source=source,
    )
    return endpoint
