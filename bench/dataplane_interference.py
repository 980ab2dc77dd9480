"""Interference: a hot model's tail latency while other models load every 2 seconds.

    .venv/bin/python bench/dataplane_interference.py [--rate 200] [--duration 20]

The hot model gets a fixed request rate (open loop) for the same time with and without a
stream of loads of other models (one every `--every` seconds, through the admin API, as
cold traffic would cause), in alternating rounds.

The same is measured first on direct Triton (the hot model straight on Triton's HTTP Unix
socket while the gateway loads the others), to show how much of the effect is Triton's own;
the gateway is driven over loopback TCP.

Goal (issue 3): hot p99 through the gateway with loads <= 1.25 x without.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import (  # noqa: E402
    GatewayProcess,
    direct_target,
    gateway_target,
    python_package,
    start_gateway,
    warm,
)
from bench._loadgen import Target, one, open_loop, run  # noqa: E402


async def with_loads(
    hot: Target, gw: GatewayProcess, packages: list[str], rate: float, duration: float, every: float
) -> tuple[list[float], int]:
    loaded = 0
    # The admin API always asks for the gateway's token.
    auth = {"Authorization": f"Bearer {gw.admin_token}"}

    async def loader() -> None:
        nonlocal loaded
        for package in packages:
            path = f"/admin/endpoints/hot/models/{package}/load"
            admin = Target("admin", "127.0.0.1", gw.port, path, b"", auth)
            started = asyncio.get_running_loop().time()
            status, _, _ = await one(admin)
            loaded += status == 200
            rest = every - (asyncio.get_running_loop().time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    task = asyncio.ensure_future(loader())
    result = await open_loop(hot, rate, duration)
    task.cancel()
    return result.latencies, loaded


def measure(
    hot: Target, gw: GatewayProcess, others: list[str], args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, int]:
    """(quiet p50/p99 ms, busy p50/p99 ms, models loaded) over alternating rounds."""
    per_round = len(others) // args.rounds
    run(open_loop(hot, args.rate, 2.0))  # Warm the connections and the stub.
    quiet: list[float] = []
    busy: list[float] = []
    total_loads = 0
    for r in range(args.rounds):
        quiet += run(open_loop(hot, args.rate, args.duration)).latencies
        batch = others[r * per_round : (r + 1) * per_round]
        latencies, loaded = run(with_loads(hot, gw, batch, args.rate, args.duration, args.every))
        busy += latencies
        total_loads += loaded
    return np.percentile(quiet, [50, 99]) * 1e3, np.percentile(busy, [50, 99]) * 1e3, total_loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--ballast-mib", type=int, default=16, help="size of each loading model's weights file"
    )
    args = parser.parse_args()
    gw = start_gateway(["hot:64GiB"])
    try:
        store = gw.store("hot")
        hot_package = python_package(store, "hot", 1)
        warm(gw, "hot", hot_package)
        per_round = int(args.duration / args.every) + 1
        ratios = {}
        direct = direct_target(gw, "hot", hot_package)
        print(
            f"direct Triton over its HTTP {direct.transport} ({direct.unix_path}); "
            "the gateway over loopback TCP"
        )
        # Triton's own sensitivity to loads first (the hot model straight on its socket, the
        # loads through the gateway as before), then the same through the gateway.
        for name, hot in (
            ("direct Triton", direct),
            ("gateway", gateway_target(gw, "hot", hot_package)),
        ):
            others = [
                python_package(
                    store, f"{name[0]}other{i:02d}", 1, ballast_bytes=args.ballast_mib * 1024**2
                )
                for i in range(per_round * args.rounds)
            ]
            q, b, loads = measure(hot, gw, others, args)
            ratios[name] = b[1] / q[1]
            print(
                f"{name}: hot model at {args.rate:.0f} req/s (open loop), {args.rounds} rounds "
                f"of {args.duration:.0f}s each way; {loads} other models loaded, one per "
                f"{args.every:.0f}s"
            )
            print(f"  without loads: p50 {q[0]:.3f} ms  p99 {q[1]:.3f} ms")
            print(f"  with loads   : p50 {b[0]:.3f} ms  p99 {b[1]:.3f} ms")
            print(f"  p99 ratio {ratios[name]:.2f}x")
    finally:
        gw.stop()
    ratio = ratios["gateway"]
    ok = ratio <= 1.25
    print(
        f"\ngateway p99 ratio {ratio:.2f}x  [goal <= 1.25x: {'PASS' if ok else 'FAIL'}]; "
        f"direct Triton's own {ratios['direct Triton']:.2f}x in the same run"
    )
    print(f"overall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
