"""The model registry: registered models, their immutable versions with lineage, and the
results of testing each version on a real Triton server."""

from collections.abc import Sequence

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .choices import (
    IN_PROGRESS_STATUSES,
    STATUS_BADGE,
    ArtifactSource,
    TestKind,
    TestOutcome,
    VersionStatus,
)

# Triton model names become folder names and SageMaker target model names
# (`<model>_<version>.tar.gz`): keep them to a safe alphabet.
model_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    "Use letters, digits, '_', '.' or '-', starting with a letter or digit (at most 100).",
)


# A status reason is one line: a CI log line, a table cell.
MAX_STATUS_REASON = 500


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _where(problem: dict) -> str:
    file, line = problem.get("file") or "", problem.get("line")
    if file and line:
        return f"{file}, line {line}: "
    return f"{file}: " if file else ""


def status_reason_for(
    *, problems: list[dict], failed_cases: Sequence[tuple[str, str]] = (), total_cases: int = 0
) -> str:
    """The one line that says why a version failed: its first problem (with how many there
    are), else its first failing test case (with how many of how many failed); empty when
    neither. `failed_cases` are (name, why) of the cases that did not pass, in run order."""
    if problems:
        first = problems[0]
        text = f"{_where(first)}{first.get('message', '')}"
        if len(problems) > 1:
            text = f"{len(problems)} problems; first: {text}"
    elif failed_cases:
        name, why = failed_cases[0]
        noun = "test case" if total_cases == 1 else "test cases"
        if len(failed_cases) == 1:
            text = f"1 of {total_cases} {noun} failed: `{name}`: {why}"
        else:
            text = f"{len(failed_cases)} of {total_cases} {noun} failed; first: `{name}`: {why}"
    else:
        return ""
    text = _one_line(text)
    if len(text) > MAX_STATUS_REASON:
        text = text[: MAX_STATUS_REASON - 1].rstrip() + "…"
    return text


class RegisteredModel(models.Model):
    """A model as data scientists know it: a named Triton model repository whose versions
    are registered over time."""

    name = models.CharField(max_length=100, unique=True, validators=[model_name_validator])
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="registered_models"
    )
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("registry:model-detail", kwargs={"name": self.name})


class ModelVersion(models.Model):
    """One immutable version of a registered model: its artifact (a Triton model
    repository), its lineage, and where it stands in validate -> test -> package."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField(help_text="Assigned in order per model, from 1.")
    status = models.CharField(
        max_length=16,
        choices=VersionStatus.choices,
        default=VersionStatus.REGISTERED,
        db_index=True,
    )
    status_changed_at = models.DateTimeField(default=timezone.now)
    status_reason = models.CharField(
        max_length=MAX_STATUS_REASON,
        blank=True,
        help_text="Why the version is invalid or its tests failed, in one line (the first "
        "problem or failing case); empty otherwise.",
    )
    description = models.TextField(blank=True)

    # Artifact: the uploaded archive (kept in the artifact store) or the URI it came from.
    artifact_source = models.CharField(max_length=8, choices=ArtifactSource.choices)
    artifact_uri = models.CharField(
        max_length=1024, help_text="Where the registered archive or repository is stored."
    )
    source_uri = models.CharField(
        max_length=1024, blank=True, help_text="URI given at registration."
    )
    content_sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.BigIntegerField()

    # Lineage.
    source_repository = models.CharField(max_length=512, blank=True)
    source_commit = models.CharField(max_length=64, blank=True, db_index=True)
    dataset_uri = models.CharField(max_length=1024, blank=True)
    dataset_version = models.CharField(
        max_length=128, blank=True, help_text="Version or content hash."
    )
    training_job = models.CharField(
        max_length=1024, blank=True, help_text="Training job id or URL."
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        help_text="The version this one was fine-tuned from.",
    )
    metrics = models.JSONField(default=dict, blank=True)
    frameworks = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="registered_versions"
    )
    registered_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # What validation found and what the repository holds.
    problems = models.JSONField(default=list, blank=True)
    repository_summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="Models, platforms and ensemble steps found by validation.",
    )
    test_cases = models.JSONField(default=list, blank=True)
    # The package: `<model>_<version>.tar.gz` for SageMaker multi-model endpoints.
    package_uri = models.CharField(max_length=1024, blank=True)
    package_sha256 = models.CharField(max_length=64, blank=True)
    package_size_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="unique_model_version"),
        ]
        indexes = [
            models.Index(fields=["model", "-version"]),
            models.Index(fields=["model", "content_sha256"]),
            # The API's list of all versions, newest first.
            models.Index(fields=["-registered_at", "-id"], name="registry_version_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    def get_absolute_url(self) -> str:
        return reverse(
            "registry:version-detail", kwargs={"name": self.model.name, "version": self.version}
        )

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS_STATUSES

    @property
    def attempts(self) -> int:
        """Attempts at the pipeline step in progress (0 when none is under way)."""
        from .plans import current_attempts

        return current_attempts(self)

    @property
    def progress_log(self) -> list[dict[str, str]]:
        """The pipeline's progress lines (its runs' logs): {"at", "step", "message"}."""
        from .plans import progress_log

        return progress_log(self)

    @property
    def status_badge(self) -> str:
        return STATUS_BADGE.get(self.status, "")

    @property
    def is_packaged(self) -> bool:
        return self.status == VersionStatus.PACKAGED and bool(self.package_uri)

    @property
    def package_name(self) -> str:
        """The SageMaker target model name of this version's package."""
        return f"{self.model.name}_{self.version}.tar.gz"


class TestResult(models.Model):
    """The outcome of one test case (or the smoke inference) run against a version on Triton."""

    # Not a pytest test class, whatever its name says.
    __test__ = False

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="test_results")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=TestKind.choices, default=TestKind.CASE)
    outcome = models.CharField(max_length=8, choices=TestOutcome.choices)
    message = models.TextField(blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    expected = models.JSONField(default=dict, blank=True)
    actual = models.JSONField(default=dict, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version", "id"]

    def __str__(self) -> str:
        return f"{self.version}: {self.name} {self.outcome}"
