"""The recommendation's rules (loadtests.recommend): which stage held, the target from
AWS's formula, instances for a peak, find-max's stop, the verdict."""

import pytest

from loadtests import recommend

from .factories import stage

SLO = {"percentile": "p99", "latency_ms": 100, "max_error_rate": 0.01}


def test_max_sustainable_rate_is_the_highest_stage_that_held():
    stages = [
        stage(0, 10, 10, 20),
        stage(1, 20, 19.9, 40),  # held: ≥ 99% of offered
        stage(2, 30, 28.0, 60),  # did not keep up (93%)
        stage(3, 40, 40, 150),  # broke the latency objective
    ]
    best = recommend.max_sustainable_rate(stages, SLO)
    assert best["position"] == 1


def test_errors_past_the_objective_break_a_stage():
    assert not recommend.slo_met(stage(0, 10, 10, 20, errors=2, completed=100), SLO)
    assert recommend.slo_met(stage(0, 10, 10, 20, errors=1, completed=100), SLO)


def test_target_is_rate_times_safety_times_60_per_instance():
    result = recommend.recommend(
        [stage(0, 10, 10, 20), stage(1, 20, 20, 40)],
        slo=SLO,
        safety_factor=0.5,
        instances=2,
        peak_rps=55,
    )
    assert result["max_sustainable_rps"] == 20
    assert result["max_sustainable_rps_per_instance"] == 10
    assert result["target_invocations_per_instance"] == 300  # 10 × 0.5 × 60
    # min = ceil(55 / 10) = 6 at full capacity; max = ceil(55 / (10 × 0.5)) = 11.
    assert (result["min_instances"], result["max_instances"]) == (6, 11)


def test_no_stage_held_no_recommendation():
    assert recommend.recommend([stage(0, 10, 10, 500)], slo=SLO, safety_factor=0.5) is None


@pytest.mark.parametrize(
    ("current", "previous", "reason"),
    [
        (stage(1, 20, 20, 500), stage(0, 10, 10, 20), "slo_broken"),
        (stage(1, 20, 18, 50), stage(0, 10, 10, 20), "throughput_short"),
        (stage(1, 20, 10.2, 50), stage(0, 10, 10, 20), "throughput_short"),
        (stage(1, 11, 10.5, 50), stage(0, 10, 10, 20), "throughput_flat"),
        (stage(1, 20, 20, 50), stage(0, 10, 10, 20), ""),
    ],
)
def test_find_max_stops_when_slo_breaks_or_throughput_stops_rising(current, previous, reason):
    assert recommend.find_max_should_stop(current, previous, SLO) == reason


def test_verdict_all_stages_for_stairs_any_for_find_max():
    stages = [stage(0, 10, 10, 20), stage(1, 20, 20, 500)]
    assert recommend.verdict(stages, slo=SLO, find_max=False) == "failed"
    assert recommend.verdict(stages, slo=SLO, find_max=True) == "passed"
    assert recommend.verdict([], slo=SLO, find_max=True) == ""


def test_instances_never_below_one_and_max_at_least_min():
    assert recommend.instances_for_peak(1, 100, 0.5) == (1, 1)
    assert recommend.instances_for_peak(100, 100, 1.0) == (1, 1)


def test_a_rate_that_held_at_the_highest_stage_offered_is_a_lower_bound():
    all_held = [stage(0, 10, 10, 20), stage(1, 20, 20, 40)]
    assert recommend.recommend(all_held, slo=SLO, safety_factor=0.5)["lower_bound"] is True
    last_broke = [*all_held, stage(2, 40, 40, 150)]
    assert recommend.recommend(last_broke, slo=SLO, safety_factor=0.5)["lower_bound"] is False
