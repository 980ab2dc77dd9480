"""Celery tasks of the registry: the pipeline steps and the beat tasks that requeue stuck
versions and sweep unreferenced source archives. Each takes an id and calls one service; the
services are idempotent, so a message delivered twice (acks_late after a lost worker) does
no harm."""

from celery import shared_task

from . import services


@shared_task(name="registry.tasks.version_validate", acks_late=True)
def version_validate(version_id: int) -> None:
    services.version_validate(version_id=version_id)


@shared_task(name="registry.tasks.version_test", acks_late=True)
def version_test(version_id: int, from_failed: bool = False) -> None:
    services.version_test(version_id=version_id, from_failed=from_failed)


@shared_task(name="registry.tasks.version_package", acks_late=True)
def version_package(version_id: int) -> None:
    services.version_package(version_id=version_id)


@shared_task(name="registry.tasks.version_requeue_stuck")
def version_requeue_stuck() -> list[int]:
    return services.version_requeue_stuck()


@shared_task(name="registry.tasks.artifact_sweep")
def artifact_sweep() -> list[str]:
    return services.artifact_sweep()
