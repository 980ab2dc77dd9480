"""Celery tasks of the monitoring app; the beat schedule is in portal/celery.py."""

from celery import shared_task

from . import services


@shared_task(name="monitoring.tasks.metrics_pull", ignore_result=True)
def metrics_pull() -> dict[str, int]:
    """Copy the local data plane's recent one-minute statistics into the database."""
    stored = services.metric_samples_pull()
    services.metric_samples_prune()
    return stored
