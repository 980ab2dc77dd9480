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

# GPU instance types AWS supports for multi-model endpoints (which serve GPU models only
# through the Triton image): its published list, less ml.p2.xlarge, whose K80 (compute
# capability 3.7) the CUDA 12 Triton images no longer run on.
# https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-support.html#multi-model-support-gpu
# Anything else fails at CreateEndpointConfig ("instance type not supported for multi-model
# endpoints"), so the portal offers only these. AWS adds types now and then: an admin adds
# them through the BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES setting (a deployment-wide fact about
# AWS, not per-environment data: a setting needs no schema, form or migration to change).
MME_GPU_INSTANCE_TYPES: list[tuple[str, str]] = [
    ("ml.g4dn.xlarge", "ml.g4dn.xlarge — 1× T4 16 GB"),
    ("ml.g4dn.2xlarge", "ml.g4dn.2xlarge — 1× T4 16 GB"),
    ("ml.g4dn.4xlarge", "ml.g4dn.4xlarge — 1× T4 16 GB"),
    ("ml.g4dn.8xlarge", "ml.g4dn.8xlarge — 1× T4 16 GB"),
    ("ml.g4dn.16xlarge", "ml.g4dn.16xlarge — 1× T4 16 GB"),
    ("ml.g5.xlarge", "ml.g5.xlarge — 1× A10G 24 GB"),
    ("ml.g5.2xlarge", "ml.g5.2xlarge — 1× A10G 24 GB"),
    ("ml.g5.4xlarge", "ml.g5.4xlarge — 1× A10G 24 GB"),
    ("ml.g5.8xlarge", "ml.g5.8xlarge — 1× A10G 24 GB"),
    ("ml.g5.16xlarge", "ml.g5.16xlarge — 1× A10G 24 GB"),
    ("ml.p3.2xlarge", "ml.p3.2xlarge — 1× V100 16 GB"),
]
DEFAULT_GPU_INSTANCE_TYPE = "ml.g4dn.xlarge"


def gpu_instance_types() -> list[tuple[str, str]]:
    """The instance types a SageMaker endpoint may use: AWS's list plus those an admin added
    in settings. A callable, so the model field's choices follow the setting without a
    migration each time it changes."""
    from django.conf import settings

    known = {value for value, _ in MME_GPU_INSTANCE_TYPES}
    extra = [
        (value, f"{value} (added by an admin)")
        for value in getattr(settings, "BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES", [])
        if value and value not in known
    ]
    return [*MME_GPU_INSTANCE_TYPES, *extra]


# What forms and the API offer, read once at start-up (the setting is read from the
# environment at start-up too).
GPU_INSTANCE_TYPES: list[tuple[str, str]] = gpu_instance_types()
