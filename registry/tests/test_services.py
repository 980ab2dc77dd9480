"""Registration and the pipeline steps, called directly (the worker path is in tests/)."""

import hashlib
import os
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from portal.models import AuditEvent
from registry import plans, services
from registry.artifacts import PayloadTooLarge, kept_tree
from registry.choices import PIPELINE_STEPS, VersionStatus
from registry.models import ModelVersion, RegisteredModel, TestResult
from runs.choices import RunState
from runs.models import Run
from runs.services import runs_sweep

from . import archives
from .archives import upload
from .conftest import LINEAGE
from .factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def stored_files(root: Path) -> list[Path]:
    return (
        [p for p in (root / "artifacts").rglob("*") if p.is_file()]
        if (root / "artifacts").exists()
        else []
    )


def test_model_create_checks_name_and_uniqueness(user):
    model = services.model_create(actor=user, name="iris", description="Iris", tags=["a", "a", "b"])
    assert model.tags == ["a", "b"]
    assert AuditEvent.objects.filter(action="model.create", target_id=str(model.pk)).exists()
    with pytest.raises(Conflict) as error:
        services.model_create(actor=user, name="iris")
    assert error.value.field == "name"
    with pytest.raises(ServiceError) as error:
        services.model_create(actor=user, name="../etc")
    assert error.value.field == "name"


def test_register_assigns_numbers_in_order_and_stores_the_archive(
    user, model, demo_tar, registry_dirs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        first = services.version_register(
            actor=user, model=model, archive=upload(demo_tar), lineage=LINEAGE
        )
    assert len(callbacks) == 1  # the validate task, queued once the row is committed
    assert first.version == 1
    assert first.status == VersionStatus.REGISTERED
    assert first.content_sha256 == hashlib.sha256(demo_tar.read_bytes()).hexdigest()
    assert first.size_bytes == demo_tar.stat().st_size
    assert Path(first.artifact_uri).read_bytes() == demo_tar.read_bytes()
    assert first.source_commit == LINEAGE["source_commit"]
    assert first.metrics == {"accuracy": 0.97, "f1": 0.96}
    event = AuditEvent.objects.get(action="version.register", target_id=str(first.pk))
    assert event.actor == user and event.to_state == "registered" and event.source == "api"

    other = archives.repository_archive(
        {"m/config.pbtxt": 'backend: "python"'}, registry_dirs / "other.tar.gz"
    )
    second = services.version_register(
        actor=user, model=model, archive=other, lineage={"parent": "iris:1"}, source="browser"
    )
    assert second.version == 2
    assert second.parent == first
    assert not list((registry_dirs / "uploads").iterdir())  # staging cleaned up


def test_same_content_twice_is_a_conflict_naming_the_existing_version(
    user, model, demo_tar, registry_dirs
):
    first = services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    with pytest.raises(services.DuplicateContent) as error:
        services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    assert error.value.status_code == 409
    assert error.value.as_dict()["existing_version"]["version"] == first.version
    assert ModelVersion.objects.count() == 1
    assert len(stored_files(registry_dirs)) == 1


def test_explicit_version_that_exists_is_a_conflict(user, model, demo_tar, registry_dirs):
    services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    other = archives.repository_archive({"m/config.pbtxt": "x"}, registry_dirs / "o.tar.gz")
    with pytest.raises(Conflict) as error:
        services.version_register(actor=user, model=model, archive=other, lineage={}, version=1)
    assert error.value.field == "version"
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, archive=other, lineage={}, version=5)
    assert error.value.field == "version" and "next version" in error.value.message
    assert (
        services.version_register(
            actor=user, model=model, archive=other, lineage={}, version=2
        ).version
        == 2
    )


