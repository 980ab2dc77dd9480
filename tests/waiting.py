"""Waiting on a condition in the cross-app flows: poll until it holds, or fail with what was
awaited and the end of the worker's log. Flows wait on conditions, never on sleeps."""

from __future__ import annotations

import time


def wait_for(predicate, *, timeout: float, interval: float = 0.2, worker=None, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out waiting for {what}\n{worker.log_tail() if worker else ''}")
