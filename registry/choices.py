"""States of a model version and the transitions allowed between them."""

from django.db import models


class VersionStatus(models.TextChoices):
    REGISTERED = "registered", "Registered"
    VALIDATING = "validating", "Validating"
    INVALID = "invalid", "Invalid"
    VALIDATED = "validated", "Validated"
    TESTING = "testing", "Testing"
    TEST_FAILED = "test_failed", "Test failed"
    TESTED = "tested", "Tested"
    PACKAGING = "packaging", "Packaging"
    PACKAGED = "packaged", "Packaged"


# registered -> validating -> invalid | validated -> testing -> test_failed | tested -> packaged.
# A step's "in progress" state may go back to the state before it, so that a worker killed
# mid-step leaves a version that is retried, not stuck.
VERSION_TRANSITIONS: dict[str, set[str]] = {
    VersionStatus.REGISTERED: {VersionStatus.VALIDATING},
    VersionStatus.VALIDATING: {
        VersionStatus.INVALID,
        VersionStatus.VALIDATED,
        VersionStatus.REGISTERED,
    },
    VersionStatus.INVALID: set(),
    VersionStatus.VALIDATED: {VersionStatus.TESTING},
    VersionStatus.TESTING: {
        VersionStatus.TEST_FAILED,
        VersionStatus.TESTED,
        VersionStatus.VALIDATED,
    },
    VersionStatus.TEST_FAILED: {VersionStatus.TESTING},
    VersionStatus.TESTED: {VersionStatus.PACKAGING},
    VersionStatus.PACKAGING: {VersionStatus.PACKAGED, VersionStatus.TESTED},
    VersionStatus.PACKAGED: set(),
}

IN_PROGRESS_STATUSES = {VersionStatus.VALIDATING, VersionStatus.TESTING, VersionStatus.PACKAGING}
FAILED_STATUSES = {VersionStatus.INVALID, VersionStatus.TEST_FAILED}

# The pipeline as data: each step starts from one state, runs in another, and may go back to
# where it started when its worker died (see registry.plans).
PIPELINE_STEPS: dict[str, dict[str, str]] = {
    "validate": {"ready": VersionStatus.REGISTERED, "running": VersionStatus.VALIDATING},
    "test": {"ready": VersionStatus.VALIDATED, "running": VersionStatus.TESTING},
    "package": {"ready": VersionStatus.TESTED, "running": VersionStatus.PACKAGING},
}
STEP_BY_RUNNING_STATUS = {spec["running"]: name for name, spec in PIPELINE_STEPS.items()}
STEP_BY_READY_STATUS = {spec["ready"]: name for name, spec in PIPELINE_STEPS.items()}
# Where a step that gave up after too many attempts leaves the version.
STEP_GIVE_UP_STATUS = {
    "validate": VersionStatus.INVALID,
    "test": VersionStatus.TEST_FAILED,
    # Packaging failures are the artifact store's, not the model's: the version stays tested
    # and can be packaged again with version_retry.
    "package": VersionStatus.TESTED,
}

# Badge colour per state, for templates.
STATUS_BADGE = {
    VersionStatus.REGISTERED: "info",
    VersionStatus.VALIDATING: "warn",
    VersionStatus.INVALID: "bad",
    VersionStatus.VALIDATED: "info",
    VersionStatus.TESTING: "warn",
    VersionStatus.TEST_FAILED: "bad",
    VersionStatus.TESTED: "info",
    VersionStatus.PACKAGING: "warn",
    VersionStatus.PACKAGED: "ok",
}


class ArtifactSource(models.TextChoices):
    UPLOAD = "upload", "Uploaded archive"
    URI = "uri", "URI"


class TestOutcome(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    ERROR = "error", "Error"


class TestKind(models.TextChoices):
    CASE = "case", "Test case"
    SMOKE = "smoke", "Smoke inference on zero inputs"
