"""Real processes for the generator's tests: the test server and specs aimed at it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadgen import histograms
from loadgen.launcher import GeneratorProcess

ROOT = Path(__file__).resolve().parents[2]


class Server:
    """`python -m loadgen.tests.server` with the given options, on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen.tests.server", *args],
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(model: str = "demo_1.tar.gz", body: bytes = b'{"inputs": [1]}', weight=1.0):
    return {
        "target_model": model,
        "content_type": "application/json",
        "body_b64": base64.b64encode(body).decode(),
        "weight": weight,
    }


def http_spec(url: str, stages: list[tuple[float, float]], **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"kind": "http", "url": url, "endpoint": "local-staging", "headers": {}},
        "requests": [request()],
        "stages": [{"rate": rate, "duration_s": duration} for rate, duration in stages],
        "arrival": "uniform",
        "seed": 1,
        "timeout_s": 30.0,
        "max_in_flight": 512,
        "max_connections": 256,
        "report_interval_s": 1.0,
        "max_duration_s": 600,
        "stop": {"error_rate": 1.0, "min_requests": 20},
    }
    spec.update(overrides)
    return spec


def run_to_end(gen: GeneratorProcess, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every event the generator writes until its output ends (fails after `timeout`)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not gen.eof:
        left = deadline - time.monotonic()
        assert left > 0, f"generator still running after {timeout} s: {events[-3:]}"
        events += gen.events(min(left, 1.0))
    return events


def wait_for(gen: GeneratorProcess, kind: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events up to and including the first of `kind`."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not any(e["event"] == kind for e in events):
        left = deadline - time.monotonic()
        assert left > 0 and not gen.eof, f"no {kind!r} event: {events[-3:]}"
        events += gen.events(min(left, 1.0))
    return events


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def stage_summary(line: dict[str, Any]) -> dict[str, Any]:
    return histograms.summary(histograms.decode(line["hist"]))
