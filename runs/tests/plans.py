"""Plans used by the engine's own tests. Their subject is a user (any model would do);
what each step does is steered per test through `CONTROL`."""

from __future__ import annotations

import time
from typing import Any

from runs.plans import Plan, PlanStep, RetryableStepError, RunContext, StepError

CONTROL: dict[str, Any] = {}
CALLS: list[tuple[str, ...]] = []


def reset() -> None:
    CONTROL.clear()
    CALLS.clear()


class ThreeSteps(Plan):
    """fetch -> build -> publish; each records its call, and may sleep, fail, fail once
    (retryable), or run a callback that the test sets."""

    max_attempts = 3
    stale_seconds = 60
    timeout_seconds = 3600

    def steps(self, subject) -> list[PlanStep]:
        return [
            PlanStep("fetch", "Fetch"),
            PlanStep("build", "Build"),
            PlanStep("publish", "Publish"),
        ]

    def run_step(self, step: str, ctx: RunContext) -> dict[str, Any] | None:
        CALLS.append(("step", step, ctx.run.attempts))
        ctx.log(f"{step} for {ctx.subject.username}")
        if CONTROL.get("sleep", {}).get(step):
            time.sleep(CONTROL["sleep"][step])
        callback = CONTROL.get("callback", {}).get(step)
        if callback:
            callback(ctx)
        if CONTROL.get("fail") == step:
            raise StepError(f"{step} broke")
        if CONTROL.get("fail_once") == step and ctx.run.attempts == 1:
            raise RetryableStepError(f"{step} is busy")
        if CONTROL.get("retry_always") == step:
            raise RetryableStepError(f"{step} is busy")
        if CONTROL.get("skip") == step:
            return {"skipped": True}
        return {"step": step}

    def on_claim(self, run, subject, *, resumed, done) -> None:
        CALLS.append(("claim", run.attempts, resumed, tuple(done)))

    def on_succeed(self, run, subject, *, results) -> None:
        CALLS.append(("succeed", tuple(results)))

    def on_fail(self, run, subject, *, step, error, actor=None, source="") -> None:
        CALLS.append(("fail", step, error))

    def on_requeue(self, run, subject, *, reason) -> None:
        CALLS.append(("requeue", reason))

    def on_cancel(self, run, subject, *, actor=None, reason="", source="") -> None:
        CALLS.append(("cancel", reason))

    def may_cancel(self, actor, subject) -> bool:
        """Staff may cancel (the subject's own rule, for these tests)."""
        return bool(actor is not None and actor.is_staff)

    def cancel(self, run, subject, *, actor, reason, source) -> None:
        from portal.errors import PermissionDenied
        from runs.services import run_cancel

        if not self.may_cancel(actor, subject):
            raise PermissionDenied("Only staff cancel these runs.")
        run_cancel(actor=actor, run=run, reason=reason, source=source)