@pytest.mark.parametrize(
    ("lineage", "field"),
    [
        ({"metrics": {"accuracy": "high"}}, "lineage.metrics"),
        ({"metrics": [1]}, "lineage.metrics"),
        ({"parent": "iris:9"}, "lineage.parent"),
        ({"parent": "not a version"}, "lineage.parent"),
        ({"source_commit": "abc def"}, "lineage.source_commit"),
        ({"tags": "ok, " + "x" * 80}, "lineage.tags"),
        ({"colour": "blue"}, "lineage"),
        ({"dataset_uri": 3}, "lineage.dataset_uri"),
    ],
)
def test_bad_lineage_is_refused_before_anything_is_stored(
    user, model, demo_tar, registry_dirs, lineage, field
):
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, archive=upload(demo_tar), lineage=lineage
        )
    assert error.value.field == field
    assert not ModelVersion.objects.exists()
    assert stored_files(registry_dirs) == []


def test_bad_test_cases_are_refused(user, model, demo_tar):
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user,
            model=model,
            archive=upload(demo_tar),
            lineage={},
            test_cases=[
                {"name": "x", "inputs": {"RAW": {"datatype": "FP32", "shape": [2], "data": [1]}}}
            ],
        )
    assert error.value.field == "test_cases"
    assert "holds 2 values but data has 1" in error.value.message


def test_not_an_archive_and_oversized_uploads_are_refused(user, model, settings, registry_dirs):
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, archive=SimpleUploadedFile("repo.tar.gz", b"hello"), lineage={}
        )
    assert error.value.field == "archive" and "first bytes" in error.value.message
    settings.BERTH_UPLOAD_MAX_BYTES = 100
    big = archives.big_file_archive(registry_dirs / "big.tar.gz", 10_000)
    with pytest.raises(PayloadTooLarge) as error:
        services.version_register(actor=user, model=model, archive=upload(big), lineage={})
    assert error.value.status_code == 413
    assert not ModelVersion.objects.exists()
    assert stored_files(registry_dirs) == []
    assert not list((registry_dirs / "uploads").iterdir())


def test_failure_after_storing_leaves_no_file_and_no_row(
    user, model, demo_tar, registry_dirs, monkeypatch
):
    def fail(**kwargs):
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(services, "audit_record", fail)
    with pytest.raises(RuntimeError):
        services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    assert not ModelVersion.objects.exists()
    assert stored_files(registry_dirs) == []


def test_register_from_an_allowed_local_folder_or_archive(user, model, registry_dirs):
    from toolkit.examples import write_demo_repository

    folder = write_demo_repository(registry_dirs / "allowed" / "demo")
    version = services.version_register(actor=user, model=model, uri=str(folder), lineage={})
    assert version.artifact_source == "uri" and version.source_uri == str(folder)
    with tarfile.open(version.artifact_uri) as tar:
        assert "demo_ensemble/config.pbtxt" in tar.getnames()
    # The folder is archived deterministically: registering it again is a duplicate.
    with pytest.raises(services.DuplicateContent):
        services.version_register(actor=user, model=model, uri=str(folder), lineage={})
    archive = archives.repository_archive(
        {"m/config.pbtxt": "x"}, registry_dirs / "allowed" / "m.tar.gz"
    )
    assert (
        services.version_register(actor=user, model=model, uri=str(archive), lineage={}).version
        == 2
    )


def test_local_paths_outside_the_allowed_folders_are_refused(user, model, registry_dirs, demo_tar):
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, uri=str(demo_tar), lineage={})
    assert error.value.field == "uri" and "may not read" in error.value.message
    # A link inside the allowed folder does not lead out of it.
    os.symlink(demo_tar, registry_dirs / "allowed" / "link.tar.gz")
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, uri=str(registry_dirs / "allowed" / "link.tar.gz"), lineage={}
        )
    assert error.value.field == "uri"
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, uri="/etc/../etc/passwd", lineage={})
    assert error.value.field == "uri"
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, uri="http://example.com/x.tar.gz", lineage={}
        )
    assert error.value.field == "uri"
    # A folder whose link leaves it is refused too.
    folder = registry_dirs / "allowed" / "repo"
    (folder / "m").mkdir(parents=True)
    os.symlink("/etc/passwd", folder / "m" / "model.py")
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, uri=str(folder), lineage={})
    assert error.value.field == "uri" and "links outside" in error.value.message
    assert not ModelVersion.objects.exists()


