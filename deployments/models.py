"""Environments, endpoints, deployments of packaged versions onto endpoints, what is live
where (and was, when), and promotion requests from staging to production."""

import re
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.urls import reverse

from registry.models import ModelVersion, RegisteredModel

from .choices import (
    ACTIVE_DEPLOYMENT_STATES,
    DEFAULT_GPU_INSTANCE_TYPE,
    Backend,
    DeploymentKind,
    DeploymentState,
    PromotionState,
    Source,
    gpu_instance_types,
)

# SageMaker's rule for endpoint names; local endpoints follow it too, so an endpoint can
# move between backends under the same name. What an endpoint maps to obeys it as well: a
# name, never a path (no '/', no '.').
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html
ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
endpoint_name_validator = RegexValidator(
    ENDPOINT_NAME_PATTERN,
    "Letters, digits and '-'; start and end with a letter or digit.",
)

# S3 bucket names and IAM role ARNs an environment's allow-lists may hold.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-arns
S3_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def s3_bucket_of(uri: str) -> str:
    """The bucket of `s3://bucket/key`, or "" when `uri` is not an S3 URI with a bucket."""
    parsed = urlparse(uri or "")
    return parsed.netloc if parsed.scheme == "s3" else ""


def _validate_list(value, pattern: re.Pattern, what: str) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError(f"A list of {what}s.")
    bad = [item for item in value if not pattern.match(item)]
    if bad:
        raise ValidationError(f"Not a valid {what}: {', '.join(bad[:5])}.")


def validate_bucket_list(value) -> None:
    _validate_list(value, S3_BUCKET_PATTERN, "S3 bucket name")


def validate_role_arn_list(value) -> None:
    _validate_list(value, ROLE_ARN_PATTERN, "IAM role ARN")


# CloudWatch alarm names as SageMaker's AutoRollbackConfiguration takes them: 1 to 10 names,
# each 1-255 characters, not blank.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AutoRollbackConfig.html
ALARM_NAME_PATTERN = re.compile(r"^(?!\s*$)[^\x00-\x1f]{1,255}$")
ROLLBACK_ALARMS_MAX = 10


def validate_alarm_list(value) -> None:
    _validate_list(value, ALARM_NAME_PATTERN, "CloudWatch alarm name")
    if len(value) > ROLLBACK_ALARMS_MAX:
        raise ValidationError(f"At most {ROLLBACK_ALARMS_MAX} alarms.")
    if len(set(value)) != len(value):
        raise ValidationError("Each alarm once.")


class Environment(models.Model):
    """A stage a model goes through (staging, production). Whether deploying to it needs an
    approved promotion request is data, not code; so are the S3 buckets and IAM roles its
    SageMaker endpoints may name, since the portal acts with its own AWS credentials for
    whatever an endpoint names. Only admins change environments (see services)."""

    name = models.SlugField(max_length=32, unique=True)
    label = models.CharField(max_length=64)
    requires_approval = models.BooleanField(
        default=False, help_text="Deployments here only start from an approved promotion request."
    )
    requires_load_test = models.BooleanField(
        default=False,
        help_text="Promotion requests to endpoints here need the version's passing load test "
        "on staging.",
    )
    loadtest_max_rps = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(1)],
        help_text="The highest arrival rate (requests/s) a load test may offer endpoints here.",
    )
    loadtest_max_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(1)],
        help_text="The longest a load test of endpoints here may generate load.",
    )
    order = models.PositiveSmallIntegerField(default=0, help_text="Position in the pipeline.")
    description = models.TextField(blank=True)
    allowed_s3_buckets = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_bucket_list],
        help_text="S3 buckets the SageMaker endpoints of this environment may load packages "
        "from (their S3 prefix). Empty: none.",
    )
    allowed_role_arns = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_role_arn_list],
        help_text="IAM role ARNs the SageMaker endpoints of this environment may run as. "
        "Empty: none.",
    )

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.label or self.name

    def sagemaker_refusals(self, *, s3_prefix: str, execution_role_arn: str) -> dict[str, str]:
        """Why a SageMaker endpoint of this environment may not name this S3 prefix or this
        role, per field; empty when both are on the allow-lists. Exact matches only: a
        pattern would let a look-alike bucket or role through."""
        refusals = {}
        bucket = s3_bucket_of(s3_prefix)
        if bucket and bucket not in (self.allowed_s3_buckets or []):
            refusals["s3_prefix"] = (
                f"The bucket {bucket} is not on the {self.name} environment's allow-list of S3 "
                "buckets; an admin adds it to the environment first."
            )
        if execution_role_arn and execution_role_arn not in (self.allowed_role_arns or []):
            refusals["execution_role_arn"] = (
                f"The role {execution_role_arn} is not on the {self.name} environment's "
                "allow-list of IAM roles; an admin adds it to the environment first."
            )
        return refusals


