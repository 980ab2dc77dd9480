"""Reads of the registry, shaped for their pages."""

from .choices import IN_PROGRESS_STATUSES
from .models import ModelVersion, RegisteredModel


def home_summary(*, user) -> dict:
    return {
        "model_count": RegisteredModel.objects.count(),
        "version_count": ModelVersion.objects.count(),
        "in_progress_count": ModelVersion.objects.filter(status__in=IN_PROGRESS_STATUSES).count(),
        "recent_versions": ModelVersion.objects.select_related("model", "registered_by").order_by(
            "-registered_at"
        )[:10],
    }
