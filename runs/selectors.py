"""Reads of the engine: a subject's run, a run's log after a line, and the one answer
every run's log API gives."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Prefetch

from .models import Run, RunLogLine, RunStep


def steps_prefetch(prefix: str = "") -> Prefetch:
    """Prefetch of runs' steps in order, for pages that list subjects with their runs."""
    return Prefetch(f"{prefix}steps", queryset=RunStep.objects.order_by("position"))


def run_of(subject: models.Model) -> Run | None:
    """The latest run of `subject`, with its steps."""
    return (
        Run.objects.filter(
            content_type=ContentType.objects.get_for_model(subject, for_concrete_model=False),
            object_id=subject.pk,
        )
        .prefetch_related(steps_prefetch())
        .order_by("-id")
        .first()
    )


def run_log_since(*, run: Run | None, since: int = 0, limit: int = 500) -> list[RunLogLine]:
    """Log lines after the line with id `since` (0: from the start)."""
    if run is None:
        return []
    return list(RunLogLine.objects.filter(run=run, id__gt=since).order_by("id")[:limit])


def run_follow(*, run: Run | None, state: str, finished: bool, since: int = 0) -> dict[str, Any]:
    """The answer of a run's log API: its subject's state, whether it is finished, the
    steps, the lines after `since`, and the id to ask from next."""
    lines = run_log_since(run=run, since=since)
    return {
        "state": state,
        "finished": finished,
        "steps": [step.as_dict() for step in run.steps.all()] if run else [],
        "lines": lines,
        "next": lines[-1].id if lines else since,
    }
