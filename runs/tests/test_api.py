"""Any run's log answers in one shape, follows with `since`, and refuses bad input."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from runs import runner, services

from . import plans
from .plans import ThreeSteps


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("reader"))
    return client


@pytest.mark.django_db
def test_a_runs_log_follows_with_since(api):
    plans.reset()
    run = services.run_create(
        subject=get_user_model().objects.create_user("ada"), plan=ThreeSteps, enqueue=False
    )
    first = api.get(f"/api/v1/runs/{run.pk}/log/").json()
    assert first == {
        "state": "pending",
        "finished": False,
        "steps": first["steps"],
        "lines": [],
        "next": 0,
    }
    assert [s["name"] for s in first["steps"]] == ["fetch", "build", "publish"]
    runner.execute(run_id=run.pk, worker="w1")
    done = api.get(f"/api/v1/runs/{run.pk}/log/", {"since": 0}).json()
    assert done["state"] == "succeeded" and done["finished"] is True
    assert [s["state"] for s in done["steps"]] == ["done"] * 3
    assert "finished_at" in done["steps"][0]
    assert done["lines"] and done["next"] == done["lines"][-1]["id"]
    later = api.get(f"/api/v1/runs/{run.pk}/log/", {"since": done["next"]}).json()
    assert later["lines"] == [] and later["next"] == done["next"]


@pytest.mark.django_db
@pytest.mark.parametrize("since", ["x", "-1", str(2**63), "1e3"])
def test_a_bad_since_is_a_clear_400(api, since):
    run = services.run_create(
        subject=get_user_model().objects.create_user("bob"), plan=ThreeSteps, enqueue=False
    )
    answer = api.get(f"/api/v1/runs/{run.pk}/log/", {"since": since})
    assert answer.status_code == 400
    assert "since" in answer.content.decode()


@pytest.mark.django_db
def test_an_unknown_run_is_404_and_strangers_are_refused(api):
    assert api.get("/api/v1/runs/999999/log/").status_code == 404
    assert APIClient().get("/api/v1/runs/1/log/").status_code in (401, 403)


@pytest.mark.django_db
def test_cancel_goes_through_the_subjects_rule_and_answers_the_run(api):
    plans.reset()
    run = services.run_create(
        subject=get_user_model().objects.create_user("cy"), plan=ThreeSteps, enqueue=False
    )
    refused = api.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    run.refresh_from_db()
    assert run.state == "pending" and not run.cancel_requested

    staff = APIClient()
    staff.force_authenticate(get_user_model().objects.create_user("op", is_staff=True))
    too_long = staff.post(f"/api/v1/runs/{run.pk}/cancel/", {"reason": "x" * 501}, format="json")
    assert too_long.status_code == 400 and too_long.json()["field"] == "reason"

    answer = staff.post(f"/api/v1/runs/{run.pk}/cancel/", {"reason": "wrong input"}, format="json")
    assert answer.status_code == 200
    assert answer.json()["state"] == "cancelled" and answer.json()["error"] == "wrong input"
    assert ("cancel", "wrong input") in plans.CALLS
    again = staff.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json")
    assert again.status_code == 409 and again.json()["field"] == "state"
    assert staff.post("/api/v1/runs/999999/cancel/", {}, format="json").status_code == 404


@pytest.mark.django_db
def test_a_running_run_is_asked_to_stop_and_stops_at_its_next_heartbeat(api):
    plans.reset()
    staff = get_user_model().objects.create_user("op", is_staff=True)
    run = services.run_create(
        subject=get_user_model().objects.create_user("dee"), plan=ThreeSteps, enqueue=False
    )

    def cancel_from_outside(ctx):
        services.run_cancel_requested(actor=staff, run=ctx.run, reason="enough", source="api")
        ctx.heartbeat()

    plans.CONTROL["callback"] = {"build": cancel_from_outside}
    runner.execute(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    assert run.state == "cancelled" and run.error == "enough"
    assert [s.state for s in run.steps.order_by("position")] == ["done", "failed", "pending"]
