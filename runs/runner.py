"""The engine: carries out a run's plan, step by step, in a worker.

Rules that hold for every plan:
- A run is taken by one conditional UPDATE (`claimed_by` empty, or ours, or its heartbeat
  stale). PostgreSQL re-checks the WHERE clause on the row a concurrent UPDATE just
  changed, so of two workers that try at once one gets the row and the other none: the
  race is designed out, not retried away.
- Every write a worker makes afterwards (a step's start and end, success, failure) is
  conditional on the run still being claimed by it and running, in the same transaction,
  so a worker the sweep declared dead cannot write over its successor.
- Steps done (or skipped) are not run again; a run resumed on another attempt starts at
  its first unfinished step. Steps are therefore written to be idempotent.
- Log lines go to their own table (an INSERT, no lock on the subject's row).
"""

from __future__ import annotations

import logging
import threading
import traceback
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.choices import Source

from .choices import FINISHED_STEP_STATES, LogLevel, RunState, StepState
from .models import Run, RunStep
from .plans import (
    Plan,
    PlanStep,
    RetryableStepError,
    RunCancelled,
    RunContext,
    RunLost,
    StepError,
    plan_for,
)
from .services import run_enqueue, run_log, run_set_state

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Shows the run is alive while a long step (a Triton load, waiting for InService)
    blocks the worker's thread. It dies with the worker process, which is the point: the
    sweep then sees a stale heartbeat. Celery has no per-task liveness signal that a
    database row can show, so this small thread is ours."""

    def __init__(self, run_id: int, worker: str, seconds: int):
        super().__init__(daemon=True, name=f"run-{run_id}-heartbeat")
        self.run_id, self.worker, self.seconds = run_id, worker, seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.seconds):
                Run.objects.filter(
                    pk=self.run_id, claimed_by=self.worker, state=RunState.RUNNING
                ).update(heartbeat_at=timezone.now())
        finally:
            from django.db import connection

            connection.close()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=self.seconds + 5)


def claim(*, run_id: int, worker: str, plan: Plan | None = None) -> Run | None:
    """Take the run for `worker` (a task message's id): a redelivered message (same id)
    resumes it; another message only takes a run that stopped showing life, and none takes
    one held back by its backoff. Returns the run, or None when it is not ours to run."""
    plan_path = Run.objects.filter(pk=run_id).values_list("plan", flat=True).first()
    if plan_path is None:
        return None
    plan = plan or plan_for(plan_path)
    now = timezone.now()
    stale = now - timedelta(seconds=plan.stale_seconds)
    with transaction.atomic():
        taken = (
            Run.objects.filter(
                pk=run_id,
                state__in=[RunState.PENDING, RunState.RUNNING],
                cancel_requested=False,
            )
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .filter(
                Q(claimed_by="")
                | Q(claimed_by=worker)
                | Q(heartbeat_at__isnull=True)
                | Q(heartbeat_at__lt=stale)
            )
            .update(
                claimed_by=worker,
                heartbeat_at=now,
                attempts=F("attempts") + 1,
                state=RunState.RUNNING,
                started_at=Coalesce("started_at", now),
                not_before=None,
            )
        )
        if not taken:
            return None
        # The UPDATE holds the row until this transaction ends.
        run = Run.objects.get(pk=run_id)
        subject = plan.load_subject(run)
        done = list(
            run.steps.filter(state__in=FINISHED_STEP_STATES)
            .order_by("position")
            .values_list("name", flat=True)
        )
        resumed = run.attempts > 1
        try:
            with transaction.atomic():
                plan.on_claim(run, subject, resumed=resumed, done=done)
        except RunLost:
            transaction.set_rollback(True)
            return None
        if resumed:
            run_log(
                run,
                f"Attempt {run.attempts}: resuming"
                + (f" after {', '.join(done)}." if done else " from the start."),
                level=LogLevel.WARNING,
            )
    run.subject_cache = subject
    return run


def _still_ours(run: Run, worker: str) -> None:
    """Show life, and stop if the run is no longer ours or was cancelled."""
    if Run.objects.filter(
        pk=run.pk, claimed_by=worker, state=RunState.RUNNING, cancel_requested=False
    ).update(heartbeat_at=timezone.now()):
        return
    current = Run.objects.filter(pk=run.pk).values("claimed_by", "state", "cancel_requested")
    current = current.first() or {}
    if (
        current.get("claimed_by") == worker
        and current.get("state") == RunState.RUNNING
        and current.get("cancel_requested")
    ):
        raise RunCancelled()
    raise RunLost()


def _lock_ours(run: Run, worker: str, *, allow_cancelled: bool = False) -> Run | None:
    """The run, locked, if `worker` still holds it running (call inside a transaction).
    FOR NO KEY UPDATE: log lines being inserted (a key-share lock) do not wait on it."""
    queryset = Run.objects.select_for_update(no_key=True).filter(
        pk=run.pk, claimed_by=worker, state=RunState.RUNNING
    )
    if not allow_cancelled:
        queryset = queryset.filter(cancel_requested=False)
    return queryset.first()


def _sync_steps(run: Run, planned: list[PlanStep]) -> list[RunStep]:
    """The run's steps; recorded afresh when the plan's steps changed since they were."""
    steps = list(run.steps.order_by("position"))
    if [s.name for s in steps] != [p.name for p in planned]:
        with transaction.atomic():
            run.steps.all().delete()
            steps = RunStep.objects.bulk_create(
                RunStep(run=run, position=i, name=p.name, label=p.label)
                for i, p in enumerate(planned)
            )
    return steps


def _step_update(run: Run, worker: str, step: RunStep, **fields: Any) -> None:
    """Record a step's progress, only while the run is ours."""
    with transaction.atomic():
        if _lock_ours(run, worker) is None:
            _still_ours(run, worker)  # raises RunCancelled or RunLost
        Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        for key, value in fields.items():
            setattr(step, key, value)
        step.save(update_fields=list(fields))


def execute(*, run_id: int, worker: str) -> Run | None:
    """Carry out a run in this worker. Safe to call again with the same id and worker (a
    redelivered message): finished steps are skipped, a finished run is left alone.
    Returns the run when this worker finished it (succeeded, failed, cancelled or handed
    back for another attempt), None when it was not or no longer ours."""
    run = claim(run_id=run_id, worker=worker)
    if run is None:
        return None
    plan = plan_for(run.plan)
    subject = run.subject_cache
    current: dict[str, RunStep | None] = {"step": None}

    def log(message: str, level: str = LogLevel.INFO, *, step: str = "") -> None:
        run_log(run, message, level=level, step=step or ctx.step)

    ctx = RunContext(
        run=run,
        subject=subject,
        worker=worker,
        log=log,
        heartbeat=lambda: _still_ours(run, worker),
    )
    try:
        # Inside the try: a plan that cannot even say its steps fails the run with its
        # reason instead of leaving it running until the sweep.
        steps = _sync_steps(run, plan.steps(subject))
        for step in steps:
            if step.state in FINISHED_STEP_STATES:
                ctx.results[step.name] = step.result
                continue
            current["step"], ctx.step = step, step.name
            _step_update(
                run,
                worker,
                step,
                state=StepState.RUNNING,
                started_at=timezone.now(),
                finished_at=None,
                error="",
            )
            with Heartbeat(run.pk, worker, plan.heartbeat_seconds):
                outcome = dict(plan.run_step(step.name, ctx) or {})
            skipped = bool(outcome.pop("skipped", False))
            _step_update(
                run,
                worker,
                step,
                state=StepState.SKIPPED if skipped else StepState.DONE,
                finished_at=timezone.now(),
                result=outcome,
            )
            ctx.results[step.name] = outcome
        current["step"] = None
        return _succeed(run, worker, plan, subject, ctx.results)
    except RunLost:
        logger.warning("Run #%s was taken over or finished elsewhere.", run.pk)
        return None
    except RunCancelled:
        return _cancel_running(run, worker, plan, subject, current["step"])
    except (RetryableStepError, *plan.retry_on) as exc:
        return _retry_or_fail(run, worker, plan, subject, current["step"], str(exc))
    except StepError as exc:
        return _fail_running(run, worker, plan, subject, current["step"], str(exc))
    except Exception as exc:  # noqa: BLE001 - any unexpected error fails the run cleanly
        logger.exception("Run #%s failed", run.pk)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _fail_running(run, worker, plan, subject, current["step"], detail)


def _succeed(run: Run, worker: str, plan: Plan, subject: Any, results: dict) -> Run | None:
    with transaction.atomic():
        locked = _lock_ours(run, worker)
        if locked is None:
            _still_ours(run, worker)  # raises RunCancelled or RunLost
        try:
            with transaction.atomic():
                plan.on_succeed(locked, subject, results=results)
        except RunLost:
            return None
        run_set_state(locked, RunState.SUCCEEDED)
    return locked


def _fail_running(
    run: Run, worker: str, plan: Plan, subject: Any, step: RunStep | None, error: str
) -> Run | None:
    with transaction.atomic():
        locked = _lock_ours(run, worker, allow_cancelled=True)
        if locked is None:
            return None
        if step is not None:
            step.state, step.finished_at, step.error = StepState.FAILED, timezone.now(), error
            step.save(update_fields=["state", "finished_at", "error"])
        locked.error = error
        run_set_state(locked, RunState.FAILED, fields=("error",))
        name = step.name if step else ""
        run_log(locked, f"Failed at {name or 'start'}: {error}", level=LogLevel.ERROR, step=name)
        plan.on_fail(locked, subject, step=name, error=error, source=Source.WORKER)
    return locked


def _retry_or_fail(
    run: Run, worker: str, plan: Plan, subject: Any, step: RunStep | None, error: str
) -> Run | None:
    """Another attempt after a backoff, or a failure once the attempts are spent."""
    if run.attempts >= plan.max_attempts:
        return _fail_running(
            run, worker, plan, subject, step, f"{error} (gave up after {run.attempts} attempts)"
        )
    delay = plan.backoff_seconds(run.attempts)
    with transaction.atomic():
        locked = _lock_ours(run, worker)
        if locked is None:
            return None
        if step is not None:
            step.state, step.error = StepState.PENDING, error
            step.save(update_fields=["state", "error"])
        locked.claimed_by = ""
        locked.not_before = timezone.now() + timedelta(seconds=delay)
        run_set_state(locked, RunState.PENDING, fields=("claimed_by", "not_before"))
        reason = (
            f"Attempt {locked.attempts} failed"
            + (f" at {step.name}" if step else "")
            + f": {error}; trying again in {delay} s."
        )
        run_log(locked, reason, level=LogLevel.WARNING, step=step.name if step else "")
        plan.on_requeue(locked, subject, reason=reason)
        run_enqueue(locked, countdown=delay)
    return locked


def _cancel_running(
    run: Run, worker: str, plan: Plan, subject: Any, step: RunStep | None
) -> Run | None:
    with transaction.atomic():
        locked = _lock_ours(run, worker, allow_cancelled=True)
        if locked is None or not locked.cancel_requested:
            return None
        if step is not None and step.state == StepState.RUNNING:
            step.state, step.finished_at, step.error = (
                StepState.FAILED,
                timezone.now(),
                "Cancelled.",
            )
            step.save(update_fields=["state", "finished_at", "error"])
        from .services import finish_cancel

        finish_cancel(locked, plan=plan, subject=subject, reason=locked.error, source=Source.WORKER)
    return locked