class Endpoint(models.Model):
    """A multi-model endpoint in one environment: a named endpoint of the local data plane,
    or a SageMaker multi-model endpoint (Triton image, GPU instances, autoscaling)."""

    name = models.CharField(max_length=63, unique=True, validators=[endpoint_name_validator])
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="endpoints")
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # What the endpoint maps to: the data plane's endpoint (local) or the SageMaker endpoint
    # (sagemaker). Stored resolved (never empty: save() fills in the name), so the database
    # holds it unique per backend, and a name, never a path.
    target_name = models.CharField(
        max_length=63,
        blank=True,
        validators=[endpoint_name_validator],
        help_text="The data-plane endpoint (local) or SageMaker endpoint (sagemaker) this "
        "endpoint deploys to; empty: its own name. Unique per backend.",
    )

    # Local data plane.
    memory_budget_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Memory the data plane may fill with loaded models."
    )

    # SageMaker.
    region = models.CharField(max_length=32, blank=True)
    instance_type = models.CharField(
        max_length=32, choices=gpu_instance_types, default=DEFAULT_GPU_INSTANCE_TYPE, blank=True
    )
    initial_instance_count = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)]
    )
    execution_role_arn = models.CharField(max_length=2048, blank=True)
    s3_prefix = models.CharField(
        max_length=1024,
        blank=True,
        help_text="s3://bucket/prefix/ the endpoint loads packages from.",
    )
    image_uri = models.CharField(max_length=512, blank=True, help_text="Triton serving image.")
    variant_name = models.CharField(max_length=63, default="AllTraffic")
    provisioned_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the SageMaker model, config and endpoint were created.",
    )

    # Autoscaling (SageMaker target tracking on SageMakerVariantInvocationsPerInstance).
    autoscaling_min_instances = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)]
    )
    autoscaling_max_instances = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)]
    )
    target_invocations_per_instance = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        help_text="Invocations per instance per minute.",
    )
    scale_in_cooldown_seconds = models.PositiveIntegerField(default=300)
    scale_out_cooldown_seconds = models.PositiveIntegerField(default=60)

    # How SageMaker rolls out a change of the endpoint's configuration (UpdateEndpoint's
    # DeploymentConfig): a blue/green update that shifts traffic all at once, as a canary
    # then the rest, or in linear steps; each step bakes `rollout_wait_seconds` while the
    # alarms are watched, and any alarm in ALARM rolls the update back. Bounds are AWS's.
    # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html
    rollout_traffic = models.CharField(
        max_length=16,
        choices=[
            ("ALL_AT_ONCE", "Blue/green, all at once"),
            ("CANARY", "Blue/green, canary then the rest"),
            ("LINEAR", "Blue/green, linear steps"),
        ],
        default="ALL_AT_ONCE",
        blank=True,
        help_text="How an endpoint change shifts traffic to the new fleet.",
    )
    rollout_step_type = models.CharField(
        max_length=16,
        choices=[("CAPACITY_PERCENT", "% of the fleet"), ("INSTANCE_COUNT", "instances")],
        default="CAPACITY_PERCENT",
        blank=True,
        help_text="What the canary or linear step size counts.",
    )
    rollout_step_size = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Canary or linear step: a canary is at most 50% of the fleet, a linear step "
        "10-50%.",
    )
    rollout_wait_seconds = models.PositiveIntegerField(
        default=0,
        blank=True,
        validators=[MaxValueValidator(3600)],
        help_text="Baking period after each traffic step, while the alarms are watched (0-3600 s).",
    )
    rollout_termination_wait_seconds = models.PositiveIntegerField(
        default=0,
        blank=True,
        validators=[MaxValueValidator(3600)],
        help_text="How long the old fleet stays after the last step (0-3600 s).",
    )
    rollout_timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(600), MaxValueValidator(28800)],
        help_text="Longest the whole update may take (600-28800 s); empty: SageMaker's default.",
    )
    rollback_alarms = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_alarm_list],
        help_text="CloudWatch alarms (up to 10, in the endpoint's region) that roll an update "
        "back when they go to ALARM.",
    )

    class Meta:
        ordering = ["environment__order", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(autoscaling_max_instances__gte=models.F("autoscaling_min_instances")),
                name="endpoint_autoscaling_max_gte_min",
            ),
            # Two portal endpoints on one data-plane or SageMaker endpoint would let a deployment
            # to one (staging, no approval) serve on the other (production).
            models.UniqueConstraint(
                fields=["backend", "target_name"],
                name="one_endpoint_per_backend_target",
                violation_error_message="Another endpoint of this backend maps to this name.",
            ),
            # SageMaker endpoint names are case-insensitive: `Prod` and `prod` are one there.
            models.UniqueConstraint(
                Lower("target_name"),
                condition=Q(backend="sagemaker"),
                name="one_endpoint_per_sagemaker_name_any_case",
                violation_error_message="Another endpoint has this SageMaker name in some case.",
            ),
            models.CheckConstraint(
                condition=Q(target_name__regex=ENDPOINT_NAME_PATTERN),
                name="endpoint_target_name_is_a_name",
                violation_error_message="What an endpoint maps to must be a name.",
            ),
        ]
        permissions = [
            (
                "configure_endpoint",
                "Can create and change endpoints and environments (what they map to, "
                "allow-lists, approval)",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.target_name:
            self.target_name = self.name
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "target_name"}
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("deployments:endpoint-detail", kwargs={"name": self.name})

    @property
    def dataplane_endpoint(self) -> str:
        """The name the API and forms used before `target_name`; local endpoints only."""
        return self.target_name if self.backend == Backend.LOCAL else ""

    @dataplane_endpoint.setter
    def dataplane_endpoint(self, value: str) -> None:
        self.target_name = value

    @property
    def requires_approval(self) -> bool:
        return self.environment.requires_approval

    @property
    def sagemaker_model_name(self) -> str:
        return f"{self.name}-model"

    @property
    def sagemaker_config_name(self) -> str:
        return f"{self.name}-config"


class Deployment(models.Model):
    """One packaged version put onto one endpoint (or, for a rollback, put back), executed by
    a Celery worker step by step. The steps and log lines are what the progress page shows."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="deployments")
    # Denormalised from `version` so the database can hold one active deployment per
    # (endpoint, model).
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="deployments")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    previous_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="What was live on the endpoint when the deployment was created.",
    )
    kind = models.CharField(
        max_length=16, choices=DeploymentKind.choices, default=DeploymentKind.DEPLOY
    )
    state = models.CharField(
        max_length=16,
        choices=DeploymentState.choices,
        default=DeploymentState.PENDING,
        db_index=True,
    )
    promotion = models.ForeignKey(
        "PromotionRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deployments",
    )
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.BROWSER)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)

    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    # Execution (claim, heartbeat, attempts, steps with their timing, log) is a run of the
    # deployment plan on the engine (runs.Run); `run`, `steps`, `attempts` and `log_lines`
    # read it.
    runs = GenericRelation("runs.Run", related_query_name="deployment")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "model"],
                condition=Q(state__in=ACTIVE_DEPLOYMENT_STATES),
                name="one_active_deployment_per_endpoint_model",
                violation_error_message="This model is already being deployed to this endpoint.",
            ),
        ]
        indexes = [models.Index(fields=["endpoint", "model", "-created_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.version} → {self.endpoint.name}"

    def get_absolute_url(self) -> str:
        return reverse("deployments:deployment-detail", kwargs={"pk": self.pk})

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_DEPLOYMENT_STATES

    @property
    def target_model(self) -> str:
        return self.version.package_name

    @property
    def run(self):
        """The run executing this deployment (from a prefetch of `runs` when there is one)."""
        runs = list(self.runs.all())
        return max(runs, key=lambda run: run.pk) if runs else None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The steps with their state, times and outcome, as the API has always shown them."""
        run = self.run
        return [step.as_dict() for step in run.steps.all()] if run else []

    @property
    def attempts(self) -> int:
        run = self.run
        return run.attempts if run else 0

    @property
    def log_lines(self):
        from runs.models import RunLogLine

        return RunLogLine.objects.filter(run__deployment=self).order_by("id")


class LiveVersion(models.Model):
    """The version of a model that serves on an endpoint now: the live pointer. It moves
    only after a deployment placed and smoke-tested the package."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="live_versions")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="live_on")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+")
    since = models.DateTimeField()

    class Meta:
        ordering = ["endpoint__name", "model__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "model"], name="one_live_version_per_endpoint_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}: {self.version}"


class LiveVersionHistory(models.Model):
    """A period during which one version served a model on an endpoint. Periods of one
    (endpoint, model) do not overlap; the open one (no `until`) is the live version."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="live_history")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+")
    since = models.DateTimeField(db_index=True)
    until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint__name", "model__name", "-since"]
        verbose_name_plural = "live version history"
        indexes = [models.Index(fields=["endpoint", "model", "since"])]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "model"],
                condition=Q(until__isnull=True),
                name="one_open_live_period_per_endpoint_model",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}: {self.version} from {self.since:%Y-%m-%d %H:%M:%S}"


