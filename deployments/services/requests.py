"""One service that puts a version on an endpoint as its environment allows (a deployment,
or a promotion request where approval is needed), used by the wizard and the API alike."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from portal.errors import ServiceError
from registry.models import ModelVersion

from ..choices import Backend, Source
from ..models import Deployment, Endpoint, Environment, PromotionRequest
from .deployments import deployment_start
from .endpoints import endpoint_create, endpoint_update_autoscaling
from .promotions import promotion_request_create

AUTOSCALING_FIELDS = (
    "autoscaling_min_instances",
    "autoscaling_max_instances",
    "target_invocations_per_instance",
    "scale_in_cooldown_seconds",
    "scale_out_cooldown_seconds",
)


def deployment_needs_approval(*, environment: Environment) -> bool:
    """Whether putting a version on an endpoint of `environment` goes through a promotion
    request (four eyes) instead of a deployment. `deployment_request` decides with it; the
    wizard's review page says beforehand what it will decide."""
    return bool(environment.requires_approval)


@transaction.atomic
def deployment_request(
    *,
    actor,
    version: ModelVersion,
    endpoint: Endpoint | None = None,
    new_endpoint: dict[str, Any] | None = None,
    autoscaling: dict[str, int] | None = None,
    reason: str = "",
    source: str = Source.BROWSER,
    request_promotion: bool = True,
) -> Deployment | PromotionRequest:
    """Put `version` on an endpoint as its environment allows: a deployment where no approval
    is needed; where it is, a promotion request for an approver, or, for a caller that only
    starts deployments (`request_promotion=False`: the deploy API, whose clients ask for
    promotion on the promotions route), the refusal `deployment_start` answers.

    `new_endpoint` (name, environment, backend and endpoint fields) creates the endpoint
    first (admins only); `autoscaling` (the endpoint's autoscaling fields) sizes a new
    endpoint, or changes an existing one where no approval is needed (a promotion request
    leaves production as it is). One transaction: a refusal anywhere leaves nothing behind."""
    if (endpoint is None) == (new_endpoint is None):
        raise ServiceError("Choose an endpoint or describe a new one.", field="endpoint")
    autoscaling = dict(autoscaling or {})
    unknown = set(autoscaling) - set(AUTOSCALING_FIELDS)
    if unknown:
        raise ServiceError(
            f"Unknown autoscaling fields: {', '.join(sorted(unknown))}.", field="autoscaling"
        )
    if new_endpoint is not None:
        fields = {**new_endpoint, **autoscaling}
        endpoint = endpoint_create(
            actor=actor,
            name=fields.pop("name", ""),
            environment=fields.pop("environment", None),
            backend=fields.pop("backend", None) or Backend.LOCAL,
            source=source,
            **fields,
        )
        autoscaling = {}
    endpoint = Endpoint.objects.select_related("environment").get(pk=endpoint.pk)
    if deployment_needs_approval(environment=endpoint.environment):
        if request_promotion:
            return promotion_request_create(
                actor=actor,
                version=version,
                target_endpoint=endpoint,
                comment=reason,
                source=source,
            )
    elif autoscaling:
        sizes = {
            field: autoscaling.get(field, getattr(endpoint, field)) for field in AUTOSCALING_FIELDS
        }
        endpoint_update_autoscaling(
            actor=actor,
            endpoint=endpoint,
            min_instances=sizes["autoscaling_min_instances"],
            max_instances=sizes["autoscaling_max_instances"],
            target_invocations_per_instance=sizes["target_invocations_per_instance"],
            scale_in_cooldown_seconds=sizes["scale_in_cooldown_seconds"],
            scale_out_cooldown_seconds=sizes["scale_out_cooldown_seconds"],
            source=source,
        )
    return deployment_start(
        actor=actor, endpoint=endpoint, version=version, source=source, reason=reason
    )
