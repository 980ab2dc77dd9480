"""Celery tasks of the deployments app: they take ids and call a service.

`deployment_execute` is acknowledged late: a worker killed mid-deployment leaves the message
unacknowledged, the broker hands it out again, and the service resumes from the recorded
steps (the claim is the task id, which a redelivered message keeps). If the message is lost,
the beat task `deployment_resume_stuck` queues the deployment again or fails it cleanly."""

from __future__ import annotations

from celery import shared_task

from . import notifications, services
from .models import Deployment, PromotionRequest


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deployment_execute(self, deployment_id: int) -> str | None:
    claim = self.request.id or f"eager-{deployment_id}"
    deployment = services.deployment_execute(deployment_id=deployment_id, claim=claim)
    return deployment.state if deployment else None


@shared_task(ignore_result=True)
def deployment_resume_stuck() -> dict[str, list[int]]:
    return services.deployments_resume_stuck()


@shared_task(ignore_result=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def notify_approval_needed(promotion_id: int) -> dict | None:
    promotion = (
        PromotionRequest.objects.filter(pk=promotion_id)
        .select_related("version__model", "target_endpoint__environment", "requested_by")
        .first()
    )
    return notifications.notify_approval_needed(promotion) if promotion else None


@shared_task(ignore_result=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def notify_promotion_decided(promotion_id: int) -> dict | None:
    promotion = (
        PromotionRequest.objects.filter(pk=promotion_id)
        .select_related("version__model", "target_endpoint", "requested_by", "decided_by")
        .first()
    )
    return notifications.notify_promotion_decided(promotion) if promotion else None


@shared_task(ignore_result=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def notify_deployment_failed(deployment_id: int) -> dict | None:
    deployment = (
        Deployment.objects.filter(pk=deployment_id)
        .select_related("endpoint", "model", "version", "created_by", "promotion__requested_by")
        .first()
    )
    return notifications.notify_deployment_failed(deployment) if deployment else None
