"""Writes on the registry: models, version registration, retries of the pipeline and the
sweep of unreferenced source archives. The pipeline's steps live in `registry.plans` (runs
on the engine); registration and retries start them and carry the user who asked.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from portal.audit import audit_record
from portal.choices import AuditAction, Source
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError

from .artifacts import StagedArtifact, stage_upload, stage_uri
from .choices import ArtifactSource, VersionStatus
from .lineage import clean_tags, lineage_clean, test_cases_clean
from .models import ModelVersion, RegisteredModel, model_name_validator
from .plans import step_start
from .storage import artifact_store, source_key

logger = logging.getLogger(__name__)

# Given to the "data scientist" group by the groups migration.
CREATE_MODEL_PERMISSION = "registry.add_registeredmodel"
REGISTER_PERMISSION = "registry.add_modelversion"


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


def sweep_after() -> timedelta:
    """How old an unreferenced source archive must be before the sweep removes it: far longer
    than a registration takes between its copy and its commit."""
    return timedelta(hours=float(settings.BERTH_ARTIFACT_SWEEP_AFTER_HOURS))


# -- models -----------------------------------------------------------------------------------


def _require(actor, permission: str, message: str) -> None:
    if actor is None or not getattr(actor, "is_authenticated", False):
        raise PermissionDenied("Log in first.")
    if not actor.has_perm(permission):
        raise PermissionDenied(message)


@transaction.atomic
def model_create(
    *,
    actor,
    name: str,
    description: str = "",
    tags: list[str] | None = None,
    source: str = Source.API,
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
                tags=clean_tags(tags, field="tags"),
            )
    except IntegrityError as exc:
        raise Conflict(f"A model named {name!r} already exists.", field="name") from exc
    audit_record(actor=actor, action=AuditAction.MODEL_CREATE, target=model, source=source)
    return model


@transaction.atomic
def model_update(
    *,
    actor,
    model: RegisteredModel,
    description: str | None = None,
    tags: list[str] | None = None,
    source: str = Source.API,
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
        model.tags = clean_tags(tags, field="tags")
        fields.append("tags")
    if fields:
        model.save(update_fields=[*fields, "updated_at"])
        audit_record(
            actor=actor,
            action=AuditAction.MODEL_UPDATE,
            target=model,
            source=source,
            data={"before": before},
        )
    return model


# -- registration -------------------------------------------------------------------------------


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
    source: str = Source.API,
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
                action=AuditAction.VERSION_REGISTER,
                target=created,
                to_state=created.status,
                source=source,
                data={
                    "sha256": staged.sha256,
                    "size_bytes": staged.size_bytes,
                    "uri": staged.source_uri,
                },
            )
            step_start(version=created, step="validate")
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


@transaction.atomic
def version_retry(*, actor, version: ModelVersion, source: str = Source.BROWSER) -> ModelVersion:
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
    audit_record(
        actor=actor,
        action=AuditAction.VERSION_RETRY,
        target=version,
        from_state=version.status,
        to_state=version.status,
        reason=f"{step.capitalize()} requested again.",
        source=source,
    )
    step_start(version=version, step=step)
    return version
