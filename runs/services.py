"""Writes of the engine: creating a run for a subject, queuing it, its log, its state,
cancelling it, and the sweep that resumes or gives up runs whose worker vanished."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.choices import AuditAction, Source
from portal.errors import InvalidTransition, ServiceError

from .choices import (
    ACTIVE_RUN_STATES,
    FINISHED_RUN_STATES,
    RUN_TRANSITIONS,
    LogLevel,
    RunState,
    StepState,
)
from .models import Run, RunLogLine, RunStep
from .plans import Plan, plan_for

logger = logging.getLogger(__name__)

MAX_CANCEL_REASON = 500


def run_enqueue(run: Run, *, countdown: int = 0) -> None:
    """Queue the run's execution once the current transaction commits (the rows it reads
    exist then). A duplicate message is harmless: only one worker can claim the run."""

    def send() -> None:
        from .tasks import run_execute

        if countdown:
            run_execute.apply_async((run.pk,), countdown=countdown)
        else:
            run_execute.delay(run.pk)

    transaction.on_commit(send)


def run_create(*, subject: models.Model, plan: type[Plan], enqueue: bool = True) -> Run:
    """A pending run of `plan` for `subject`, its steps recorded, queued on commit. The
    caller holds the transaction that creates the subject."""
    instance = plan_for(plan.path())
    run = Run.objects.create(
        content_type=ContentType.objects.get_for_model(subject, for_concrete_model=False),
        object_id=subject.pk,
        plan=plan.path(),
    )
    RunStep.objects.bulk_create(
        RunStep(run=run, position=i, name=step.name, label=step.label)
        for i, step in enumerate(instance.steps(subject))
    )
    if enqueue:
        run_enqueue(run)
    return run


def run_log(run: Run, message: str, *, level: str = LogLevel.INFO, step: str = "") -> RunLogLine:
    """Append a log line. Outside a transaction it commits at once, so the progress page
    shows it while the run goes on; it locks nothing the run's writers need."""
    return RunLogLine.objects.create(run_id=run.pk, message=message, level=level, step=step)


def run_set_state(run: Run, to_state: str, *, fields: tuple[str, ...] = ()) -> None:
    """Move a run (locked by the caller) along its state machine."""
    if to_state not in RUN_TRANSITIONS.get(run.state, set()):
        raise InvalidTransition(
            f"Run #{run.pk} is {run.get_state_display().lower()}; it cannot become "
            f"{RunState(to_state).label.lower()}.",
            field="state",
        )
    run.state = to_state
    if to_state in FINISHED_RUN_STATES and run.finished_at is None:
        run.finished_at = timezone.now()
        fields += ("finished_at",)
    run.save(update_fields=["state", *fields])


def finish_cancel(
    run: Run, *, plan: Plan, subject: Any, actor=None, reason: str = "", source: str = ""
) -> None:
    """Close a cancelled run (locked by the caller) and tell its plan."""
    run.error = reason or "Cancelled."
    run_set_state(run, RunState.CANCELLED, fields=("error",))
    run_log(run, f"Cancelled: {run.error}", level=LogLevel.WARNING)
    plan.on_cancel(run, subject, actor=actor, reason=run.error, source=source)


@transaction.atomic
def run_cancel(*, actor, run: Run, reason: str = "", source: str = "") -> Run:
    """Cancel a run. One no worker holds stops at once; a running one is asked to stop,
    and its worker stops at the next step or heartbeat (steps are not interrupted
    mid-way: they leave things in a state the next attempt can resume from). The caller
    checks who may cancel what; cancelling a finished run changes nothing."""
    run = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
    if run.state in FINISHED_RUN_STATES or run.cancel_requested:
        return run
    plan = plan_for(run.plan)
    reason = reason.strip() or (
        f"Cancelled by {actor.get_username()}." if getattr(actor, "is_authenticated", False) else ""
    )
    audit_record(
        actor=actor,
        action=AuditAction.RUN_CANCEL,
        target=run,
        from_state=run.state,
        to_state=RunState.CANCELLED,
        reason=reason,
        source=source,
    )
    if run.state == RunState.PENDING:
        finish_cancel(
            run,
            plan=plan,
            subject=plan.load_subject(run),
            actor=actor,
            reason=reason,
            source=source,
        )
        return run
    run.cancel_requested = True
    run.error = reason or "Cancelled."
    run.save(update_fields=["cancel_requested", "error"])
    run_log(run, "Cancel requested; stopping after the current step.", level=LogLevel.WARNING)
    return run


