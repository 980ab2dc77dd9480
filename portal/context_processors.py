"""Context every page's layout needs."""

from django.http import HttpRequest

NAVIGATION = [
    ("Models", "registry:model-list", "registry"),
    ("Endpoints", "deployments:endpoint-list", "endpoints"),
    ("Deployments", "deployments:deployment-list", "deployments"),
    ("Approvals", "deployments:promotion-list", "approvals"),
    ("Dashboards", "monitoring:dashboard", "dashboards"),
]


def pending_approval_count(user) -> int:
    """Promotion requests waiting for this user's decision: pending, asked by someone else
    (nobody approves their own request), and only for users who may approve at all.

    One query whoever asks: the permission (held directly or through a group) is part of
    the same COUNT, so a page's query count does not depend on the user's role."""
    from django.contrib.auth.models import Permission
    from django.db.models import Exists, Q

    from deployments.choices import PromotionState
    from deployments.models import PromotionRequest
    from deployments.services.common import APPROVE_PERMISSION

    if not user.is_authenticated or not user.is_active:
        return 0
    pending = PromotionRequest.objects.filter(state=PromotionState.PENDING).exclude(
        requested_by=user
    )
    if not user.is_superuser:
        app_label, codename = APPROVE_PERMISSION.split(".")
        granted = Permission.objects.filter(
            Q(user=user) | Q(group__user=user),
            content_type__app_label=app_label,
            codename=codename,
        )
        pending = pending.filter(Exists(granted))
    return pending.count()


def navigation(request: HttpRequest) -> dict:
    # One COUNT per page, and only on pages that render the navigation for a user who can
    # approve: the layout reads it lazily.
    cache: dict[str, int] = {}

    def pending() -> int:
        if "count" not in cache:
            cache["count"] = pending_approval_count(request.user)
        return cache["count"]

    return {"navigation": NAVIGATION, "pending_approvals": pending}
