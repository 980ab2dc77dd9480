"""The load test's plan on the engine, where no generator is needed: a redelivered task
message never resumes a test, the sweep fails a test whose worker vanished with its
measured stages kept, and who may cancel through the runs API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Endpoint
from deployments.tests.factories import user_in
from loadtests import services
from loadtests.models import LoadTest, LoadTestStage
from loadtests.plans import LoadTestPlan
from runs import runner
from runs.choices import RunState
from runs.models import Run
from runs.services import runs_sweep

from .factories import config, live_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(scientist):
    staging = Endpoint.objects.get(name="local-staging")
    live_version(staging)
    load_test = services.loadtest_start(
        actor=scientist, endpoint=staging, config=config(), confirmed=True, source="api"
    )
    return load_test, Run.objects.get(load_test=load_test)


def test_a_redelivered_message_fails_the_test_at_once(started):
    load_test, run = started
    # The first delivery claimed it and ran the first step, then its worker died.
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING, claimed_by="task-1", attempts=1, heartbeat_at=timezone.now()
    )
    run.steps.filter(name="prepare").update(state="done")
    LoadTestStage.objects.create(
        load_test=load_test, position=0, offered_rps=5, planned_seconds=1, finished=True, sent=5
    )
    finished = runner.execute(run_id=run.pk, worker="task-1")
    assert finished.state == RunState.FAILED
    assert "never resumed" in finished.error
    load_test.refresh_from_db()
    assert load_test.state == "failed" and "never resumed" in load_test.error
    assert load_test.stages.get().sent == 5


def test_the_sweep_fails_a_test_whose_worker_vanished(started, settings):
    load_test, run = started
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING, claimed_by="task-1", attempts=1, heartbeat_at=timezone.now()
    )
    LoadTest.objects.filter(pk=load_test.pk).update(state="running")
    soon = timezone.now() + timedelta(seconds=settings.BERTH_LOADTEST_STALE_SECONDS - 5)
    assert runs_sweep(now=soon)["failed"] == []
    later = timezone.now() + timedelta(seconds=settings.BERTH_LOADTEST_STALE_SECONDS + 1)
    assert runs_sweep(now=later)["failed"] == [run.pk]
    load_test.refresh_from_db()
    assert load_test.state == "failed" and load_test.finished_at is not None


def test_who_may_cancel_through_the_runs_api(started, scientist, approver, platform_admin):
    load_test, _ = started
    plan = LoadTestPlan()
    assert plan.may_cancel(scientist, load_test)
    assert plan.may_cancel(approver, load_test)
    assert plan.may_cancel(platform_admin, load_test)
    assert not plan.may_cancel(user_in("data scientist", username="other"), load_test)
    assert plan.max_attempts == 1