def run_cancel_requested(*, actor, run: Run, reason: str = "", source: str = "") -> Run:
    """A person asks to stop a run (its page's Cancel button, `POST /api/v1/runs/<id>/cancel/`):
    the run's plan hands the request to its subject's own service, which checks who may
    cancel and records it (a deployment's, a load test's), so the rule lives in one place."""
    if len(reason) > MAX_CANCEL_REASON:
        raise ServiceError(f"A reason is at most {MAX_CANCEL_REASON} characters.", field="reason")
    if not run.is_active:
        raise InvalidTransition(
            f"Run #{run.pk} is {run.get_state_display().lower()}; there is nothing to cancel.",
            field="state",
        )
    plan = plan_for(run.plan)
    plan.cancel(run, plan.load_subject(run), actor=actor, reason=reason.strip(), source=source)
    return Run.objects.get(pk=run.pk)


def runs_sweep(*, now: datetime | None = None, plan: type[Plan] | None = None) -> dict:
    """Find runs whose worker went away (no heartbeat for the plan's stale time; a pending
    run nobody took for as long): hand them back to be resumed from their recorded steps,
    or fail them once they ran out of attempts or time. Cancelled-but-running ones whose
    worker vanished are closed as cancelled. Returns the run ids per outcome.

    Each run is handled in its own transaction, locked with SKIP LOCKED: a run a worker is
    writing right now is not stale, and two sweeps never handle one run twice."""
    now = now or timezone.now()
    outcome: dict[str, list[int]] = {"resumed": [], "failed": [], "cancelled": []}
    candidates = Run.objects.filter(state__in=ACTIVE_RUN_STATES)
    if plan is not None:
        candidates = candidates.filter(plan=plan.path())
    for pk in list(candidates.order_by("id").values_list("pk", flat=True)):
        with transaction.atomic():
            run = (
                Run.objects.select_for_update(skip_locked=True, no_key=True)
                .filter(pk=pk, state__in=ACTIVE_RUN_STATES)
                .first()
            )
            if run is None:
                continue
            run_plan = plan_for(run.plan)
            last_sign = run.heartbeat_at or run.created_at
            if run.not_before is not None:  # held back by its backoff until then
                last_sign = max(last_sign, run.not_before)
            if last_sign > now - timedelta(seconds=run_plan.stale_seconds):
                continue
            subject = run_plan.load_subject(run)
            if run.cancel_requested:
                finish_cancel(
                    run, plan=run_plan, subject=subject, reason=run.error, source=Source.WORKER
                )
                outcome["cancelled"].append(pk)
                continue
            started = run.started_at or run.created_at
            too_old = started < now - timedelta(seconds=run_plan.timeout_seconds)
            if run.attempts >= run_plan.max_attempts or too_old:
                reason = (
                    f"The worker stopped after {run.attempts} attempt(s) and "
                    f"{int((now - started).total_seconds())} s"
                    + (f"; {run_plan.gave_up_note}" if run_plan.gave_up_note else ".")
                )
                run.error = reason
                run.claimed_by = ""
                run.steps.filter(state=StepState.RUNNING).update(
                    state=StepState.FAILED, error=reason
                )
                run_set_state(run, RunState.FAILED, fields=("error", "claimed_by"))
                run_log(run, reason, level=LogLevel.ERROR)
                run_plan.on_fail(run, subject, step="", error=reason, source=Source.WORKER)
                outcome["failed"].append(pk)
                continue
            reason = "No sign of life from its worker; queued again to resume."
            # Counted from now, so the next beats do not send it again while the message
            # waits for a free worker.
            if run.state == RunState.RUNNING:
                run.claimed_by = ""
                run_set_state(run, RunState.PENDING, fields=("claimed_by",))
                run_plan.on_requeue(run, subject, reason=reason)
            run.heartbeat_at = now
            run.save(update_fields=["heartbeat_at"])
            run_log(
                run,
                "No sign of life from the worker; queued again to resume from the recorded steps.",
                level=LogLevel.WARNING,
            )
            run_enqueue(run)
            outcome["resumed"].append(pk)
    return outcome
