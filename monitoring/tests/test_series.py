from datetime import UTC, datetime, timedelta

import pytest

from monitoring.choices import CHARTS, METRICS, PULLED_STATS
from monitoring.sources import MetricQuery, align, combine, merge, parse_time, query_id, rebucket

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def test_align_floors_to_the_period_on_the_epoch():
    assert align(T0 + timedelta(minutes=7, seconds=42), 300) == minute(5)
    assert align(T0 + timedelta(seconds=59), 60) == T0


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("Sum", 10.0),
        ("SampleCount", 10.0),
        ("Minimum", 1.0),
        ("Maximum", 4.0),
        ("Average", 2.5),
        ("p99", 4.0),
        ("p50", 4.0),
    ],
)
def test_combine_follows_each_statistic(stat, expected):
    assert combine(stat, [1.0, 2.0, 3.0, 4.0]) == expected


def test_rebucket_groups_minutes_into_periods():
    points = [(minute(n), float(n)) for n in range(10)]
    assert rebucket(points, stat="Sum", period=300) == [(minute(0), 10.0), (minute(5), 35.0)]
    assert rebucket(points, stat="p99", period=300) == [(minute(0), 4.0), (minute(5), 9.0)]


def test_rebucket_keeps_minutes_at_a_one_minute_period_and_sorts():
    points = [(minute(2), 2.0), (minute(0), 0.0)]
    assert rebucket(points, stat="Average", period=60) == [(minute(0), 0.0), (minute(2), 2.0)]


def test_merge_prefers_live_data_and_fills_gaps_from_history():
    live = [(minute(2), 20.0), (minute(3), 30.0)]
    stored = [(minute(0), 0.0), (minute(1), 1.0), (minute(2), 2.0)]
    assert merge(live, stored) == [
        (minute(0), 0.0),
        (minute(1), 1.0),
        (minute(2), 20.0),
        (minute(3), 30.0),
    ]


def test_query_ids_are_valid_getmetricdata_ids():
    ident = query_id(3, MetricQuery("ModelLatency", "p99", "demo_ensemble_1.tar.gz"))
    assert ident == "q3_modellatency_p99"
    assert ident[0].islower() and ident.replace("_", "").isalnum()


def test_parse_time_accepts_iso_z_epoch_and_naive():
    assert parse_time("2026-11-23T12:00:00Z") == T0
    assert parse_time(T0.timestamp()) == T0
    assert parse_time("2026-11-23T12:00:00") == T0


def test_every_chart_line_names_a_known_metric_and_is_pulled():
    for chart in CHARTS:
        for line in chart.lines:
            assert line.metric in METRICS
            assert line.stat in PULLED_STATS[line.metric]
    # Endpoint-wide charts are never offered per model.
    for chart in CHARTS:
        if any(not METRICS[line.metric].per_model for line in chart.lines):
            assert not chart.per_model
