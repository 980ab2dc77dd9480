"""Warm-path overhead of the gateway against direct Triton, on the same model, same run.

    .venv/bin/python bench/dataplane_overhead.py [--duration 4] [--saturation-step 2.5]

Goals (issue 3): gateway p50 <= 1.4x direct p50 (<= 0.3 ms added) and p99 <= 1.8x direct p99,
at 1 and 8 requests in flight; max req/s with p99 <= 10 ms >= 0.7x direct Triton's.

Direct Triton is reached over its HTTP Unix socket (it runs sandboxed, with no network), the
gateway over loopback TCP; the gateway itself talks to Triton over that same Unix socket.

Each figure comes with the CPU time per request of every process on the path (the load
generator, the gateway, Triton, its Python-backend stubs): where the machine's cores are the
limit, the ratio of the two totals bounds what the gateway's throughput can reach.

The floor for the gateway's own CPU per request is a bare reverse proxy (`_bare_proxy.py`:
uvloop and httptools, one upstream connection per client connection, no features) run in the
same way against the same Triton and model: goal, the gateway's CPU per request within 1.25x
of the bare proxy's.

The gateway's request path runs compiled (`dataplane.native`) when built; `--interpreted`
also runs a second gateway with `BERTH_GATEWAY_INTERPRETED=1` (its own Triton, the same
model) and prints its CPU per request beside the compiled one's.

`--in-memory` times the Python alone instead (no Triton, no sockets): the gateway's
invocation path (`HttpConnection`, `InvocationHandler`, `UpstreamConnection`), compiled and
interpreted (the latter in a child process), and the bare proxy's, each fed the same request
and Triton answer on in-memory transports, in CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import (  # noqa: E402
    BODY,
    CpuMeter,
    CpuShare,
    bare_target,
    direct_target,
    gateway_target,
    python_package,
    start_bare_proxy,
    start_gateway,
    warm,
)
from bench._loadgen import Run, Target, closed_loop, run  # noqa: E402
from dataplane import native  # noqa: E402

LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48)


Measured = tuple[Run, CpuShare]


def _build() -> str:
    return "compiled" if native.in_use() else "interpreted"


def best(runs: list[Measured]) -> Measured:
    """Of repeated runs, the one with the median p50 (damps a noisy neighbour on 2 cores)."""
    return sorted(runs, key=lambda m: m[0].pct(50))[len(runs) // 2]


def measured(
    meter: CpuMeter, target: Target, concurrency: int, seconds: float, warmup: float
) -> Measured:
    """A closed-loop run and the CPU each process spent on it after its warm-up."""
    snapshot: dict[str, tuple[list, float]] = {}
    result = run(
        closed_loop(
            target,
            concurrency,
            seconds,
            warmup,
            on_measure=lambda: snapshot.update(meter.snapshot()),
        )
    )
    return result, meter.since(snapshot)


def saturation(
    meter: CpuMeter, target: Target, step: float, slo: float = 0.010
) -> tuple[float, int, Measured | None]:
    """Max req/s over a concurrency ladder among the steps whose p99 stays within `slo`."""
    best_rate, best_c, best_run = 0.0, 0, None
    for concurrency in LADDER:
        result, share = measured(meter, target, concurrency, step, warmup=0.3)
        print(f"    {target.name:8s} c={concurrency:3d}  {result.summary()}")
        if result.pct(99) <= slo and result.rate > best_rate:
            best_rate, best_c, best_run = result.rate, concurrency, (result, share)
        if result.pct(99) > 3 * slo:
            break
    return best_rate, best_c, best_run


class _Transport:
    """Keeps what is written (cleared now and then): a socket's place, minus the socket."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _in_memory(requests: int) -> tuple[float, float]:
    """CPU us per request of the gateway's invocation path and of the bare proxy's, with
    in-memory transports: the Python each request costs, without the kernel's share."""
    from bench import _bare_proxy as bare
    from dataplane.gateway import Endpoint, Gateway, GatewaySettings, LoadedModel
    from dataplane.httpserver import HttpServer, Router
    from dataplane.metrics import MetricsRegistry
    from dataplane.server import InvocationHandler
    from dataplane.tests.gateway_fixtures import TARGET_HEADER
    from dataplane.upstream import UpstreamConnection, UpstreamPool

    package, served = "overhead_1.tar.gz", "overhead-0123456789ab"
    infer_path = f"/v2/models/{served}/infer"
    head = (
        f"POST {{path}} HTTP/1.1\r\nHost: 127.0.0.1\r\n{TARGET_HEADER}: {package}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    request = head.format(path="/endpoints/bench/invocations").encode() + BODY
    bare_request = head.format(path=infer_path).encode() + BODY
    answer = (
        b'{"model_name":"%s","model_version":"1","outputs":[{"name":"OUTPUT",'
        b'"datatype":"FP32","shape":[1,4],"data":[2.0,4.0,6.0,8.0]}]}' % served.encode()
    )
    triton = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(answer),
            answer,
        )
    )

    with tempfile.TemporaryDirectory() as store:
        endpoint = Endpoint("bench", store, 10**9)
        metrics = MetricsRegistry()
        endpoint.loaded[package] = LoadedModel(
            package,
            served,
            [],
            served,
            1,
            0,
            time.time(),
            1,
            infer_path=infer_path,
            model_name="overhead",
        )
        endpoint.admit_model(metrics, package)
        pool = UpstreamPool("localhost", 80, unix_path="/unused")
        upstream = UpstreamConnection()
        upstream_out = _Transport()
        upstream.connection_made(upstream_out)  # type: ignore[arg-type]
        pool.release(upstream)
        # A gateway whose Triton never starts: the fast path reads its pool and generation.
        gateway = Gateway(GatewaySettings(state_dir=Path(store) / "state"))
        gateway.endpoints["bench"] = endpoint
        gateway.metrics = metrics
        gateway.supervisor.pool = pool
        gateway.supervisor.generation = 1
        router = Router()
        server = HttpServer(router, max_body=6 * 2**20, too_large=None, error_mapper=None)  # type: ignore[arg-type]
        router.add_direct(
            "POST",
            "/endpoints/",
            "/invocations",
            InvocationHandler(gateway, server),
        )
        client = server.protocol()
        client_out = _Transport()
        client.connection_made(client_out)  # type: ignore[arg-type]

        def gateway_once() -> None:
            client.data_received(request)
            upstream.data_received(triton)

        proxy = bare.Client("/unused")
        proxy_out = _Transport()
        proxy.transport = proxy_out  # type: ignore[assignment]
        proxy.upstream = bare.Upstream(proxy)
        proxy.upstream.transport = _Transport()  # type: ignore[assignment]

        def bare_once() -> None:
            proxy.data_received(bare_request)
            proxy.upstream.data_received(triton)  # type: ignore[union-attr]

        figures = []
        for once, outs in (
            (gateway_once, (client_out, upstream_out)),
            (bare_once, (proxy_out, proxy.upstream.transport)),
        ):
            for _ in range(1000):  # Warm: caches, the metrics' first minute.
                once()
            answered = outs[0].out[-1]
            if b" 200 " not in answered.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"the in-memory path did not answer 200: {answered[:200]!r}")
            started = time.process_time()
            for i in range(requests):
                once()
                if not i % 512:
                    for out in outs:
                        out.out.clear()  # type: ignore[attr-defined]
            figures.append((time.process_time() - started) / requests * 1e6)
        server.close()
        assert b'"model_name":"overhead"' in client_out.out[-1]  # Renamed, as served.
    return figures[0], figures[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--saturation-step", type=float, default=2.5)
    parser.add_argument("--no-saturation", action="store_true", help="skip the concurrency ladder")
    parser.add_argument(
        "--interpreted",
        action="store_true",
        help="also measure a gateway running interpreted (BERTH_GATEWAY_INTERPRETED=1)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--in-memory",
        type=int,
        metavar="REQUESTS",
        help="time only the Python of each path over REQUESTS requests (no Triton, no sockets)",
    )
    args = parser.parse_args()
    if args.in_memory:
        gateway_us, bare_us = asyncio.run(_in_memory(args.in_memory))
        print(
            f"in memory, CPU us/request: gateway ({_build()}) {gateway_us:.2f}, bare proxy "
            f"{bare_us:.2f}, ratio {gateway_us / bare_us:.2f}x",
            flush=True,
        )
        if native.in_use() and not args.child:
            # The interpreted build, in a child: a process imports one build or the other.
            subprocess.run(
                [sys.executable, __file__, "--in-memory", str(args.in_memory), "--child"],
                env={**os.environ, native.INTERPRETED_ENV: "1"},
                check=True,
            )
        return 0

    gw = start_gateway(["bench:4GiB"])
    proxy = None
    interpreted_gw = None
    ok = True
    try:
        package = python_package(gw.store("bench"), "overhead", 1, scale=2.0)
        warm(gw, "bench", package)
        gateway = gateway_target(gw, "bench", package)
        direct = direct_target(gw, "bench", package)
        print(
            f"model: python backend, OUTPUT = INPUT * 2, FP32 [1,4], JSON; {args.repeats} runs "
            f"of {args.duration:.0f}s each, interleaved"
        )
        print(
            f"direct Triton over its HTTP {direct.transport} ({direct.unix_path}); the gateway "
            f"over {gateway.transport}, itself reaching Triton over that {direct.transport}.\n"
            "Direct saves the client's TCP hop; before the sandbox both went over TCP."
        )
        print(f"the gateway runs {_build()}")
        proxy, proxy_port = start_bare_proxy(direct.unix_path or "")
        bare = bare_target(direct, proxy_port)
        targets = [direct, gateway, bare]
        others = {"bare": proxy.pid}
        if args.interpreted:
            interpreted_gw = start_gateway(["bench:4GiB"], env={native.INTERPRETED_ENV: "1"})
            python_package(interpreted_gw.store("bench"), "overhead", 1, scale=2.0)
            warm(interpreted_gw, "bench", package)
            targets.append(replace(gateway_target(interpreted_gw, "bench", package), name="interp"))
            assert interpreted_gw.proc is not None
            others["interp"] = interpreted_gw.proc.pid
        meter = CpuMeter(gw, others)
        for concurrency in (1, 8):
            runs: dict[str, list[Measured]] = {target.name: [] for target in targets}
            for _ in range(args.repeats):
                for target in targets:
                    runs[target.name].append(
                        measured(meter, target, concurrency, args.duration, warmup=0.5)
                    )
            (d, d_cpu), (g, g_cpu) = best(runs["direct"]), best(runs["gateway"])
            b, b_cpu = best(runs["bare"])
            p50_ratio = g.pct(50) / d.pct(50)
            p99_ratio = g.pct(99) / d.pct(99)
            added_ms = (g.pct(50) - d.pct(50)) * 1e3
            p50_ok = p50_ratio <= 1.4 or added_ms <= 0.3
            p99_ok = p99_ratio <= 1.8
            ok &= p50_ok and p99_ok
            print(f"\n{concurrency} in flight")
            print(f"  direct : {d.summary()}")
            print(f"           {d_cpu.line(len(d.latencies))}")
            print(f"  gateway: {g.summary()}")
            print(f"           {g_cpu.line(len(g.latencies))}")
            print(
                f"  p50 ratio {p50_ratio:.2f}x (+{added_ms:.3f} ms)  [goal <= 1.4x or <= 0.3 ms: "
                f"{'PASS' if p50_ok else 'FAIL'}]"
            )
            print(f"  p99 ratio {p99_ratio:.2f}x  [goal <= 1.8x: {'PASS' if p99_ok else 'FAIL'}]")
            print(f"  bare   : {b.summary()}")
            print(f"           {b_cpu.line(len(b.latencies))}")
            gateway_us = g_cpu.per_request(len(g.latencies))["gateway"]
            bare_us = b_cpu.per_request(len(b.latencies))["bare"]
            cpu_ratio = gateway_us / bare_us
            cpu_ok = cpu_ratio <= 1.25
            ok &= cpu_ok
            print(
                f"  proxy CPU us/request: gateway {gateway_us:.0f}, bare proxy {bare_us:.0f}, "
                f"ratio {cpu_ratio:.2f}x  [goal <= 1.25x: {'PASS' if cpu_ok else 'FAIL'}]"
            )
            if args.interpreted:
                i, i_cpu = best(runs["interp"])
                interpreted_us = i_cpu.per_request(len(i.latencies))["interp"]
                print(f"  interp : {i.summary()}")
                print(
                    f"  interpreted gateway CPU us/request {interpreted_us:.0f}, ratio to the "
                    f"bare proxy {interpreted_us / bare_us:.2f}x; compiled / interpreted "
                    f"{gateway_us / interpreted_us:.2f}"
                )

        if args.no_saturation:
            print(f"\noverall (no saturation ladder): {'PASS' if ok else 'FAIL'}")
            return 0 if ok else 1
        print("\nsaturation (closed loop, concurrency ladder, p99 <= 10 ms)")
        d_rate, d_c, d_best = saturation(meter, direct, args.saturation_step)
        g_rate, g_c, g_best = saturation(meter, gateway, args.saturation_step)
        ratio = g_rate / d_rate if d_rate else float("nan")
        sat_ok = ratio >= 0.7
        ok &= sat_ok
        for name, rate, c, chosen in (
            ("direct ", d_rate, d_c, d_best),
            ("gateway", g_rate, g_c, g_best),
        ):
            print(f"  {name}: {rate:,.0f} req/s (at {c} in flight)")
            if chosen is not None:
                print(f"           {chosen[1].line(len(chosen[0].latencies))}")
        print(f"  ratio {ratio:.2f}x  [goal >= 0.7x: {'PASS' if sat_ok else 'FAIL'}]")
        if d_best is not None and g_best is not None:
            bound = d_best[1].total(len(d_best[0].latencies)) / g_best[1].total(
                len(g_best[0].latencies)
            )
            print(
                f"  CPU per request, direct / gateway: {bound:.2f} (the most the ratio can be "
                f"where the cores are the limit)"
            )
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        if interpreted_gw is not None:
            interpreted_gw.stop()
        gw.stop()
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
