"""Faults: Triton killed mid-traffic, the gateway restarted, models in S3 (moto's server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import boto3
import pytest

from dataplane.tests.gateway_fixtures import (
    TARGET_HEADER,
    GatewayProcess,
    infer_body,
    python_package,
)
from toolkit.triton import free_port

pytestmark = pytest.mark.triton

X = [1.0, 2.0, 3.0, 4.0]


async def _traffic_through_a_kill(
    gw: GatewayProcess, package: str, workers: int = 6
) -> tuple[list[tuple[float, int, dict]], float]:
    """Requests from `workers` clients; Triton is SIGKILLed once traffic flows.

    Returns every (time, status, body) and the moment of the kill.
    """
    results: list[tuple[float, int, dict]] = []
    killed_at = 0.0
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.post(
                f"{gw.url}/endpoints/main/invocations",
                data=infer_body(X),
                headers={TARGET_HEADER: package, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=120),
            ) as response:
                results.append(
                    (time.monotonic(), response.status, json.loads(await response.read()))
                )

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(workers)]
        while len(results) < 50:
            await asyncio.sleep(0.01)
        killed_at = time.monotonic()
        os.kill(gw.status()["triton"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            after = [r for r in results if r[0] > killed_at]
            if sum(1 for r in after[-30:] if r[1] == 200) == 30:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
    return results, killed_at


def test_killing_triton_mid_traffic_fails_in_flight_requests_cleanly_then_recovers(
    tmp_path: Path,
) -> None:
    with GatewayProcess(tmp_path, ["main"]) as gw:
        package = python_package(gw.store("main"), "steady", 1, scale=2.0)
        assert gw.invoke("main", package, infer_body(X))[0] == 200
        old_pid = gw.status()["triton"]["pid"]

        results, killed_at = asyncio.run(_traffic_through_a_kill(gw, package))

        statuses = {status for _, status, _ in results}
        assert statuses <= {200, 503}, statuses
        for _, status, body in results:
            if status == 503:
                # SageMaker's shape, with a reason a client can act on.
                assert body["ErrorCode"] == "ServiceUnavailable"
                assert "Retry" in body["Message"] or "retry" in body["Message"]
            else:
                assert body["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        after = [status for at, status, _ in results if at > killed_at]
        assert after[-30:] == [200] * 30

        status = gw.status()["triton"]
        assert status["restarts"] == 1 and status["ready"] is True
        assert status["pid"] != old_pid
        assert gw.loaded("main") == [package]  # Loaded again on demand after the restart.
        # The dead Triton's stub processes did not outlive it.
        import psutil

        assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"


def test_endpoints_and_aliases_survive_a_gateway_restart(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, ["main:512MiB"]) as gw:
        package = python_package(gw.store("main"), "kept", 1, scale=3.0)
        extra = tmp_path / "extra-store"
        assert (
            gw.send_json(
                "PUT", "/admin/endpoints/extra", {"store": str(extra), "memory_budget_bytes": 10**9}
            )[0]
            == 201
        )
        assert (
            gw.send_json("PUT", "/admin/endpoints/main/aliases/kept", {"target_model": package})[0]
            == 200
        )
    with GatewayProcess(tmp_path, []) as gw:
        endpoints = {ep["name"]: ep for ep in gw.get("/admin/endpoints")[1]["endpoints"]}
        assert endpoints["main"]["memory_budget_bytes"] == 512 * 1024**2
        assert endpoints["extra"]["store"] == str(extra)
        status, _, data = gw.invoke("main", "kept", infer_body(X))
        assert (status, data["outputs"][0]["data"]) == (200, [3.0, 6.0, 9.0, 12.0])


def test_models_are_read_from_an_s3_store(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    aws_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=aws_env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="models")
        local = tmp_path / "packages"
        package = python_package(local, "clouded", 1, scale=4.0)
        for name in (package, f"{package}.sha256"):
            s3.upload_file(str(local / name), "models", f"prod/{name}")

        with GatewayProcess(tmp_path / "gw", [], env=aws_env) as gw:
            status, _ = gw.send_json(
                "PUT",
                "/admin/endpoints/cloud",
                {"store": "s3://models/prod", "memory_budget_bytes": 10**9},
            )
            assert status == 201
            status, _, data = gw.invoke("cloud", package, infer_body(X))
            assert (status, data["outputs"][0]["data"]) == (200, [4.0, 8.0, 12.0, 16.0])
            status, _, data = gw.invoke("cloud", "clouded_2.tar.gz", infer_body(X))
            assert (status, data["ErrorCode"]) == (400, "ModelNotFound")

            assert (
                gw.send_json(
                    "PUT", "/admin/endpoints/cloud/aliases/clouded", {"target_model": package}
                )[0]
                == 200
            )
            stored = json.loads(
                s3.get_object(Bucket="models", Key="prod/aliases.json")["Body"].read()
            )
            assert stored == {"clouded": package}
            assert gw.invoke("cloud", "clouded", infer_body(X))[0] == 200
    finally:
        server.stop()