def test_only_data_scientists_create_models_and_register(model, demo_tar):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionDenied):
        services.version_register(
            actor=AnonymousUser(), model=model, archive=upload(demo_tar), lineage={}
        )
    viewer = UserFactory(username="viewer", scientist=False)
    with pytest.raises(PermissionDenied):
        services.version_register(actor=viewer, model=model, archive=upload(demo_tar), lineage={})
    with pytest.raises(PermissionDenied):
        services.model_create(actor=viewer, name="mine")
    assert not ModelVersion.objects.exists()


# -- pipeline steps -----------------------------------------------------------------------------


def register(user, model, path: Path, **kwargs) -> ModelVersion:
    return services.version_register(
        actor=user, model=model, archive=upload(path), lineage=kwargs.pop("lineage", {}), **kwargs
    )


def test_validate_step_records_summary_and_transitions(user, model, demo_tar, registry_dirs):
    version = register(user, model, demo_tar)
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED
    assert version.repository_summary["entry_model"] == "demo_ensemble"
    assert version.attempts == 0
    states = list(
        AuditEvent.objects.filter(target_id=str(version.pk), action="version.transition")
        .order_by("id")
        .values_list("from_state", "to_state", "source", "actor")
    )
    assert states == [
        ("registered", "validating", "worker", None),
        ("validating", "validated", "worker", None),
    ]
    assert any("Valid: 3 model(s)" in line["message"] for line in version.progress_log)
    # Idempotent: a second delivery of the same message does nothing.
    assert plans.version_validate(version_id=version.pk) is None
    # Nothing left but the extraction kept for the version's next steps.
    assert [p.name for p in (registry_dirs / "scratch").iterdir()] == ["trees"]
    kept = kept_tree(version.pk, version.content_sha256)
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]
    assert (kept / "demo_ensemble" / "config.pbtxt").is_file()


HOSTILE = [
    (archives.dotdot_archive, "'..'"),
    (archives.absolute_archive, "absolute path"),
    (archives.symlink_escape_archive, "leaves the archive"),
    (archives.hardlink_escape_archive, "leaves the archive"),
    (archives.device_archive, "device files are not allowed"),
    (archives.bomb_archive, "decompression bomb"),
    (archives.zip_slip_archive, "'..'"),
]


@pytest.mark.parametrize(("build", "reason"), HOSTILE, ids=[b.__name__ for b, _ in HOSTILE])
def test_hostile_archives_are_rejected_with_a_clear_message(
    user, model, registry_dirs, build, reason
):
    suffix = ".zip" if "zip" in build.__name__ else ".tar.gz"
    outside = registry_dirs / "outside"
    outside.mkdir()
    path = build(outside / f"hostile{suffix}")
    before = sorted(p for p in registry_dirs.rglob("*") if "scratch" not in p.parts)
    version = register(user, model, path)
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.INVALID
    assert len(version.problems) == 1
    assert version.problems[0]["message"].startswith("Unsafe archive:")
    assert reason in version.problems[0]["message"]
    # Nothing was written outside the scratch folder, and the scratch folder is gone.
    after = sorted(p for p in registry_dirs.rglob("*") if "scratch" not in p.parts)
    new = {p for p in set(after) - set(before) if p.is_file()}
    assert all("artifacts" in p.parts for p in new), new
    assert not Path("/tmp/berth-absolute-escape.txt").exists()
    assert not list((registry_dirs / "scratch").iterdir())


def test_archive_limits_come_from_settings(user, model, registry_dirs, settings):
    settings.BERTH_ARCHIVE_LIMITS = {
        **settings.BERTH_ARCHIVE_LIMITS,
        "max_files": 5,
        "max_file_bytes": 1000,
    }
    version = register(user, model, archives.many_files_archive(registry_dirs / "many.tar.gz", 10))
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert "more than 5 entries" in version.problems[0]["message"]
    version = register(user, model, archives.big_file_archive(registry_dirs / "big.tar.gz", 5000))
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert "byte limit per file" in version.problems[0]["message"]


