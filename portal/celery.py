"""The Celery app. The beat schedule lives here, in one place."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("berth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Resumes or gives up runs of any plan (deployments, the registry's pipeline steps...)
    # whose worker vanished.
    "sweep-stale-runs": {
        "task": "runs.tasks.runs_sweep",
        "schedule": 60.0,
    },
    "sweep-artifacts": {
        "task": "registry.tasks.artifact_sweep",
        "schedule": 3600.0,
    },
    "pull-metrics": {
        "task": "monitoring.tasks.metrics_pull",
        "schedule": 60.0,
    },
}
