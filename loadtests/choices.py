"""States of a load test, the traffic patterns and mixes it offers, and the SLO's
percentiles."""

from django.db import models

from portal.choices import Source  # noqa: F401 - where a load test was started from


class LoadTestState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"


# awaiting_approval (production) -> pending -> running -> succeeded | failed | cancelled.
# A load test that needs an approver is rejected or approved before it is queued.
LOADTEST_TRANSITIONS: dict[str, set[str]] = {
    LoadTestState.AWAITING_APPROVAL: {
        LoadTestState.PENDING,
        LoadTestState.REJECTED,
        LoadTestState.CANCELLED,
    },
    LoadTestState.PENDING: {LoadTestState.RUNNING, LoadTestState.FAILED, LoadTestState.CANCELLED},
    LoadTestState.RUNNING: {
        LoadTestState.SUCCEEDED,
        LoadTestState.FAILED,
        LoadTestState.CANCELLED,
    },
    LoadTestState.SUCCEEDED: set(),
    LoadTestState.FAILED: set(),
    LoadTestState.CANCELLED: set(),
    LoadTestState.REJECTED: set(),
}
ACTIVE_LOADTEST_STATES = (
    LoadTestState.AWAITING_APPROVAL,
    LoadTestState.PENDING,
    LoadTestState.RUNNING,
)
FINISHED_LOADTEST_STATES = (
    LoadTestState.SUCCEEDED,
    LoadTestState.FAILED,
    LoadTestState.CANCELLED,
    LoadTestState.REJECTED,
)


class Pattern(models.TextChoices):
    STAIRS = "stairs", "Stairs of arrival rate"
    CONSTANT = "constant", "Constant rate (soak)"
    FIND_MAX = "find_max", "Find the maximum sustainable rate"


class Mix(models.TextChoices):
    ONE = "one", "One model"
    UNIFORM = "uniform", "Uniform over the live models"
    TOP_N = "top_n", "Skewed: a share to the top N models"
    ZIPF = "zipf", "Skewed: Zipf over the live models"
    REPLAY = "replay", "The endpoint's recent traffic shares"


class PayloadSource(models.TextChoices):
    TEST_CASES = "test_cases", "The versions' test cases"
    UPLOAD = "upload", "Uploaded request bodies (JSON lines)"


class SloPercentile(models.TextChoices):
    P95 = "p95", "p95"
    P99 = "p99", "p99"


class Verdict(models.TextChoices):
    """Whether the endpoint held the SLO: every stage (stairs, constant) or at least one
    (find the maximum)."""

    NONE = "", "No verdict"
    PASSED = "passed", "Held the SLO"
    FAILED = "failed", "Broke the SLO"
