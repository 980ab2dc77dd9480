"""From measured stages to an autoscaling recommendation: pure functions, no database.

AWS's guidance for SageMaker target tracking on `SageMakerVariantInvocationsPerInstance`
(https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-loadtest.html):
target = max sustainable requests per second of ONE instance × safety factor × 60
(the metric counts invocations per instance per minute; 0.5 is the suggested start).

Rules, written down once:
- A stage *held* when the endpoint answered what was offered (achieved ≥ HELD_RATIO of
  offered; 0.99: a one-percent shortfall is noise of a short stage's edges, more is a
  queue building up) and met the SLO (its latency percentile ≤ the objective and its error
  ratio ≤ the allowed one).
- The max sustainable rate is the highest offered rate among stages that held, measured
  as their achieved rate, divided by the instances that served during the test
  (SageMaker: the endpoint's initial instance count; local: 1).
- Instances for a peak rate: min = ceil(peak / max_rate_per_instance) (every instance at
  full capacity: the least that can hold the peak at all), max = ceil(peak /
  (max_rate_per_instance × safety)) (instances at the target's load, where the policy
  keeps them), both at least 1 and max ≥ min.
- The recommendation is a lower bound when the stage it rests on is the highest rate the test
  offered: nothing above it was measured, so the endpoint may hold more (a find-max test that
  reached its ceiling with every stage held, or stairs that all held).
- find-max keeps raising the rate while a stage holds and throughput still rises:
  it stops when a stage breaks the SLO, or achieved < THROUGHPUT_RATIO (95%) of offered,
  or achieved is not above the previous stage's by RISE_RATIO (5%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

HELD_RATIO = 0.99
THROUGHPUT_RATIO = 0.95
RISE_RATIO = 1.05
SECONDS_PER_MINUTE = 60


def stage_latency(stage: Mapping[str, Any], percentile: str) -> float | None:
    """The stage's latency at the SLO's percentile ("p95" or "p99"), in ms."""
    return stage.get(f"{percentile}_ms")


def stage_error_rate(stage: Mapping[str, Any]) -> float:
    completed = stage.get("completed") or 0
    errors = sum(int(n) for n in (stage.get("errors") or {}).values())
    return errors / completed if completed else 0.0


def slo_met(stage: Mapping[str, Any], slo: Mapping[str, Any]) -> bool:
    """Whether one stage met the SLO: its percentile latency and its error ratio. A stage
    with no successful answer never meets it."""
    latency = stage_latency(stage, slo.get("percentile", "p99"))
    if latency is None or not stage.get("ok"):
        return False
    return latency <= float(slo["latency_ms"]) and stage_error_rate(stage) <= float(
        slo.get("max_error_rate", 0.01)
    )


def held(stage: Mapping[str, Any], slo: Mapping[str, Any]) -> bool:
    """The stage met the SLO and the endpoint kept up with the offered rate."""
    offered = float(stage.get("offered_rps") or 0)
    achieved = float(stage.get("achieved_rps") or 0)
    return offered > 0 and achieved >= HELD_RATIO * offered and slo_met(stage, slo)


def find_max_should_stop(
    stage: Mapping[str, Any], previous: Mapping[str, Any] | None, slo: Mapping[str, Any]
) -> str:
    """Why find-max stops after `stage` ("" to go on): SLO broken, throughput short of the
    offered rate, or throughput no longer rising."""
    if not slo_met(stage, slo):
        return "slo_broken"
    offered = float(stage.get("offered_rps") or 0)
    achieved = float(stage.get("achieved_rps") or 0)
    if achieved < THROUGHPUT_RATIO * offered:
        return "throughput_short"
    if previous is not None and achieved <= RISE_RATIO * float(previous.get("achieved_rps") or 0):
        return "throughput_flat"
    return ""


def max_sustainable_rate(
    stages: Sequence[Mapping[str, Any]], slo: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The stage with the highest offered rate that held, or None."""
    holding = [stage for stage in stages if held(stage, slo)]
    return max(holding, key=lambda s: float(s["offered_rps"]), default=None)


def target_invocations_per_instance(rate_per_instance: float, safety_factor: float) -> int:
    """AWS's target: requests/s of one instance × safety factor × 60 (per minute), ≥ 1."""
    return max(1, int(math.floor(rate_per_instance * safety_factor * SECONDS_PER_MINUTE)))


def instances_for_peak(
    peak_rps: float, rate_per_instance: float, safety_factor: float
) -> tuple[int, int]:
    """(min, max) instances for a peak arrival rate (see the module's rules)."""
    if rate_per_instance <= 0:
        raise ValueError("the rate per instance must be positive")
    minimum = max(1, math.ceil(peak_rps / rate_per_instance - 1e-9))
    maximum = max(minimum, math.ceil(peak_rps / (rate_per_instance * safety_factor) - 1e-9))
    return minimum, maximum


def recommend(
    stages: Sequence[Mapping[str, Any]],
    *,
    slo: Mapping[str, Any],
    safety_factor: float,
    instances: int = 1,
    peak_rps: float | None = None,
) -> dict[str, Any] | None:
    """The recommendation from a test's stages, or None when no stage held."""
    best = max_sustainable_rate(stages, slo)
    if best is None:
        return None
    instances = max(1, int(instances))
    rate = float(best["achieved_rps"]) / instances
    result: dict[str, Any] = {
        "max_sustainable_rps": round(float(best["achieved_rps"]), 3),
        "max_sustainable_rps_per_instance": round(rate, 3),
        "at_offered_rps": float(best["offered_rps"]),
        "stage": best.get("position"),
        "latency_ms_at_max": stage_latency(best, slo.get("percentile", "p99")),
        "p99_ms_at_max": best.get("p99_ms"),
        "instances_during_test": instances,
        "safety_factor": safety_factor,
        "target_invocations_per_instance": target_invocations_per_instance(rate, safety_factor),
        "formula": "target = max sustainable req/s per instance × safety factor × 60",
        "peak_rps": peak_rps,
        "lower_bound": float(best["offered_rps"])
        >= max(float(s.get("offered_rps") or 0) for s in stages),
        "min_instances": None,
        "max_instances": None,
    }
    if peak_rps:
        result["min_instances"], result["max_instances"] = instances_for_peak(
            peak_rps, rate, safety_factor
        )
    return result


def verdict(stages: Sequence[Mapping[str, Any]], *, slo: Mapping[str, Any], find_max: bool) -> str:
    """ "passed" when every finished stage held the SLO (stairs, constant) or at least one
    did (find-max, which runs until one breaks); "failed" otherwise; "" with no stage."""
    finished = [s for s in stages if s.get("completed")]
    if not finished:
        return ""
    oks = [slo_met(s, slo) for s in finished]
    return "passed" if (any(oks) if find_max else all(oks)) else "failed"
