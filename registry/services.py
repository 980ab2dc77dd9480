"""Writes on the registry: models, version registration and the validate -> test -> package
pipeline that Celery workers run.

Every state change goes through `_transition`, which checks `VERSION_TRANSITIONS`, saves with
`update_fields` and writes the audit record in the same transaction. Transitions made by the
pipeline are recorded with no actor and source "worker"; registration and retries carry the
user who asked.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from portal.audit import audit_record
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError

from .artifacts import StagedArtifact, remove_tree, scratch_dir, stage_upload, stage_uri
from .choices import (
    IN_PROGRESS_STATUSES,
    PIPELINE_STEPS,
    STEP_BY_READY_STATUS,
    STEP_BY_RUNNING_STATUS,
    STEP_GIVE_UP_STATUS,
    ArtifactSource,
    VersionStatus,
    transition_allowed,
)
from .models import ModelVersion, RegisteredModel, TestResult, model_name_validator
from .storage import artifact_store, source_key
from .validation import test_cases_schema_problems

logger = logging.getLogger(__name__)

# Given to the "data scientist" group by the groups migration.
CREATE_MODEL_PERMISSION = "registry.add_registeredmodel"
REGISTER_PERMISSION = "registry.add_modelversion"

LINEAGE_TEXT_FIELDS = {
    "source_repository": 512,
    "source_commit": 64,
    "dataset_uri": 1024,
    "dataset_version": 128,
    "training_job": 1024,
}
LINEAGE_KEYS = set(LINEAGE_TEXT_FIELDS) | {"parent", "metrics", "frameworks", "tags"}
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
MAX_LOG_LINES = 500
PARENT_PATTERN = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})[:/]v?(?P<version>\d+)$")


class DuplicateContent(Conflict):
    """The same archive (same sha256) is already registered for this model."""

    default_code = "duplicate_content"

    def __init__(self, message: str, *, existing: ModelVersion):
        super().__init__(message, field="archive")
        self.existing = existing

    def as_dict(self) -> dict:
        body = super().as_dict()
        body["existing_version"] = {
            "model": self.existing.model.name,
            "version": self.existing.version,
            "status": self.existing.status,
            "url": self.existing.get_absolute_url(),
        }
        return body


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def stuck_after() -> timedelta:
    """How long a step may show no sign of life before its version is requeued."""
    return timedelta(seconds=int(_setting("BERTH_VERSION_STUCK_SECONDS", 900)))


def max_attempts() -> int:
    return int(_setting("BERTH_VERSION_MAX_ATTEMPTS", 3))


def sweep_after() -> timedelta:
    """How old an unreferenced source archive must be before the sweep removes it: far longer
    than a registration takes between its copy and its commit."""
    return timedelta(hours=float(_setting("BERTH_ARTIFACT_SWEEP_AFTER_HOURS", 24)))


# -- models -----------------------------------------------------------------------------------


def _require(actor, permission: str, message: str) -> None:
    if actor is None or not getattr(actor, "is_authenticated", False):
        raise PermissionDenied("Log in first.")
    if not actor.has_perm(permission):
        raise PermissionDenied(message)


def _clean_tags(value: Any, *, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ServiceError("Tags must be a list of strings.", field=field)
    tags = []
    for tag in value:
        tag = tag.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ServiceError(
                f"Tag {tag[:20]!r}… is longer than {MAX_TAG_LENGTH} characters.", field=field
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ServiceError(f"At most {MAX_TAGS} tags.", field=field)
    return tags


@transaction.atomic
def model_create(
    *,
    actor,
    name: str,
    description: str = "",
    tags: list[str] | None = None,
    source: str = "api",
) -> RegisteredModel:
    """Register a new model name, owned by `actor`."""
    _require(actor, CREATE_MODEL_PERMISSION, "Only data scientists may create models.")
    name = (name or "").strip()
    if not name:
        raise ServiceError("Give the model a name.", field="name")
    try:
        model_name_validator(name)
    except ValidationError as exc:
        raise ServiceError(exc.messages[0], field="name") from exc
    if RegisteredModel.objects.filter(name=name).exists():
        raise Conflict(f"A model named {name!r} already exists.", field="name")
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                name=name,
                owner=actor,
                description=(description or "").strip(),
                tags=_clean_tags(tags, field="tags"),
            )
    except IntegrityError as exc:
        raise Conflict(f"A model named {name!r} already exists.", field="name") from exc
    audit_record(actor=actor, action="model.create", target=model, source=source)
    return model


@transaction.atomic
def model_update(
    *,
    actor,
    model: RegisteredModel,
    description: str | None = None,
    tags: list[str] | None = None,
    source: str = "api",
) -> RegisteredModel:
    """Change a model's description or tags (its name and versions never change)."""
    if actor != model.owner and not getattr(actor, "is_staff", False):
        raise PermissionDenied("Only the model's owner or an administrator may change it.")
    fields = []
    before = {"description": model.description, "tags": model.tags}
    if description is not None:
        model.description = description.strip()
        fields.append("description")
    if tags is not None:
        model.tags = _clean_tags(tags, field="tags")
        fields.append("tags")
    if fields:
        model.save(update_fields=[*fields, "updated_at"])
        audit_record(
            actor=actor, action="model.update", target=model, source=source, data={"before": before}
        )
    return model


