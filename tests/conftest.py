"""Fixtures for cross-app flows: a REAL Celery worker process on the real broker.

`celery_worker` starts `celery -A portal worker` as a subprocess against pytest-django's
test database (tests using it must be transactional, `transactional_db`, so the worker sees
committed rows), on the broker the settings name (Redis with REDIS_URL, else the embedded
filesystem broker) and on CELERY_DEFAULT_QUEUE. Artifacts, uploads and scratch live in the
test's own folders, shared with the worker through its environment.

Other apps' flows reuse it: request `celery_worker` (one worker for the test) or
`celery_worker_factory` (start several, kill one: `worker.kill()`), and `berth_dirs` for the
shared folders. `worker.env` holds the environment it was started with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 90


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """With SQLite, the test database must be a file a worker process can open too."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        var_dir = Path(os.environ.get("BERTH_VAR_DIR", BASE_DIR / "var"))
        var_dir.mkdir(parents=True, exist_ok=True)
        db.setdefault("TEST", {})["NAME"] = str(var_dir / f"test-berth-{os.getpid()}.sqlite3")


def database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if "postgresql" not in engine:
        raise RuntimeError(f"No worker database URL for {engine}")
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


def purge_queue(queue: str) -> None:
    """Drop messages left on our queue by an earlier run (Redis keeps unacknowledged ones
    for an hour), so they cannot reach this run's rows, whose ids start again at 1."""
    from portal.celery import app

    # The queue may not exist yet.
    with app.connection_for_write() as connection, contextlib.suppress(Exception):
        connection.default_channel.queue_purge(queue)
    if getattr(settings, "REDIS_URL", ""):
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for tag, raw in client.hgetall("unacked").items():
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError, TypeError):
                continue
            if routing_key == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


class WorkerProcess:
    """One `celery -A portal worker` subprocess (solo pool: the task runs in the worker's
    own process, so killing it kills the task mid-step)."""

    def __init__(self, env: dict[str, str], log_path: Path, queue: str):
        self.env = env
        self.log_path = log_path
        self.queue = queue
        self.name = f"berth-test-{uuid.uuid4().hex[:8]}@%h"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = READY_TIMEOUT) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "-Q",
            self.queue,
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ]
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Celery worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"Celery worker not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            parent = psutil.Process(self.process.pid)
            return [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (Triton included), as a crash would."""
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
        self.log_file.close()

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left."""
        if self.process is None or self.process.poll() is not None:
            self.kill()
            return
        tree = self._tree()
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        for proc in tree:
            try:
                if proc.is_running():
                    proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        self.log_file.close()


@pytest.fixture
def berth_dirs(settings, tmp_path):
    """Artifact store, uploads, scratch and the allowed source folder of this test; the
    worker gets the same through its environment."""
    dirs = {
        "BERTH_ARTIFACT_STORE": tmp_path / "artifacts",
        "BERTH_UPLOAD_DIR": tmp_path / "uploads",
        "BERTH_SCRATCH_DIR": tmp_path / "scratch",
        "BERTH_ALLOWED_SOURCE_DIRS": tmp_path / "allowed",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        setattr(settings, name, [str(path)] if name == "BERTH_ALLOWED_SOURCE_DIRS" else str(path))
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return tmp_path


@pytest.fixture(scope="session")
def celery_worker_session(django_db_setup, django_db_blocker):
    """What every worker of this session shares: the test database URL and a clean queue."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.creation.is_in_memory_db(
        connection.settings_dict["NAME"]
    ):
        pytest.skip("A worker process needs a file or server database, not in-memory SQLite.")
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with django_db_blocker.unblock():
        purge_queue(queue)
    return {"DATABASE_URL": database_url(connection.settings_dict), "queue": queue}


@pytest.fixture
def celery_worker_factory(celery_worker_session, transactional_db, berth_dirs, tmp_path):
    """Start workers for this test: `celery_worker_factory(**extra_env)`. All are stopped at
    the end of the test, before its database is flushed."""
    workers: list[WorkerProcess] = []

    def start(**extra_env: str) -> WorkerProcess:
        env = os.environ.copy()
        env.update(
            DATABASE_URL=celery_worker_session["DATABASE_URL"],
            CELERY_DEFAULT_QUEUE=celery_worker_session["queue"],
            BERTH_VAR_DIR=str(Path(settings.MEDIA_ROOT).parent),
            BERTH_ARTIFACT_STORE=settings.BERTH_ARTIFACT_STORE,
            BERTH_UPLOAD_DIR=settings.BERTH_UPLOAD_DIR,
            BERTH_SCRATCH_DIR=settings.BERTH_SCRATCH_DIR,
            BERTH_ALLOWED_SOURCE_DIRS=",".join(settings.BERTH_ALLOWED_SOURCE_DIRS),
            PYTHONUNBUFFERED="1",
        )
        if getattr(settings, "REDIS_URL", ""):
            env["REDIS_URL"] = settings.REDIS_URL
        else:
            env.pop("REDIS_URL", None)
        env.update(extra_env)
        worker = WorkerProcess(
            env, tmp_path / f"worker-{len(workers) + 1}.log", celery_worker_session["queue"]
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory) -> WorkerProcess:
    """One real Celery worker for this test."""
    return celery_worker_factory()
