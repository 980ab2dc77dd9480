"""A deployment as a plan on the engine (runs): its steps are the endpoint backend's, and
what a run's life means for the deployment (running, live, failed, handed back) happens in
the hooks, in the same transaction as the run's own change, with the audit record."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from runs.models import Run
from runs.plans import Plan, PlanStep, RunContext, RunLost
from runs.services import run_log

from . import services
from .backends import StepContext, backend_for
from .choices import DEPLOYMENT_TRANSITIONS, FINISHED_DEPLOYMENT_STATES, DeploymentKind, Source
from .choices import DeploymentState as State
from .models import Deployment, LiveVersion, LiveVersionHistory


def _locked(deployment_id: int) -> Deployment:
    return (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("endpoint__environment", "version__model", "model")
        .get(pk=deployment_id)
    )


class DeploymentPlan(Plan):
    """Put a packaged version onto an endpoint: the backend's steps, the last of which makes
    it live; the live pointer moves when the run succeeds."""

    gave_up_note = "the live version was not changed."

    @property
    def stale_seconds(self) -> int:
        return settings.BERTH_DEPLOYMENT_STALE_SECONDS

    @property
    def timeout_seconds(self) -> int:
        return settings.BERTH_DEPLOYMENT_TIMEOUT_SECONDS

    @property
    def max_attempts(self) -> int:
        return settings.BERTH_DEPLOYMENT_MAX_ATTEMPTS

    def load_subject(self, run: Run) -> Deployment:
        return Deployment.objects.select_related(
            "endpoint__environment", "version__model", "model"
        ).get(pk=run.object_id)

    def steps(self, subject: Deployment) -> list[PlanStep]:
        return [
            PlanStep(step.name, step.label)
            for step in backend_for(subject.endpoint).plan(subject.endpoint)
        ]

    def run_step(self, step: str, ctx: RunContext) -> dict[str, Any] | None:
        if "backend" not in ctx.scratch:
            ctx.scratch["backend"] = backend_for(ctx.subject.endpoint)
            ctx.scratch["context"] = StepContext(
                deployment=ctx.subject, log=ctx.log, heartbeat=ctx.heartbeat, results=ctx.results
            )
        return ctx.scratch["backend"].run_step(step, ctx.scratch["context"])

    def on_claim(self, run: Run, subject: Deployment, *, resumed: bool, done: list[str]) -> None:
        deployment = _locked(subject.pk)
        if deployment.state in FINISHED_DEPLOYMENT_STATES:
            raise RunLost()
        if deployment.state == State.PENDING:
            deployment.started_at = deployment.started_at or timezone.now()
            services._set_state(
                deployment, State.RUNNING, fields=("started_at",), data={"attempt": run.attempts}
            )
        if not resumed:
            run_log(
                run,
                f"Deploying {deployment.version} to {deployment.endpoint.name} "
                f"({deployment.endpoint.get_backend_display()}).",
            )

    def on_succeed(self, run: Run, subject: Deployment, *, results: dict[str, Any]) -> None:
        """Move the live pointer and close the deployment, with the run, in one transaction."""
        now = timezone.now()
        locked = _locked(subject.pk)
        if locked.state != State.RUNNING:
            raise RunLost()
        live = (
            LiveVersion.objects.select_for_update(of=("self",))
            .select_related("deployment")
            .filter(endpoint=locked.endpoint, model=locked.model)
            .first()
        )
        replaced = live.deployment if live else None
        LiveVersionHistory.objects.filter(
            endpoint=locked.endpoint, model=locked.model, until__isnull=True
        ).update(until=now)
        LiveVersionHistory.objects.create(
            endpoint=locked.endpoint,
            model=locked.model,
            version=locked.version,
            deployment=locked,
            since=now,
        )
        LiveVersion.objects.update_or_create(
            endpoint=locked.endpoint,
            model=locked.model,
            defaults={"version": locked.version, "deployment": locked, "since": now},
        )
        locked.result = dict(results)
        services._set_state(
            locked,
            State.SUCCEEDED,
            fields=("result",),
            data={"live_version": locked.version.version},
        )
        if replaced is not None and replaced.pk != locked.pk:
            replaced_state = (
                State.ROLLED_BACK if locked.kind == DeploymentKind.ROLLBACK else State.SUPERSEDED
            )
            replaced = Deployment.objects.select_for_update(of=("self",)).get(pk=replaced.pk)
            if replaced_state in DEPLOYMENT_TRANSITIONS.get(replaced.state, set()):
                services._set_state(
                    replaced,
                    replaced_state,
                    reason=f"Replaced by deployment #{locked.pk}.",
                    data={"by": locked.pk},
                )
        run_log(
            run,
            f"{locked.version} is live on {locked.endpoint.name}"
            + (f" (was v{replaced.version.version})." if replaced else "."),
        )

    def on_fail(
        self,
        run: Run,
        subject: Deployment,
        *,
        step: str,
        error: str,
        actor=None,
        source: str = Source.WORKER,
    ) -> None:
        """The deployment fails with the run; the live pointer stays where it was."""
        deployment = _locked(subject.pk)
        if deployment.state in FINISHED_DEPLOYMENT_STATES:
            return
        deployment.error = error
        services._set_state(
            deployment,
            State.FAILED,
            actor=actor,
            reason=error,
            source=source or Source.WORKER,
            fields=("error",),
            data={"step": step} if step else None,
        )
        services._on_commit_task("notify_deployment_failed", deployment.pk)

    def on_requeue(self, run: Run, subject: Deployment, *, reason: str) -> None:
        deployment = _locked(subject.pk)
        if deployment.state == State.RUNNING:
            services._set_state(deployment, State.PENDING, reason=reason)

    def may_cancel(self, actor, subject: Deployment) -> bool:
        return services.deployment_may_cancel(actor=actor, deployment=subject)

    def cancel(self, run: Run, subject: Deployment, *, actor, reason: str, source: str) -> None:
        services.deployment_cancel(actor=actor, deployment=subject, reason=reason, source=source)

    def on_cancel(
        self, run: Run, subject: Deployment, *, actor=None, reason: str = "", source: str = ""
    ) -> None:
        deployment = _locked(subject.pk)
        if deployment.state in FINISHED_DEPLOYMENT_STATES:
            return
        deployment.error = reason
        services._set_state(
            deployment,
            State.FAILED,
            actor=actor,
            reason=reason,
            source=source or Source.WORKER,
            fields=("error",),
            data={"cancelled": True},
        )
