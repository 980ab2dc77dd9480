"""Berth's load generator (`python -m loadgen`) beside Locust's FastHttpUser, one run.

Both drive the same endpoint at the same offered rate, one process each, in turn: a small
fast HTTP server (`loadgen.tests.server`, uvloop + llhttp, answering at once) and, when a
Triton can start, the real data plane (a gateway with a Python-backend model). Locust runs
headless as a subprocess, its users paced by `constant_throughput`. The same meter for
both: the generator process's CPU time (user + system, psutil) over a measuring window after
a warm-up, and the requests the endpoint answered in that window (the server's own
counter; the gateway's Invocations metric), so CPU per request and achieved rate cost each
tool nothing to report. Latencies come from each tool's own report (Berth: its HDR histogram,
counted from each request's intended time; Locust: its stats, from each send).

Then the highest rate one generator process holds: a ladder of offered rates against the
fast server until the achieved rate falls more than 1% short, for each tool. The generator's
CPU share at the rung that failed tells whether the generator or the server was the limit
(on 2 cores they share them).

Goals (issue 13): CPU per request at most 0.5x Locust's; achieved within 1% of offered up
to the highest rate the endpoint holds.

    .venv/bin/python bench/loadgen.py [--rates 200,1000] [--window 4] [--no-gateway]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadgen import histograms  # noqa: E402
from loadgen.launcher import GeneratorProcess  # noqa: E402

BODY = b'{"inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
MODEL = "bench_1.tar.gz"
PER_LOCUST_USER = 20.0  # req/s each Locust user is paced at (each user is a closed loop)

LOCUSTFILE = """
import os
from locust import FastHttpUser, constant_throughput, task

PATH = os.environ["LG_PATH"]
BODY = bytes.fromhex(os.environ["LG_BODY"])
HEADERS = {"Content-Type": "application/json",
           "X-Amzn-SageMaker-Target-Model": os.environ["LG_MODEL"]}


class Invoker(FastHttpUser):
    wait_time = constant_throughput(float(os.environ["LG_PER_USER"]))

    @task
    def invoke(self):
        self.client.post(PATH, data=BODY, headers=HEADERS)
