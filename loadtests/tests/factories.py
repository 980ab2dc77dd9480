"""Factories for load tests: versions made live on an endpoint (as a succeeded deployment
leaves them), configurations, and finished stages for the recommendation."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from deployments.choices import DeploymentState
from deployments.models import Deployment, Endpoint, LiveVersion, LiveVersionHistory
from deployments.tests.factories import RegisteredModelFactory, packaged_version
from registry.models import ModelVersion


def make_live(endpoint: Endpoint, version: ModelVersion) -> Deployment:
    """`version` live on `endpoint`, through a succeeded deployment."""
    now = timezone.now()
    deployment = Deployment.objects.create(
        endpoint=endpoint,
        model=version.model,
        version=version,
        state=DeploymentState.SUCCEEDED,
        created_by=version.registered_by,
        started_at=now,
        finished_at=now,
    )
    LiveVersion.objects.update_or_create(
        endpoint=endpoint,
        model=version.model,
        defaults={"version": version, "deployment": deployment, "since": now},
    )
    LiveVersionHistory.objects.create(
        endpoint=endpoint, model=version.model, version=version, deployment=deployment, since=now
    )
    return deployment


def live_version(endpoint: Endpoint, name: str = "demo_ensemble", **kwargs) -> ModelVersion:
    model = RegisteredModelFactory(name=name)
    version = packaged_version(model=model, **kwargs)
    make_live(endpoint, version)
    return version


def config(**overrides: Any) -> dict[str, Any]:
    """A small stairs test: 2 stages of 1 s."""
    data: dict[str, Any] = {
        "mix": {"kind": "uniform"},
        "pattern": {
            "kind": "stairs",
            "start_rps": 5,
            "step_rps": 5,
            "step_seconds": 1,
            "ceiling_rps": 10,
        },
        "slo": {"percentile": "p99", "latency_ms": 500, "max_error_rate": 0.01},
    }
    data.update(overrides)
    return data


def stage(
    position: int,
    offered: float,
    achieved: float,
    p99: float,
    *,
    errors: int = 0,
    completed: int | None = None,
) -> dict[str, Any]:
    completed = completed if completed is not None else int(achieved * 10)
    return {
        "position": position,
        "offered_rps": offered,
        "achieved_rps": achieved,
        "completed": completed,
        "ok": completed - errors,
        "errors": {"503": errors} if errors else {},
        "p50_ms": p99 / 2,
        "p95_ms": p99 * 0.9,
        "p99_ms": p99,
    }
