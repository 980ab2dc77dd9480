"""Promotion requests and their decision: four eyes in front of production."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit import audit_record, state_transition
from portal.choices import AuditAction
from portal.errors import Conflict, PermissionDenied, ServiceError
from registry.choices import VersionStatus
from registry.models import ModelVersion

from .. import selectors
from ..backends import backend_for
from ..choices import PROMOTION_TRANSITIONS, PromotionState, Source
from ..models import Endpoint, LiveVersion, PromotionRequest
from .common import APPROVE_PERMISSION, PROMOTION_PERMISSION, _on_commit_task, _require
from .deployments import _create_deployment


@transaction.atomic
def promotion_request_create(
    *,
    actor,
    version: ModelVersion,
    target_endpoint: Endpoint,
    comment: str = "",
    source: str = Source.BROWSER,
) -> PromotionRequest:
    """Ask for `version` to be deployed to a production endpoint. The version must have
    succeeded on a staging endpoint; the evidence (its tests, that deployment, load tests,
    the lineage diff against production) is attached here."""
    _require(actor, PROMOTION_PERMISSION, "You may not request promotions.")
    target_endpoint = Endpoint.objects.select_related("environment").get(pk=target_endpoint.pk)
    if not target_endpoint.environment.requires_approval:
        raise ServiceError(
            f"{target_endpoint.name} needs no approval: deploy to it directly.",
            field="target_endpoint",
        )
    staging = selectors.staging_success(version=version)
    if staging is None:
        raise ServiceError(
            f"{version} has not been deployed successfully to a staging endpoint yet.",
            field="version",
            code="not_on_staging",
        )
    if version.status != VersionStatus.PACKAGED:
        raise ServiceError(f"{version} is not packaged.", field="version", code="not_packaged")
    live = LiveVersion.objects.filter(endpoint=target_endpoint, model=version.model).first()
    if live is not None and live.version_id == version.pk:
        raise Conflict(f"{version} is already live on {target_endpoint.name}.", code="already_live")
    evidence = selectors.promotion_evidence(
        version=version, staging_deployment=staging, target_endpoint=target_endpoint
    )
    evidence["load_tests"] = _load_test_evidence(
        version=version, staging=staging, target_endpoint=target_endpoint
    )
    try:
        with transaction.atomic():
            promotion = PromotionRequest.objects.create(
                version=version,
                target_endpoint=target_endpoint,
                staging_deployment=staging,
                comment=comment.strip(),
                evidence=evidence,
                requested_by=actor,
                source=source,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"A promotion of {version} to {target_endpoint.name} is already waiting for approval.",
            code="promotion_pending",
        ) from exc
    audit_record(
        actor=actor,
        action=AuditAction.PROMOTION_REQUEST,
        target=promotion,
        to_state=PromotionState.PENDING,
        reason=promotion.comment,
        data={"version": version.version, "endpoint": target_endpoint.name},
        source=source,
    )
    _on_commit_task("notify_approval_needed", promotion.pk)
    return promotion


def _load_test_evidence(*, version: ModelVersion, staging, target_endpoint: Endpoint) -> list[dict]:
    """The version's latest measured load test on its staging endpoint's environment (see
    `loadtest_latest_for_version`), for the evidence; refused when the target environment
    `requires_load_test` and that test did not hold its SLO."""
    from loadtests import selectors as loadtest_selectors

    latest = loadtest_selectors.loadtest_latest_for_version(
        version=version, environment=staging.endpoint.environment
    )
    if target_endpoint.environment.requires_load_test and not loadtest_selectors.loadtest_passed(
        latest
    ):
        why = (
            "none was run"
            if latest is None
            else f"the latest (#{latest.pk}) is {latest.get_state_display().lower()}"
            + (f" with verdict {latest.get_verdict_display().lower()}" if latest.verdict else "")
        )
        raise ServiceError(
            f"{target_endpoint.environment} needs a passing load test of {version} on "
            f"{staging.endpoint.environment} before promotion; {why}.",
            field="load_test",
            code="load_test_required",
        )
    evidence = loadtest_selectors.loadtest_evidence(latest)
    return [evidence] if evidence else []


def _decide(
    *, actor, promotion: PromotionRequest, to_state: str, comment: str, source: str
) -> PromotionRequest:
    promotion = (
        PromotionRequest.objects.select_for_update(of=("self",))
        .select_related("version__model", "target_endpoint__environment", "requested_by")
        .get(pk=promotion.pk)
    )
    if (
        to_state == PromotionState.APPROVED
        and actor is not None
        and actor.pk == promotion.requested_by_id
    ):
        # Four eyes: https://en.wikipedia.org/wiki/Two-man_rule — whatever the actor's rights.
        raise PermissionDenied(
            "You requested this promotion; another approver has to approve it.",
            code="own_request",
        )
    _require(actor, APPROVE_PERMISSION, "Only members of the approver group decide promotions.")
    state_transition(
        promotion,
        to_state,
        transitions=PROMOTION_TRANSITIONS,
        refusal=f"This promotion request is already {promotion.get_state_display().lower()}.",
        actor=actor,
        action=AuditAction.of("promotion", to_state),
        source=source,
        reason=comment.strip(),
        changes={
            "decided_by": actor,
            "decided_at": timezone.now(),
            "decision_comment": comment.strip(),
        },
    )
    return promotion


@transaction.atomic
def promotion_approve(
    *, actor, promotion: PromotionRequest, comment: str = "", source: str = Source.BROWSER
) -> PromotionRequest:
    """Approve a promotion request and start the production deployment. The requester can
    never approve their own request."""
    promotion = _decide(
        actor=actor,
        promotion=promotion,
        to_state=PromotionState.APPROVED,
        comment=comment,
        source=source,
    )
    deployment = _create_deployment(
        actor=actor,
        endpoint=promotion.target_endpoint,
        version=promotion.version,
        source=source,
        promotion=promotion,
        reason=f"Promotion #{promotion.pk} approved by {actor.get_username()}.",
    )
    promotion.deployment = deployment
    promotion.save(update_fields=["deployment"])
    # Where the staging backend mirrors verdicts (SageMaker's model registry), it does so
    # once this commits.
    backend_for(promotion.staging_deployment.endpoint).promotion_approved(promotion=promotion)
    _on_commit_task("notify_promotion_decided", promotion.pk)
    return promotion


@transaction.atomic
def promotion_reject(
    *, actor, promotion: PromotionRequest, comment: str, source: str = Source.BROWSER
) -> PromotionRequest:
    """Reject a promotion request; say why."""
    if not comment.strip():
        raise ServiceError("Say why the request is rejected.", field="comment")
    promotion = _decide(
        actor=actor,
        promotion=promotion,
        to_state=PromotionState.REJECTED,
        comment=comment,
        source=source,
    )
    _on_commit_task("notify_promotion_decided", promotion.pk)
    return promotion
