"""States of a run and of its steps, and the levels of its log lines."""

from django.db import models


class RunState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# pending -> running -> succeeded | failed | cancelled. Running goes back to pending when its
# worker vanished (the sweep) or a step asked for another attempt (backoff); pending may be
# cancelled or failed (out of attempts) before any worker took it.
RUN_TRANSITIONS: dict[str, set[str]] = {
    RunState.PENDING: {RunState.RUNNING, RunState.FAILED, RunState.CANCELLED},
    RunState.RUNNING: {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.PENDING,
    },
    RunState.SUCCEEDED: set(),
    RunState.FAILED: set(),
    RunState.CANCELLED: set(),
}
ACTIVE_RUN_STATES = (RunState.PENDING, RunState.RUNNING)
FINISHED_RUN_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"


FINISHED_STEP_STATES = (StepState.DONE, StepState.SKIPPED)


class LogLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
