"""Shared set-up of the data-plane benchmarks: a gateway process and its model packages."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._loadgen import Target  # noqa: E402
from dataplane.tests.gateway_fixtures import (  # noqa: E402
    TARGET_HEADER,
    GatewayProcess,
    infer_body,
    python_package,
)

X = [1.0, 2.0, 3.0, 4.0]
BODY = infer_body(X)


class BenchGateway(GatewayProcess):
    """A gateway in a temporary folder that is removed when it stops."""

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_gateway(endpoints: list[str], extra_args: list[str] | None = None) -> GatewayProcess:
    root = Path(tempfile.mkdtemp(prefix="berth-bench-gw-"))
    return BenchGateway(root, endpoints, extra_args=extra_args).start()


def gateway_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    return Target(
        "gateway",
        "127.0.0.1",
        gw.port,
        f"/endpoints/{endpoint}/invocations",
        BODY,
        {TARGET_HEADER: package, "Content-Type": "application/json"},
    )


def direct_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    """The same model straight on the gateway's Triton (its served name, its port)."""
    models = gw.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
    served = next(m["served_model"] for m in models if m["target_model"] == package)
    url = urlsplit(gw.status()["triton"]["http_url"])
    return Target(
        "direct",
        url.hostname or "127.0.0.1",
        url.port or 80,
        f"/v2/models/{served}/infer",
        BODY,
        {"Content-Type": "application/json"},
    )


def warm(gw: GatewayProcess, endpoint: str, package: str) -> dict:
    status, data = gw.send_json("POST", f"/admin/endpoints/{endpoint}/models/{package}/load", {})
    if status != 200:
        raise RuntimeError(f"loading {package} failed: {json.dumps(data)}")
    return data


@dataclass
class CpuShare:
    """CPU seconds (user + system) spent by each part of the serving path over a run."""

    seconds: dict[str, float]

    def per_request(self, requests: int) -> dict[str, float]:
        """Microseconds of CPU per request, part by part."""
        return {part: s / max(requests, 1) * 1e6 for part, s in self.seconds.items()}

    def total(self, requests: int) -> float:
        """Microseconds of CPU per request, all parts together."""
        return sum(self.per_request(requests).values())

    def line(self, requests: int) -> str:
        parts = self.per_request(requests)
        text = "  ".join(f"{part} {us:.0f}" for part, us in parts.items())
        return f"CPU us/request: {text}  = {self.total(requests):.0f}"


class CpuMeter:
    """Reads the CPU time of the load generator (this process), the gateway, its Triton
    and Triton's stub processes, so a run's cost per request can be split between them."""

    PARTS = ("loadgen", "gateway", "triton", "stubs")

    def __init__(self, gw: GatewayProcess) -> None:
        assert gw.proc is not None
        self.gateway = psutil.Process(gw.proc.pid)
        self.me = psutil.Process()

    def _processes(self) -> dict[str, list[psutil.Process]]:
        parts: dict[str, list[psutil.Process]] = {part: [] for part in self.PARTS}
        parts["loadgen"].append(self.me)
        parts["gateway"].append(self.gateway)
        for child in self.gateway.children():
            try:
                if "tritonserver" in child.name():
                    parts["triton"].append(child)
                    parts["stubs"].extend(child.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return parts

    @staticmethod
    def _seconds(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def snapshot(self) -> dict[str, tuple[list[psutil.Process], float]]:
        return {part: (procs, self._seconds(procs)) for part, procs in self._processes().items()}

    def since(self, snapshot: dict[str, tuple[list[psutil.Process], float]]) -> CpuShare:
        """CPU spent since `snapshot` by the processes it saw (loads start none mid-run)."""
        return CpuShare(
            {part: self._seconds(procs) - before for part, (procs, before) in snapshot.items()}
        )


__all__ = [
    "CpuMeter",
    "CpuShare",
    "GatewayProcess",
    "python_package",
    "start_gateway",
    "gateway_target",
    "direct_target",
]
