"""The interface every endpoint backend implements, and what the backends share: the step
context a deployment runs with, and the smoke test built from a version's first test case.

A backend turns a deployment into named steps. Each step is idempotent (placing a package
that is already placed, creating an endpoint that exists, do nothing), so a deployment whose
worker died is resumed by running its unfinished steps again. The live pointer moves in the
last step only (`activate`), after the package is placed and answered a smoke test."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runs.plans import StepError
from toolkit.codec import TensorError, decode_response
from toolkit.comparison import compare_outputs

if TYPE_CHECKING:
    from deployments.models import Deployment, Endpoint
    from monitoring.sources import MetricTarget


class DeploymentStepError(StepError):
    """A step failed for a reason worth showing to the person deploying."""


@dataclass
class StepContext:
    """What a step may do besides its work: write log lines and show it is alive. The
    deployment plan (deployments.plans) builds it from the engine's run context: `log`
    writes to the run's log, `heartbeat` shows life and stops a cancelled run."""

    deployment: Deployment
    log: Callable[..., None]
    heartbeat: Callable[[], None]
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    label: str


class EndpointBackend(ABC):
    """Executes deployments onto one kind of endpoint."""

    name: str = ""

    @abstractmethod
    def plan(self, endpoint: Endpoint) -> list[Step]:
        """The steps of a deployment onto `endpoint`, in order; the last one makes the
        version live."""

    @abstractmethod
    def metric_source(self, endpoint: Endpoint) -> MetricTarget:
        """Where `endpoint`'s metrics come from (monitoring asks the backend, so which
        backend an endpoint uses is decided in one place, `backend_for`)."""

    def apply_autoscaling(self, endpoint: Endpoint) -> dict[str, Any]:
        """Put the endpoint's autoscaling fields into effect where the backend scales (a
        SageMaker target-tracking policy). A local data plane runs one instance: the policy
        is recorded on the endpoint and nothing else changes."""
        return {
            "applied": False,
            "reason": "recorded on the endpoint; the local data plane runs one instance",
        }

    def promotion_approved(self, *, promotion) -> None:
        """A promotion of a version that succeeded on an endpoint of this backend (its
        staging endpoint) was approved: mirror the verdict where the backend keeps one (a
        SageMaker model package's approval status). Nothing to do by default."""
        return None

    def run_step(self, step: str, ctx: StepContext) -> dict[str, Any] | None:
        """Run one step. Returns what the step found (stored with the step), or None.
        Returning {"skipped": True, ...} records the step as skipped (nothing to do)."""
        handler = getattr(self, f"step_{step}", None)
        if handler is None:
            raise DeploymentStepError(f"The {self.name} backend has no step {step!r}.")
        return handler(ctx)


# Smoke tests ---------------------------------------------------------------------------


def smoke_case(deployment: Deployment) -> dict[str, Any] | None:
    """The test case a deployment is smoke-tested with: the version's first that calls the
    entry model (the one clients invoke through the target model). Validation records the
    cases of berth.yaml and those given at registration in the repository summary."""
    version = deployment.version
    summary = version.repository_summary or {}
    cases = summary.get("tests") or version.test_cases or []
    entry = summary.get("entry_model")
    for case in cases:
        if not case.get("model") or not entry or case.get("model") == entry:
            return case
    return None


def check_smoke_answer(
    ctx: StepContext, case: dict[str, Any], body: bytes, *, target_model: str
) -> dict[str, Any]:
    """Compare an invocation's answer with the case's expectations; raise when it differs."""
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise DeploymentStepError(
            f"{target_model} answered something that is not KServe v2 JSON: {body[:200]!r}"
        ) from exc
    try:
        problems = compare_outputs(case.get("expected") or {}, decode_response(answer))
    except TensorError as exc:
        raise DeploymentStepError(f"{target_model} answered a malformed tensor: {exc}") from exc
    if problems:
        raise DeploymentStepError(
            f"Smoke test {case.get('name', 'case 1')!r} failed: " + "; ".join(problems)
        )
    ctx.log(f"Smoke test {case.get('name', 'case 1')!r} passed: the answer matches.")
    return {"case": case.get("name", ""), "outputs": [o.get("name") for o in answer["outputs"]]}
