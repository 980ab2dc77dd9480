"""The validate -> test -> package pipeline of a model version, as plans on the engine (runs).

Each pipeline step is a run of its own plan, with one step: its attempts, heartbeat, log and
timing are the engine's, so a step keeps its own budget of attempts (as the pipeline always
had) and a version's page shows the attempt of the step in progress. What a run's life means
for the version happens in the hooks and in the step's last write, each in the transaction
that changes the run, with the version's audit record:

- claimed: the version moves to the step's running state ("validating", ...); a version a
  vanished worker left in that state is first handed back ("version.requeue"), then started;
- the step's outcome (validated or invalid, tested or test_failed, packaged) is written only
  while this worker still holds the run, and queues the next step's run;
- handed back (an unexpected error with attempts left, or the sweep found the worker gone):
  the version goes back to the state before the step ("version.retry", "version.requeue");
- failed (out of attempts or time): the step gives up with a clear problem
  ("version.give_up"): invalid, test_failed, or tested for packaging (the artifact store's
  failure, not the model's; a retry packages again).

Transitions made here are recorded with no actor and source "worker".
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record, state_transition
from portal.choices import AuditAction, Source
from runs.choices import ACTIVE_RUN_STATES, RunState
from runs.models import Run, RunLogLine
from runs.plans import (
    Plan,
    PlanStep,
    RetryableStepError,
    RunCancelled,
    RunContext,
    RunLost,
    StepError,
)
from runs.services import run_create, run_enqueue, run_log

from .artifacts import drop_tree, keep_tree, kept_tree, remove_tree, reuse_tree, scratch_dir
from .choices import (
    FAILED_STATUSES,
    PIPELINE_STEPS,
    STEP_BY_READY_STATUS,
    STEP_GIVE_UP_STATUS,
    VERSION_TRANSITIONS,
    VersionStatus,
)
from .models import ModelVersion, TestResult, status_reason_for
from .storage import artifact_store

logger = logging.getLogger(__name__)

MAX_LOG_LINES = 500
# The engine's sweep hands a run back with this reason (runs.services.runs_sweep).
SWEEP_REASON_PREFIX = "No sign of life"
GAVE_UP_SUFFIX = re.compile(r" \(gave up after \d+ attempts\)$")


def _transition(
    version: ModelVersion,
    to_status: str,
    *,
    actor=None,
    reason: str = "",
    source: str = Source.WORKER,
    action: str = "version.transition",
    data: dict | None = None,
    fields: list[str] | tuple[str, ...] = (),
) -> ModelVersion:
    """Move `version` (locked by the caller) to `to_status`, with its audit record."""
    state_transition(
        version,
        to_status,
        transitions=VERSION_TRANSITIONS,
        refusal=f"{version} cannot go from {version.status} to {to_status}.",
        actor=actor,
        action=action,
        source=source,
        reason=reason,
        data=data,
        state_field="status",
        changes={"status_changed_at": timezone.now()},
        fields=fields,
    )
    return version


def _locked(version_id: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model")
        .filter(pk=version_id)
        .first()
    )


def _runs_of(version_id: int):
    content_type = ContentType.objects.get_for_model(ModelVersion)
    return Run.objects.filter(content_type=content_type, object_id=version_id)


# -- writes the services call -----------------------------------------------------------------


def step_start(*, version: ModelVersion, step: str) -> Run:
    """A run of `step` for `version`, queued when the caller's transaction commits. A run of
    that step still pending or running is queued again instead (a duplicate message is
    harmless: only one worker can claim a run)."""
    plan = PLANS[step]
    active = _runs_of(version.pk).filter(plan=plan.path(), state__in=ACTIVE_RUN_STATES).first()
    if active is not None:
        if active.state == RunState.PENDING and not active.claimed_by:
            Run.objects.filter(pk=active.pk).update(not_before=None)
        run_enqueue(active)
        return active
    return run_create(subject=version, plan=plan, enqueue=True)


def version_log(*, run: Run, message: str, step: str = "") -> None:
    """Append a progress line the version page shows live."""
    run_log(run, message, step=step)
    logger.info("version %s %s: %s", run.object_id, step, message)


def progress_log(version: ModelVersion) -> list[dict[str, str]]:
    """The version's progress lines over all its steps' runs, oldest first, in the shape the
    version API has always given: {"at", "step", "message"}."""
    lines = RunLogLine.objects.filter(
        run__content_type=ContentType.objects.get_for_model(ModelVersion),
        run__object_id=version.pk,
    ).order_by("-id")[:MAX_LOG_LINES]
    return [
        {
            "at": line.created_at.isoformat(timespec="seconds"),
            "step": line.step,
            "message": line.message,
        }
        for line in reversed(list(lines))
    ]


def current_attempts(version: ModelVersion) -> int:
    """Attempts at the step in progress (0 when no step is under way), as the page shows."""
    run = _runs_of(version.pk).filter(state__in=ACTIVE_RUN_STATES).order_by("-id").first()
    return run.attempts if run is not None else 0


# -- the plans --------------------------------------------------------------------------------


class PipelineStepPlan(Plan):
    """One pipeline step of a model version, with its limits from the registry's settings."""

    step: str = ""
    label: str = ""
    gave_up_note = "the worker stopped responding each time."

    @property
    def stale_seconds(self) -> int:
        return settings.BERTH_VERSION_STUCK_SECONDS

    @property
    def max_attempts(self) -> int:
        return settings.BERTH_VERSION_MAX_ATTEMPTS

    @property
    def timeout_seconds(self) -> int:
        """A step is bounded by its attempts, each by the stuck time; this only ends one
        whose messages keep getting lost for a day."""
        return 24 * 3600

    def backoff_seconds(self, attempt: int) -> int:
        return int(min(300, 5 * 2**attempt))

    @property
    def spec(self) -> dict[str, str]:
        return PIPELINE_STEPS[self.step]

    def load_subject(self, run: Run) -> ModelVersion:
        return ModelVersion.objects.select_related("model").get(pk=run.object_id)

    def steps(self, subject: ModelVersion) -> list[PlanStep]:
        return [PlanStep(self.step, self.label)]

    # Hooks ------------------------------------------------------------------------------

    def on_claim(self, run: Run, subject: ModelVersion, *, resumed: bool, done: list[str]):
        version = _locked(subject.pk)
        if version is None:
            raise RunLost()
        ready = {self.spec["ready"]}
        if self.step == "test":
            # A test run of a version whose tests failed is a retry someone asked for.
            ready.add(VersionStatus.TEST_FAILED)
        if version.status == self.spec["running"]:
            # Its worker vanished and the message came back: take the step over.
            _transition(
                version,
                self.spec["ready"],
                reason=(
                    "The worker running this step stopped; taking it over "
                    f"(requeued after attempt {run.attempts - 1} of {self.max_attempts})."
                ),
                action=AuditAction.VERSION_REQUEUE,
            )
        elif version.status not in ready:
            # Not waiting for this step (finished or moved on meanwhile): the step skips.
            return
        # A failure's reason belongs to the outcome it explains, not to the run that follows.
        version.status_reason = ""
        _transition(
            version,
            self.spec["running"],
            reason=(
                f"{self.step.capitalize()} started (attempt {run.attempts} of {self.max_attempts})."
            ),
            fields=["status_reason"],
        )
        version_log(
            run=run,
            step=self.step,
            message=f"{self.step.capitalize()} started, attempt {run.attempts}.",
        )

    def on_requeue(self, run: Run, subject: ModelVersion, *, reason: str) -> None:
        version = _locked(subject.pk)
        if version is None or version.status != self.spec["running"]:
            return
        if reason.startswith(SWEEP_REASON_PREFIX):
            last = run.heartbeat_at or run.created_at
            _transition(
                version,
                self.spec["ready"],
                reason=(
                    f"No sign of life since {last:%Y-%m-%d %H:%M:%S} UTC (worker lost?); "
                    f"requeued after attempt {run.attempts} of {self.max_attempts}."
                ),
                action=AuditAction.VERSION_REQUEUE,
            )
        else:
            _transition(
                version, self.spec["ready"], reason=reason, action=AuditAction.VERSION_RETRY
            )

    def on_fail(self, run: Run, subject: ModelVersion, *, step: str, error: str, **kwargs):
        """Out of attempts (or time): the step gives up with the error as a problem."""
        version = _locked(subject.pk)
        if version is None:
            return
        why = GAVE_UP_SUFFIX.sub("", error)
        message = f"{self.step.capitalize()} gave up after {run.attempts} attempts: {why}"
        version.problems = [
            *(version.problems or []),
            {"file": "", "line": None, "message": message},
        ]
        if version.status == self.spec["running"]:
            to_status = STEP_GIVE_UP_STATUS[self.step]
            version.status_reason = status_reason_for(
                problems=[version.problems[-1]] if to_status in FAILED_STATUSES else []
            )
            _transition(
                version,
                to_status,
                reason=message,
                action=AuditAction.VERSION_GIVE_UP,
                fields=["problems", "status_reason"],
            )
        elif version.status == self.spec["ready"]:
            # Never started (its messages were lost each time): it stays ready to retry.
            version.save(update_fields=["problems"])
            audit_record(
                actor=None,
                action=AuditAction.VERSION_GIVE_UP,
                target=version,
                from_state=version.status,
                to_state=version.status,
                reason=message,
                source=Source.WORKER,
            )

    def on_cancel(self, run: Run, subject: ModelVersion, **kwargs) -> None:
        version = _locked(subject.pk)
        if version is not None and version.status == self.spec["running"]:
            _transition(
                version,
                self.spec["ready"],
                reason=kwargs.get("reason") or "Cancelled.",
                action=AuditAction.VERSION_REQUEUE,
            )

    # The step ----------------------------------------------------------------------------

    def run_step(self, step: str, ctx: RunContext) -> dict[str, Any] | None:
        """Run the step on a version that waits for it (a message for a version that moved
        on skips it). An unexpected error (storage, broker, Triton not starting) earns another
        attempt after a backoff while attempts are left."""
        version = ModelVersion.objects.select_related("model").get(pk=ctx.subject.pk)
        if version.status != self.spec["running"]:
            return {"skipped": True, "status": version.status}
        scratch = scratch_dir(f"{self.step}-{version.pk}-")
        try:
            return self.work(version, scratch, ctx)
        except (StepError, RunLost, RunCancelled):
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            logger.error("version %s %s failed: %s", version.pk, self.step, message, exc_info=exc)
            ctx.log(f"Error: {message}")
            raise RetryableStepError(message) from exc
        finally:
            remove_tree(scratch)
            _release_tree(version.pk)

    def work(self, version: ModelVersion, scratch: Path, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def finish(
        self,
        ctx: RunContext,
        to_status: str,
        *,
        fields: dict[str, Any],
        reason: str,
        results: list[TestResult] | None = None,
        next_step: str | None = None,
    ) -> dict[str, Any]:
        """Write the step's outcome, only while this worker still holds the run (a worker the
        sweep gave up on must not write over its successor), and queue the next step."""
        with transaction.atomic():
            held = (
                Run.objects.select_for_update(no_key=True)
                .filter(pk=ctx.run.pk, claimed_by=ctx.worker, state=RunState.RUNNING)
                .exists()
            )
            version = _locked(ctx.subject.pk)
            if not held or version is None or version.status != self.spec["running"]:
                raise RunLost()
            for name, value in fields.items():
                setattr(version, name, value)
            if results is not None:
                TestResult.objects.filter(version=version).delete()
                for result in results:
                    result.version = version
                TestResult.objects.bulk_create(results)
            _transition(version, to_status, reason=reason, fields=list(fields))
            if next_step:
                step_start(version=version, step=next_step)
        return {"status": to_status}


def _fetch_and_extract(version: ModelVersion, scratch: Path, log) -> Path:
    """The version's archive, checked against its sha256 and safely extracted; returns the
    extraction folder, kept for the version's next steps on this worker (`kept_tree`).
    Raises UnsafeArchive for archives that break the limits."""
    from toolkit.archive import ArchiveLimits, UnsafeArchive, safe_extract, sha256_file

    kept = kept_tree(version.pk, version.content_sha256)
    if reuse_tree(kept):
        log("Reading the archive an earlier step extracted.")
        return kept
    archive = scratch / "artifact"
    artifact_store().fetch(version.artifact_uri, archive)
    if sha256_file(archive) != version.content_sha256:
        raise UnsafeArchive(
            "the stored archive no longer matches the sha256 recorded at registration"
        )
    limits = ArchiveLimits(**settings.BERTH_ARCHIVE_LIMITS)
    extracted = scratch / "extracted"
    files = safe_extract(archive, extracted, limits)
    archive.unlink(missing_ok=True)
    log(f"Extracted {len(files)} files.")
    return keep_tree(extracted, kept)


def _release_tree(version_id: int) -> None:
    """Remove the version's kept extraction once no later step reads it (packaged, invalid,
    tests failed, or the version is gone)."""
    row = ModelVersion.objects.filter(pk=version_id).values("status", "content_sha256").first()
    if row is None:
        return
    if row["status"] == VersionStatus.PACKAGED or row["status"] in FAILED_STATUSES:
        drop_tree(kept_tree(version_id, row["content_sha256"]))


class ValidatePlan(PipelineStepPlan):
    """Step 1: extract safely and check the repository; -> validated or invalid."""

    step, label = "validate", "Validate"

    def work(self, version, scratch, ctx):
        from toolkit.archive import UnsafeArchive

        from .validation import validate_repository

        try:
            extracted = _fetch_and_extract(version, scratch, ctx.log)
        except UnsafeArchive as exc:
            problem = {
                "file": exc.member or "",
                "line": None,
                "message": f"Unsafe archive: {exc.message}",
            }
            ctx.log(f"Refused: {exc}")
            return self.finish(
                ctx,
                VersionStatus.INVALID,
                fields={
                    "problems": [problem],
                    "repository_summary": {},
                    "status_reason": status_reason_for(problems=[problem]),
                },
                reason=f"Unsafe archive: {exc}",
            )
        report = validate_repository(extracted, extra_test_cases=version.test_cases)
        problems = [problem.as_dict() for problem in report.problems]
        if problems:
            ctx.log(f"{len(problems)} problem(s) found.")
            return self.finish(
                ctx,
                VersionStatus.INVALID,
                fields={
                    "problems": problems,
                    "repository_summary": report.summary,
                    "status_reason": status_reason_for(problems=problems),
                },
                reason=f"{len(problems)} problem(s) found.",
            )
        models = report.summary.get("models", [])
        ctx.log(
            f"Valid: {len(models)} model(s), entry model "
            f"{report.summary.get('entry_model')}, {len(report.test_cases)} test case(s)."
        )
        return self.finish(
            ctx,
            VersionStatus.VALIDATED,
            fields={"problems": [], "repository_summary": report.summary, "status_reason": ""},
            reason="No problems found.",
            next_step="test",
        )


class TestPlan(PipelineStepPlan):
    """Step 2: run the test cases on a real Triton; -> tested or test_failed."""

    __test__ = False  # not a pytest test class, whatever its name says
    step, label = "test", "Test on Triton"

    def work(self, version, scratch, ctx):
        from .triton_run import run_tests
        from .validation import find_repository_root

        extracted = _fetch_and_extract(version, scratch, ctx.log)
        root = find_repository_root(extracted) or extracted
        outcome = run_tests(
            root,
            summary=version.repository_summary,
            scratch=scratch,
            log=ctx.log,
            version_id=version.pk,
        )
        results = [
            TestResult(
                name=r.name[:200],
                kind=r.kind,
                outcome=r.outcome,
                message=r.message,
                inputs=r.inputs,
                expected=r.expected,
                actual=r.actual,
                duration_ms=r.duration_ms,
            )
            for r in outcome.results
        ]
        if outcome.passed:
            return self.finish(
                ctx,
                VersionStatus.TESTED,
                fields={"problems": [], "status_reason": ""},
                reason=f"{len(results)} test(s) passed.",
                results=results,
                next_step="package",
            )
        failed = [r for r in outcome.results if r.outcome != "passed"]
        reason = (
            outcome.problems[0]["message"]
            if outcome.problems
            else f"{len(failed)} of {len(results)} test(s) failed."
        )
        return self.finish(
            ctx,
            VersionStatus.TEST_FAILED,
            fields={
                "problems": outcome.problems,
                "status_reason": status_reason_for(
                    problems=outcome.problems,
                    failed_cases=[(r.name, r.message) for r in failed],
                    total_cases=len(results),
                ),
            },
            reason=reason,
            results=results,
        )


class PackagePlan(PipelineStepPlan):
    """Step 3: build `<model>_<version>.tar.gz` and store it; -> packaged."""

    step, label = "package", "Package"

    def work(self, version, scratch, ctx):
        from .packaging import package_repository
        from .validation import find_repository_root

        extracted = _fetch_and_extract(version, scratch, ctx.log)
        root = find_repository_root(extracted) or extracted
        built = package_repository(root, scratch / version.package_name)
        uri = artifact_store().put(
            built.path, f"{version.model.name}/{version.version}/{version.package_name}"
        )
        ctx.log(
            f"Stored {version.package_name} ({built.size_bytes} bytes, "
            f"sha256 {built.sha256[:12]}…) at {uri}."
        )
        return self.finish(
            ctx,
            VersionStatus.PACKAGED,
            fields={
                "package_uri": uri,
                "package_sha256": built.sha256,
                "package_size_bytes": built.size_bytes,
                # A tested version's only problems are earlier packaging attempts that gave up.
                "problems": [],
            },
            reason=f"Packaged as {version.package_name}.",
        )


PLANS: dict[str, type[PipelineStepPlan]] = {
    "validate": ValidatePlan,
    "test": TestPlan,
    "package": PackagePlan,
}
PLAN_PATHS = {plan.path() for plan in PLANS.values()}


# -- running a step here ----------------------------------------------------------------------


def version_step_run(*, version_id: int, step: str, worker: str = "") -> ModelVersion | None:
    """Carry out `version`'s pending run of `step` in this process (what a worker does with
    its message; also what a message of the registry's older step tasks does). Returns the
    version when the run did something, None when there was nothing to do."""
    from runs import runner

    run = (
        _runs_of(version_id)
        .filter(plan=PLANS[step].path(), state__in=ACTIVE_RUN_STATES)
        .order_by("-id")
        .first()
    )
    if run is None:
        with transaction.atomic():
            version = _locked(version_id)
            if version is None or STEP_BY_READY_STATUS.get(version.status) != step:
                return None
            run = step_start(version=version, step=step)
    finished = runner.execute(run_id=run.pk, worker=worker or f"direct-{run.pk}")
    if finished is None:
        return None
    step_result = finished.steps.filter(name=step).values_list("state", flat=True).first()
    if finished.state == RunState.SUCCEEDED and step_result == "skipped":
        return None
    return ModelVersion.objects.select_related("model").get(pk=version_id)


def version_validate(*, version_id: int) -> ModelVersion | None:
    return version_step_run(version_id=version_id, step="validate")


def version_test(*, version_id: int) -> ModelVersion | None:
    return version_step_run(version_id=version_id, step="test")


def version_package(*, version_id: int) -> ModelVersion | None:
    return version_step_run(version_id=version_id, step="package")
