"""Shared set-up of the data-plane benchmarks: a gateway process and its model packages."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
from toolkit.sandbox import SOCKET_DIR  # noqa: E402
from toolkit.triton import STUB_NAME  # noqa: E402

X = [1.0, 2.0, 3.0, 4.0]
BODY = infer_body(X)


class BenchGateway(GatewayProcess):
    """A gateway in a temporary folder that is removed when it stops."""

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_gateway(
    endpoints: list[str],
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> GatewayProcess:
    root = Path(tempfile.mkdtemp(prefix="berth-bench-gw-"))
    return BenchGateway(root, endpoints, extra_args=extra_args, env=env).start()


def gateway_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    return Target(
        "gateway",
        "127.0.0.1",
        gw.port,
        f"/endpoints/{endpoint}/invocations",
        BODY,
        {TARGET_HEADER: package, "Content-Type": "application/json"},
    )


def triton_http_socket(gw: GatewayProcess) -> str:
    """The host-side path of the gateway's Triton's HTTP Unix socket.

    Triton runs sandboxed with a network of its own, so its HTTP frontend listens on a Unix
    socket in the sandbox's tmpfs; the gateway reports it (`unix:/proc/<pid>/root/...`) in
    `/admin/status`. Where the status names no URL, the path is rebuilt from Triton's pid.
    """
    triton = gw.status()["triton"]
    url = triton.get("http_url") or ""
    if url.startswith("unix:"):
        return url[len("unix:") :]
    if url:
        raise RuntimeError(f"Triton's HTTP frontend is not on a Unix socket: {url}")
    pid = triton.get("pid")
    if not pid:
        raise RuntimeError("the gateway reports no Triton process")
    return f"/proc/{pid}/root{SOCKET_DIR}/http.sock"


def direct_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    """The same model straight on the gateway's Triton (its served name, its HTTP socket).

    Direct Triton is reached over its Unix socket, the gateway over loopback TCP (and the
    gateway itself reaches Triton over that same Unix socket): a client of direct Triton
    saves the TCP hop's cost, which counts against the gateway in the ratios.
    """
    models = gw.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
    served = next(m["served_model"] for m in models if m["target_model"] == package)
    return Target(
        "direct",
        "localhost",
        80,
        f"/v2/models/{served}/infer",
        BODY,
        {"Content-Type": "application/json"},
        unix_path=triton_http_socket(gw),
    )


def start_bare_proxy(socket_path: str) -> tuple[subprocess.Popen, int]:
    """The bare reverse proxy (`bench/_bare_proxy.py`) in front of Triton's HTTP socket, on a
    free loopback port: the floor the gateway's own CPU per request is compared with."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_bare_proxy.py"), str(port), socket_path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the bare proxy did not start: {line!r}")
    return proc, port


def bare_target(direct: Target, port: int) -> Target:
    """Direct Triton's request (same path, headers and body), sent through the bare proxy."""
    return Target("bare", "127.0.0.1", port, direct.path, direct.body, dict(direct.headers))


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


def _executable(proc: psutil.Process) -> str:
    """The base name of what a process runs (its argv[0]; its short name when unreadable)."""
    try:
        cmdline = proc.cmdline()
        if cmdline:
            return Path(cmdline[0]).name
        return proc.name()
    except psutil.Error:
        return ""


class CpuMeter:
    """Reads the CPU time of the load generator (this process), the gateway, its Triton
    and Triton's stub processes, so a run's cost per request can be split between them.

    Triton runs in a sandbox: the gateway's child is bubblewrap, whose own child (the
    sandbox's PID 1) starts `tritonserver`, which forks the Python-backend stubs. So the
    processes are told apart by what they run, over the gateway's whole process tree: the
    `tritonserver` processes and the sandbox processes above them count as Triton (bubblewrap
    only waits), the stubs below them as stubs. The gateway's staging processes do not
    serve requests and are left out.
    """

    PARTS = ("loadgen", "gateway", "triton", "stubs")

    def __init__(self, gw: GatewayProcess, extra: dict[str, int] | None = None) -> None:
        assert gw.proc is not None
        self.gateway = psutil.Process(gw.proc.pid)
        self.me = psutil.Process()
        # Other processes on a path, by the part they count as (the bare proxy's pid).
        self.extra = {part: psutil.Process(pid) for part, pid in (extra or {}).items()}
        if not self._processes()["triton"]:
            # Fail here, not with a silent 0 us for Triton in every figure.
            raise RuntimeError(f"no tritonserver process under the gateway (pid {gw.proc.pid})")

    def _processes(self) -> dict[str, list[psutil.Process]]:
        parts: dict[str, list[psutil.Process]] = {part: [] for part in self.PARTS}
        parts["loadgen"].append(self.me)
        parts["gateway"].append(self.gateway)
        for part, proc in self.extra.items():
            parts[part] = [proc]
        try:
            tree = self.gateway.children(recursive=True)
        except psutil.NoSuchProcess:
            return parts
        seen = {self.gateway.pid}
        for proc in tree:
            if proc.pid in seen or _executable(proc) != "tritonserver":
                continue
            wrappers = []
            try:
                # bwrap and its PID 1 between the gateway and Triton.
                for parent in proc.parents():
                    if parent.pid == self.gateway.pid:
                        break
                    wrappers.append(parent)
                below = proc.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for each in (proc, *wrappers):
                if each.pid not in seen:
                    seen.add(each.pid)
                    parts["triton"].append(each)
            for child in below:
                # Stubs by their executable; anything else Triton starts counts as Triton.
                part = "stubs" if _executable(child).endswith(STUB_NAME) else "triton"
                if child.pid not in seen:
                    seen.add(child.pid)
                    parts[part].append(child)
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
    "triton_http_socket",
    "start_bare_proxy",
    "bare_target",
]
