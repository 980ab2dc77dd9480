"""Staging processes: load work runs outside the serving process, below its CPU priority."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys

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


def test_staging_imports_neither_grpc_nor_numpy() -> None:
    # Each staging process imports dataplane.__main__ (spawn) and dataplane.staging; grpc and
    # numpy would add about 30 MiB to each of them for nothing they use.
    script = """
import sys
import dataplane.__main__, dataplane.staging
heavy = sorted({"grpc", "numpy", "boto3", "dataplane.gateway"} & set(sys.modules))
assert not heavy, heavy
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


PYTHON_CONFIG = 'backend: "python"\ninput [{ name: "X" data_type: TYPE_FP32 dims: [1] }]\n'


def _package(root, *models: str, berth_yaml: str | None = None):
    for name in models:
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\n{PYTHON_CONFIG}')
    if berth_yaml is not None:
        (root / "berth.yaml").write_text(berth_yaml)
    return root


@pytest.mark.parametrize(
    ("models", "berth_yaml", "message"),
    [
        (("a", "b"), None, r"Cannot tell which model of t_1\.tar\.gz to invoke: .*\(a, b\)"),
        # berth.yaml's model: does not reach SageMaker: it cannot pick among them.
        (("a", "b"), "model: b\n", r"to invoke: several models \(a, b\) and no ensemble"),
        (("a",), "model: b\n", r"names model 'b', which the package lacks"),
        # An empty name is refused as registration refuses it, not read as "no name".
        (("a",), 'model: ""\n', r"names model '', which the package lacks"),
        ((), None, r"holds no model folder"),
    ],
)
def test_the_entry_model_is_refused_with_the_packages_problem(
    tmp_path, models, berth_yaml, message
) -> None:
    from dataplane.staging import entry_model

    (tmp_path / "repo").mkdir()
    repository = _package(tmp_path / "repo", *models, berth_yaml=berth_yaml)
    with pytest.raises(GatewayError, match=message) as info:
        entry_model(repository, "t_1.tar.gz")
    assert info.value.error_code == "InvalidModelData"


def test_the_entry_model_is_named_or_the_one_model_no_ensemble_uses(tmp_path) -> None:
    from dataplane.staging import entry_model
    from toolkit.examples import write_demo_repository

    assert entry_model(write_demo_repository(tmp_path / "demo"), "d_1.tar.gz") == "demo_ensemble"
    named = _package(tmp_path / "named", "a", berth_yaml="model: a\n")
    assert entry_model(named, "n_1.tar.gz") == "a"
