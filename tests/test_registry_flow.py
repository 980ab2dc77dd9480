"""The registry end to end, through a REAL Celery worker on the real broker and the real
Triton: a CI-like client registers the demo ensemble with a token and polls until packaged;
a worker killed mid-step leaves a version that is requeued and finishes."""

import hashlib
import json
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient
from waiting import wait_for

from portal.audit import audit_history
from portal.services import token_create
from registry import services, tasks
from registry.choices import IN_PROGRESS_STATUSES, VersionStatus
from registry.models import ModelVersion
from registry.tests.factories import grant_scientist
from toolkit.examples import build_demo_archive

pytestmark = [pytest.mark.worker, pytest.mark.triton]

LINEAGE = {
    "source_repository": "https://git.example.com/ml/demo",
    "source_commit": "9d1c0ffee0ddba11ab1e5eed5ca1ab1e00c0ffee",
    "dataset_uri": "s3://datasets/iris/iris.csv",
    "dataset_version": "sha256:51f3a2",
    "training_job": "https://ci.example.com/jobs/1234",
    "metrics": {"accuracy": 0.97},
    "frameworks": ["onnx", "python"],
    "tags": ["demo"],
}
FINAL = {VersionStatus.PACKAGED, VersionStatus.INVALID, VersionStatus.TEST_FAILED}


def test_ci_registers_the_demo_ensemble_and_polls_until_packaged(celery_worker, berth_dirs, client):
    user = get_user_model().objects.create_user("ci-bot", password="pw-ci-bot-123")
    grant_scientist(user)
    _, raw = token_create(actor=user, name="monorepo-ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert (
        api.post(reverse("registry-api:model-list"), {"name": "demo"}, format="json").status_code
        == 201
    )
    archive = build_demo_archive(berth_dirs / "build" / "demo.tar.gz")
    with open(archive, "rb") as handle:
        response = api.post(
            reverse("registry-api:version-list", kwargs={"name": "demo"}),
            {"archive": handle, "lineage": json.dumps(LINEAGE)},
            format="multipart",
        )
    assert response.status_code == 201, response.json()
    url = reverse(
        "registry-api:version-detail",
        kwargs={"name": "demo", "version": response.json()["version"]},
    )

    seen: list[str] = []

    def settled():
        body = api.get(url).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        return body if body["status"] in FINAL and not body["in_progress"] else None

    body = wait_for(settled, timeout=240, worker=celery_worker, what="the version to settle")
    assert body["status"] == "packaged", (body["problems"], celery_worker.log_tail())
    assert [r["outcome"] for r in body["test_results"]] == ["passed"] * 3
    package = body["package"]
    assert package["name"] == "demo_1.tar.gz"
    path = Path(package["uri"])
    assert path.is_relative_to(berth_dirs / "artifacts")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == package["sha256"]
    assert body["repository_summary"]["entry_model"] == "demo_ensemble"

    version = ModelVersion.objects.get(model__name="demo", version=1)
    transitions = [
        (e.from_state, e.to_state, e.source)
        for e in audit_history(version)
        if e.action in {"version.transition", "version.register"}
    ]
    assert transitions == [
        ("", "registered", "api"),
        ("registered", "validating", "worker"),
        ("validating", "validated", "worker"),
        ("validated", "testing", "worker"),
        ("testing", "tested", "worker"),
        ("tested", "packaging", "worker"),
        ("packaging", "packaged", "worker"),
    ]
    assert any("Loaded demo_ensemble" in line["message"] for line in version.progress_log)

    client.force_login(user)
    html = client.get(version.get_absolute_url()).content.decode()
    assert "<svg" in html and "sha256:51f3a2" in html and "9d1c0ffee0dd" in html
    assert "3 / 3 passed" in html and "demo_1.tar.gz" in html and package["sha256"] in html


def test_a_worker_killed_mid_step_leaves_a_version_that_is_requeued(
    celery_worker_factory, berth_dirs
):
    user = get_user_model().objects.create_user("dana")
    grant_scientist(user)
    model = services.model_create(actor=user, name="demo")
    first = celery_worker_factory()
    archive = build_demo_archive(berth_dirs / "build" / "demo.tar.gz")
    version = services.version_register(actor=user, model=model, archive=archive, lineage=LINEAGE)

    def testing():
        version.refresh_from_db()
        return version.status == VersionStatus.TESTING

    # Testing starts Triton and loads the ensemble: seconds, long enough to kill the worker in.
    wait_for(testing, timeout=120, interval=0.05, worker=first, what="testing to start")
    first.kill()
    time.sleep(1)
    version.refresh_from_db()
    assert version.status == VersionStatus.TESTING and version.attempts == 1
    # Not yet stuck by the default timeout: the beat task leaves it alone.
    assert tasks.version_requeue_stuck() == []

    # A new worker with a short timeout; beat's task runs through the broker like any other.
    second = celery_worker_factory(BERTH_VERSION_STUCK_SECONDS="2")
    time.sleep(2.5)
    tasks.version_requeue_stuck.delay()

    def settled():
        version.refresh_from_db()
        return version.status in FINAL and version.status not in IN_PROGRESS_STATUSES

    wait_for(settled, timeout=240, worker=second, what="the requeued version to settle")
    assert version.status == VersionStatus.PACKAGED, (version.problems, second.log_tail())
    assert version.test_results.count() == 3  # results of the killed attempt never doubled up
    events = [(e.action, e.from_state, e.to_state) for e in audit_history(version)]
    assert ("version.requeue", "testing", "validated") in events
    requeue = next(e for e in audit_history(version) if e.action == "version.requeue")
    assert "requeued after attempt 1" in requeue.reason
