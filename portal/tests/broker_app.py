"""A Celery app of one task on the embedded broker, for `test_broker_transport`: its worker
runs as a separate process, like Berth's, on the folder BERTH_TEST_BROKER_DIR names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery import Celery

from portal.broker_transport import filesystem_options

QUEUE = "broker-test"

app = Celery("broker-test")
app.conf.update(
    broker_url="filesystem://",
    broker_transport="portal.broker_transport:Transport",
    broker_transport_options=filesystem_options(Path(os.environ["BERTH_TEST_BROKER_DIR"])),
    broker_connection_retry_on_startup=True,
    # As Berth's settings: late acknowledgement, one message per process at a time.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
)


@app.task
def stamp(sent: float, path: str, hold: float) -> None:
    """Write when it was sent, started and finished (the worker's own clock)."""
    started = time.time()
    time.sleep(hold)
    with open(path, "a") as handle:
        handle.write(json.dumps([sent, started, time.time()]) + "\n")
