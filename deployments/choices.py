"""States of deployments and promotion requests, the transitions allowed between them, and
the choices an endpoint offers (backends, GPU instance types)."""

from django.db import models

# Where a change was asked for: the audit trail's one enumeration, also stored on
# deployments and promotion requests.
from portal.choices import Source  # noqa: F401

# A deployment's steps and log lines are those of its run on the engine.
from runs.choices import LogLevel, StepState  # noqa: F401


class Backend(models.TextChoices):
    LOCAL = "local", "Local data plane (Triton)"
    SAGEMAKER = "sagemaker", "Amazon SageMaker multi-model endpoint"


class DeploymentState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    SUPERSEDED = "superseded", "Superseded"


# pending -> running -> succeeded | failed. A succeeded deployment stays succeeded while its
# version serves; it becomes superseded when a newer deployment replaces it, or rolled_back
# when a rollback returns the endpoint to the version before it. Running may go back to
# pending: a worker that lost the message hands the deployment back to be resumed.
DEPLOYMENT_TRANSITIONS: dict[str, set[str]] = {
    DeploymentState.PENDING: {DeploymentState.RUNNING, DeploymentState.FAILED},
    DeploymentState.RUNNING: {
        DeploymentState.SUCCEEDED,
        DeploymentState.FAILED,
        DeploymentState.PENDING,
    },
    DeploymentState.SUCCEEDED: {DeploymentState.SUPERSEDED, DeploymentState.ROLLED_BACK},
    DeploymentState.FAILED: set(),
    DeploymentState.ROLLED_BACK: set(),
    DeploymentState.SUPERSEDED: set(),
}

# At most one deployment in these states per (endpoint, model): a partial unique constraint.
ACTIVE_DEPLOYMENT_STATES = (DeploymentState.PENDING, DeploymentState.RUNNING)
FINISHED_DEPLOYMENT_STATES = (
    DeploymentState.SUCCEEDED,
    DeploymentState.FAILED,
    DeploymentState.ROLLED_BACK,
    DeploymentState.SUPERSEDED,
)


class DeploymentKind(models.TextChoices):
    DEPLOY = "deploy", "Deploy"
    ROLLBACK = "rollback", "Rollback"


class PromotionState(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


PROMOTION_TRANSITIONS: dict[str, set[str]] = {
    PromotionState.PENDING: {PromotionState.APPROVED, PromotionState.REJECTED},
    PromotionState.APPROVED: set(),
    PromotionState.REJECTED: set(),
}

# GPU instance types for SageMaker real-time multi-model endpoints with the Triton image.
# https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoints.html#multi-model-support
# (moto only knows an older list; tests use ml.g4dn.xlarge, which both accept).
GPU_INSTANCE_TYPES: list[tuple[str, str]] = [
    ("ml.g4dn.xlarge", "ml.g4dn.xlarge — 1× T4 16 GB"),
    ("ml.g4dn.2xlarge", "ml.g4dn.2xlarge — 1× T4 16 GB"),
    ("ml.g4dn.4xlarge", "ml.g4dn.4xlarge — 1× T4 16 GB"),
    ("ml.g4dn.8xlarge", "ml.g4dn.8xlarge — 1× T4 16 GB"),
    ("ml.g4dn.12xlarge", "ml.g4dn.12xlarge — 4× T4 64 GB"),
    ("ml.g4dn.16xlarge", "ml.g4dn.16xlarge — 1× T4 16 GB"),
    ("ml.g5.xlarge", "ml.g5.xlarge — 1× A10G 24 GB"),
    ("ml.g5.2xlarge", "ml.g5.2xlarge — 1× A10G 24 GB"),
    ("ml.g5.4xlarge", "ml.g5.4xlarge — 1× A10G 24 GB"),
    ("ml.g5.8xlarge", "ml.g5.8xlarge — 1× A10G 24 GB"),
    ("ml.g5.12xlarge", "ml.g5.12xlarge — 4× A10G 96 GB"),
    ("ml.g5.16xlarge", "ml.g5.16xlarge — 1× A10G 24 GB"),
    ("ml.g5.24xlarge", "ml.g5.24xlarge — 4× A10G 96 GB"),
    ("ml.g5.48xlarge", "ml.g5.48xlarge — 8× A10G 192 GB"),
    ("ml.g6.xlarge", "ml.g6.xlarge — 1× L4 24 GB"),
    ("ml.g6.2xlarge", "ml.g6.2xlarge — 1× L4 24 GB"),
    ("ml.g6.4xlarge", "ml.g6.4xlarge — 1× L4 24 GB"),
    ("ml.g6.8xlarge", "ml.g6.8xlarge — 1× L4 24 GB"),
    ("ml.g6.12xlarge", "ml.g6.12xlarge — 4× L4 96 GB"),
    ("ml.g6.48xlarge", "ml.g6.48xlarge — 8× L4 192 GB"),
    ("ml.g6e.xlarge", "ml.g6e.xlarge — 1× L40S 48 GB"),
    ("ml.g6e.12xlarge", "ml.g6e.12xlarge — 4× L40S 192 GB"),
    ("ml.p3.2xlarge", "ml.p3.2xlarge — 1× V100 16 GB"),
    ("ml.p3.8xlarge", "ml.p3.8xlarge — 4× V100 64 GB"),
    ("ml.p3.16xlarge", "ml.p3.16xlarge — 8× V100 128 GB"),
    ("ml.p4d.24xlarge", "ml.p4d.24xlarge — 8× A100 320 GB"),
    ("ml.p5.48xlarge", "ml.p5.48xlarge — 8× H100 640 GB"),
]
DEFAULT_GPU_INSTANCE_TYPE = "ml.g4dn.xlarge"
