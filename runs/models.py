"""Runs of long-running work: a plan of named steps carried out by Celery workers, with its
claim, heartbeat, attempts, per-step timing and log. Whatever the work is about (a
deployment, a model version, a load test) is the run's subject, through a generic relation,
so one engine, one partial and one API shape serve every kind of work."""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .choices import ACTIVE_RUN_STATES, FINISHED_STEP_STATES, LogLevel, RunState, StepState


class Run(models.Model):
    """One execution of a plan for one subject. `claimed_by` names the task message that
    holds it; it is taken by a conditional UPDATE, so a second worker cannot take a run
    that shows life (see runs.runner). `not_before` holds back the next attempt (backoff)."""

    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.PositiveBigIntegerField()
    subject = GenericForeignKey("content_type", "object_id")
    plan = models.CharField(max_length=64, help_text="The registered plan this run carries out.")
    state = models.CharField(
        max_length=16, choices=RunState.choices, default=RunState.PENDING, db_index=True
    )
    claimed_by = models.CharField(max_length=128, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="No worker starts the next attempt before this."
    )
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # Not auto_now_add: the data migration of older logs keeps their times.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["content_type", "object_id"]),
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(state__in=ACTIVE_RUN_STATES),
                name="run_active_heartbeat",
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} ({self.plan}, {self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES

    @property
    def duration(self):
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


class RunStep(models.Model):
    """One named step of a run, with its outcome and timing. A step done (or skipped) is
    not run again when the run resumes on another attempt."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=64)
    label = models.CharField(max_length=128, blank=True)
    state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="one_step_name_per_run"),
            models.UniqueConstraint(fields=["run", "position"], name="one_step_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STEP_STATES

    @property
    def duration(self):
        """How long the step ran (so far, while it runs)."""
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def duration_seconds(self) -> float | None:
        duration = self.duration
        return round(duration.total_seconds(), 3) if duration is not None else None

    def as_dict(self) -> dict:
        """The step as the log APIs have always shown it (times as ISO 8601 text)."""
        item = {"name": self.name, "label": self.label, "state": self.state}
        if self.started_at is not None:
            item["started_at"] = self.started_at.isoformat()
        if self.finished_at is not None:
            item["finished_at"] = self.finished_at.isoformat()
        if self.error:
            item["error"] = self.error
        if self.state in (*FINISHED_STEP_STATES, StepState.FAILED) or self.result:
            item["result"] = self.result
        return item


class RunLogLine(models.Model):
    """One log line of a run, in a table of its own: appending one is an INSERT that locks
    neither the subject's row nor (beyond a key-share lock) the run's. Clients follow a log
    by asking for the lines after an id."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_lines")
    created_at = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, choices=LogLevel.choices, default=LogLevel.INFO)
    step = models.CharField(max_length=64, blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%H:%M:%S} {self.level} {self.message[:80]}"
