"""Reads of the load tests app, shaped for their pages and the API (no N+1 queries)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from portal.errors import NotFound
from runs.models import Run

from .choices import LoadTestState, Verdict
from .models import LoadTest, LoadTestStage


def _base() -> QuerySet[LoadTest]:
    return LoadTest.objects.select_related(
        "endpoint__environment",
        "deployment",
        "version__model",
        "created_by",
        "approved_by",
        "applied_by",
    ).prefetch_related(
        Prefetch("runs", queryset=Run.objects.order_by("pk")),
        Prefetch("stages", queryset=LoadTestStage.objects.order_by("position")),
    )


def loadtest_get(*, pk: int) -> LoadTest:
    found = _base().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No load test #{pk}.")
    return found


def loadtest_list(*, endpoint=None, version=None) -> QuerySet[LoadTest]:
    """Load tests, newest first, with their endpoint, version, people, runs and stages."""
    queryset = _base()
    if endpoint is not None:
        queryset = queryset.filter(endpoint=endpoint)
    if version is not None:
        queryset = queryset.filter(version=version)
    return queryset.order_by("-created_at", "-id")


def loadtest_latest_for_version(*, version, environment) -> LoadTest | None:
    """The version's latest load test on an endpoint of `environment` (staging, for a
    promotion request) that finished measuring, so it has a verdict; when none did, its
    latest of any state. A run cancelled or lost after a result does not hide the result; a
    later measured one that broke the SLO does replace it."""
    tests = (
        _base()
        .filter(version=version, endpoint__environment=environment)
        .order_by("-created_at", "-id")
    )
    return tests.filter(state=LoadTestState.SUCCEEDED).first() or tests.first()


def loadtest_passed(load_test: LoadTest | None) -> bool:
    """A test that finished and held the SLO: what an environment that `requires_load_test`
    wants before a promotion."""
    return bool(
        load_test is not None
        and load_test.state == LoadTestState.SUCCEEDED
        and load_test.verdict == Verdict.PASSED
    )


def loadtest_evidence(load_test: LoadTest | None) -> dict[str, Any] | None:
    """What a promotion request shows of a load test (frozen in its evidence)."""
    if load_test is None:
        return None
    recommendation = (load_test.result or {}).get("recommendation") or {}
    return {
        "id": load_test.pk,
        "endpoint": load_test.endpoint.name,
        "state": load_test.state,
        "verdict": load_test.verdict,
        "passed": loadtest_passed(load_test),
        "slo": (load_test.config or {}).get("slo"),
        "max_sustainable_rps": recommendation.get("max_sustainable_rps"),
        "p99_ms_at_max": recommendation.get("p99_ms_at_max"),
        "target_invocations_per_instance": recommendation.get("target_invocations_per_instance"),
        "finished_at": load_test.finished_at.isoformat() if load_test.finished_at else None,
        "url": load_test.get_absolute_url(),
        "api_url": f"/api/v1/loadtests/{load_test.pk}/",
    }


def loadtest_live(load_test: LoadTest) -> dict[str, Any]:
    """What the live view shows: the state, the current stage (the first not finished, else
    the last) with its offered and achieved rate, p50/p99, errors, cache hits and model
    loads, the generator's CPU and whether it kept to schedule, and the stages so far."""
    stages = list(LoadTestStage.objects.filter(load_test=load_test).order_by("position"))
    run = load_test.runs.order_by("-pk").first()
    current = next((s for s in stages if s.started_at and not s.finished), None)
    if current is None:
        started = [s for s in stages if s.started_at]
        current = started[-1] if started else None
    step = None
    if run is not None:
        step = run.steps.filter(state="running").values_list("name", flat=True).first()
    return {
        "id": load_test.pk,
        "state": load_test.state,
        "active": load_test.is_active,
        "verdict": load_test.verdict,
        "step": step,
        "run": run.pk if run else None,
        "stages_planned": len(stages),
        "stages_finished": sum(1 for s in stages if s.finished),
        "current": _stage_live(current) if current else None,
        "stages": [_stage_live(s) for s in stages if s.started_at],
        "error": load_test.error,
    }


def _stage_live(stage: LoadTestStage) -> dict[str, Any]:
    return {
        "position": stage.position,
        "finished": stage.finished,
        "offered_rps": stage.offered_rps,
        "achieved_rps": stage.achieved_rps,
        "p50_ms": stage.p50_ms,
        "p99_ms": stage.p99_ms,
        "errors": stage.error_count,
        "errors_by_kind": stage.errors,
        "cache_hit_ratio": stage.cache_hit_ratio,
        "model_loads": stage.model_loads,
        "generator_cpu_seconds": stage.generator_cpu_seconds,
        "on_schedule": stage.on_schedule,
        "slo_met": stage.slo_met,
    }