def test_invalid_repository_lists_all_problems(user, model, registry_dirs):
    path = archives.repository_archive(
        {
            "a/config.pbtxt": 'backend: "python"\nmax_batch_sise: 1\n',
            "b/config.pbtxt": 'platform: "onnxruntime_onnx"\n',
            "b/1/nothing.txt": "",
        },
        registry_dirs / "bad.tar.gz",
    )
    version = register(user, model, path)
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.INVALID
    files = sorted(p["file"] for p in version.problems)
    assert "a/config.pbtxt" in files and "b/1/model.onnx" in files
    assert any(p["line"] == 2 for p in version.problems)


def step_run(version: ModelVersion, step: str) -> Run:
    """The version's latest run of `step` (each pipeline step is a run of its own plan)."""
    return (
        Run.objects.filter(object_id=version.pk, plan=plans.PLANS[step].path())
        .order_by("-id")
        .first()
    )


def worker_died(version: ModelVersion, step: str, *, attempts: int, when) -> Run:
    """What a worker killed mid-step leaves: the version in the step's running state and the
    step's run held by a worker whose last heartbeat was at `when`."""
    run = step_run(version, step) or plans.step_start(version=version, step=step)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=PIPELINE_STEPS[step]["running"], status_changed_at=when
    )
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING,
        claimed_by="gone-worker",
        attempts=attempts,
        heartbeat_at=when,
        started_at=when,
        created_at=when,
    )
    return run


