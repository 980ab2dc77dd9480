"""The audit trail's vocabulary, defined once: where a change was asked for (`Source`) and
what it was (`AuditAction`). Every app records with these, so a search of the trail (the
admin's filter, an auditor's query) finds every change of one kind by one name.

The stored values are the trail's: they never change once written (rows keep them)."""

from django.db import models


class Source(models.TextChoices):
    """Where a change was asked for."""

    BROWSER = "browser", "Browser"
    API = "api", "API"
    ADMIN = "admin", "Django admin"
    WORKER = "worker", "Worker"


class AuditAction(models.TextChoices):
    """Every kind of change the audit trail records, as `<entity>.<what happened>`. A state
    change of a deployment or promotion request is named after the state it reached
    (`deployment.succeeded`); `AuditAction.of(entity, state)` names it and refuses a name
    that is not in this list."""

    # API tokens
    TOKEN_CREATE = "token.create", "API token created"
    TOKEN_REVOKE = "token.revoke", "API token revoked"
    # Registered models and their versions
    MODEL_CREATE = "model.create", "Model registered"
    MODEL_UPDATE = "model.update", "Model changed"
    VERSION_REGISTER = "version.register", "Version registered"
    VERSION_TRANSITION = "version.transition", "Version moved on in its pipeline"
    VERSION_RETRY = "version.retry", "Version retried"
    VERSION_REQUEUE = "version.requeue", "Version handed back to be resumed"
    VERSION_GIVE_UP = "version.give_up", "Version given up"
    # Runs on the engine
    RUN_CANCEL = "run.cancel", "Run cancelled"
    # Environments and endpoints
    ENVIRONMENT_CREATE = "environment.create", "Environment created"
    ENVIRONMENT_UPDATE = "environment.update", "Environment changed"
    ENVIRONMENT_APPROVAL_OFF = "environment.approval_off", "Environment's approval turned off"
    ENVIRONMENT_DELETE = "environment.delete", "Environment deleted"
    ENDPOINT_CREATE = "endpoint.create", "Endpoint created"
    ENDPOINT_UPDATE = "endpoint.update", "Endpoint changed"
    ENDPOINT_AUTOSCALING = "endpoint.autoscaling", "Endpoint's autoscaling changed"
    ENDPOINT_DELETE = "endpoint.delete", "Endpoint deleted"
    ENDPOINT_RECOVER = "endpoint.recover", "Failed SageMaker endpoint deleted to be recreated"
    ENDPOINT_DECOMMISSION = "endpoint.decommission", "Endpoint decommissioned in AWS"
    # Written once, by the data migration that gave every endpoint a target of its own
    # (source "migration"); kept so the trail's existing rows name a known action.
    ENDPOINT_REMAP = "endpoint.remap", "Endpoint remapped to its own target"
    # Deployments: created (deploy or rollback), then each state they reach
    DEPLOYMENT_DEPLOY = "deployment.deploy", "Deployment requested"
    DEPLOYMENT_ROLLBACK = "deployment.rollback", "Rollback requested"
    DEPLOYMENT_PENDING = "deployment.pending", "Deployment handed back to be resumed"
    DEPLOYMENT_RUNNING = "deployment.running", "Deployment running"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded", "Deployment succeeded"
    DEPLOYMENT_FAILED = "deployment.failed", "Deployment failed"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back", "Deployment rolled back"
    DEPLOYMENT_SUPERSEDED = "deployment.superseded", "Deployment superseded"
    # Promotion requests
    PROMOTION_REQUEST = "promotion.request", "Promotion requested"
    PROMOTION_APPROVED = "promotion.approved", "Promotion approved"
    PROMOTION_REJECTED = "promotion.rejected", "Promotion rejected"
    # Load tests: started, then each state they reach; a recommendation applied
    LOADTEST_START = "loadtest.start", "Load test started"
    LOADTEST_PENDING = "loadtest.pending", "Load test approved and queued"
    LOADTEST_REJECTED = "loadtest.rejected", "Load test rejected"
    LOADTEST_RUNNING = "loadtest.running", "Load test running"
    LOADTEST_SUCCEEDED = "loadtest.succeeded", "Load test finished"
    LOADTEST_FAILED = "loadtest.failed", "Load test failed"
    LOADTEST_CANCELLED = "loadtest.cancelled", "Load test cancelled"
    LOADTEST_APPLY = "loadtest.apply", "Load test's autoscaling recommendation applied"

    @classmethod
    def of(cls, entity: str, what: str) -> "AuditAction":
        """The action `<entity>.<what>` (a state or a kind); ValueError when it is none."""
        return cls(f"{entity}.{what}")
