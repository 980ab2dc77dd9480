"""The engine: one worker wins a claim, steps run once and are timed, attempts back off,
the sweep resumes or gives up runs whose worker vanished, runs can be cancelled, and the
log is one shape for any run."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from runs import runner, selectors, services
from runs.choices import RunState, StepState
from runs.models import Run, RunLogLine
from runs.serializers import RunFollowSerializer

from . import plans
from .plans import CALLS, CONTROL, ThreeSteps


@pytest.fixture(autouse=True)
def _reset():
    plans.reset()
    yield
    plans.reset()


def new_run(name: str = "ada") -> Run:
    user = get_user_model().objects.create_user(name)
    return services.run_create(subject=user, plan=ThreeSteps, enqueue=False)


def states(run: Run) -> dict[str, str]:
    return dict(run.steps.order_by("position").values_list("name", "state"))


def step_calls() -> list[str]:
    return [call[1] for call in CALLS if call[0] == "step"]


@pytest.mark.django_db
def test_a_run_carries_out_its_steps_in_order_and_times_each():
    run = new_run()
    CONTROL["sleep"] = {"build": 0.2}
    done = runner.execute(run_id=run.pk, worker="w1")
    assert done.state == RunState.SUCCEEDED and done.finished_at is not None
    assert step_calls() == ["fetch", "build", "publish"]
    assert states(run) == dict.fromkeys(["fetch", "build", "publish"], StepState.DONE)
    build = run.steps.get(name="build")
    assert 0.2 <= build.duration_seconds < 5
    assert run.steps.get(name="fetch").duration_seconds < 0.2
    assert ("succeed", ("fetch", "build", "publish")) in CALLS
    messages = list(run.log_lines.values_list("step", "message"))
    assert ("build", "build for ada") in messages
    # The partial shows each step with its duration.
    html = render_to_string(
        "runs/_progress.html", {"run": done, "log_lines": selectors.run_log_since(run=done)}
    )
    assert 'data-step="build" data-state="done"' in html
    assert f'data-duration="{build.duration_seconds}"' in html
    assert "build for ada" in html


@pytest.mark.django_db
def test_a_live_claim_keeps_other_workers_off_and_a_redelivery_resumes():
    run = new_run()
    assert runner.claim(run_id=run.pk, worker="w1") is not None
    assert runner.claim(run_id=run.pk, worker="w2") is None  # alive elsewhere
    assert runner.execute(run_id=run.pk, worker="w2") is None
    assert step_calls() == []
    finished = runner.execute(run_id=run.pk, worker="w1")  # the same message again
    assert finished.state == RunState.SUCCEEDED and finished.attempts == 2
    assert runner.execute(run_id=run.pk, worker="w1") is None  # finished: left alone


@pytest.mark.django_db
def test_a_stale_claim_is_taken_over():
    run = new_run()
    runner.claim(run_id=run.pk, worker="w1")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    assert runner.claim(run_id=run.pk, worker="w2") is not None


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_at_once_one_wins():
    """Real concurrency: separate connections, released together."""
    for attempt in range(5):
        run = new_run(f"user{attempt}")
        barrier = threading.Barrier(2)
        winners: list[str] = []

        def take(worker: str, run=run, barrier=barrier, winners=winners) -> None:
            try:
                barrier.wait()
                if runner.claim(run_id=run.pk, worker=worker) is not None:
                    winners.append(worker)
            finally:
                connection.close()

        threads = [threading.Thread(target=take, args=(w,)) for w in ("w1", "w2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(winners) == 1, winners
        run.refresh_from_db()
        assert run.claimed_by == winners[0] and run.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_appending_a_log_line_does_not_wait_for_the_runs_writer():
    run = new_run()
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                Run.objects.select_for_update(no_key=True).get(pk=run.pk)
                Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            services.run_log(run, "while the run's row is held")
    finally:
        release.set()
        thread.join()
    assert RunLogLine.objects.filter(run=run, message__startswith="while").exists()


@pytest.mark.django_db
def test_a_step_error_fails_the_run_and_leaves_later_steps_alone():
    run = new_run()
    CONTROL["fail"] = "build"
    failed = runner.execute(run_id=run.pk, worker="w1")
    assert failed.state == RunState.FAILED and failed.error == "build broke"
    assert states(run) == {
        "fetch": StepState.DONE,
        "build": StepState.FAILED,
        "publish": StepState.PENDING,
    }
    assert ("fail", "build", "build broke") in CALLS
    assert run.log_lines.filter(level="error", message="Failed at build: build broke").exists()


@pytest.mark.django_db
def test_an_unexpected_error_fails_the_run_with_its_reason():
    run = new_run()

    def boom(ctx):
        raise KeyError("no such thing")

    CONTROL["callback"] = {"fetch": boom}
    failed = runner.execute(run_id=run.pk, worker="w1")
    assert failed.state == RunState.FAILED and "KeyError" in failed.error


@pytest.mark.django_db
def test_a_passing_failure_gets_another_attempt_after_a_backoff(
    settings, django_capture_on_commit_callbacks
):
    settings.BERTH_RUN_BACKOFF_SECONDS = 5
    run = new_run()
    CONTROL["fail_once"] = "build"
    with django_capture_on_commit_callbacks(execute=False) as queued:
        handed_back = runner.execute(run_id=run.pk, worker="w1")
    assert handed_back.state == RunState.PENDING and handed_back.claimed_by == ""
    wait = (handed_back.not_before - timezone.now()).total_seconds()
    assert 3 < wait <= 5
    assert len(queued) == 1  # the next attempt is queued (with that countdown)
    assert states(run)["build"] == StepState.PENDING
    assert runner.claim(run_id=run.pk, worker="w2") is None  # not before its time
    Run.objects.filter(pk=run.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    finished = runner.execute(run_id=run.pk, worker="w2")
    assert finished.state == RunState.SUCCEEDED and finished.attempts == 2
    assert step_calls() == ["fetch", "build", "build", "publish"]  # fetch ran once
    assert ThreeSteps().backoff_seconds(1) == 5 and ThreeSteps().backoff_seconds(3) == 20
    settings.BERTH_RUN_BACKOFF_MAX_SECONDS = 7
    assert ThreeSteps().backoff_seconds(3) == 7


@pytest.mark.django_db
def test_attempts_run_out(django_capture_on_commit_callbacks):
    run = new_run()
    CONTROL["retry_always"] = "fetch"
    for attempt in range(1, 4):
        Run.objects.filter(pk=run.pk).update(not_before=None)
        with django_capture_on_commit_callbacks(execute=False):
            result = runner.execute(run_id=run.pk, worker=f"w{attempt}")
    assert result.state == RunState.FAILED and result.attempts == 3
    assert "gave up after 3 attempts" in result.error


@pytest.mark.django_db
def test_the_sweep_resumes_a_run_whose_worker_vanished(django_capture_on_commit_callbacks):
    run = new_run()
    CONTROL["callback"] = {"build": lambda ctx: (_ for _ in ()).throw(SystemExit)}
    with pytest.raises(SystemExit):  # the worker dies in the middle of "build"
        runner.execute(run_id=run.pk, worker="dead")
    assert states(run)["build"] == StepState.RUNNING
    assert services.runs_sweep() == {"resumed": [], "failed": [], "cancelled": []}  # fresh
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        outcome = services.runs_sweep()
    assert outcome["resumed"] == [run.pk] and len(queued) == 1
    run.refresh_from_db()
    assert run.state == RunState.PENDING and run.claimed_by == ""
    assert any(call[0] == "requeue" for call in CALLS)
    CONTROL.clear()
    resumed = runner.execute(run_id=run.pk, worker="next")
    assert resumed.state == RunState.SUCCEEDED and resumed.attempts == 2
    assert step_calls() == ["fetch", "build", "build", "publish"]
    assert run.log_lines.filter(message="Attempt 2: resuming after fetch.").exists()
    # The dead worker's late writes are refused.
    assert runner.execute(run_id=run.pk, worker="dead") is None


@pytest.mark.django_db
def test_the_sweep_gives_up_a_run_out_of_attempts():
    run = new_run()
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING,
        claimed_by="dead",
        attempts=3,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    assert services.runs_sweep()["failed"] == [run.pk]
    run.refresh_from_db()
    assert run.state == RunState.FAILED and "stopped after 3 attempt(s)" in run.error
    assert CALLS[-1][0] == "fail"


@pytest.mark.django_db
def test_cancelling_a_pending_run_stops_it_at_once():
    run = new_run()
    cancelled = services.run_cancel(actor=None, run=run, reason="not needed")
    assert cancelled.state == RunState.CANCELLED and cancelled.error == "not needed"
    assert ("cancel", "not needed") in CALLS
    assert runner.execute(run_id=run.pk, worker="w1") is None
    assert step_calls() == []


@pytest.mark.django_db
def test_cancelling_a_running_run_stops_it_at_its_next_heartbeat():
    run = new_run()

    def cancel_then_beat(ctx):
        services.run_cancel(actor=None, run=ctx.run, reason="stop it")
        ctx.heartbeat()

    CONTROL["callback"] = {"build": cancel_then_beat}
    stopped = runner.execute(run_id=run.pk, worker="w1")
    assert stopped.state == RunState.CANCELLED and stopped.error == "stop it"
    assert states(run) == {
        "fetch": StepState.DONE,
        "build": StepState.FAILED,
        "publish": StepState.PENDING,
    }
    assert step_calls() == ["fetch", "build"]
    assert ("cancel", "stop it") in CALLS


@pytest.mark.django_db
def test_cancelling_a_running_run_stops_it_before_its_next_step():
    run = new_run()
    CONTROL["callback"] = {
        "fetch": lambda ctx: services.run_cancel(actor=None, run=ctx.run, reason="enough")
    }
    stopped = runner.execute(run_id=run.pk, worker="w1")
    assert stopped.state == RunState.CANCELLED
    assert step_calls() == ["fetch"]


@pytest.mark.django_db
def test_skipped_steps_and_the_log_api_shape():
    run = new_run()
    CONTROL["skip"] = "publish"
    runner.execute(run_id=run.pk, worker="w1")
    follow = selectors.run_follow(run=run, state="succeeded", finished=True, since=0)
    data = RunFollowSerializer(follow).data
    assert [s["state"] for s in data["steps"]] == ["done", "done", "skipped"]
    assert set(data["lines"][0]) == {"id", "created_at", "level", "step", "message"}
    assert data["next"] == data["lines"][-1]["id"]
    again = selectors.run_follow(run=run, state="succeeded", finished=True, since=data["next"])
    assert again["lines"] == [] and again["next"] == data["next"]


def test_one_beat_task_sweeps_every_plan():
    from portal.celery import app

    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "runs.tasks.runs_sweep" in tasks
    assert "deployments.tasks.deployment_resume_stuck" not in tasks  # no second sweep