def test_requeue_stuck_versions_then_give_up(
    user, model, demo_tar, django_capture_on_commit_callbacks, settings
):
    settings.BERTH_VERSION_MAX_ATTEMPTS = 2
    version = register(user, model, demo_tar)
    long_ago = timezone.now() - timedelta(hours=2)
    run = worker_died(version, "validate", attempts=1, when=long_ago)
    fresh = ModelVersionFactory(model=model, version=7)
    worker_died(fresh, "test", attempts=1, when=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        handled = runs_sweep()
    assert handled["resumed"] == [run.pk]
    assert len(callbacks) == 1
    version.refresh_from_db()
    assert version.status == VersionStatus.REGISTERED
    event = AuditEvent.objects.filter(target_id=str(version.pk), action="version.requeue").get()
    assert "requeued after attempt 1 of 2" in event.reason
    fresh.refresh_from_db()
    assert fresh.status == VersionStatus.TESTING  # still alive: left alone

    # The second attempt dies too: the version gives up with a clear problem.
    worker_died(version, "validate", attempts=2, when=long_ago)
    runs_sweep()
    version.refresh_from_db()
    assert version.status == VersionStatus.INVALID
    assert "Validate gave up after 2 attempts" in version.problems[-1]["message"]


def test_a_version_whose_step_message_was_lost_is_sent_again(
    user, model, demo_tar, django_capture_on_commit_callbacks
):
    version = register(user, model, demo_tar)
    long_ago = timezone.now() - timedelta(hours=2)
    run = step_run(version, "validate")
    Run.objects.filter(pk=run.pk).update(created_at=long_ago, heartbeat_at=None)
    with django_capture_on_commit_callbacks() as callbacks:
        handled = runs_sweep()
    assert handled["resumed"] == [run.pk]
    assert len(callbacks) == 1  # the validate step, sent again
    version.refresh_from_db()
    assert version.status == VersionStatus.REGISTERED
    assert any("queued again" in line["message"] for line in version.progress_log)

    # Its heartbeat is fresh now: the next beat leaves it alone.
    with django_capture_on_commit_callbacks() as callbacks:
        assert runs_sweep() == {"resumed": [], "failed": [], "cancelled": []}
    assert callbacks == []


def test_a_stale_running_step_is_taken_over_by_a_redelivered_message(user, model, demo_tar):
    version = register(user, model, demo_tar)
    long_ago = timezone.now() - timedelta(hours=2)
    worker_died(version, "validate", attempts=1, when=long_ago)
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED
    takeover = AuditEvent.objects.filter(target_id=str(version.pk), action="version.requeue")
    assert takeover.get().to_state == VersionStatus.REGISTERED
    # A stale step that used up its attempts gives up instead.
    run = worker_died(version, "test", attempts=3, when=long_ago)
    assert runs_sweep()["failed"] == [run.pk]
    assert plans.version_test(version_id=version.pk) is None
    version.refresh_from_db()
    assert version.status == VersionStatus.TEST_FAILED
    assert "Test gave up after 3 attempts" in version.problems[-1]["message"]
    # ... but a step another worker is running right now is left to it.
    worker_died(version, "test", attempts=1, when=timezone.now())
    assert plans.version_test(version_id=version.pk) is None


def test_unexpected_errors_retry_then_give_up(
    user, model, demo_tar, settings, django_capture_on_commit_callbacks
):
    settings.BERTH_VERSION_MAX_ATTEMPTS = 2
    version = register(user, model, demo_tar)
    Path(version.artifact_uri).unlink()  # the artifact store lost the file
    with django_capture_on_commit_callbacks() as callbacks:
        plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.REGISTERED and len(callbacks) == 1
    assert version.attempts == 1
    # The next attempt waits for its backoff; then it runs and gives up.
    run = step_run(version, "validate")
    assert run.not_before is not None
    Run.objects.filter(pk=run.pk).update(not_before=None)
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.INVALID
    assert "gave up after 2 attempts: FileNotFoundError" in version.problems[-1]["message"]


def test_transitions_follow_the_table(user, model):
    version = ModelVersionFactory(model=model, status=VersionStatus.PACKAGED)
    with pytest.raises(InvalidTransition):
        plans._transition(version, VersionStatus.TESTING)
    with pytest.raises(InvalidTransition):
        services.version_retry(actor=user, version=version)


@pytest.mark.triton
def test_full_pipeline_on_real_triton_reaches_packaged(user, model, demo_tar, registry_dirs):
    version = register(user, model, demo_tar, lineage=LINEAGE)
    plans.version_validate(version_id=version.pk)
    plans.version_test(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.TESTED, version.problems
    results = list(version.test_results.order_by("id"))
    assert [r.name for r in results] == ["setosa-like", "versicolor-like", "batch-of-two"]
    assert all(r.outcome == "passed" and r.kind == "case" for r in results)
    assert results[0].actual["PROBABILITIES"]["shape"] == [1, 3]
    assert results[0].duration_ms > 0

    plans.version_package(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.PACKAGED
    # Validate extracted the archive once; test and package read that extraction, and it is
    # gone once the version is packaged.
    messages = [line["message"] for line in version.progress_log]
    assert sum(m.startswith("Extracted ") for m in messages) == 1, messages
    assert messages.count("Reading the archive an earlier step extracted.") == 2, messages
    assert not kept_tree(version.pk, version.content_sha256).parent.exists()
    package = Path(version.package_uri)
    assert package.name == "iris_1.tar.gz"
    assert hashlib.sha256(package.read_bytes()).hexdigest() == version.package_sha256
    assert package.stat().st_size == version.package_size_bytes
    with tarfile.open(package) as tar:
        top = {name.split("/")[0] for name in tar.getnames()}
        assert top == {"demo_ensemble", "demo_preprocess", "demo_classifier", "berth.yaml"}
        assert all(m.mtime == tar.getmembers()[0].mtime and m.uid == 0 for m in tar.getmembers())
    # Deterministic: packaging again gives the same bytes.
    first_sha = version.package_sha256
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.TESTED)
    plans.version_package(version_id=version.pk)
    version.refresh_from_db()
    assert version.package_sha256 == first_sha


@pytest.mark.triton
def test_no_test_cases_gets_one_smoke_inference(user, model, registry_dirs):
    from toolkit.examples import write_demo_repository

    repo = write_demo_repository(registry_dirs / "repo")
    (repo / "berth.yaml").unlink()
    version = services.version_register(
        actor=user,
        model=model,
        archive=archives.build_tar_gz(repo, registry_dirs / "r.tar.gz").path,
        lineage={},
    )
    plans.version_validate(version_id=version.pk)
    plans.version_test(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.TESTED
    (smoke,) = version.test_results.all()
    assert smoke.kind == "smoke" and smoke.outcome == "passed"
    assert smoke.inputs["RAW"]["shape"] == [1, 4] and smoke.inputs["RAW"]["data"] == [0, 0, 0, 0]
    assert smoke.actual["PROBABILITIES"]["shape"] == [1, 3]


@pytest.mark.triton
def test_wrong_expectations_and_load_failures_fail_the_tests(user, model, registry_dirs):
    from toolkit.examples import write_demo_repository, write_failing_model_repository

    cases = [
        {
            "name": "wrong",
            "inputs": {"RAW": {"datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}},
            "expected": {"PROBABILITIES": {"data": [0.1, 0.1, 0.8], "atol": 0.001}},
        }
    ]
    repo = write_demo_repository(registry_dirs / "repo")
    path = archives.build_tar_gz(repo, registry_dirs / "r.tar.gz").path
    version = services.version_register(
        actor=user, model=model, archive=path, lineage={}, test_cases=cases
    )
    plans.version_validate(version_id=version.pk)
    plans.version_test(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.TEST_FAILED
    wrong = version.test_results.get(name="wrong")
    assert (
        wrong.outcome == "failed"
        and "PROBABILITIES[0]" in wrong.message
        and "atol=0.001" in wrong.message
    )
    assert version.test_results.filter(outcome="passed").count() == 3

    failing = write_failing_model_repository(
        registry_dirs / "failing", "broken_model", message="weights file is corrupt"
    )
    path = archives.build_tar_gz(failing, registry_dirs / "f.tar.gz").path
    broken = services.version_register(actor=user, model=model, archive=path, lineage={})
    plans.version_validate(version_id=broken.pk)
    plans.version_test(version_id=broken.pk)
    broken.refresh_from_db()
    assert broken.status == VersionStatus.TEST_FAILED
    assert "weights file is corrupt" in broken.problems[0]["message"]
    assert not TestResult.objects.filter(version=broken).exists()
    # A failed test run can be run again on request.
    services.version_retry(actor=user, version=broken)
    assert RegisteredModel.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_get_distinct_numbers_in_order(registry_dirs):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("Row locks need PostgreSQL; SQLite serialises writers itself.")
    from .factories import RegisteredModelFactory, UserFactory

    user = UserFactory(username="racer")
    model = RegisteredModelFactory(name="race", owner=user)
    paths = [
        archives.repository_archive({f"m{i}/config.pbtxt": str(i)}, registry_dirs / f"a{i}.tar.gz")
        for i in range(6)
    ]
    barrier = threading.Barrier(len(paths))
    numbers, errors = [], []

    def register(path):
        try:
            barrier.wait()
            numbers.append(
                services.version_register(actor=user, model=model, archive=path, lineage={}).version
            )
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert len(stored_files(registry_dirs)) == 6


@pytest.mark.django_db(transaction=True)
def test_a_slow_archive_copy_does_not_hold_up_other_registrations(registry_dirs, monkeypatch):
    import threading

    from django.db import connection, connections

    from registry.storage import LocalArtifactStore

    if connection.vendor != "postgresql":
        pytest.skip("Row locks need PostgreSQL; SQLite serialises writers itself.")
    from .factories import RegisteredModelFactory, UserFactory

    user = UserFactory(username="uploader")
    model = RegisteredModelFactory(name="slow", owner=user)
    large, small = (
        archives.repository_archive({f"{n}/config.pbtxt": n}, registry_dirs / f"{n}.tar.gz")
        for n in ("large", "small")
    )
    large_bytes = large.read_bytes()
    copying, finish_copy = threading.Event(), threading.Event()
    put = LocalArtifactStore.put

    def slow_put(self, local_path, key):
        if Path(local_path).read_bytes() == large_bytes:
            copying.set()
            assert finish_copy.wait(30)
        return put(self, local_path, key)

    monkeypatch.setattr(LocalArtifactStore, "put", slow_put)
    results: dict[str, object] = {}

    def register(name, path):
        try:
            results[name] = services.version_register(
                actor=user, model=model, archive=path, lineage={}
            ).version
        except Exception as exc:  # asserted below
            results[name] = exc
        finally:
            connections.close_all()

    slow = threading.Thread(target=register, args=("large", large))
    slow.start()
    assert copying.wait(30)
    # While the large archive is still being copied, another version registers at once.
    register("small", small)
    finish_copy.set()
    slow.join(30)
    assert results == {"small": 1, "large": 2}
    assert len(stored_files(registry_dirs)) == 2
