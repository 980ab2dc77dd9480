"""What the charts draw: counts over the whole window, errors on their own axis, changes
as markers, sparse gauges with their markers; and the headline figures of a window."""

from datetime import UTC, datetime, timedelta

import pytest

from deployments.choices import DeploymentKind, DeploymentState
from deployments.models import Deployment, Endpoint
from deployments.tests.factories import packaged_version
from monitoring.choices import CHARTS
from monitoring.figures import chart_figure
from monitoring.selectors import ChangeEvent, change_events, chart_queries, headline
from monitoring.sources import MetricSeries

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
CHART = {chart.key: chart for chart in CHARTS}


@pytest.fixture(autouse=True)
def isolated_artifacts(settings, tmp_path):
    """Packages the factories write go to this test's own folder."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")


def series(chart_key: str, values_by_line: list[dict[int, float]]) -> list[MetricSeries]:
    queries = chart_queries(CHART[chart_key])
    return [
        MetricSeries(
            query,
            [START + timedelta(minutes=m) for m in sorted(values)],
            [values[m] for m in sorted(values)],
        )
        for query, values in zip(queries, values_by_line, strict=True)
    ]


def test_one_busy_minute_is_a_spike_on_a_zero_line_not_a_lone_dot():
    drawn = chart_figure(
        CHART["invocations"],
        series("invocations", [{59: 120.0}, {59: 3.0}, {}]),
        start=START,
        end=END,
    )
    requests, client_errors, server_errors = drawn["data"]
    assert len(requests["x"]) == 60 and requests["y"][-1] == 120.0 and sum(requests["y"]) == 120.0
    assert requests["mode"] == "lines"
    # Errors have their own right-hand axis: 3 beside 120 stay visible.
    assert client_errors["yaxis"] == "y2" and server_errors["yaxis"] == "y2"
    assert requests["yaxis"] == "y"
    assert drawn["layout"]["yaxis2"]["overlaying"] == "y"
    assert "(right axis)" in client_errors["name"]


def test_a_sparse_gauge_keeps_visible_markers_and_is_not_zero_filled():
    drawn = chart_figure(
        CHART["cache-hit"], series("cache-hit", [{58: 1.0, 59: 0.5}]), start=START, end=END
    )
    (hits,) = drawn["data"]
    assert hits["y"] == [100.0, 50.0]
    assert hits["mode"] == "lines+markers" and hits["marker"]["size"] >= 7


def test_changes_are_vertical_markers_with_their_label():
    event = ChangeEvent(
        at=START + timedelta(minutes=30), kind="rollback", label="rollback to v1", description="m"
    )
    layout = chart_figure(
        CHART["latency"], series("latency", [{}, {}, {}, {}]), start=START, end=END, events=[event]
    )["layout"]
    assert layout["shapes"][0]["x0"] == event.at.isoformat()
    assert layout["shapes"][0]["yref"] == "paper"
    assert layout["annotations"][0]["text"] == "rollback to v1"
    # Only the template's layout travels (no per-trace-type defaults for 3D, maps...).
    assert set(layout["template"]) == {"layout"}


def test_headline_sums_counts_and_keeps_the_worst_percentile():
    charts = [
        (CHART["invocations"], series("invocations", [{0: 100.0, 1: 300.0}, {1: 4.0}, {0: 4.0}])),
        (CHART["latency"], series("latency", [{0: 2000.0, 1: 3000.0}, {0: 9000.0}, {}, {}])),
        (CHART["cache-hit"], series("cache-hit", [{0: 0.5, 1: 1.0}])),
        (CHART["loaded-models"], series("loaded-models", [{0: 3.0, 1: 2.0}])),
    ]
    figures = headline(charts)
    assert figures.requests == 400.0
    assert figures.error_rate == pytest.approx(8 / 400)
    assert (figures.latency_p50_ms, figures.latency_p99_ms) == (3.0, 9.0)
    # Weighted by requests: 100 at 50 %, 300 at 100 %.
    assert figures.cache_hit_ratio == pytest.approx((50 + 300) / 400)
    assert figures.loaded_models == 2.0


def test_headline_without_data_has_no_figures():
    figures = headline([(CHART["invocations"], series("invocations", [{}, {}, {}]))])
    assert figures.requests is None and figures.error_rate is None


@pytest.mark.django_db
def test_change_events_name_deploys_rollbacks_and_promotions_in_the_window():
    endpoint = Endpoint.objects.get(name="local-staging")
    v1 = packaged_version()
    v2 = packaged_version(model=v1.model)
    now = datetime.now(UTC)
    common = {"endpoint": endpoint, "model": v1.model}
    Deployment.objects.create(
        **common,
        version=v2,
        previous_version=v1,
        state=DeploymentState.ROLLED_BACK,
        finished_at=now - timedelta(minutes=20),
    )
    Deployment.objects.create(
        **common,
        version=v1,
        previous_version=v2,
        kind=DeploymentKind.ROLLBACK,
        state=DeploymentState.SUCCEEDED,
        finished_at=now - timedelta(minutes=10),
    )
    Deployment.objects.create(  # failed: it changed nothing
        **common, version=v2, state=DeploymentState.FAILED, finished_at=now - timedelta(minutes=5)
    )
    events = change_events(endpoint=endpoint, start=now - timedelta(hours=1), end=now)
    assert [(e.kind, e.label) for e in events] == [
        ("deploy", "v2 deployed"),
        ("rollback", "rollback to v1"),
    ]
    assert events[1].description == f"{v1.model.name}: v2 → v1"
    other_model = change_events(
        endpoint=endpoint, start=now - timedelta(hours=1), end=now, target_model="x_1.tar.gz"
    )
    assert other_model == []
