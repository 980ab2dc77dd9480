"""Zipf traffic over many models with room for a few: hit ratio against offline LRU.

    .venv/bin/python bench/dataplane_zipf.py [--models 50] [--room 10] [--requests 160]

The trace is drawn once (Zipf, seeded) and replayed one request at a time, so the gateway
sees exactly the order an offline LRU cache of `room` models would see. The endpoint's
budget is set from the measured footprint of one model, to hold `room` of them.

Goals (issue 3): hit ratio >= 0.98 x the offline LRU simulation's; memory never over budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import gateway_target, python_package, start_gateway  # noqa: E402
from bench._loadgen import one, run  # noqa: E402

BALLAST = 48 * 1024**2


def zipf_trace(models: int, requests: int, skew: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, models + 1) ** skew
    order = rng.permutation(models)  # Popularity is not the package order.
    return [int(order[i]) for i in rng.choice(models, size=requests, p=weights / weights.sum())]


def lru_hits(trace: list[int], room: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for item in trace:
        if item in cache:
            hits += 1
            cache.move_to_end(item)
        else:
            cache[item] = None
            if len(cache) > room:
                cache.popitem(last=False)
    return hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--room", type=int, default=10)
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--skew", type=float, default=1.2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    trace = zipf_trace(args.models, args.requests, args.skew, args.seed)
    expected_hits = lru_hits(trace, args.room)
    gw = start_gateway(["zipf:64GiB"])
    ok = True
    try:
        store = gw.store("zipf")
        packages = [
            python_package(store, f"z{i:02d}", 1, scale=float(i + 1), ballast_bytes=BALLAST)
            for i in range(args.models)
        ]
        # Budget for `room` models, from one model's measured footprint (+ half a model of
        # slack for measurement noise; less than one more model).
        status, first = gw.send_json("POST", f"/admin/endpoints/zipf/models/{packages[0]}/load", {})
        assert status == 200, first
        budget = int(first["size_bytes"] * (args.room + 0.5))
        gw.send_json("POST", f"/admin/endpoints/zipf/models/{packages[0]}/unload", {})
        gw.send_json("PUT", "/admin/endpoints/zipf", {"memory_budget_bytes": budget})
        print(
            f"{args.models} models (python, {BALLAST >> 20} MiB ballast), measured footprint "
            f"{first['size_bytes'] / 2**20:.1f} MiB, budget {budget / 2**20:.0f} MiB "
            f"(room for {args.room}); Zipf s={args.skew}, {args.requests} requests in sequence"
        )

        started = time.monotonic()
        hits = 0
        max_used = 0
        max_loaded = 0
        failures = 0
        for item in trace:
            before = gw.metric("zipf", "ModelCacheHit", "Sum") or 0.0
            status, _, _ = run(one(gateway_target(gw, "zipf", packages[item])))
            failures += status != 200
            hits += int((gw.metric("zipf", "ModelCacheHit", "Sum") or 0.0) - before)
            listing = gw.get("/admin/endpoints/zipf/models")[1]
            max_used = max(max_used, listing["memory_used_bytes"])
            max_loaded = max(max_loaded, len(listing["models"]))
        elapsed = time.monotonic() - started

        hit_ratio = hits / len(trace)
        lru_ratio = expected_hits / len(trace)
        relative = hit_ratio / lru_ratio
        hit_ok = relative >= 0.98 and failures == 0
        memory_ok = max_used <= budget
        ok = hit_ok and memory_ok
        print(f"  replayed in {elapsed:.0f}s, failures {failures}")
        print(
            f"  gateway hit ratio {hit_ratio:.3f} (ModelCacheHit), offline LRU({args.room}) "
            f"{lru_ratio:.3f} -> {relative:.3f}x  [goal >= 0.98x: {'PASS' if hit_ok else 'FAIL'}]"
        )
        print(
            f"  max memory accounted {max_used / 2**20:.0f} MiB of {budget / 2**20:.0f} MiB, "
            f"max models loaded {max_loaded}  [goal never over budget: "
            f"{'PASS' if memory_ok else 'FAIL'}]"
        )
        unloads = gw.metric("zipf", "ModelUnloadingTime", "SampleCount") or 0
        loading = gw.metric("zipf", "ModelLoadingTime", "p50") or 0
        print(
            f"  loads {len(trace) - hits}, unloads {unloads:.0f}, "
            f"ModelLoadingTime p50 {loading / 1e3:.0f} ms"
        )
    finally:
        gw.stop()
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
