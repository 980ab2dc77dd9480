"""Load tests end to end: a REAL Celery worker on the real broker starts a REAL generator
process (`python -m loadgen`) against the REAL data plane gateway and Triton, serving
Python models that take a known time. Through the API as CI would: start, follow, read the
stages and the recommendation, cancel; and what happens when the worker is killed. The
SageMaker path runs against moto's server (the generator is another process); a fan-out
runs over two workers."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from waiting import wait_for

from deployments.models import Endpoint
from deployments.tests.factories import (
    RegisteredModelFactory,
    packaged_version,
    sagemaker_endpoint,
    seed_reference_data,
    user_in,
)
from loadgen import histograms
from loadtests.models import LoadTest, LoadTestPartStage, LoadTestStage
from loadtests.tests.factories import make_live
from loadtests.tests.serving import publish_timed, timed_case
from portal.dataplane import DataPlaneClient
from portal.services import token_create
from runs.models import Run
from runs.services import runs_sweep

pytestmark = [pytest.mark.worker, pytest.mark.triton]

ENDPOINT = "local-staging"


@pytest.fixture
def lt_worker(celery_worker_factory, gateway, settings):
    """Reference data back (transactional tests flush it), portal and worker pointed at
    the gateway, the staging endpoint served by it."""
    seed_reference_data()
    settings.BERTH_DATAPLANE_URL = gateway.url
    DataPlaneClient(gateway.url).ensure_endpoint(
        ENDPOINT, store=str(gateway.store(ENDPOINT)), memory_budget_bytes=None
    )

    def start(**env: str):
        return celery_worker_factory(BERTH_DATAPLANE_URL=gateway.url, **env)

    return start


def serve(gateway, name: str, *, endpoint: Endpoint | None = None, **timing):
    """A timed model published into the gateway's store and live on the endpoint."""
    endpoint = endpoint or Endpoint.objects.get(name=ENDPOINT)
    if endpoint.backend == "local":
        publish_timed(gateway.store(ENDPOINT), name, **timing)
    version = packaged_version(model=RegisteredModelFactory(name=name), test_cases=[timed_case()])
    make_live(endpoint, version)
    return version


