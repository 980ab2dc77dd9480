"""Cold starts: how long a request waits for its model, against download + load time.

    .venv/bin/python bench/dataplane_cold_start.py [--models 5] [--burst 32]

Goals (issue 3): ModelLoadingWaitTime <= 1.1 x (ModelDownloadingTime + ModelLoadingTime);
32 simultaneous requests to a cold model -> 1 Triton load, 32 successes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import gateway_target, python_package, start_gateway  # noqa: E402
from bench._loadgen import one, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--burst", type=int, default=32)
    args = parser.parse_args()
    gw = start_gateway(["cold:8GiB"])
    ok = True
    try:
        store = gw.store("cold")
        print(f"{args.models} cold requests, one model each (python backend, 16 MiB resident)")
        print(
            f"  {'package':18s} {'client ms':>9s} {'wait ms':>8s} {'download ms':>11s} "
            f"{'load ms':>8s} {'wait/(dl+load)':>14s}"
        )
        worst = 0.0
        for i in range(args.models):
            package = python_package(store, f"cold{i}", 1, ballast_bytes=16 * 1024**2)
            status, _, seconds = run(one(gateway_target(gw, "cold", package)))
            assert status == 200, status
            wait = gw.metric("cold", "ModelLoadingWaitTime", "Maximum", package)
            download = gw.metric("cold", "ModelDownloadingTime", "Maximum", package)
            load = gw.metric("cold", "ModelLoadingTime", "Maximum", package)
            ratio = wait / (download + load)
            worst = max(worst, ratio)
            print(
                f"  {package:18s} {seconds * 1e3:9.1f} {wait / 1e3:8.1f} {download / 1e3:11.1f} "
                f"{load / 1e3:8.1f} {ratio:14.3f}"
            )
        cold_ok = worst <= 1.1
        ok &= cold_ok
        print(f"  worst ratio {worst:.3f}  [goal <= 1.1: {'PASS' if cold_ok else 'FAIL'}]")

        package = python_package(store, "burst", 1, ballast_bytes=16 * 1024**2)
        target = gateway_target(gw, "cold", package)

        async def burst() -> list[tuple[int, bytes, float]]:
            return await asyncio.gather(*(one(target) for _ in range(args.burst)))

        results = run(burst())
        successes = sum(1 for status, _, _ in results if status == 200)
        models = gw.get("/admin/endpoints/cold/models")[1]["models"]
        served = next(m["served_model"] for m in models if m["target_model"] == package)
        triton_loads = gw.triton_loads(served.split("--")[0] + "--")
        loads_metric = gw.metric("cold", "ModelLoadingTime", "SampleCount", package)
        slowest = max(seconds for _, _, seconds in results)
        burst_ok = successes == args.burst and triton_loads == 1 and loads_metric == 1
        ok &= burst_ok
        print(f"\nburst of {args.burst} simultaneous requests to a cold model")
        print(
            f"  successes {successes}/{args.burst}, Triton loads {triton_loads} "
            f"(ModelLoadingTime samples {loads_metric:.0f}), slowest answer {slowest * 1e3:.0f} ms "
            f"[goal 1 load, {args.burst} successes: {'PASS' if burst_ok else 'FAIL'}]"
        )
    finally:
        gw.stop()
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
