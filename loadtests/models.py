"""A load test of an endpoint: what was asked (its configuration, bounded and validated in
loadtests.config), its run on the engine, one row per stage of offered rate with what was
measured, and the recommendation derived from them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models
from django.urls import reverse

from deployments.models import Deployment, Endpoint
from registry.models import ModelVersion

from .choices import ACTIVE_LOADTEST_STATES, LoadTestState, Source, Verdict


class LoadTest(models.Model):
    """One load test of one endpoint: asked for (confirmed, perhaps approved), carried out
    as a run of loadtests.plans.LoadTestPlan, its stages measured, a recommendation derived.
    One at a time per endpoint: two would measure each other."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="load_tests")
    deployment = models.ForeignKey(
        Deployment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="load_tests",
        help_text="The deployment the test was started from, if any.",
    )
    version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="load_tests",
        help_text="The version under test: the deployment's, or the only model of the mix. "
        "Promotion requests show its latest load test on staging.",
    )
    state = models.CharField(
        max_length=20,
        choices=LoadTestState.choices,
        default=LoadTestState.PENDING,
        db_index=True,
    )
    verdict = models.CharField(max_length=8, choices=Verdict.choices, default="", blank=True)
    #: What was asked, as loadtests.config.LoadTestConfig.as_dict() wrote it (validated).
    config = models.JSONField(default=dict)
    #: Uploaded request bodies (JSON lines), bounded by BERTH_LOADTEST_MAX_UPLOAD_BYTES.
    payload_upload = models.BinaryField(null=True, blank=True, editable=False)
    #: The recommendation and the summary (max sustainable rate, target, instances).
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="load_tests"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.BROWSER)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: Set when the recommendation was applied to the endpoint's autoscaling.
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    #: What the generators are given (requests with their bodies and weights, stages),
    #: resolved once by the plan's prepare step so that every part of a fan-out offers the
    #: same traffic.
    generator_spec = models.JSONField(default=dict, blank=True, editable=False)
    #: The common start (epoch seconds) of the generators of a fan-out.
    generation_start_at = models.FloatField(null=True, blank=True, editable=False)
    #: Set by the coordinating step when the parts of a fan-out must stop (find-max broke
    #: the SLO, the test was cancelled or failed); the parts poll it.
    stop_requested = models.BooleanField(default=False)
    # Execution (claim, heartbeat, steps, log) is a run of LoadTestPlan on the engine.
    runs = GenericRelation("runs.Run", related_query_name="load_test")

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("approve_loadtest", "Can approve load tests of production endpoints")]
        constraints = [
            # One load test at a time per endpoint: two would measure each other.
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(state__in=ACTIVE_LOADTEST_STATES),
                name="one_active_load_test_per_endpoint",
                violation_error_message="A load test of this endpoint is already active.",
            ),
        ]

    def __str__(self) -> str:
        return f"Load test #{self.pk} of {self.endpoint.name}"

    def get_absolute_url(self) -> str:
        return reverse("loadtests:detail", kwargs={"pk": self.pk})

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_LOADTEST_STATES

    @property
    def requested_by(self):
        """Who asked for the test (the approval pages name the requester)."""
        return self.created_by

    @property
    def run(self):
        """The run carrying out this test (from a prefetch of `runs` when there is one)."""
        runs = list(self.runs.all())
        return max(runs, key=lambda run: run.pk) if runs else None


class LoadTestStage(models.Model):
    """One stage of offered arrival rate and what it measured, all generators merged.
    Written while the stage runs (so the page shows it live) and finished when it ends."""

    load_test = models.ForeignKey(LoadTest, on_delete=models.CASCADE, related_name="stages")
    position = models.PositiveSmallIntegerField()
    offered_rps = models.FloatField()
    planned_seconds = models.FloatField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    finished = models.BooleanField(default=False)
    duration_seconds = models.FloatField(default=0)
    sent = models.PositiveBigIntegerField(default=0)
    completed = models.PositiveBigIntegerField(default=0)
    ok = models.PositiveBigIntegerField(default=0)
    #: Failed requests by status code or kind ("503", "timeout", "connect").
    errors = models.JSONField(default=dict, blank=True)
    achieved_rps = models.FloatField(default=0)
    p50_ms = models.FloatField(null=True, blank=True)
    p90_ms = models.FloatField(null=True, blank=True)
    p95_ms = models.FloatField(null=True, blank=True)
    p99_ms = models.FloatField(null=True, blank=True)
    max_ms = models.FloatField(null=True, blank=True)
    mean_ms = models.FloatField(null=True, blank=True)
    #: The stage's merged HDR histogram of latencies (microseconds), as loadgen encodes it.
    histogram = models.TextField(blank=True)
    cache_hit_ratio = models.FloatField(null=True, blank=True)
    model_loads = models.PositiveIntegerField(null=True, blank=True)
    #: The endpoint's resources during the stage (local: the host; SageMaker: CloudWatch).
    cpu_percent = models.FloatField(null=True, blank=True)
    gpu_percent = models.FloatField(null=True, blank=True)
    memory_percent = models.FloatField(null=True, blank=True)
    #: The generators' own CPU seconds and whether they kept to their schedule.
    generator_cpu_seconds = models.FloatField(default=0)
    schedule_lag_p99_ms = models.FloatField(null=True, blank=True)
    on_schedule = models.BooleanField(default=True)
    slo_met = models.BooleanField(null=True)

    class Meta:
        ordering = ["load_test", "position"]
        constraints = [
            models.UniqueConstraint(fields=["load_test", "position"], name="one_stage_per_position")
        ]

    def __str__(self) -> str:
        return f"Stage {self.position} at {self.offered_rps:g} req/s"

    @property
    def error_count(self) -> int:
        return sum(int(n) for n in (self.errors or {}).values())

    @property
    def error_rate(self) -> float:
        return self.error_count / self.completed if self.completed else 0.0


class LoadTestPartStage(models.Model):
    """What one generator of a fan-out (part 1..N-1, each in its own Celery worker) measured
    in one stage: the coordinating step merges the parts' histograms and counts into the
    stage's LoadTestStage. `heartbeat_at` shows the part is alive; `done` that it stopped."""

    load_test = models.ForeignKey(LoadTest, on_delete=models.CASCADE, related_name="part_stages")
    part = models.PositiveSmallIntegerField()
    #: -1: the part's own row (started, alive, done, error); 0..: its stages.
    position = models.SmallIntegerField()
    sent = models.PositiveBigIntegerField(default=0)
    completed = models.PositiveBigIntegerField(default=0)
    ok = models.PositiveBigIntegerField(default=0)
    errors = models.JSONField(default=dict, blank=True)
    histogram = models.TextField(blank=True)
    cpu_seconds = models.FloatField(default=0)
    schedule_lag_p99_ms = models.FloatField(null=True, blank=True)
    on_schedule = models.BooleanField(default=True)
    by_model = models.JSONField(default=dict, blank=True)
    done = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["load_test", "part", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["load_test", "part", "position"], name="one_part_stage_per_position"
            )
        ]

    def __str__(self) -> str:
        return f"Part {self.part}, stage {self.position} of load test #{self.load_test_id}"
