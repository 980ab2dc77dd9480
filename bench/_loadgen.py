"""Load generation on loopback (TCP or a Unix socket) for the data-plane benchmarks.

The client is the gateway's own lean keep-alive HTTP/1.1 pool (`dataplane.upstream`) on
uvloop, so the load generator costs little CPU next to what it measures; both the gateway
and direct Triton are driven by the same code in the same run. Open-loop load is Berth's
load generator (`loadgen`) itself, run in this process; the closed loop (a fixed number of
clients, each waiting for its answer) is the saturation measure only the benchmarks need.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataplane.upstream import UpstreamPool  # noqa: E402

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with the project on Linux
    uvloop = None


@dataclass
class Target:
    """Where requests go: host and port (or a Unix socket), path, headers and the body.

    With `unix_path` set, connections go to that Unix socket and `host`/`port` only fill the
    Host header: how a sandboxed Triton is reached, its HTTP frontend having no TCP port.
    """

    name: str
    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    unix_path: str | None = None

    @property
    def transport(self) -> str:
        return "Unix socket" if self.unix_path else "loopback TCP"

    def pool(self, max_idle: int = 64) -> UpstreamPool:
        """A keep-alive connection pool to this target."""
        return UpstreamPool(self.host, self.port, max_idle=max_idle, unix_path=self.unix_path)


@dataclass
class Run:
    """Latencies (seconds) of the successful requests of one run, and its failures."""

    latencies: list[float]
    errors: int
    elapsed: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def summary(self) -> str:
        return (
            f"n={len(self.latencies)} err={self.errors} rate={self.rate:,.0f}/s "
            f"p50={self.pct(50) * 1e3:.3f}ms p90={self.pct(90) * 1e3:.3f}ms "
            f"p99={self.pct(99) * 1e3:.3f}ms"
        )


async def closed_loop(
    target: Target,
    concurrency: int,
    duration: float,
    warmup: float = 0.5,
    stop: asyncio.Event | None = None,
    on_measure: Callable[[], None] | None = None,
) -> Run:
    """`concurrency` clients, each sending its next request when the last one answered.

    `on_measure` is called when the warm-up ends and measuring starts.
    """
    pool = target.pool(max_idle=concurrency + 4)
    latencies: list[float] = []
    errors = 0
    perf = time.perf_counter
    start = perf()
    measure_from = start + warmup
    end = measure_from + duration

    async def client() -> None:
        nonlocal errors
        while True:
            t0 = perf()
            if t0 >= end or (stop is not None and stop.is_set()):
                return
            try:
                response = await pool.request("POST", target.path, target.body, target.headers)
                ok = response.status == 200
            except Exception:
                ok = False
            t1 = perf()
            if t0 >= measure_from:
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1

    if on_measure is not None:
        asyncio.get_running_loop().call_later(warmup, on_measure)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = min(perf(), end) - measure_from
    pool.close()
    return Run(latencies, errors, max(elapsed, 1e-9))


async def one(target: Target, timeout: float = 300.0) -> tuple[int, bytes, float]:
    pool = target.pool()
    t0 = time.perf_counter()
    response = await pool.request("POST", target.path, target.body, target.headers, timeout)
    pool.close()
    return response.status, response.body, time.perf_counter() - t0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed."""
    if uvloop is not None:
        return uvloop.run(coro)
    return asyncio.run(coro)


class _Source:
    """The target's one request, encoded once, for Berth's load generator."""

    def __init__(self, target: Target) -> None:
        self.pool = target.pool(max_idle=256)
        self._data = self.pool.encode("POST", target.path, target.body, target.headers)

    def data(self, index: int) -> bytes:
        return self._data


async def open_loop(target: Target, rate: float, duration: float) -> Run:
    """Requests at a fixed rate whatever the answers (a stall holds no later request back).

    Driven by Berth's load generator (`loadgen.generator`, in this process): its scheduler,
    keep-alive pool and HDR histogram. Latency counts from each request's intended time, so
    a stall shows in the percentiles of the requests scheduled during it; the generator
    wakes within microseconds of each intended time (or at most every 0.5 ms, in batches).
    """
    from loadgen import histograms
    from loadgen.generator import Generator
    from loadgen.spec import HttpTarget, RequestSpec, Spec, Stage

    spec = Spec(
        target=HttpTarget(
            url=f"http://{target.host}:{target.port}",
            endpoint=target.name,
            unix_path=target.unix_path,
            headers=dict(target.headers),
        ),
        requests=(RequestSpec(target.name, "application/json", target.body, 1.0),),
        stages=(Stage(rate, duration),),
        arrival="uniform",
        seed=1,
        start_at=None,
        timeout_s=60.0,
        max_in_flight=256,
        max_connections=256,
        report_interval_s=60.0,
        max_duration_s=duration + 60.0,
        stop_error_rate=1.0,
        stop_min_requests=1,
    )
    events: list[dict[str, Any]] = []
    generator = Generator(spec, _Source(target), events.append)
    await generator.run(generator.clock() + 0.05)
    stage = next(e for e in events if e["event"] == "stage")
    latencies = [
        item.value_iterated_to / 1e6
        for item in histograms.decode(stage["hist"]).get_recorded_iterator()
        for _ in range(item.count_at_value_iterated_to)
    ]
    return Run(latencies, sum(stage["errors"].values()), duration)
