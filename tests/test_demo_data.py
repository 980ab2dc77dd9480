"""The demo data scripts/run loads goes through the real pipeline: a real Celery worker
validates, tests (real Triton) and packages both demo versions."""

import io
import time

import pytest
from django.core.management import call_command

from registry.choices import VersionStatus
from registry.models import ModelVersion

pytestmark = [pytest.mark.worker, pytest.mark.triton]


def test_both_demo_versions_reach_packaged(celery_worker_factory):
    # As scripts/run does: the demo is registered first, the worker starts after.
    call_command("berth_demo", stdout=io.StringIO())
    celery_worker = celery_worker_factory()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        statuses = dict(ModelVersion.objects.values_list("version", "status"))
        if set(statuses.values()) <= {
            VersionStatus.PACKAGED,
            VersionStatus.INVALID,
            VersionStatus.TEST_FAILED,
        }:
            break
        time.sleep(1)
    assert statuses == {1: VersionStatus.PACKAGED, 2: VersionStatus.PACKAGED}, (
        celery_worker.log_tail()
    )
    v2 = ModelVersion.objects.get(version=2)
    assert v2.parent.version == 1
    outcomes = set(v2.test_results.values_list("outcome", flat=True))
    assert outcomes == {"passed"}
    assert v2.package_uri.endswith("demo_ensemble_2.tar.gz")
