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

import numpy as np

if TYPE_CHECKING:
    from deployments.models import Deployment, Endpoint


class DeploymentStepError(Exception):
    """A step failed for a reason worth showing to the person deploying."""


@dataclass
class StepContext:
    """What a step may do besides its work: write log lines and show it is alive."""

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

    def run_step(self, step: str, ctx: StepContext) -> dict[str, Any] | None:
        """Run one step. Returns what the step found (stored with the step), or None.
        Returning {"skipped": True, ...} records the step as skipped (nothing to do)."""
        handler = getattr(self, f"step_{step}", None)
        if handler is None:
            raise DeploymentStepError(f"The {self.name} backend has no step {step!r}.")
        return handler(ctx)


# Smoke tests ---------------------------------------------------------------------------


def kserve_request(test_case: dict[str, Any]) -> dict[str, Any]:
    """The KServe v2 inference request for a test case (berth.yaml's shape)."""
    inputs = []
    for name, spec in (test_case.get("inputs") or {}).items():
        data = spec.get("data", [])
        shape = spec.get("shape") or list(np.asarray(data).shape)
        inputs.append(
            {
                "name": name,
                "datatype": spec.get("datatype", "FP32"),
                "shape": list(shape),
                "data": np.asarray(data).flatten().tolist(),
            }
        )
    request: dict[str, Any] = {"inputs": inputs}
    if test_case.get("expected"):
        request["outputs"] = [{"name": name} for name in test_case["expected"]]
    return request


def compare_outputs(test_case: dict[str, Any], response: dict[str, Any]) -> list[str]:
    """Differences between a KServe v2 response and a test case's expectations; empty when
    the response matches within each output's tolerances."""
    outputs = {item.get("name"): item for item in response.get("outputs") or []}
    problems = []
    for name, spec in (test_case.get("expected") or {}).items():
        if name not in outputs:
            problems.append(f"output {name} missing from the answer")
            continue
        actual = outputs[name].get("data", [])
        expected = spec.get("data", []) if isinstance(spec, dict) else spec
        if outputs[name].get("datatype") == "BYTES":
            if list(np.asarray(actual).flatten()) != list(np.asarray(expected).flatten()):
                problems.append(f"output {name} is {actual!r}, expected {expected!r}")
            continue
        actual_array = np.asarray(actual, dtype=np.float64).flatten()
        expected_array = np.asarray(expected, dtype=np.float64).flatten()
        if actual_array.shape != expected_array.shape:
            problems.append(
                f"output {name} has {actual_array.size} values, expected {expected_array.size}"
            )
            continue
        atol = float(spec.get("atol", 1e-5)) if isinstance(spec, dict) else 1e-5
        rtol = float(spec.get("rtol", 1e-4)) if isinstance(spec, dict) else 1e-4
        if not np.allclose(actual_array, expected_array, atol=atol, rtol=rtol):
            problems.append(
                f"output {name} is {actual_array.round(6).tolist()}, expected "
                f"{expected_array.round(6).tolist()} (atol {atol}, rtol {rtol})"
            )
    return problems


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
    problems = compare_outputs(case, answer)
    if problems:
        raise DeploymentStepError(
            f"Smoke test {case.get('name', 'case 1')!r} failed: " + "; ".join(problems)
        )
    ctx.log(f"Smoke test {case.get('name', 'case 1')!r} passed: the answer matches.")
    return {"case": case.get("name", ""), "outputs": [o.get("name") for o in answer["outputs"]]}
