"""What every write of the deployments app shares: the permissions it checks, the rule for
who configures endpoints and environments, and queueing a task after commit."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from portal.errors import PermissionDenied, ServiceError

APPROVE_PERMISSION = "deployments.approve_promotionrequest"
DEPLOY_PERMISSION = "deployments.add_deployment"
CONFIGURE_PERMISSION = "deployments.configure_endpoint"
PROMOTION_PERMISSION = "deployments.add_promotionrequest"


def _require(actor, permission: str, message: str) -> None:
    if actor is None or not actor.is_authenticated or not actor.has_perm(permission):
        raise PermissionDenied(message)


def _on_commit_task(task_name: str, *args: Any) -> None:
    """Queue a Celery task once the current transaction commits (the rows it reads exist)."""

    def send() -> None:
        from .. import tasks

        getattr(tasks, task_name).delay(*args)

    transaction.on_commit(send)


CONFIGURE_REFUSAL = (
    "Only admins create and change endpoints and environments (permission "
    "deployments.configure_endpoint): what an endpoint maps to and whether an environment "
    "needs approval decide what reaches production."
)


def may_configure(actor) -> bool:
    """Whether `actor` may create and change endpoints and environments."""
    return bool(
        actor is not None and actor.is_authenticated and actor.has_perm(CONFIGURE_PERMISSION)
    )


def require_configure(actor) -> None:
    """Refuse, with the reason, an actor who may not configure endpoints and environments."""
    if not may_configure(actor):
        raise PermissionDenied(CONFIGURE_REFUSAL, code="admin_only")


def _validation_error(exc: ValidationError) -> ServiceError:
    if hasattr(exc, "error_dict"):
        field, errors = next(iter(exc.error_dict.items()))
        message = " ".join(m for e in errors for m in e.messages)
        return ServiceError(message, field=None if field == "__all__" else field)
    return ServiceError(" ".join(exc.messages))
