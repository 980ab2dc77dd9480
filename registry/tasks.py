"""Celery tasks of the registry. The pipeline's steps run as runs of the registry's plans
(registry.plans) through the engine's task, `runs.tasks.run_execute`, and the engine's sweep
resumes or gives up steps whose worker vanished.

The step tasks and the requeue task keep their names so that messages queued before the
pipeline ran on the engine are still understood: a step message carries out the version's
run of that step (started when the version waits for it); the requeue message runs the
engine's sweep. Each takes an id and calls one function; steps are idempotent, so a message
delivered twice (acks_late after a lost worker) does no harm."""

import sys

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown

from runs.services import runs_sweep

from . import plans, services


def _step(task, version_id: int, step: str) -> None:
    plans.version_step_run(version_id=version_id, step=step, worker=task.request.id or "")


@shared_task(bind=True, name="registry.tasks.version_validate", acks_late=True)
def version_validate(self, version_id: int) -> None:
    _step(self, version_id, "validate")


@shared_task(bind=True, name="registry.tasks.version_test", acks_late=True)
def version_test(self, version_id: int, from_failed: bool = False) -> None:
    _step(self, version_id, "test")


@shared_task(bind=True, name="registry.tasks.version_package", acks_late=True)
def version_package(self, version_id: int) -> None:
    _step(self, version_id, "package")


@shared_task(name="registry.tasks.version_requeue_stuck")
def version_requeue_stuck() -> list[int]:
    outcome = runs_sweep()
    return sorted({pk for pks in outcome.values() for pk in pks})


@shared_task(name="registry.tasks.artifact_sweep")
def artifact_sweep() -> list[str]:
    return services.artifact_sweep()


@worker_process_shutdown.connect  # a prefork pool's child process
@worker_shutdown.connect  # the worker itself (the solo and threads pools run tasks in it)
def stop_test_server(**kwargs) -> None:
    """A worker process ending stops the tritonserver its test steps kept warm (none when
    this process never ran one: the module was never imported)."""
    triton_run = sys.modules.get("registry.triton_run")
    if triton_run is not None:
        triton_run.stop_test_server()
