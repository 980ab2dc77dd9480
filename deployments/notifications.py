"""Telling people and systems: email through Django's mail backend, and webhooks signed with
HMAC-SHA256 over the exact body (header `X-Berth-Signature: sha256=<hex>`, as GitHub signs
its webhooks), so a receiver can check the message came from this portal.

Sent from Celery tasks queued on commit, never inside the transaction of the change."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import urllib3
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.mail import send_mail
from django.db.models import Q
from django.utils import timezone

from .models import Deployment, PromotionRequest

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Berth-Signature"
EVENT_HEADER = "X-Berth-Event"


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """Whether `signature` is `body`'s signature under `secret` (constant-time compare)."""
    return hmac.compare_digest(sign(body, secret), signature or "")


def webhook_send(event: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the event to every configured URL. A receiver that is down does not fail the
    change that caused the event: the outcome is logged and returned."""
    urls = list(settings.BERTH_WEBHOOK_URLS)
    if not urls:
        return []
    body = json.dumps(
        {"event": event, "sent_at": timezone.now().isoformat(), "data": payload},
        sort_keys=True,
        default=str,
    ).encode()
    headers = {"Content-Type": "application/json", EVENT_HEADER: event}
    secret = settings.BERTH_WEBHOOK_SECRET
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    http = urllib3.PoolManager(retries=urllib3.Retry(total=2, backoff_factor=0.5))
    outcomes = []
    for url in urls:
        try:
            response = http.request(
                "POST",
                url,
                body=body,
                headers=headers,
                timeout=float(settings.BERTH_WEBHOOK_TIMEOUT_SECONDS),
            )
            outcomes.append({"url": url, "status": response.status})
        except urllib3.exceptions.HTTPError as exc:
            logger.warning("Webhook %s to %s failed: %s", event, url, exc)
            outcomes.append({"url": url, "error": str(exc)})
    return outcomes


def approvers(*, exclude_user_id: int | None = None):
    """Active users who may approve promotion requests (through a group, directly, or as
    superusers)."""
    permission = Permission.objects.filter(
        codename="approve_promotionrequest", content_type__app_label="deployments"
    ).first()
    users = get_user_model().objects.filter(is_active=True)
    condition = Q(is_superuser=True)
    if permission is not None:
        condition |= Q(groups__permissions=permission) | Q(user_permissions=permission)
    users = users.filter(condition).distinct()
    if exclude_user_id is not None:
        users = users.exclude(pk=exclude_user_id)
    return users


def _link(path: str) -> str:
    return settings.BERTH_PORTAL_URL.rstrip("/") + path


def promotion_payload(promotion: PromotionRequest) -> dict[str, Any]:
    return {
        "id": promotion.pk,
        "state": promotion.state,
        "model": promotion.version.model.name,
        "version": promotion.version.version,
        "target_endpoint": promotion.target_endpoint.name,
        "requested_by": promotion.requested_by.get_username(),
        "comment": promotion.comment,
        "decided_by": promotion.decided_by.get_username() if promotion.decided_by else None,
        "decision_comment": promotion.decision_comment,
        "url": _link(promotion.get_absolute_url()),
    }


def deployment_payload(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.pk,
        "state": deployment.state,
        "kind": deployment.kind,
        "endpoint": deployment.endpoint.name,
        "model": deployment.model.name,
        "version": deployment.version.version,
        "error": deployment.error,
        "created_by": deployment.created_by.get_username() if deployment.created_by else None,
        "url": _link(deployment.get_absolute_url()),
    }


def notify_approval_needed(promotion: PromotionRequest) -> dict[str, Any]:
    recipients = [u.email for u in approvers(exclude_user_id=promotion.requested_by_id) if u.email]
    payload = promotion_payload(promotion)
    target = promotion.target_endpoint
    if recipients:
        send_mail(
            subject=f"[Berth] Approval needed: {promotion.version} to {target.name}",
            message=(
                f"{payload['requested_by']} asks to promote {promotion.version} to the "
                f"{target.environment} endpoint {target.name}.\n\n"
                f"Comment: {promotion.comment or '—'}\n\nReview it: {payload['url']}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    return {"emails": recipients, "webhooks": webhook_send("promotion.requested", payload)}


def notify_promotion_decided(promotion: PromotionRequest) -> dict[str, Any]:
    payload = promotion_payload(promotion)
    recipients = [promotion.requested_by.email] if promotion.requested_by.email else []
    if recipients:
        send_mail(
            subject=f"[Berth] Promotion {promotion.state}: {promotion.version} to "
            f"{promotion.target_endpoint.name}",
            message=(
                f"{payload['decided_by']} {promotion.state} your request to promote "
                f"{promotion.version} to {promotion.target_endpoint.name}.\n\n"
                f"Comment: {promotion.decision_comment or '—'}\n\n{payload['url']}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    return {"emails": recipients, "webhooks": webhook_send(f"promotion.{promotion.state}", payload)}


def notify_deployment_failed(deployment: Deployment) -> dict[str, Any]:
    payload = deployment_payload(deployment)
    requester = deployment.created_by
    if deployment.promotion_id and deployment.promotion.requested_by.email:
        # A production deployment fails for the person who asked for the promotion.
        requester = deployment.promotion.requested_by
    recipients = [requester.email] if requester is not None and requester.email else []
    if recipients:
        send_mail(
            subject=f"[Berth] Deployment failed: {deployment.version} to {deployment.endpoint}",
            message=(
                f"Deployment #{deployment.pk} of {deployment.version} to {deployment.endpoint} "
                f"failed.\n\n{deployment.error}\n\nSteps and log: {payload['url']}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    return {"emails": recipients, "webhooks": webhook_send("deployment.failed", payload)}
