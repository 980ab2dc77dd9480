"""Celery tasks of the load tests app. The test itself runs as a run on the engine
(runs.tasks.run_execute); the parts of a fan-out run here, each in its own worker.

`loadtest_generate_part` is acknowledged early (the default): a part is never redelivered,
since load generated twice is not the load that was asked for; a part whose worker dies
leaves the coordinator merging the parts that answered."""

from __future__ import annotations

from celery import shared_task

from . import plans


@shared_task(ignore_result=True)
def loadtest_generate_part(load_test_id: int, part: int, parts: int) -> dict:
    return plans.run_part(load_test_id, part, parts)
