"""The generator as a real process against a real HTTP server (`loadgen.tests.server`)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from loadgen.launcher import GeneratorProcess
from loadgen.tests.util import (
    ROOT,
    Server,
    http_spec,
    of,
    request,
    run_to_end,
    stage_summary,
    wait_for,
)


@pytest.fixture
def fast_server():
    with Server() as server:
        yield server


def test_latency_shows_the_servers_delay():
    with (
        Server("--delay-ms", "40") as server,
        GeneratorProcess(http_spec(server.url, [(50, 2)])) as gen,
    ):
        events = run_to_end(gen)
        assert gen.wait(5) == 0
    (stage,) = of(events, "stage")
    summary = stage_summary(stage)
    assert stage["ok"] == 100 and summary["count"] == 100
    assert summary["p50_ms"] >= 40.0
    assert summary["p50_ms"] < 40.0 * 3  # The delay, not a multiple of it.
    assert of(events, "done")[-1]["reason"] == "completed"


def test_offered_rate_is_held_for_100_per_second_for_5_seconds(fast_server):
    with GeneratorProcess(http_spec(fast_server.url, [(100, 5)])) as gen:
        events = run_to_end(gen)
    started, done = of(events, "started")[0], of(events, "done")[0]
    (stage,) = of(events, "stage")
    assert started["pid"] == gen.pid and done["reason"] == "completed"
    assert abs(stage["scheduled"] - 500) <= 500 * 0.02
    assert abs(stage["sent"] - 500) <= 500 * 0.02
    assert stage["ok"] == stage["completed"] == stage["sent"]
    assert fast_server.stats()["requests"] == stage["sent"]
    ticks = of(events, "tick")
    assert sum(t["sent"] for t in ticks) == stage["sent"]
    assert sum(t["ok"] for t in ticks) == stage["ok"]
    assert stage["cpu_s"] > 0 and done["cpu_s"] >= stage["cpu_s"]
    assert stage["lag_p99_ms"] is not None and stage["lag_max_ms"] >= stage["lag_p99_ms"]


def test_stages_run_back_to_back_and_report_each(fast_server):
    spec = http_spec(fast_server.url, [(50, 1), (150, 1)], report_interval_s=0.5)
    with GeneratorProcess(spec) as gen:
        events = run_to_end(gen)
    stages = of(events, "stage")
    assert [s["stage"] for s in stages] == [0, 1]
    assert [s["scheduled"] for s in stages] == [50, 150]
    assert [s["rate"] for s in stages] == [50.0, 150.0]
    assert len(of(events, "tick")) >= 4


def test_a_stall_shows_in_p99_of_the_requests_scheduled_during_it():
    """Open loop: while the server stalls for 1 s, requests keep their intended times."""
    stall = ("--delay-ms", "2", "--stall-after", "1.0", "--stall-s", "1.0")
    with Server(*stall) as server, GeneratorProcess(http_spec(server.url, [(100, 3)])) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    summary = stage_summary(stage)
    assert stage["ok"] == 300
    # About a third of the requests were scheduled during the stall, the first ~1 s before
    # its end: a closed loop would have sent (and counted) just one of them.
    assert summary["p99_ms"] >= 800
    assert summary["max_ms"] >= 900
    assert summary["p50_ms"] < 500


def test_requests_beyond_the_in_flight_cap_wait_and_keep_their_intended_time():
    with Server("--delay-ms", "50") as server:
        spec = http_spec(server.url, [(200, 1)], max_in_flight=5, max_connections=5)
        with GeneratorProcess(spec) as gen:
            events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["ok"] == 200
    assert stage["waited"] > 0 and stage["on_schedule"] is False
    # 5 in flight at 50 ms each serve 100/s: the last of 200 waited about a second.
    assert stage_summary(stage)["p99_ms"] >= 500
    assert max(t["waiting"] for t in of(events, "tick")) > 0


def test_stop_line_stops_it_at_once_with_what_it_measured(fast_server):
    with GeneratorProcess(http_spec(fast_server.url, [(50, 60)])) as gen:
        events = wait_for(gen, "tick")
        asked = time.monotonic()
        gen.stop()
        code = gen.wait(5)
        took = time.monotonic() - asked
        events += run_to_end(gen)
    assert code == 0
    assert of(events, "done")[-1]["reason"] == "stopped"
    (stage,) = of(events, "stage")
    assert stage["partial"] is True and stage["sent"] >= 50
    print(f"stopped {took * 1000:.0f} ms after the stop line")
    assert took < 1.0


def test_end_of_stdin_means_the_parent_is_gone(fast_server):
    gen = GeneratorProcess(http_spec(fast_server.url, [(50, 60)])).start()
    try:
        wait_for(gen, "started")
        gen._proc.stdin.close()
        assert gen.wait(5) == 0
        events = run_to_end(gen)
    finally:
        gen.kill()
    assert of(events, "done")[-1]["reason"] == "parent_gone"


def test_sigterm_stops_it(fast_server):
    with GeneratorProcess(http_spec(fast_server.url, [(50, 60)])) as gen:
        wait_for(gen, "started")
        os.kill(gen.pid, signal.SIGTERM)
        assert gen.wait(5) == 0
        events = run_to_end(gen)
    assert of(events, "done")[-1]["reason"] == "stopped"


PARENT = """
import json, sys, time
from loadgen.launcher import GeneratorProcess
gen = GeneratorProcess(json.loads(sys.argv[1])).start()
events = []
while not any(e["event"] == "started" for e in events):
    events += gen.events(1.0)
