"""The gateway's Triton supervisor on the real tritonserver: packages load and unload through
Triton's SageMaker frontend, and a Triton that died is reported, not waited for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dataplane.supervisor import TritonSupervisor
from dataplane.upstream import UpstreamError
from toolkit.examples import write_failing_model_repository, write_python_model_repository
from toolkit.shim import install_package

pytestmark = pytest.mark.triton

BODY = json.dumps(
    {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
).encode()


async def _answer(supervisor: TritonSupervisor, name: str) -> list[float]:
    response = await supervisor.request(
        "POST", f"/v2/models/{name}/infer", BODY, {"Content-Type": "application/json"}
    )
    assert response.status == 200, response.body
    return json.loads(response.body)["outputs"][0]["data"]


def test_load_unload_and_a_name_left_over_from_an_earlier_load(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    source = write_python_model_repository(tmp_path / "src", "scaled", scale=3.0)
    folder = repository / "scaled-1"
    broken = repository / "broken-1"

    async def scenario() -> None:
        supervisor = TritonSupervisor(repository, log_path=tmp_path / "triton.log")
        await supervisor.start()
        try:
            install_package(source, folder, gpu=False)
            assert await supervisor.load("scaled-1", 120, folder=folder) == (True, "", False)
            assert await _answer(supervisor, "scaled-1") == [3.0, 6.0, 9.0, 12.0]

            # A load that outlived its caller leaves the name loaded; the next load of the
            # same name unloads it first instead of failing for good.
            assert await supervisor.load("scaled-1", 120, folder=folder) == (True, "", False)
            assert await _answer(supervisor, "scaled-1") == [3.0, 6.0, 9.0, 12.0]

            await supervisor.unload("scaled-1", 60)
            response = await supervisor.request("POST", "/v2/models/scaled-1/infer", BODY)
            assert response.status >= 400
            await supervisor.unload("scaled-1", 60)  # Not loaded: nothing to do.

            install_package(
                write_failing_model_repository(tmp_path / "bad", "bad", message="no weights"),
                broken,
                gpu=False,
            )
            ok, reason, out_of_memory = await supervisor.load("broken-1", 120, folder=broken)
            assert (ok, out_of_memory) == (False, False)
            assert "no weights" in reason

            supervisor._server.process.stop()  # Triton dies under the gateway.
            with pytest.raises(UpstreamError):
                await supervisor.load("scaled-1", 120, folder=folder)
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