# -- registration -------------------------------------------------------------------------------


def _resolve_parent(value: Any, *, model: RegisteredModel) -> ModelVersion | None:
    field = "lineage.parent"
    if value in (None, ""):
        return None
    model_name, number = model.name, None
    if isinstance(value, bool):
        raise ServiceError(
            "parent must be 'model:version', a version number or a mapping.", field=field
        )
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            number = int(text)
        else:
            match = PARENT_PATTERN.match(text)
            if not match:
                raise ServiceError(
                    f"parent {text!r} is not 'model:version' (e.g. 'iris:3') or a version number.",
                    field=field,
                )
            model_name, number = match["model"], int(match["version"])
    elif isinstance(value, dict):
        model_name = value.get("model", model.name)
        number = value.get("version")
        if (
            not isinstance(model_name, str)
            or not isinstance(number, int)
            or isinstance(number, bool)
        ):
            raise ServiceError(
                "parent needs 'model' (a name) and 'version' (a number).", field=field
            )
    else:
        raise ServiceError(
            "parent must be 'model:version', a version number or a mapping.", field=field
        )
    parent = (
        ModelVersion.objects.select_related("model")
        .filter(model__name=model_name, version=number)
        .first()
    )
    if parent is None:
        raise ServiceError(
            f"parent {model_name}:{number} is not a registered version.", field=field
        )
    return parent


def lineage_clean(*, model: RegisteredModel, lineage: dict | None) -> dict[str, Any]:
    """Check a lineage mapping and return the ModelVersion field values it sets.

    Keys: source_repository, source_commit, dataset_uri, dataset_version, training_job,
    parent ('model:version', a version number of the same model, or {model, version}),
    metrics ({name: number}), frameworks and tags (lists of strings).
    """
    if lineage is None:
        lineage = {}
    if not isinstance(lineage, dict):
        raise ServiceError("lineage must be a JSON object.", field="lineage")
    unknown = sorted(set(lineage) - LINEAGE_KEYS)
    if unknown:
        raise ServiceError(
            f"Unknown lineage field(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(LINEAGE_KEYS))}).",
            field="lineage",
        )
    values: dict[str, Any] = {}
    for key, limit in LINEAGE_TEXT_FIELDS.items():
        value = lineage.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ServiceError(f"{key} must be a string.", field=f"lineage.{key}")
        value = value.strip()
        if len(value) > limit:
            raise ServiceError(f"{key} is longer than {limit} characters.", field=f"lineage.{key}")
        values[key] = value
    if values["source_commit"] and not re.fullmatch(r"[A-Za-z0-9._/-]+", values["source_commit"]):
        raise ServiceError(
            "source_commit must be a commit id (letters, digits, '.', '_', '/', '-').",
            field="lineage.source_commit",
        )
    metrics = lineage.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ServiceError("metrics must map metric names to numbers.", field="lineage.metrics")
    clean_metrics = {}
    for name, number in metrics.items():
        if (
            not isinstance(number, int | float)
            or isinstance(number, bool)
            or not math.isfinite(number)
        ):
            raise ServiceError(f"metric {name!r} must be a finite number.", field="lineage.metrics")
        if not str(name).strip() or len(str(name)) > 100:
            raise ServiceError("metric names are 1 to 100 characters.", field="lineage.metrics")
        clean_metrics[str(name).strip()] = number
    values["metrics"] = clean_metrics
    values["frameworks"] = _clean_tags(lineage.get("frameworks"), field="lineage.frameworks")
    values["tags"] = _clean_tags(lineage.get("tags"), field="lineage.tags")
    values["parent"] = _resolve_parent(lineage.get("parent"), model=model)
    return values


