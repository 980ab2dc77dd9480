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
    VersionStatus.VALIDATING: {VersionStatus.INVALID, VersionStatus.VALIDATED, VersionStatus.REGISTERED},
    VersionStatus.INVALID: set(),
    VersionStatus.VALIDATED: {VersionStatus.TESTING},
    VersionStatus.TESTING: {VersionStatus.TEST_FAILED, VersionStatus.TESTED, VersionStatus.VALIDATED},
    VersionStatus.TEST_FAILED: {VersionStatus.TESTING},
    VersionStatus.TESTED: {VersionStatus.PACKAGING},
    VersionStatus.PACKAGING: {VersionStatus.PACKAGED, VersionStatus.TESTED},
    VersionStatus.PACKAGED: set(),
}

IN_PROGRESS_STATUSES = {VersionStatus.VALIDATING, VersionStatus.TESTING, VersionStatus.PACKAGING}
FAILED_STATUSES = {VersionStatus.INVALID, VersionStatus.TEST_FAILED}


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
