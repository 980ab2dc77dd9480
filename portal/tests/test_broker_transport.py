"""The embedded broker hands a queued task to an idle worker at once, and a busy worker's
free slot takes the next task at once (not at Celery's next two-second turn)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.broker_transport import POLLING_INTERVAL, Transport, filesystem_options

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.worker


def test_options_keep_every_folder_inside_the_broker_folder(tmp_path):
    options = filesystem_options(tmp_path / "broker")
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert Path(options[key]).is_dir()
        assert Path(options[key]).is_relative_to(tmp_path / "broker")
    assert options["polling_interval"] == POLLING_INTERVAL <= 0.1


def test_a_message_appears_in_the_queue_only_whole(tmp_path, monkeypatch):
    """A worker listing the queue folder never takes a message still being written."""
    from kombu import Connection

    options = filesystem_options(tmp_path / "broker")
    queue = Path(options["data_folder_out"])
    before_rename = []
    rename = os.replace

    def replace(source, target):
        # What a reader listing the folder now would take, and what the new file holds.
        before_rename.append(([n for n in os.listdir(queue) if ".q.msg" in n], Path(source)))
        before_rename.append(json.loads(Path(source).read_bytes()))
        rename(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
        conn.default_channel._put("q", {"body": "x" * 100_000})

    assert before_rename[0][0] == []
    assert ".q.msg" not in before_rename[0][1].name
    assert before_rename[1] == {"body": "x" * 100_000}
    [name] = os.listdir(queue)
    assert name.endswith(".q.msg")
    assert json.loads((queue / name).read_bytes()) == {"body": "x" * 100_000}


@pytest.fixture
def broker(tmp_path, monkeypatch):
    """A prefork worker (two processes, as `./scripts/run` starts) on a broker folder of
    this test, and a way to queue `stamp` tasks on it."""
    monkeypatch.setenv("BERTH_TEST_BROKER_DIR", str(tmp_path / "broker"))
    from kombu import Connection

    from portal.tests import broker_app

    options = filesystem_options(tmp_path / "broker")
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    # The worker's environment: this test's broker folder, and no REDIS_URL to pick another.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal.tests.broker_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "-Q",
            broker_app.QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stamps = tmp_path / "stamps.jsonl"
    stamps.touch()

    def rows(count: int, timeout: float = 60) -> list[list[float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = stamps.read_text().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.02)
        raise AssertionError(f"{count} tasks not done:\n{(tmp_path / 'worker.log').read_text()}")

    def send(hold: float = 0.0) -> None:
        # A connection of its own: the app's pool may still hold another test's folder.
        with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
            broker_app.stamp.apply_async((time.time(), str(stamps), hold), connection=conn)

    try:
        # Ready: the first task ran (worker start-up is not what is measured).
        send()
        rows(1, timeout=90)
        stamps.write_text("")
        yield send, rows
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_an_idle_worker_starts_a_queued_task_within_a_fraction_of_a_second(broker):
    send, rows = broker
    for count in range(1, 8):
        send()
        rows(count)
        time.sleep(0.13)  # somewhere between two polls
    waits = [started - sent for sent, started, _ in rows(7)]
    # kombu's default (a poll a second) waits 0.5 s in the median, up to a second.
    assert statistics.median(waits) < 0.3, waits


def test_a_busy_worker_takes_the_next_task_as_soon_as_a_slot_frees(broker):
    send, rows = broker
    for _ in range(12):
        send(hold=0.2)
    done = rows(12)
    span = max(end for _, _, end in done) - min(started for _, started, _ in done)
    # Two processes, 12 tasks of 0.2 s: 1.2 s of work. Before, each freed slot waited for
    # Celery's next two-second turn: about 12 s.
    assert span < 6, span


def test_a_drain_without_prefetch_limit_waits_its_whole_timeout(tmp_path):
    """A client collecting replies (no prefetch limit) is not cut short."""
    from kombu import Connection, Queue

    with (
        Connection(
            "filesystem://",
            transport=Transport,
            transport_options=filesystem_options(tmp_path / "broker"),
        ) as connection,
        connection.Consumer(Queue("replies"), callbacks=[lambda *a: None]),
    ):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.5)
        assert time.monotonic() - started >= 0.5