def test_cases_clean(test_cases: Any) -> list[dict]:
    """Check the shape of test cases given at registration (models are checked by validation)."""
    if test_cases in (None, ""):
        return []
    problems = test_cases_schema_problems(test_cases, file="test_cases")
    if problems:
        raise ServiceError(
            " ".join(problem.message for problem in problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
            field="test_cases",
        )
    return test_cases


def _stage(archive: UploadedFile | Path | None, uri: str | None) -> StagedArtifact:
    if archive is not None and uri:
        raise ServiceError("Give either an archive or a URI, not both.", field="archive")
    if archive is None and not uri:
        raise ServiceError(
            "Upload an archive (.tar.gz, .tgz, .tar or .zip) or give its URI.", field="archive"
        )
    return stage_upload(archive) if archive is not None else stage_uri(uri or "")


def version_register(
    *,
    actor,
    model: RegisteredModel,
    archive: UploadedFile | Path | None = None,
    uri: str | None = None,
    lineage: dict | None,
    test_cases: list | None = None,
    description: str = "",
    version: int | None = None,
    source: str = "api",
) -> ModelVersion:
    """Register a new version of `model` from an archive or a URI, and queue its pipeline.

    The request is checked (lineage, test cases, archive type and size, duplicate content)
    before anything is stored. The archive is copied to the artifact store before the model
    row is locked (a large upload to S3 does not hold up other registrations of the model),
    and is deleted again if the registration then fails, so a refused registration leaves no
    file and no row (one whose process is killed mid-way leaves a file for `artifact_sweep`).
    `version`, when given, must be the next number: an existing one is a 409.
    """
    _require(actor, REGISTER_PERMISSION, "Only data scientists may register versions.")
    lineage_values = lineage_clean(model=model, lineage=lineage)
    cases = test_cases_clean(test_cases)
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise ServiceError("version must be a positive integer.", field="version")
    description = (description or "").strip()
    staged = _stage(archive, uri)
    store = artifact_store()
    stored_uri: str | None = None
    try:
        # Checked once before the copy, so a refused request costs no upload, and again
        # under the lock, where the answer is final.
        _next_number(model, staged, version)
        stored_uri = store.put(staged.path, source_key(model.name, staged.sha256, staged.suffix))
        with transaction.atomic():
            # Lock the model row: registrations of one model take numbers one at a time.
            locked = RegisteredModel.objects.select_for_update(of=("self",)).get(pk=model.pk)
            number = _next_number(locked, staged, version)
            try:
                with transaction.atomic():
                    created = ModelVersion.objects.create(
                        model=locked,
                        version=number,
                        description=description,
                        artifact_source=ArtifactSource.URI if uri else ArtifactSource.UPLOAD,
                        artifact_uri=stored_uri,
                        source_uri=staged.source_uri,
                        content_sha256=staged.sha256,
                        size_bytes=staged.size_bytes,
                        registered_by=actor,
                        test_cases=cases,
                        **lineage_values,
                    )
            except IntegrityError as exc:
                # The unique constraint backs the row lock up (SQLite has no row locks).
                raise Conflict(
                    f"{locked.name} v{number} was registered at the same time; try again.",
                    field="version",
                ) from exc
            audit_record(
                actor=actor,
                action="version.register",
                target=created,
                to_state=created.status,
                source=source,
                data={
                    "sha256": staged.sha256,
                    "size_bytes": staged.size_bytes,
                    "uri": staged.source_uri,
                },
            )
            _queue_step("validate", created.pk)
    except BaseException:
        if stored_uri is not None:
            try:
                store.delete(stored_uri)
            except Exception:  # the original error matters more than a failed cleanup
                logger.exception("Could not remove %s after a failed registration", stored_uri)
        raise
    finally:
        staged.discard()
    created.model = locked
    return created


def _next_number(model: RegisteredModel, staged: StagedArtifact, requested: int | None) -> int:
    """The number a new version of `model` with this content gets; DuplicateContent when the
    model already holds the content, Conflict or ServiceError when `requested` is not next."""
    existing = (
        ModelVersion.objects.select_related("model")
        .filter(model=model, content_sha256=staged.sha256)
        .order_by("version")
        .first()
    )
    if existing is not None:
        raise DuplicateContent(
            f"This archive (sha256 {staged.sha256[:12]}…) is already registered as "
            f"{model.name} v{existing.version}.",
            existing=existing,
        )
    latest = model.versions.aggregate(latest=Max("version"))["latest"] or 0
    number = latest + 1
    if requested is not None and requested != number:
        if requested <= latest and model.versions.filter(version=requested).exists():
            raise Conflict(
                f"{model.name} v{requested} already exists; the next version is {number}.",
                field="version",
            )
        raise ServiceError(
            f"Versions are numbered in order: the next version of {model.name} is {number}.",
            field="version",
        )
    return number


# -- pipeline -------------------------------------------------------------------------------------


def _queue_step(
    step: str, version_id: int, *, countdown: float | None = None, from_failed: bool = False
) -> None:
    """Queue a pipeline step once the current transaction commits."""
    from . import tasks

    task = {
        "validate": tasks.version_validate,
        "test": tasks.version_test,
        "package": tasks.version_package,
    }[step]
    kwargs = {"from_failed": True} if from_failed else {}

    def send() -> None:
        task.apply_async(args=[version_id], kwargs=kwargs, countdown=countdown)

    transaction.on_commit(send)


def _transition(
    version: ModelVersion,
    to_status: str,
    *,
    actor=None,
    reason: str = "",
    source: str = "worker",
    action: str = "version.transition",
    data: dict | None = None,
    fields: list[str] | tuple[str, ...] = (),
) -> ModelVersion:
    """Move `version` (locked by the caller) to `to_status`, with its audit record."""
    from_status = version.status
    if not transition_allowed(from_status, to_status):
        raise InvalidTransition(
            f"{version} cannot go from {from_status} to {to_status}.", field="status"
        )
    now = timezone.now()
    version.status = to_status
    version.status_changed_at = now
    version.heartbeat_at = now
    version.save(update_fields=["status", "status_changed_at", "heartbeat_at", *fields])
    audit_record(
        actor=actor,
        action=action,
        target=version,
        from_state=from_status,
        to_state=to_status,
        reason=reason,
        data=data,
        source=source,
    )
    return version


def version_log(*, version_id: int, message: str, step: str = "") -> None:
    """Append a progress line the version page shows live; also a heartbeat."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            ModelVersion.objects.select_for_update(of=("self",))
            .only("id", "progress_log")
            .filter(pk=version_id)
            .first()
        )
        if row is None:
            return
        entries = list(row.progress_log or [])[-(MAX_LOG_LINES - 1) :]
        entries.append({"at": now.isoformat(timespec="seconds"), "step": step, "message": message})
        ModelVersion.objects.filter(pk=version_id).update(progress_log=entries, heartbeat_at=now)
    logger.info("version %s %s: %s", version_id, step, message)


def _is_stale(version: ModelVersion, now=None) -> bool:
    now = now or timezone.now()
    last = max(filter(None, [version.status_changed_at, version.heartbeat_at]))
    return now - last > stuck_after()


def _step_begin(version_id: int, step: str, *, from_failed: bool = False) -> ModelVersion | None:
    """Claim `step` for this worker, or None when the version is not waiting for it.

    A version already in the step's running state is taken over only when it shows no sign
    of life (its worker died and the message came back); otherwise another worker has it.
    """
    spec = PIPELINE_STEPS[step]
    with transaction.atomic():
        version = (
            ModelVersion.objects.select_for_update(of=("self",))
            .select_related("model")
            .filter(pk=version_id)
            .first()
        )
        if version is None:
            logger.warning("version %s no longer exists; %s skipped", version_id, step)
            return None
        ready = {spec["ready"]}
        if from_failed and step == "test":
            ready.add(VersionStatus.TEST_FAILED)
        if version.status == spec["running"]:
            if not _is_stale(version):
                logger.info("version %s: %s already running elsewhere", version_id, step)
                return None
            if version.attempts >= max_attempts():
                _give_up(version, step, "the worker stopped responding each time")
                return None
            # Take the step over: count it as a new attempt from the ready state.
            _transition(
                version,
                spec["ready"],
                reason="The worker running this step stopped; taking it over.",
                action="version.requeue",
            )
        elif version.status not in ready:
            logger.info("version %s is %s; %s skipped", version_id, version.status, step)
            return None
        version.attempts += 1
        _transition(
            version,
            spec["running"],
            reason=f"{step.capitalize()} started (attempt {version.attempts} of {max_attempts()}).",
            fields=["attempts"],
        )
    version_log(
        version_id=version_id,
        step=step,
        message=f"{step.capitalize()} started, attempt {version.attempts}.",
    )
    return version


def _give_up(version: ModelVersion, step: str, why: str) -> None:
    message = f"{step.capitalize()} gave up after {version.attempts} attempts: {why}"
    version.problems = [*(version.problems or []), {"file": "", "line": None, "message": message}]
    version.attempts = 0
    _transition(
        version,
        STEP_GIVE_UP_STATUS[step],
        reason=message,
        action="version.give_up",
        fields=["problems", "attempts"],
    )


def _step_finish(
    version_id: int,
    step: str,
    to_status: str,
    *,
    fields: dict[str, Any],
    reason: str,
    results: list[TestResult] | None = None,
    next_step: str | None = None,
) -> ModelVersion | None:
    spec = PIPELINE_STEPS[step]
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update(of=("self",)).filter(pk=version_id).first()
        if version is None or version.status != spec["running"]:
            # Requeued or finished elsewhere meanwhile: this result is no longer wanted.
            return None
        for name, value in fields.items():
            setattr(version, name, value)
        version.attempts = 0
        if results is not None:
            TestResult.objects.filter(version=version).delete()
            for result in results:
                result.version = version
            TestResult.objects.bulk_create(results)
        _transition(version, to_status, reason=reason, fields=[*fields, "attempts"])
        if next_step:
            _queue_step(next_step, version.pk)
    return version


def _step_error(version_id: int, step: str, exc: BaseException) -> ModelVersion | None:
    """An unexpected error (storage, broker, Triton not starting): retry with a delay until the
    attempts run out, then give up with the error as a problem."""
    spec = PIPELINE_STEPS[step]
    message = f"{type(exc).__name__}: {exc}"
    logger.error("version %s %s failed: %s", version_id, step, message, exc_info=exc)
    version_log(version_id=version_id, step=step, message=f"Error: {message}")
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update(of=("self",)).filter(pk=version_id).first()
        if version is None or version.status != spec["running"]:
            return None
        if version.attempts >= max_attempts():
            _give_up(version, step, message)
            return version
        _transition(
            version,
            spec["ready"],
            reason=f"Attempt {version.attempts} failed ({message}); retrying.",
            action="version.retry",
        )
        _queue_step(step, version.pk, countdown=min(300, 5 * 2**version.attempts))
    return version


def _fetch_and_extract(version: ModelVersion, scratch: Path, log) -> Path:
    """The version's archive, checked against its sha256 and safely extracted; returns the
    extraction folder. Raises UnsafeArchive for archives that break the limits."""
    from toolkit.archive import ArchiveLimits, UnsafeArchive, safe_extract, sha256_file

    archive = scratch / "artifact"
    artifact_store().fetch(version.artifact_uri, archive)
    if sha256_file(archive) != version.content_sha256:
        raise UnsafeArchive(
            "the stored archive no longer matches the sha256 recorded at registration"
        )
    limits = ArchiveLimits(**settings.BERTH_ARCHIVE_LIMITS)
    extracted = scratch / "extracted"
    files = safe_extract(archive, extracted, limits)
    archive.unlink(missing_ok=True)
    log(f"Extracted {len(files)} files.")
    return extracted


def version_validate(*, version_id: int) -> ModelVersion | None:
    """Pipeline step 1: extract safely and check the repository; -> validated or invalid."""
    from toolkit.archive import UnsafeArchive

    from .validation import validate_repository

    step = "validate"
    version = _step_begin(version_id, step)
    if version is None:
        return None

    def log(message: str) -> None:
        version_log(version_id=version_id, step=step, message=message)

    scratch = scratch_dir(f"validate-{version_id}-")
    try:
        try:
            extracted = _fetch_and_extract(version, scratch, log)
        except UnsafeArchive as exc:
            problem = {
                "file": exc.member or "",
                "line": None,
                "message": f"Unsafe archive: {exc.message}",
            }
            log(f"Refused: {exc}")
            return _step_finish(
                version_id,
                step,
                VersionStatus.INVALID,
                fields={"problems": [problem], "repository_summary": {}},
                reason=f"Unsafe archive: {exc}",
            )
        report = validate_repository(extracted, extra_test_cases=version.test_cases)
        problems = [problem.as_dict() for problem in report.problems]
        if problems:
            log(f"{len(problems)} problem(s) found.")
            return _step_finish(
                version_id,
                step,
                VersionStatus.INVALID,
                fields={"problems": problems, "repository_summary": report.summary},
                reason=f"{len(problems)} problem(s) found.",
            )
        models = report.summary.get("models", [])
        log(
            f"Valid: {len(models)} model(s), entry model "
            f"{report.summary.get('entry_model')}, {len(report.test_cases)} test case(s)."
        )
        return _step_finish(
            version_id,
            step,
            VersionStatus.VALIDATED,
            fields={"problems": [], "repository_summary": report.summary},
            reason="No problems found.",
            next_step="test",
        )
    except Exception as exc:
        return _step_error(version_id, step, exc)
    finally:
        remove_tree(scratch)


def version_test(*, version_id: int, from_failed: bool = False) -> ModelVersion | None:
    """Pipeline step 2: run the test cases on a real Triton; -> tested or test_failed."""
    from .testing import run_tests
    from .validation import find_repository_root

    step = "test"
    version = _step_begin(version_id, step, from_failed=from_failed)
    if version is None:
        return None

    def log(message: str) -> None:
        version_log(version_id=version_id, step=step, message=message)

    scratch = scratch_dir(f"test-{version_id}-")
    try:
        extracted = _fetch_and_extract(version, scratch, log)
        root = find_repository_root(extracted) or extracted
        run = run_tests(root, summary=version.repository_summary, scratch=scratch, log=log)
        results = [
            TestResult(
                name=r.name[:200],
                kind=r.kind,
                outcome=r.outcome,
                message=r.message,
                inputs=r.inputs,
                expected=r.expected,
                actual=r.actual,
                duration_ms=r.duration_ms,
            )
            for r in run.results
        ]
        if run.passed:
            return _step_finish(
                version_id,
                step,
                VersionStatus.TESTED,
                fields={"problems": []},
                reason=f"{len(results)} test(s) passed.",
                results=results,
                next_step="package",
            )
        failed = [r for r in run.results if r.outcome != "passed"]
        reason = (
            run.problems[0]["message"]
            if run.problems
            else f"{len(failed)} of {len(results)} test(s) failed."
        )
        return _step_finish(
            version_id,
            step,
            VersionStatus.TEST_FAILED,
            fields={"problems": run.problems},
            reason=reason,
            results=results,
        )
    except Exception as exc:
        return _step_error(version_id, step, exc)
    finally:
        remove_tree(scratch)


def version_package(*, version_id: int) -> ModelVersion | None:
    """Pipeline step 3: build `<model>_<version>.tar.gz` and store it; -> packaged."""
    from .packaging import package_repository
    from .validation import find_repository_root

    step = "package"
    version = _step_begin(version_id, step)
    if version is None:
        return None

    def log(message: str) -> None:
        version_log(version_id=version_id, step=step, message=message)

    scratch = scratch_dir(f"package-{version_id}-")
    try:
        extracted = _fetch_and_extract(version, scratch, log)
        root = find_repository_root(extracted) or extracted
        built = package_repository(root, scratch / version.package_name)
        uri = artifact_store().put(
            built.path, f"{version.model.name}/{version.version}/{version.package_name}"
        )
        log(
            f"Stored {version.package_name} ({built.size_bytes} bytes, "
            f"sha256 {built.sha256[:12]}…) at {uri}."
        )
        return _step_finish(
            version_id,
            step,
            VersionStatus.PACKAGED,
            fields={
                "package_uri": uri,
                "package_sha256": built.sha256,
                "package_size_bytes": built.size_bytes,
                # A tested version's only problems are earlier packaging attempts that gave up.
                "problems": [],
            },
            reason=f"Packaged as {version.package_name}.",
        )
    except Exception as exc:
        return _step_error(version_id, step, exc)
    finally:
        remove_tree(scratch)


def artifact_sweep(*, older_than: timedelta | None = None, now=None) -> list[str]:
    """Remove source archives that no version references and that are older than
    `older_than`: what a registration leaves when its process is killed between the copy and
    the commit, or when a caller's own transaction rolls the row back. Returns their URIs."""
    cutoff = (now or timezone.now()) - (older_than if older_than is not None else sweep_after())
    store = artifact_store()
    referenced = set(ModelVersion.objects.values_list("artifact_uri", flat=True))
    removed = []
    for stored in store.sources():
        if stored.uri in referenced or stored.modified >= cutoff:
            continue
        store.delete(stored.uri)
        logger.info("Removed %s: no version references it", stored.uri)
        removed.append(stored.uri)
    return removed


def version_requeue_stuck(*, older_than: timedelta | None = None) -> list[int]:
    """Requeue versions whose step shows no sign of life for `older_than` (a worker killed
    mid-step); give up with a clear problem after the allowed attempts. Returns their ids."""
    cutoff = timezone.now() - (older_than if older_than is not None else stuck_after())
    candidates = list(
        ModelVersion.objects.filter(status__in=IN_PROGRESS_STATUSES, status_changed_at__lt=cutoff)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .values_list("pk", flat=True)
    )
    handled = []
    for version_id in candidates:
        with transaction.atomic():
            version = (
                ModelVersion.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk=version_id)
                .first()
            )
            if version is None or version.status not in IN_PROGRESS_STATUSES:
                continue
            last = max(filter(None, [version.status_changed_at, version.heartbeat_at]))
            if last >= cutoff:
                continue
            step = STEP_BY_RUNNING_STATUS[version.status]
            if version.attempts >= max_attempts():
                _give_up(version, step, "the worker stopped responding each time")
            else:
                _transition(
                    version,
                    PIPELINE_STEPS[step]["ready"],
                    reason=(
                        f"No sign of life since {last:%Y-%m-%d %H:%M:%S} UTC (worker lost?); "
                        f"requeued after attempt {version.attempts} of {max_attempts()}."
                    ),
                    action="version.requeue",
                )
                _queue_step(step, version.pk)
            handled.append(version_id)
    handled.extend(_resend_lost_steps(cutoff))
    return handled