def api_for(account) -> APIClient:
    _, raw = token_create(actor=account, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def start_test(api, config: dict, endpoint: str = ENDPOINT) -> dict:
    answer = api.post(
        "/api/v1/loadtests/",
        {"endpoint": endpoint, "config": config, "confirmed": True},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    return answer.json()


def finished(api, pk: int, worker, timeout: float = 120) -> dict:
    def done():
        body = api.get(f"/api/v1/loadtests/{pk}/").json()
        return body if body["state"] in {"succeeded", "failed", "cancelled"} else None

    return wait_for(done, timeout=timeout, interval=0.3, worker=worker, what=f"load test {pk}")


def generator_of(worker) -> psutil.Process:
    """The generator process the worker started."""

    def find():
        for child in psutil.Process(worker.pid).children(recursive=True):
            try:
                if "loadgen" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_for(find, timeout=60, worker=worker, what="the generator process")


def slo(latency_ms: float = 500) -> dict:
    return {"percentile": "p99", "latency_ms": latency_ms, "max_error_rate": 0.01}


def test_stairs_measure_the_models_known_latency_and_recommend(lt_worker, gateway):
    worker = lt_worker()
    scientist = user_in("data scientist", username="ci-bot")
    api = api_for(scientist)
    version = serve(gateway, "sleepy", delay_s=0.02)
    body = start_test(
        api,
        {
            "pattern": {
                "kind": "stairs",
                "start_rps": 10,
                "step_rps": 10,
                "step_seconds": 2,
                "ceiling_rps": 20,
            },
            # Generous: this test is about the measurement, not the objective.
            "slo": slo(2000),
            "peak_rps": 100,
        },
    )
    assert body["state"] == "pending" and body["links"]["log"].startswith("/api/v1/runs/")
    result = finished(api, body["id"], worker)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    figures = [
        (
            s["offered_rps"],
            s["achieved_rps"],
            s["p50_ms"],
            s["p99_ms"],
            s["errors"],
            s["on_schedule"],
        )
        for s in result["stages"]
    ]
    print("stairs (offered, achieved, p50, p99, errors, on schedule):", figures)
    assert result["verdict"] == "passed" and result["model"] == "sleepy", (figures, result)
    stages = result["stages"]
    assert [s["offered_rps"] for s in stages] == [10, 20]
    for stage in stages:
        # Achieved within 2% of offered: counted, every request sent in the stage answered.
        assert stage["finished"] and stage["errors"] == {}
        assert abs(stage["achieved_rps"] - stage["offered_rps"]) <= 0.02 * stage["offered_rps"]
        assert stage["sent"] == stage["offered_rps"] * 2
        # The model sleeps 20 ms per request: the latency shows it, not much more.
        assert 20 <= stage["p50_ms"] < 20 + 150, stage
        # The warm-up loaded the model: every request of the stages was a cache hit.
        assert stage["cache_hit_ratio"] == 1.0 and stage["model_loads"] == 0
        assert stage["cpu_percent"] is not None and stage["generator_cpu_seconds"] > 0
    recommendation = result["result"]["recommendation"]
    assert recommendation["max_sustainable_rps"] == pytest.approx(20, rel=0.02)
    assert recommendation["target_invocations_per_instance"] == int(
        recommendation["max_sustainable_rps_per_instance"] * 0.5 * 60
    )
    assert recommendation["min_instances"] == 5 and recommendation["max_instances"] == 10
    log = api.get(result["links"]["log"]).json()
    assert any("Stage 2" in line["message"] for line in log["lines"])
    listed = api.get(f"/api/v1/loadtests/?model=sleepy&version={version.version}").json()
    assert [item["id"] for item in listed["results"]] == [body["id"]]

    applied = api.post(
        f"/api/v1/loadtests/{body['id']}/apply/", {"safety_factor": 0.5}, format="json"
    )
    assert applied.status_code == 200, applied.json()
    endpoint = Endpoint.objects.get(name=ENDPOINT)
    assert (
        endpoint.target_invocations_per_instance
        == recommendation["target_invocations_per_instance"]
    )


def test_a_stall_shows_in_the_tail_of_the_requests_scheduled_during_it(lt_worker, gateway):
    """Open loop: the model stalls 1 s once; every request scheduled meanwhile waits, and
    its latency counts from when it was due, so the tail shows the stall (a closed loop
    would show one slow request)."""
    worker = lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    # Request 1 is the warm-up; the 20th comes about 1 s into the stage.
    serve(gateway, "stally", delay_s=0.02, stall_at=20, stall_s=1.0)
    body = start_test(
        api, {"pattern": {"kind": "constant", "rps": 20, "seconds": 3}, "slo": slo(2000)}
    )
    result = finished(api, body["id"], worker)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    (stage,) = result["stages"]
    assert stage["sent"] == 60 and stage["ok"] == 60
    assert stage["p99_ms"] >= 900, stage
    hist = histograms.decode(LoadTestStage.objects.get(load_test_id=body["id"]).histogram)
    # About a third of the requests queued behind the stall: the 80th percentile is slow.
    assert hist.get_value_at_percentile(80) >= 300_000, histograms.summary(hist)
    assert stage["p50_ms"] < 500


def test_find_max_stops_when_the_slo_breaks(lt_worker, gateway):
    worker = lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    # 40 ms per request, one at a time: about 25 req/s at most.
    serve(gateway, "capped", delay_s=0.04)
    body = start_test(
        api,
        {
            "pattern": {
                "kind": "find_max",
                "start_rps": 5,
                "growth": 2,
                "step_seconds": 2,
                "ceiling_rps": 80,
            },
            # Held stages answer in ~50 ms, the overloaded one in over a second: a wide
            # margin either side for a busy host.
            "slo": slo(600),
        },
    )
    result = finished(api, body["id"], worker, timeout=180)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    measured = [s for s in result["stages"] if s["finished"]]
    # 5, 10, 20 held; 40 broke the objective; 80 never ran.
    summary = [(s["offered_rps"], s["achieved_rps"], s["p99_ms"], s["slo_met"]) for s in measured]
    print("find-max stages (offered, achieved, p99 ms, SLO met):", summary)
    assert [s["offered_rps"] for s in measured] == [5, 10, 20, 40], (
        summary,
        result["result"],
        api.get(result["links"]["log"]).json()["lines"],
    )
    assert [s["slo_met"] for s in measured] == [True, True, True, False]
    assert result["result"]["stopped_because"] == "slo_broken"
    assert result["verdict"] == "passed"
    assert result["result"]["recommendation"]["at_offered_rps"] == 20


def test_errors_past_the_threshold_stop_the_load(lt_worker, gateway):
    """The model starts failing after the warm-up and 9 requests: the generator stops
    itself once the errors pass stop.error_rate; the cut-short stage shows them."""
    worker = lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    serve(gateway, "failing", delay_s=0.005, fail_after=10)
    body = start_test(
        api,
        {
            "pattern": {"kind": "constant", "rps": 20, "seconds": 20},
            "slo": slo(),
            "stop": {"error_rate": 0.5},
        },
    )
    result = finished(api, body["id"], worker)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    assert result["result"]["stopped_because"] == "error_rate"
    assert result["verdict"] == "failed" and result["result"]["recommendation"] is None
    (stage,) = result["stages"]
    assert stage["finished"] and stage["sent"] < 20 * 20 / 2, stage
    assert sum(stage["errors"].values()) >= stage["sent"] - 10 - 2, stage


def test_cancel_stops_the_generator_within_a_second(lt_worker, gateway):
    worker = lt_worker()
    scientist = user_in("data scientist", username="ci-bot")
    api = api_for(scientist)
    serve(gateway, "steady", delay_s=0.005)
    body = start_test(
        api, {"pattern": {"kind": "constant", "rps": 10, "seconds": 60}, "slo": slo()}
    )
    generator = generator_of(worker)
    wait_for(
        lambda: LoadTestStage.objects.filter(load_test_id=body["id"], sent__gt=0).exists(),
        timeout=60,
        worker=worker,
        what="the first tick",
    )
    asked = time.monotonic()
    answer = api.post(
        f"/api/v1/loadtests/{body['id']}/cancel/", {"reason": "enough"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    generator.wait(timeout=10)
    took = time.monotonic() - asked
    print(f"cancel: generator exited {took * 1000:.0f} ms after the request")
    assert took < 1.0
    result = finished(api, body["id"], worker, timeout=30)
    assert result["state"] == "cancelled"
    assert Run.objects.get(pk=result["run"]).state == "cancelled"


def test_a_killed_worker_leaves_a_failed_run_with_its_stages_and_no_generator(
    lt_worker, gateway, settings
):
    worker = lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    serve(gateway, "killed", delay_s=0.005)
    body = start_test(
        api,
        {
            "pattern": {
                "kind": "stairs",
                "start_rps": 5,
                "step_rps": 5,
                "step_seconds": 2,
                "ceiling_rps": 30,
            },
            "slo": slo(),
        },
    )
    generator = generator_of(worker)
    wait_for(
        lambda: LoadTestStage.objects.filter(load_test_id=body["id"], finished=True).exists(),
        timeout=60,
        worker=worker,
        what="a finished stage",
    )
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its generator must follow
    generator.wait(timeout=10)
    assert not generator.is_running()
    # The sweep finds the run without heartbeat and fails it: a load test never resumes.
    later = timezone.now() + timedelta(seconds=settings.BERTH_LOADTEST_STALE_SECONDS + 1)
    outcome = runs_sweep(now=later)
    assert body["run"] in outcome["failed"]
    load_test = LoadTest.objects.get(pk=body["id"])
    assert load_test.state == "failed" and "stages measured so far are kept" in load_test.error
    kept = LoadTestStage.objects.filter(load_test=load_test, finished=True)
    assert kept.exists() and all(stage.sent > 0 for stage in kept)


def test_sagemaker_endpoint_against_moto_server(lt_worker, settings, monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        credentials = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for key, value in credentials.items():
            monkeypatch.setenv(key, value)
        settings.AWS_ENDPOINT_URL = url
        worker = lt_worker(AWS_ENDPOINT_URL=url, **credentials)
        endpoint = sagemaker_endpoint("sm-staging", "staging")
        api = api_for(user_in("data scientist", username="ci-bot"))
        serve(None, "remote", endpoint=endpoint)
        body = start_test(
            api,
            {"pattern": {"kind": "constant", "rps": 10, "seconds": 2}, "slo": slo()},
            endpoint="sm-staging",
        )
        result = finished(api, body["id"], worker)
        assert result["state"] == "succeeded", (result, worker.log_tail())
        (stage,) = result["stages"]
        assert stage["sent"] == 20 and stage["ok"] == 20, stage
        assert "CloudWatch" in result["result"]["metrics_note"]
    finally:
        server.stop()


def test_fan_out_over_two_workers_merges_their_histograms(lt_worker, gateway):
    first = lt_worker()
    lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    serve(gateway, "shared", delay_s=0.005)
    body = start_test(
        api,
        {"pattern": {"kind": "constant", "rps": 20, "seconds": 2}, "slo": slo(), "generators": 2},
    )
    result = finished(api, body["id"], first, timeout=120)
    assert result["state"] == "succeeded", (result, first.log_tail())
    (stage,) = result["stages"]
    part = LoadTestPartStage.objects.get(load_test_id=body["id"], part=1, position=0)
    # Each generator offered 10 req/s; the stage holds both.
    assert part.sent == 20 and stage["sent"] == 40 and stage["ok"] == 40, stage
    merged = histograms.decode(LoadTestStage.objects.get(load_test_id=body["id"]).histogram)
    assert merged.get_total_count() == 40


def test_a_fan_out_part_no_worker_takes_is_left_out(lt_worker, gateway):
    """One worker for two generators (the coordinator holds it): the stage holds what the
    coordinator's generator measured, the log says a part did not report, and the part,
    taken after the test, generates nothing."""
    worker = lt_worker()
    api = api_for(user_in("data scientist", username="ci-bot"))
    serve(gateway, "alone", delay_s=0.005)
    body = start_test(
        api,
        {"pattern": {"kind": "constant", "rps": 20, "seconds": 2}, "slo": slo(), "generators": 2},
    )
    result = finished(api, body["id"], worker, timeout=120)
    assert result["state"] == "succeeded", (result, worker.log_tail())
    (stage,) = result["stages"]
    assert stage["sent"] == 20, stage
    lines = api.get(result["links"]["log"]).json()["lines"]
    assert any("did not report" in line["message"] for line in lines)
    wait_for(
        lambda: LoadTestPartStage.objects.filter(
            load_test_id=body["id"], part=1, position=-1, done=True
        ).exists(),
        timeout=30,
        worker=worker,
        what="the late part to give up",
    )
    assert not LoadTestPartStage.objects.filter(load_test_id=body["id"], position__gte=0)
