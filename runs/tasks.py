"""Celery tasks of the engine: they take ids and call the runner or a service.

`run_execute` is acknowledged late: a worker killed mid-run leaves the message
unacknowledged, the broker hands it out again, and the runner resumes from the recorded
steps (the claim is the task id, which a redelivered message keeps). If the message is
lost, the beat task `runs_sweep` queues the run again or gives it up cleanly."""

from __future__ import annotations

from celery import shared_task

from . import runner, services


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_execute(self, run_id: int) -> str | None:
    worker = self.request.id or f"eager-{run_id}"
    run = runner.execute(run_id=run_id, worker=worker)
    return run.state if run else None


@shared_task(ignore_result=True)
def runs_sweep() -> dict[str, list[int]]:
    return services.runs_sweep()
