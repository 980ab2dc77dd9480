"""Celery tasks of the deployments app: they take ids and call a service.

A deployment runs on the engine (`runs.tasks.run_execute`, queued when it is created; the
beat task `runs.tasks.runs_sweep` resumes or fails runs whose worker vanished). The two
tasks below remain for messages queued before and for callers that think in deployments."""

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