print(gen.pid, flush=True)
time.sleep(600)
"""


# The parent forks a process that holds the generator's stdin open (and sleeps): only the
# kernel's death signal can tell the generator that its parent died.
PARENT_WITH_HOLDER = PARENT.replace(
    "print(gen.pid, flush=True)",
    "import os\nif os.fork() == 0:\n    time.sleep(600)\n    os._exit(0)\n"
    "print(gen.pid, flush=True)",
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    "script", [PARENT, PARENT_WITH_HOLDER], ids=["stdin-ends", "stdin-held-open"]
)
def test_a_killed_parent_takes_the_generator_with_it(fast_server, script):
    import json

    spec = http_spec(fast_server.url, [(50, 60)])
    parent = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(spec)], stdout=subprocess.PIPE, cwd=ROOT
    )
    child, holders = None, []
    try:
        child = int(parent.stdout.readline())
        holders = psutil.Process(parent.pid).children()
        assert not _gone(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child)
    finally:
        parent.kill()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
        for holder in holders:
            if holder.pid != child:
                with contextlib.suppress(psutil.NoSuchProcess):
                    holder.kill()


def test_it_stops_itself_when_errors_pass_the_threshold():
    with Server("--status", "503") as server:
        spec = http_spec(server.url, [(100, 30)], stop={"error_rate": 0.5, "min_requests": 20})
        with GeneratorProcess(spec) as gen:
            events = run_to_end(gen)
    assert of(events, "done")[-1]["reason"] == "error_rate"
    (stage,) = of(events, "stage")
    assert stage["ok"] == 0 and stage["errors"]["503"] >= 20
    assert stage["sent"] < 30 * 100 / 2  # Long before the stage's end.


def test_timeouts_and_refused_connections_are_error_kinds():
    with Server("--delay-ms", "5000") as server:
        spec = http_spec(server.url, [(20, 1)], timeout_s=0.3)
        with GeneratorProcess(spec) as gen:
            events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["errors"]["timeout"] == 20 and stage["ok"] == 0
    assert stage["by_model"] == {"demo_1.tar.gz": {"ok": 0, "errors": 20}}

    with Server() as server:
        url = server.url
    with GeneratorProcess(http_spec(url, [(20, 1)])) as gen:  # Nothing listens there now.
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["errors"]["connect"] == 20 and stage["ok"] == 0


def test_it_never_generates_past_max_duration():
    with Server("--delay-ms", "3000") as server:
        # All 10 are sent in the first 0.5 s; their answers would come 3 s later.
        spec = http_spec(server.url, [(20, 0.5)], max_duration_s=1.0)
        with GeneratorProcess(spec) as gen:
            events = run_to_end(gen, timeout=10)
    assert of(events, "done")[-1]["reason"] == "deadline"
    (stage,) = of(events, "stage")
    assert stage["sent"] == 10 and stage["completed"] == 0 and stage["partial"] is True
    assert of(events, "tick")[-1]["elapsed_s"] < 2.0


def test_the_mix_follows_the_weights(fast_server):
    spec = http_spec(
        fast_server.url,
        [(1000, 2)],
        requests=[
            request("a.tar.gz", weight=6),
            request("b.tar.gz", weight=3),
            request("c.tar.gz", b'{"inputs": [2]}', weight=1),
            request("c.tar.gz", b'{"inputs": [3]}', weight=0),
        ],
    )
    with GeneratorProcess(spec) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    n = stage["ok"]
    assert n == 2000
    served = fast_server.stats()["per_model"]
    for model, share in (("a.tar.gz", 0.6), ("b.tar.gz", 0.3), ("c.tar.gz", 0.1)):
        # Within 5 standard deviations of the binomial count (seeded: the same every run).
        assert abs(served[model] - n * share) <= 5 * math.sqrt(n * share * (1 - share))
        assert stage["by_model"][model]["ok"] == served[model]


def test_poisson_arrivals_average_the_rate(fast_server):
    spec = http_spec(fast_server.url, [(500, 2)], arrival="poisson", seed=7)
    with GeneratorProcess(spec) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert abs(stage["scheduled"] - 1000) <= 5 * math.sqrt(1000)
    assert stage["ok"] == stage["scheduled"]


def test_a_unix_socket_target(tmp_path):
    path = tmp_path / "gw.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "loadgen.tests.server", "--unix", str(path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        server.stdout.readline()
        spec = http_spec("http://localhost", [(50, 1)])
        spec["target"]["unix_path"] = str(path)
        with GeneratorProcess(spec) as gen:
            events = run_to_end(gen)
    finally:
        server.kill()
        server.wait()
    (stage,) = of(events, "stage")
    assert stage["ok"] == 50


def test_start_at_starts_the_schedule_then(fast_server):
    start_at = time.time() + 3.0
    with GeneratorProcess(http_spec(fast_server.url, [(20, 1)], start_at=start_at)) as gen:
        events = run_to_end(gen)
    assert of(events, "started")[0]["start"] == pytest.approx(start_at, abs=0.01)
    assert of(events, "stage")[0]["ok"] == 20


def test_a_poisson_stage_end_between_arrivals_costs_no_spinning(fast_server):
    """At 2/s the next arrival usually falls past a stage's end: the scheduler sleeps to the
    end and starts the next stage (CPU time, not wall time: it would spin otherwise)."""
    spec = http_spec(fast_server.url, [(2, 1), (2, 1), (2, 1)], arrival="poisson", seed=3)
    with GeneratorProcess(spec) as gen:
        events = run_to_end(gen)
    assert [s["stage"] for s in of(events, "stage")] == [0, 1, 2]
    assert of(events, "done")[0]["cpu_s"] < 0.1  # About 0.02 s; spinning costs 0.2 s.