def _resend_lost_steps(cutoff) -> list[int]:
    """A version waiting for its next step since before `cutoff` lost that step's message
    (a broker restart, a task that failed before it began). Send it again: steps are
    idempotent, so a message that was only slow is harmless."""
    waiting = list(
        ModelVersion.objects.filter(
            status__in=list(STEP_BY_READY_STATUS),
            status_changed_at__lt=cutoff,
            attempts__lt=max_attempts(),
        )
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .values_list("pk", "status")
    )
    for version_id, status in waiting:
        version_log(version_id=version_id, message="Step was not picked up; sent again.")
        _queue_step(STEP_BY_READY_STATUS[status], version_id)
    return [version_id for version_id, _ in waiting]


@transaction.atomic
def version_retry(*, actor, version: ModelVersion, source: str = "browser") -> ModelVersion:
    """Run the pipeline again from where `version` stopped: a failed test run, or a step that
    gave up or never got queued. Invalid and packaged versions are final."""
    version = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model")
        .get(pk=version.pk)
    )
    if (
        actor != version.registered_by
        and actor != version.model.owner
        and not getattr(actor, "is_staff", False)
    ):
        raise PermissionDenied(
            "Only who registered the version, the model's owner or an administrator may retry it."
        )
    step_for = {
        VersionStatus.REGISTERED: "validate",
        VersionStatus.VALIDATED: "test",
        VersionStatus.TEST_FAILED: "test",
        VersionStatus.TESTED: "package",
    }
    step = step_for.get(version.status)
    if step is None:
        raise InvalidTransition(
            f"A {version.get_status_display().lower()} version cannot be retried.", field="status"
        )
    version.attempts = 0
    version.save(update_fields=["attempts"])
    audit_record(
        actor=actor,
        action="version.retry",
        target=version,
        from_state=version.status,
        to_state=version.status,
        reason=f"{step.capitalize()} requested again.",
        source=source,
    )
    _queue_step(step, version.pk, from_failed=version.status == VersionStatus.TEST_FAILED)
    return version
