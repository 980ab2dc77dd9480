"""The parent's side: events as they come, and a child that will not stop is killed."""

from __future__ import annotations

import sys
import time

import psutil

from loadgen.launcher import GeneratorProcess
from loadgen.tests.util import http_spec


def test_events_returns_nothing_when_nothing_came_and_eof_at_the_end(tmp_path):
    silent = tmp_path / "silent-python"
    # Reads its spec line, then waits for the next line (the stop) and exits.
    silent.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        "'import sys; sys.stdin.readline(); sys.stdin.readline()'\n"
    )
    silent.chmod(0o755)
    with GeneratorProcess(http_spec("http://127.0.0.1:9", [(1, 1)]), python=str(silent)) as gen:
        assert gen.events(0.2) == []
        assert not gen.eof
        gen.stop()
        gen.stop()  # Idempotent: one stop line.
        assert gen.wait(10) == 0
        deadline = time.monotonic() + 10
        while not gen.eof and time.monotonic() < deadline:
            gen.events(0.5)
        assert gen.eof


def test_leaving_the_block_kills_a_child_that_ignores_stop(tmp_path):
    stubborn = tmp_path / "stubborn-python"
    stubborn.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'\n"
    )
    stubborn.chmod(0o755)
    gen = GeneratorProcess(http_spec("http://127.0.0.1:9", [(1, 1)]), python=str(stubborn))
    with gen:
        pid = gen.pid
        assert psutil.pid_exists(pid)
    assert gen.returncode is not None and gen.returncode < 0  # Killed by a signal.
    assert not psutil.pid_exists(pid)
