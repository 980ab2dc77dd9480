"""Writes of the deployments app: endpoints and environments, deployments and their
execution, rollbacks, promotion requests and their approval. Business rules live here once,
so the browser, the API and the admin obey the same ones (notably: the requester never
approves their own promotion request, and production deployments only start from an
approved request).

One module per sub-domain; every public name is importable from here
(`from deployments import services; services.deployment_start(...)`)."""

from .common import (
    APPROVE_PERMISSION,
    CONFIGURE_PERMISSION,
    CONFIGURE_REFUSAL,
    DEPLOY_PERMISSION,
    PROMOTION_PERMISSION,
    _on_commit_task,
    may_configure,
    require_configure,
)
from .deployments import (
    _set_state,
    deployment_cancel,
    deployment_execute,
    deployment_may_cancel,
    deployment_rollback,
    deployment_start,
    deployments_resume_stuck,
)
from .endpoints import (
    ENDPOINT_FIELDS,
    ENDPOINT_UPDATE_FIELDS,
    endpoint_check,
    endpoint_create,
    endpoint_decommission,
    endpoint_delete,
    endpoint_recover,
    endpoint_update,
    endpoint_update_autoscaling,
)
from .environments import (
    ENVIRONMENT_FIELDS,
    environment_check,
    environment_create,
    environment_delete,
    environment_update,
)
from .promotions import promotion_approve, promotion_reject, promotion_request_create
from .requests import AUTOSCALING_FIELDS, deployment_needs_approval, deployment_request

__all__ = [
    "APPROVE_PERMISSION",
    "AUTOSCALING_FIELDS",
    "CONFIGURE_PERMISSION",
    "CONFIGURE_REFUSAL",
    "DEPLOY_PERMISSION",
    "ENDPOINT_FIELDS",
    "ENDPOINT_UPDATE_FIELDS",
    "ENVIRONMENT_FIELDS",
    "PROMOTION_PERMISSION",
    "_on_commit_task",
    "_set_state",
    "deployment_cancel",
    "deployment_may_cancel",
    "deployment_execute",
    "deployment_needs_approval",
    "deployment_request",
    "deployment_rollback",
    "deployment_start",
    "deployments_resume_stuck",
    "endpoint_check",
    "endpoint_create",
    "endpoint_decommission",
    "endpoint_delete",
    "endpoint_recover",
    "endpoint_update",
    "endpoint_update_autoscaling",
    "environment_check",
    "environment_create",
    "environment_delete",
    "environment_update",
    "may_configure",
    "promotion_approve",
    "promotion_reject",
    "promotion_request_create",
    "require_configure",
]
