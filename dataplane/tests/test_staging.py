"""Staging processes: load work runs outside the serving process, below its CPU priority."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal

import psutil
import pytest

from dataplane.errors import GatewayError, validation_error
from dataplane.staging import StagingPool


def test_gateway_errors_survive_the_trip_between_processes() -> None:
    error = validation_error("no such package", error_code="ModelNotFound")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, GatewayError)
    assert (copy.status, copy.error_type, copy.error_code, copy.message) == (
        400,
        "ValidationError",
        "ModelNotFound",
        "no such package",
    )
    assert copy.body() == error.body()


def staging_processes() -> list[psutil.Process]:
    return [
        child for child in psutil.Process().children() if "spawn_main" in " ".join(child.cmdline())
    ]


@pytest.fixture
def pool():
    staging = StagingPool(gpu=False, niceness=7, processes=1)
    asyncio.run(staging.start())
    yield staging
    staging.stop()


def test_work_runs_in_another_process_at_lower_priority(pool: StagingPool) -> None:
    async def probe() -> tuple[int, int]:
        return await pool.run(os.getpid), await pool.run(os.nice, 0)

    pid, niceness = asyncio.run(probe())
    assert pid != os.getpid()
    assert niceness == os.nice(0) + 7


def test_a_killed_staging_process_is_replaced(pool: StagingPool) -> None:
    first = asyncio.run(pool.run(os.getpid))
    for process in staging_processes():
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    second = asyncio.run(pool.run(os.getpid))
    assert second != first
    assert psutil.pid_exists(second)