"""


@dataclass
class Endpoint:
    name: str
    url: str
    endpoint: str
    answered: Callable[[], int]  # Requests the endpoint has answered so far.


@dataclass
class Measured:
    tool: str
    offered: float
    achieved: float
    cpu_us: float
    cpu_share: float  # Of one core, over the window.
    p50_ms: float | None
    p99_ms: float | None
    note: str = ""

    @property
    def holds(self) -> bool:
        """Within 1% of offered, either way (above it: a backlog caught up in the window)."""
        return abs(self.achieved - self.offered) <= 0.01 * self.offered

    def line(self) -> str:
        p50 = f"{self.p50_ms:.2f}" if self.p50_ms is not None else "-"
        p99 = f"{self.p99_ms:.2f}" if self.p99_ms is not None else "-"
        return (
            f"{self.tool:7} offered {self.offered:>7,.0f}/s achieved {self.achieved:>8,.1f}/s "
            f"({self.achieved / self.offered:6.1%})  CPU {self.cpu_us:6.1f} us/req "
            f"({self.cpu_share:4.0%} of a core)  p50 {p50} ms  p99 {p99} ms {self.note}"
        )


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _window(pid: int, endpoint: Endpoint, warmup: float, window: float) -> tuple[float, int, float]:
    """(CPU seconds of `pid`, requests answered, seconds) over `window` after `warmup`."""
    proc = psutil.Process(pid)
    time.sleep(warmup)
    c0, n0, t0 = _cpu(proc), endpoint.answered(), time.monotonic()
    time.sleep(window)
    c1, n1, t1 = _cpu(proc), endpoint.answered(), time.monotonic()
    return c1 - c0, n1 - n0, t1 - t0


def berth(endpoint: Endpoint, rate: float, warmup: float, window: float) -> Measured:
    spec = {
        "target": {"kind": "http", "url": endpoint.url, "endpoint": endpoint.endpoint},
        "requests": [
            {
                "target_model": MODEL,
                "content_type": "application/json",
                "body_b64": base64.b64encode(BODY).decode(),
                "weight": 1.0,
            }
        ],
        "stages": [{"rate": rate, "duration_s": warmup + window + 0.5}],
        "max_in_flight": 1024,
        "max_connections": 512,
        "timeout_s": 10.0,
        "max_duration_s": warmup + window + 30,
    }
    with GeneratorProcess(spec) as gen:
        events: list[dict] = []
        while not any(e["event"] == "started" for e in events):
            events += gen.events(5.0)
            if gen.eof:
                raise RuntimeError(f"the generator did not start: {events} {gen.stderr_tail}")
        cpu, answered, seconds = _window(gen.pid, endpoint, warmup, window)
        while not gen.eof:
            events += gen.events(1.0)
    stage = next(e for e in events if e["event"] == "stage")
    summary = histograms.summary(histograms.decode(stage["hist"]))
    note = f"lag p99 {stage['lag_p99_ms']} ms, on_schedule {stage['on_schedule']}"
    return Measured(
        "berth",
        rate,
        answered / seconds,
        cpu / max(answered, 1) * 1e6,
        cpu / seconds,
        summary["p50_ms"],
        summary["p99_ms"],
        note,
    )


def locust(endpoint: Endpoint, rate: float, warmup: float, window: float) -> Measured:
    folder = Path(tempfile.mkdtemp(prefix="berth-bench-locust-"))
    try:
        (folder / "locustfile.py").write_text(LOCUSTFILE)
        users = max(1, math.ceil(rate / PER_LOCUST_USER))
        env = dict(os.environ)
        env.update(
            LG_PATH=f"/endpoints/{endpoint.endpoint}/invocations",
            LG_BODY=BODY.hex(),
            LG_MODEL=MODEL,
            LG_PER_USER=str(rate / users),
        )
        run_time = math.ceil(warmup + window + 1.5)
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("locust")),
                "-f",
                str(folder / "locustfile.py"),
                "--headless",
                "--host",
                endpoint.url,
                "-u",
                str(users),
                "-r",
                str(users),
                "-t",
                f"{run_time}s",
                "--only-summary",
                "--csv",
                str(folder / "run"),
                "--loglevel",
                "ERROR",
            ],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Locust imports gevent and spawns its users in the first second: warm up past it.
        cpu, answered, seconds = _window(proc.pid, endpoint, warmup + 1.0, window)
        _, err = proc.communicate(timeout=run_time + 30)
        p50 = p99 = None
        stats = folder / "run_stats.csv"
        if stats.exists():
            for row in csv.DictReader(stats.open()):
                if row["Name"] == "Aggregated" and int(row["Request Count"]):
                    p50, p99 = float(row["50%"]), float(row["99%"])
        elif proc.returncode:
            raise RuntimeError(f"locust failed: {err.decode()[-2000:]}")
        return Measured(
            "locust",
            rate,
            answered / seconds,
            cpu / max(answered, 1) * 1e6,
            cpu / seconds,
            p50,
            p99,
            f"{users} users",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fast_server() -> tuple[subprocess.Popen, Endpoint]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.tests.server"], stdout=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}"

    def answered() -> int:
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
            return json.loads(response.read())["requests"]

    return proc, Endpoint("fast local server", url, "bench", answered)


def compare(endpoint: Endpoint, rate: float, warmup: float, window: float) -> bool:
    print(f"\n{endpoint.name}, {rate:,.0f} req/s offered, {window:.0f} s window")
    b = berth(endpoint, rate, warmup, window)
    lo = locust(endpoint, rate, warmup, window)
    print(f"  {b.line()}\n  {lo.line()}")
    ratio = b.cpu_us / lo.cpu_us if lo.cpu_us else float("nan")
    cpu_ok = ratio <= 0.5
    print(
        f"  CPU per request, Berth / Locust: {ratio:.2f}x  "
        f"[goal <= 0.5x: {'PASS' if cpu_ok else 'FAIL'}]"
    )
    print(
        f"  achieved / offered: Berth {b.achieved / rate:.1%}, Locust {lo.achieved / rate:.1%}  "
        f"[goal Berth within 1%: {'PASS' if b.holds else 'FAIL'}]"
    )
    return cpu_ok and b.holds


def ladder(
    name: str,
    measure: Callable[[float], Measured],
    rates: list[float],
) -> Measured | None:
    """The highest rung held (achieved within 1% of offered); stops at the first miss."""
    held = None
    for rate in rates:
        m = measure(rate)
        print(f"  {m.line()}  {'held' if m.holds else 'MISSED'}")
        if not m.holds:
            break
        held = m
    print(f"  {name}: highest rate held {held.offered:,.0f} req/s" if held else f"  {name}: none")
    return held


def start_gateway_endpoint() -> tuple[object, Endpoint]:
    from bench._harness import start_gateway, warm
    from dataplane.tests.gateway_fixtures import python_package

    gw = start_gateway(["bench:2GiB"])
    try:
        package = python_package(gw.store("bench"), "bench", 1, scale=2.0)
        warm(gw, "bench", package)
    except Exception:
        gw.stop()
        raise
    global MODEL
    MODEL = package

    def answered() -> int:
        return int(gw.metric("bench", "Invocations", "Sum") or 0)

    return gw, Endpoint(
        "data plane gateway (Python model)", f"http://127.0.0.1:{gw.port}", "bench", answered
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates", default="200,1000", help="side-by-side rates on the fast server (req/s)"
    )
    parser.add_argument("--gateway-rate", type=float, default=1000.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--no-gateway", action="store_true", help="skip the real data plane")
    parser.add_argument("--no-ladder", action="store_true", help="skip the highest-rate ladders")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    ok = True
    server, endpoint = fast_server()
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            ok &= compare(endpoint, rate, args.warmup, args.window)
        if not args.no_ladder:
            print("\nhighest rate one generator process holds (fast local server, 2 s windows)")
            b = ladder(
                "Berth",
                lambda r: berth(endpoint, r, 1.0, 2.0),
                [2000, 4000, 6000, 8000, 10000, 12000, 16000, 20000],
            )
            lo = ladder(
                "Locust",
                lambda r: locust(endpoint, r, 1.0, 2.0),
                [1000, 2000, 3000, 4000, 6000, 8000],
            )
            if b and lo:
                print(f"  ratio Berth / Locust: {b.offered / lo.offered:.1f}x")
    finally:
        server.kill()
        server.wait()
    if not args.no_gateway:
        try:
            gw, gateway = start_gateway_endpoint()
        except Exception as exc:  # No Triton here: the fast server's figures stand alone.
            print(f"\n(no data plane: {type(exc).__name__}: {str(exc)[:300]})")
        else:
            try:
                ok &= compare(gateway, args.gateway_rate, args.warmup + 1.0, args.window)
            finally:
                gw.stop()  # type: ignore[attr-defined]
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