class PromotionRequest(models.Model):
    """A request to deploy a version that succeeded on staging to a production endpoint,
    with its evidence. An approver other than the requester approves or rejects it;
    approval starts the production deployment."""

    version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="promotion_requests"
    )
    target_endpoint = models.ForeignKey(
        Endpoint, on_delete=models.PROTECT, related_name="promotion_requests"
    )
    staging_deployment = models.ForeignKey(
        Deployment,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The successful staging deployment this request rests on.",
    )
    state = models.CharField(
        max_length=16, choices=PromotionState.choices, default=PromotionState.PENDING, db_index=True
    )
    comment = models.TextField(blank=True)
    evidence = models.JSONField(
        default=dict,
        blank=True,
        help_text="Tests, staging deployment, load tests, lineage diff.",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="promotion_requests"
    )
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.BROWSER)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    deployment = models.ForeignKey(
        Deployment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The production deployment approval started.",
    )

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [("approve_promotionrequest", "Can approve or reject promotion requests")]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "target_endpoint"],
                condition=Q(state=PromotionState.PENDING),
                name="one_pending_promotion_per_version_endpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"Promote {self.version} to {self.target_endpoint.name}"

    def get_absolute_url(self) -> str:
        return reverse("deployments:promotion-detail", kwargs={"pk": self.pk})
