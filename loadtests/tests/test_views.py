"""Load-test pages: the form (live models, limits, plan preview, errors that keep what was
typed), starting (pending, or awaiting an approver on production), the load test's page
while it runs (live panel polled every second) and when it is done (stages, charts,
recommendation), the buttons (each calls its service; refusals are 403 pages), and the
load-test sections of the endpoint, deployment and promotion pages with pinned query
counts."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.models import Endpoint, LiveVersionHistory, PromotionRequest
from deployments.tests.factories import UserFactory, user_in
from loadgen import histograms
from loadtests import recommend, services
from loadtests.choices import LoadTestState, Verdict
from loadtests.models import LoadTest, LoadTestStage
from loadtests.plans import stage_dict
from portal.choices import AuditAction, Source
from portal.models import AuditEvent

from .factories import config, live_version, make_live

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging(db) -> Endpoint:
    return Endpoint.objects.select_related("environment").get(name="local-staging")


@pytest.fixture
def production(db) -> Endpoint:
    return Endpoint.objects.select_related("environment").get(name="local-production")


@pytest.fixture
def version(staging, scientist):
    return live_version(staging, registered_by=scientist)


@pytest.fixture
def browser(client, scientist):
    client.force_login(scientist)
    return client


def form_data(**overrides) -> dict:
    """What the form posts for a small stairs test of the live model."""
    data = {
        "endpoint": "local-staging",
        "models": ["demo_ensemble_1.tar.gz"],
        "mix": "one",
        "top_n": "1",
        "top_share_percent": "90",
        "zipf_s": "1.1",
        "replay_minutes": "60",
        "payloads": "test_cases",
        "pattern": "stairs",
        "start_rps": "2",
        "step_rps": "2",
        "step_seconds": "1",
        "ceiling_rps": "6",
        "constant_rps": "10",
        "constant_seconds": "60",
        "slo_percentile": "p99",
        "slo_latency_ms": "250",
        "slo_max_error_percent": "1",
        "stop_error_percent": "50",
        "stop_max_seconds": "",
        "generators": "1",
        "safety_factor": "0.5",
        "peak_rps": "",
        "confirmed": "on",
    }
    data.update(overrides)
    return data


def start(actor, endpoint, **overrides) -> LoadTest:
    return services.loadtest_start(
        actor=actor,
        endpoint=endpoint,
        config=config(**overrides),
        confirmed=True,
        source=Source.BROWSER,
    )


def measured(load_test: LoadTest, figures: list[tuple[float, float, float]]) -> list:
    """Finished stages with real HDR histograms: (offered, achieved, latency ms) each, the
    latency recorded 200 times, plus a tail of 4x for the last 2 %."""
    slo = load_test.config["slo"]
    rows = []
    for position, (offered, achieved, latency) in enumerate(figures):
        h = histograms.new()
        for i in range(200):
            histograms.record_us(h, latency * 1000 * (4 if i >= 196 else 1))
        summary = histograms.summary(h)
        stage = LoadTestStage(
            load_test=load_test,
            position=position,
            offered_rps=offered,
            planned_seconds=1,
            started_at=timezone.now(),
            finished_at=timezone.now(),
            finished=True,
            duration_seconds=1,
            sent=200,
            completed=200,
            ok=200,
            achieved_rps=achieved,
            histogram=histograms.encode(h),
            cache_hit_ratio=0.98,
            model_loads=position,
            cpu_percent=40.0,
            memory_percent=30.0,
            generator_cpu_seconds=0.05,
            **{
                k: summary[k] for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
            },
        )
        stage.slo_met = recommend.slo_met(stage_dict(stage), slo)
        stage.save()
        rows.append(stage)
    return rows


def finish(load_test: LoadTest, figures, *, peak_rps=None) -> LoadTest:
    """The load test as the analyse step leaves it: stages, verdict, recommendation."""
    stages = measured(load_test, figures)
    slo = load_test.config["slo"]
    dicts = [stage_dict(s) for s in stages]
    load_test.result = {
        "recommendation": recommend.recommend(
            dicts, slo=slo, safety_factor=0.5, instances=1, peak_rps=peak_rps
        ),
        "slo": slo,
        "stopped_because": "completed",
        "generator_on_schedule": True,
    }
    load_test.verdict = recommend.verdict(dicts, slo=slo, find_max=False)
    load_test.state = LoadTestState.SUCCEEDED
    load_test.started_at = timezone.now() - timedelta(seconds=5)
    load_test.finished_at = timezone.now()
    load_test.save()
    return load_test


# The form --------------------------------------------------------------------------------


def test_form_shows_the_live_models_the_limits_and_the_plan(browser, staging, version):
    staging.environment.loadtest_max_rps = 120
    staging.environment.loadtest_max_seconds = 300
    staging.environment.save()
    page = browser.get("/loadtests/new/?endpoint=local-staging")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="demo_ensemble_1.tar.gz"' in html and "demo_ensemble v1" in html
    assert 'id="limit-rps">120 req/s' in html and 'id="limit-seconds">300 s' in html
    # Defaults: stairs 5, 10, ... 50 req/s, 10 s each: 10 stages, 100 s, 2750 requests.
    assert 'data-planned-seconds="100.0"' in html and 'data-planned-requests="2750"' in html
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
    assert "Generate up to 50 req/s against local-staging for up to 100 s" in text
    # Labels are tied to their inputs; help and errors describe them.
    assert '<label for="id_ceiling_rps">' in html
    assert 'aria-describedby="ceiling_rps-help ceiling_rps-errors"' in html
    assert "approver" not in page.context["form"].fields["models"].help_text


def test_form_from_a_deployment_preselects_its_version(browser, staging, scientist):
    first = live_version(staging, registered_by=scientist)
    other = live_version(staging, name="other_model", registered_by=scientist)
    deployment = first.deployments.get()
    page = browser.get(f"/loadtests/new/?endpoint=local-staging&deployment={deployment.pk}")
    form = page.context["form"]
    assert form.initial["models"] == [first.package_name] and form.initial["mix"] == "one"
    assert {value for value, _ in form.fields["models"].choices} == {
        first.package_name,
        other.package_name,
    }
    assert f"deployment #{deployment.pk}" in page.content.decode()


def test_form_on_production_says_an_approver_approves_first(client, production, approver):
    make_live(production, live_version(Endpoint.objects.get(name="local-staging")))
    client.force_login(approver)
    page = client.get("/loadtests/new/?endpoint=local-production")
    assert "an approver must approve this load test before it starts" in page.content.decode()
    assert "Ask an approver to start it" in page.content.decode()


def test_form_without_live_models_says_deploy_first(browser, staging):
    page = browser.get("/loadtests/new/?endpoint=local-staging")
    assert page.status_code == 200 and 'id="nothing-live"' in page.content.decode()
    assert browser.get("/loadtests/new/?endpoint=nope").status_code == 404


def test_bad_input_keeps_the_values_and_marks_the_fields(browser, staging, version):
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging",
        form_data(start_rps="abc", slo_latency_ms="", confirmed=""),
    )
    assert answer.status_code == 400
    html = answer.content.decode()
    assert 'id="error-summary"' in html and 'href="#id_start_rps"' in html
    assert 'value="abc"' in html  # kept as typed
    form = answer.context["form"]
    assert set(form.errors) == {"start_rps", "slo_latency_ms"}
    assert form.fields["start_rps"].widget.attrs["aria-invalid"] == "true"
    assert LoadTest.objects.count() == 0

    # Past the environment's rate limit: parse_config's error lands on the ceiling field.
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging", form_data(ceiling_rps="5000", step_rps="1000")
    )
    assert answer.status_code == 400
    assert "200" in " ".join(answer.context["form"].errors["ceiling_rps"])
    assert 'value="5000"' in answer.content.decode()
    # The confirmation is asked for, with everything else kept.
    answer = browser.post("/loadtests/new/?endpoint=local-staging", form_data(confirmed=""))
    assert answer.status_code == 400 and "confirmed" in answer.context["form"].errors
    assert 'value="250"' in answer.content.decode()
    assert LoadTest.objects.count() == 0


def test_uploaded_bodies_are_checked_and_named_on_the_upload_field(
    browser, staging, version, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = SimpleUploadedFile("bodies.jsonl", b'{"body": [1, 2]}\n', "application/x-ndjson")
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging", {**form_data(payloads="upload"), "upload": bad}
    )
    assert answer.status_code == 400 and "upload" in answer.context["form"].errors
    settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES = 64
    huge = SimpleUploadedFile("bodies.jsonl", b'{"body": {}}\n' * 10, "text/plain")
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging", {**form_data(payloads="upload"), "upload": huge}
    )
    assert "The file is 130 bytes; at most 64" in " ".join(answer.context["form"].errors["upload"])
    settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES = 1 << 20
    good = SimpleUploadedFile(
        "bodies.jsonl", b'{"body": {"inputs": []}}\n{"body": {"inputs": []}}\n', "text/plain"
    )
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging", {**form_data(payloads="upload"), "upload": good}
    )
    load_test = LoadTest.objects.get()
    assert answer.url == f"/loadtests/{load_test.pk}/"
    assert load_test.config["payloads"] == {"source": "upload", "lines": 2}


def test_start_creates_a_pending_load_test_with_its_run(browser, staging, version, scientist):
    deployment = version.deployments.get()
    answer = browser.post(
        f"/loadtests/new/?endpoint=local-staging&deployment={deployment.pk}",
        form_data(deployment=str(deployment.pk), peak_rps="40"),
    )
    load_test = LoadTest.objects.get()
    assert answer.status_code == 302 and answer.url == f"/loadtests/{load_test.pk}/"
    assert (load_test.state, load_test.source, load_test.created_by) == (
        LoadTestState.PENDING,
        Source.BROWSER,
        scientist,
    )
    assert (load_test.deployment, load_test.version) == (deployment, version)
    assert [s["rate"] for s in load_test.config["stages"]] == [2, 4, 6]
    assert load_test.config["mix"] == {"kind": "one"}
    assert load_test.config["peak_rps"] == 40
    assert load_test.run is not None
    assert AuditEvent.objects.filter(action=AuditAction.LOADTEST_START).count() == 1
    # One at a time per endpoint: the second is refused on the form, nothing created.
    again = browser.post("/loadtests/new/?endpoint=local-staging", form_data())
    assert again.status_code == 400 and "one at a time" in again.content.decode()
    assert LoadTest.objects.count() == 1


def test_the_chosen_mix_and_pattern_become_the_configuration(browser, staging, version, scientist):
    other = live_version(staging, name="other_model", registered_by=scientist)
    answer = browser.post(
        "/loadtests/new/?endpoint=local-staging",
        form_data(
            models=[version.package_name, other.package_name],
            mix="top_n",
            top_share_percent="80",
            pattern="find_max",
            growth="2",
            start_rps="2",
            ceiling_rps="8",
            stop_error_percent="20",
            stop_max_seconds="30",
        ),
    )
    assert answer.status_code == 302
    config = LoadTest.objects.get().config
    assert config["mix"] == {"kind": "top_n", "top_n": 1, "top_share": 0.8}
    assert config["pattern"]["kind"] == "find_max" and config["pattern"]["growth"] == 2
    assert "step_rps" not in config["pattern"]
    assert [s["rate"] for s in config["stages"]] == [2, 4, 8]
    assert config["stop"] == {"error_rate": 0.2, "max_seconds": 30}


def test_a_deployment_no_longer_live_preselects_nothing(browser, staging, scientist):
    first = live_version(staging, registered_by=scientist)
    deployment = first.deployments.get()
    LiveVersionHistory.objects.filter(endpoint=staging).update(until=timezone.now())
    live_version(staging, registered_by=scientist)  # v2 replaces v1
    page = browser.get(f"/loadtests/new/?endpoint=local-staging&deployment={deployment.pk}")
    assert page.context["deployment"] is None
    assert page.context["form"].initial["models"] == ["demo_ensemble_2.tar.gz"]
    assert "no longer live" in page.content.decode()


def test_start_on_production_awaits_an_approver(client, production):
    scientist = user_in("data scientist", username="pat")
    version = live_version(Endpoint.objects.get(name="local-staging"))
    make_live(production, version)
    client.force_login(scientist)
    answer = client.post(
        "/loadtests/new/?endpoint=local-production",
        form_data(endpoint="local-production"),
        follow=True,
    )
    load_test = LoadTest.objects.get()
    assert load_test.state == LoadTestState.AWAITING_APPROVAL and load_test.run is None
    html = answer.content.decode()
    assert "an approver must approve it first" in html
    assert 'id="approve"' not in html  # not for the requester


def test_start_refused_to_whoever_may_not_deploy(client, staging, version):
    client.force_login(UserFactory(username="visitor"))
    answer = client.post("/loadtests/new/?endpoint=local-staging", form_data())
    assert answer.status_code == 403
    assert LoadTest.objects.count() == 0


def test_preview_answers_the_plan_and_the_confirmation_figures(browser, staging, version):
    params = form_data(pattern="constant", constant_rps="8", constant_seconds="30")
    answer = browser.get("/loadtests/new/preview/", params)
    html = answer.content.decode()
    assert 'data-planned-seconds="30.0"' in html and 'data-planned-requests="240"' in html
    assert '<span id="confirm-rate" hx-swap-oob="true">8</span>' in html
    assert '<span id="confirm-seconds" hx-swap-oob="true">30</span>' in html
    too_long = browser.get("/loadtests/new/preview/", {**params, "constant_seconds": "5000"})
    assert 'id="preview-error"' in too_long.content.decode()
    assert "Duration (s)" in too_long.content.decode()


# The load test's page --------------------------------------------------------------------


def test_running_page_polls_a_live_panel(browser, staging, version, scientist):
    load_test = start(scientist, staging)
    LoadTest.objects.filter(pk=load_test.pk).update(
        state=LoadTestState.RUNNING, started_at=timezone.now()
    )
    for position, rate in enumerate((5.0, 10.0)):
        LoadTestStage.objects.create(
            load_test=load_test, position=position, offered_rps=rate, planned_seconds=1
        )
    LoadTestStage.objects.filter(load_test=load_test, position=0).update(
        started_at=timezone.now(),
        sent=40,
        completed=38,
        ok=36,
        errors={"503": 2},
        achieved_rps=4.9,
        p50_ms=12.5,
        p99_ms=48.0,
        duration_seconds=1.0,
        generator_cpu_seconds=0.02,
        schedule_lag_p99_ms=7.5,
        on_schedule=False,
    )
    page = browser.get(f"/loadtests/{load_test.pk}/")
    html = page.content.decode()
    assert f'hx-get="/loadtests/{load_test.pk}/live/" hx-trigger="every 1s"' in html
    live = browser.get(f"/loadtests/{load_test.pk}/live/").content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", live))
    assert "Stage 1 / 2" in text and "4.9 req/s" in text and "12.5 ms / 48 ms" in text
    assert "503: 2" in text and "2 % of a core" in text
    assert 'id="live-behind"' in live  # the generator, not the endpoint, was the limit
    assert 'id="cancel"' in live and "Stop the load test of local-staging now?" in live
    assert "(running)" in live and "(planned)" in live  # the stages so far, live
    assert "figure-curve" not in live  # charts come with the result


def test_finished_page_shows_stages_charts_and_recommendation(browser, staging, version, scientist):
    load_test = finish(
        start(scientist, staging), [(5, 5, 20), (10, 10, 60), (15, 12, 400)], peak_rps=50
    )
    page = browser.get(f"/loadtests/{load_test.pk}/")
    html = page.content.decode()
    assert "hx-trigger" not in html.split('id="loadtest-live"')[1].split(">")[0]  # done
    assert html.count("<tr data-stage=") == 3
    curve = json.loads(re.search(r'id="figure-curve"[^>]*>(.*?)</script>', html).group(1))
    names = [trace["name"] for trace in curve["data"]]
    assert names[:3] == ["p50", "p95", "p99"] and "max sustainable (10.0 req/s)" in names[3]
    assert curve["data"][2]["x"] == [5, 10, 12]
    assert curve["layout"]["shapes"][0]["y0"] == 500  # the SLO line
    percentiles = json.loads(
        re.search(r'id="figure-percentiles"[^>]*>(.*?)</script>', html).group(1)
    )
    assert [t["name"] for t in percentiles["data"]] == [
        "stage 2, max held (10 req/s)",
        "stage 3, last (15 req/s)",
    ]
    assert percentiles["layout"]["xaxis"]["type"] == "log"
    # Recommendation: 10 req/s per instance × 0.5 × 60 = 300; peak 50: min 5, max 10.
    assert re.search(r'id="rec-target">300<', html)
    assert "min 5, max 10 for a peak of 50 req/s" in html
    assert 'id="apply"' in html and "target 100 → 300" in html
    assert page.context["load_test"].verdict == Verdict.FAILED  # stage 3 broke the SLO
    assert 'id="rec-lower-bound"' not in html


def test_a_recommendation_from_the_highest_stage_offered_says_it_is_a_lower_bound(
    browser, staging, version, scientist
):
    load_test = finish(start(scientist, staging), [(5, 5, 20), (10, 10, 60)])
    html = browser.get(f"/loadtests/{load_test.pk}/").content.decode()
    assert 'id="rec-lower-bound"' in html and "the endpoint may hold more" in html


def test_recommendation_recomputes_for_a_typed_safety_factor_and_peak(
    browser, staging, version, scientist
):
    load_test = finish(start(scientist, staging), [(5, 5, 20), (10, 10, 60)])
    card = browser.get(
        f"/loadtests/{load_test.pk}/recommendation/", {"safety_factor": "0.25", "peak_rps": "30"}
    ).content.decode()
    # 10 req/s × 0.25 × 60 = 150 per minute; 30 req/s peak: min 3, max 12.
    assert re.search(r'id="rec-target">150<', card)
    assert "min 3, max 12 for a peak of 30 req/s" in card
    assert 'name="safety_factor" value="0.25"' in card  # Apply sends what is shown
    bad = browser.get(f"/loadtests/{load_test.pk}/recommendation/", {"safety_factor": "3"})
    assert 'id="rec-target">300<' in bad.content.decode() and "safety_factor-errors" in (
        bad.content.decode()
    )


def test_finished_without_a_holding_stage_says_so(browser, staging, version, scientist):
    load_test = finish(start(scientist, staging), [(5, 5, 900)])
    html = browser.get(f"/loadtests/{load_test.pk}/").content.decode()
    assert 'id="no-recommendation"' in html and 'id="apply"' not in html


def test_cancelled_test_shows_what_it_measured_without_a_recommendation(
    browser, staging, version, scientist
):
    load_test = start(scientist, staging)
    measured(load_test, [(5, 5, 20)])
    LoadTestStage.objects.create(  # begun when it was cancelled: partial figures
        load_test=load_test,
        position=1,
        offered_rps=10,
        planned_seconds=1,
        started_at=timezone.now(),
        achieved_rps=3.0,
        p50_ms=30.0,
        p95_ms=30.0,
        p99_ms=30.0,
    )
    LoadTest.objects.filter(pk=load_test.pk).update(
        state=LoadTestState.CANCELLED, finished_at=timezone.now()
    )
    html = browser.get(f"/loadtests/{load_test.pk}/").content.decode()
    assert html.count("<tr data-stage=") == 2 and "(cut short)" in html
    curve = json.loads(re.search(r'id="figure-curve"[^>]*>(.*?)</script>', html).group(1))
    assert curve["data"][0]["x"] == [5]  # the cut-short stage is not on the curve
    assert 'id="no-analysis"' in html and "cancelled before its analysis" in html
    assert 'id="apply"' not in html and 'id="cancel"' not in html


# Buttons ---------------------------------------------------------------------------------


def test_cancel_calls_the_service_and_refuses_others(client, staging, version, scientist):
    load_test = start(scientist, staging)
    client.force_login(user_in("data scientist", username="other"))
    assert client.post(f"/loadtests/{load_test.pk}/cancel/").status_code == 403
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.PENDING
    client.force_login(scientist)
    answer = client.post(f"/loadtests/{load_test.pk}/cancel/", {"reason": "wrong rate"})
    assert answer.url == f"/loadtests/{load_test.pk}/"
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.CANCELLED
    event = AuditEvent.objects.get(action=AuditAction.LOADTEST_CANCELLED)
    assert event.reason == "wrong rate" and event.source == Source.BROWSER
    assert client.get(f"/loadtests/{load_test.pk}/cancel/").status_code == 405


def test_approve_and_reject_call_the_services_for_approvers_only(
    client, production, approver, second_approver
):
    requester = user_in("data scientist", username="pat")
    requester.groups.add(approver.groups.get())  # an approver too: still not for their own
    make_live(production, live_version(Endpoint.objects.get(name="local-staging")))
    load_test = start(requester, production)
    client.force_login(requester)
    page = client.get(f"/loadtests/{load_test.pk}/").content.decode()
    assert 'id="approve"' not in page and "another approver decides" in page
    assert client.post(f"/loadtests/{load_test.pk}/approve/").status_code == 403

    client.force_login(user_in("data scientist", username="nobody"))
    assert client.post(f"/loadtests/{load_test.pk}/reject/", {"reason": "no"}).status_code == 403

    client.force_login(approver)
    page = client.get(f"/loadtests/{load_test.pk}/").content.decode()
    assert 'id="approve"' in page and 'hx-trigger="every 10s"' in page
    assert 'hx-preserve="true"' in page  # polling keeps a reason being typed
    client.post(f"/loadtests/{load_test.pk}/approve/")
    load_test.refresh_from_db()
    assert (load_test.state, load_test.approved_by) == (LoadTestState.PENDING, approver)
    assert load_test.run is not None

    services.loadtest_cancel(actor=approver, load_test=load_test, source=Source.BROWSER)
    other = start(requester, production, pattern={"kind": "constant", "rps": 2, "seconds": 1})
    client.force_login(second_approver)
    # Rejecting needs a reason: the service's error is shown, nothing changes.
    client.post(f"/loadtests/{other.pk}/reject/", {"reason": ""})
    other.refresh_from_db()
    assert other.state == LoadTestState.AWAITING_APPROVAL
    client.post(f"/loadtests/{other.pk}/reject/", {"reason": "not during the sale"})
    other.refresh_from_db()
    assert (other.state, other.error) == (LoadTestState.REJECTED, "not during the sale")


def test_apply_changes_the_endpoints_autoscaling(client, staging, version, scientist):
    load_test = finish(start(scientist, staging), [(5, 5, 20), (10, 10, 60)])
    client.force_login(UserFactory(username="visitor"))
    assert (
        client.post(f"/loadtests/{load_test.pk}/apply/", {"safety_factor": "0.5"}).status_code
        == 403
    )
    client.force_login(scientist)
    answer = client.post(
        f"/loadtests/{load_test.pk}/apply/",
        {"safety_factor": "0.25", "peak_rps": "30"},
        follow=True,
    )
    staging.refresh_from_db()
    assert (
        staging.target_invocations_per_instance,
        staging.autoscaling_min_instances,
        staging.autoscaling_max_instances,
    ) == (150, 3, 12)
    load_test.refresh_from_db()
    assert load_test.applied_by == scientist and load_test.applied_at is not None
    html = answer.content.decode()
    assert 'id="applied"' in html and "by dana" in html
    event = AuditEvent.objects.get(action=AuditAction.LOADTEST_APPLY)
    assert event.data["before"]["target"] == 100 and event.data["after"]["target"] == 150
    # Bad input is told, not applied.
    client.post(f"/loadtests/{load_test.pk}/apply/", {"safety_factor": "7"})
    staging.refresh_from_db()
    assert staging.target_invocations_per_instance == 150


# Sections of other pages -----------------------------------------------------------------


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_endpoint_and_deployment_pages_list_load_tests_in_fixed_queries(
    browser, staging, version, scientist
):
    deployment = version.deployments.get()
    first = finish(start(scientist, staging), [(5, 5, 20)])
    endpoint_url, deployment_url = "/endpoints/local-staging/", f"/deployments/{deployment.pk}/"
    _queries(browser, endpoint_url)  # content types cached, as in a running portal
    few = (_queries(browser, endpoint_url), _queries(browser, deployment_url))
    for _ in range(4):
        finish(start(scientist, staging), [(5, 5, 20), (10, 10, 30)])
    many = (_queries(browser, endpoint_url), _queries(browser, deployment_url))
    assert few == many

    page = browser.get(endpoint_url).content.decode()
    assert (
        page.count("data-load-test=") == 5
        and 'href="/loadtests/new/?endpoint=local-staging"' in page
    )
    rows = re.findall(r'data-load-test="(\d+)"', page)
    assert rows[-1] == str(first.pk)  # latest first
    page = browser.get(deployment_url).content.decode()
    assert f"deployment={deployment.pk}" in page and page.count("data-load-test=") == 5


def test_promotion_page_shows_the_load_test_evidence(client, staging, version, scientist):
    from deployments import services as deployment_services

    load_test = finish(start(scientist, staging), [(5, 5, 20), (10, 10, 60)])
    promotion = deployment_services.promotion_request_create(
        actor=scientist,
        version=version,
        target_endpoint=Endpoint.objects.get(name="local-production"),
        comment="",
        source=Source.BROWSER,
    )
    client.force_login(scientist)
    html = client.get(promotion.get_absolute_url()).content.decode()
    assert f'href="/loadtests/{load_test.pk}/"' in html
    assert 'id="evidence-max-rps">10 req/s' in html
    assert 'id="load-test-required"' not in html

    # An environment that requires a passing test says so when the evidence has none.
    production = Endpoint.objects.get(name="local-production").environment
    production.requires_load_test = True
    production.save()
    PromotionRequest.objects.filter(pk=promotion.pk).update(evidence={"load_tests": []})
    html = client.get(promotion.get_absolute_url()).content.decode()
    assert 'id="load-test-required"' in html and "none was run" in html


# Figures ---------------------------------------------------------------------------------


def test_latency_axis_turns_logarithmic_when_the_slo_dwarfs_the_measurements():
    from loadtests.figures import latency_axis

    assert latency_axis([2.0, 5.0], 10.0) == {
        "title": {"text": "latency (ms)"},
        "range": [0, 11.5],
    }
    wide = latency_axis([2.0, 5.0], 2000.0)
    assert wide["type"] == "log" and wide["range"][1] > 3  # 2 s is on the axis


def test_percentile_plot_spreads_the_tail_like_hdrhistogram():
    from loadtests.figures import percentile_figure, percentile_spread

    assert [percentile_spread(p) for p in (0, 90, 99, 99.9)] == pytest.approx([1, 10, 100, 1000])
    assert percentile_spread(100) == 1e6
    h = histograms.new()
    for value_ms in [1] * 990 + [50] * 10:
        histograms.record_us(h, value_ms * 1000)
    figure = percentile_figure([("stage 1", histograms.percentile_curve(h))])
    trace = figure["data"][0]
    assert trace["x"][0] == 1 and trace["y"][0] == pytest.approx(1, rel=0.01)  # from 0 %
    assert max(trace["y"]) == pytest.approx(50, rel=0.01)
    # 100 % is drawn one decade past the last finite point, not at 99.9999 %.
    assert max(trace["x"]) < 1e6
    assert "99.9%" in figure["layout"]["xaxis"]["ticktext"]
