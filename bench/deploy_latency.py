"""Deploy latency: how long from a CI job registering the demo ensemble to its first
successful invocation on staging, and from a packaged version to the first 200.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth REDIS_URL=redis://127.0.0.1:6379/5 \\
        .venv/bin/python bench/deploy_latency.py --runs 3

Everything is real: a throwaway test database (`test_<name>` of DATABASE_URL, or a SQLite
file), a Celery worker process on the configured broker (Redis with REDIS_URL, else the
embedded filesystem broker), the data plane gateway with Triton, and the portal's API with a
CI token. The invocation is boto3's sagemaker-runtime client naming the model only (the
gateway resolves the live version).

Cases (`--case`, several allowed):
- latency: register -> packaged <= 1.5 s and register -> first successful invocation on
  staging <= 2.5 s (medians); packaged version -> first 200 <= 2 s (the demo ensemble,
  `--runs` times).
- queue: `--queue` registrations (30) queued at once, all packaged within 60 s; what the
  queue itself costs per step run (wall time less the steps' own time).
- size: a Python model with `--size-mb` (256 and 1024) of random weights (incompressible,
  written in chunks), uploaded as a multipart body streamed from disk through the portal's
  WSGI handler (no byte of it held in memory by the client): register -> packaged <= 30 s
  and packaged -> first successful invocation <= 10 s at 1 GB, with the time in each status
  and the peak resident memory of the portal (this process), the worker and the data plane.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

POLL = 0.02


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return (
        f"postgres://{auth}{settings_dict.get('HOST') or '127.0.0.1'}{port}/{settings_dict['NAME']}"
    )


def start_worker(env: dict[str, str], log: Path, queue: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo",
        "-Q", queue, "-n", f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "--loglevel", "WARNING",
    ]  # fmt: skip
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"worker exited:\n{log.read_text()[-3000:]}")
        if b"ready." in log.read_bytes() or b"celery@" in log.read_bytes():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    return process


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise SystemExit(f"timed out: {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--case", action="append", choices=["latency", "queue", "size"], help="default: latency"
    )
    parser.add_argument("--queue", type=int, default=30, help="registrations queued at once")
    parser.add_argument("--size-mb", type=int, action="append", help="default: 256 and 1024")
    args = parser.parse_args()
    args.case = args.case or ["latency"]
    args.size_mb = args.size_mb or [256, 1024]

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    scratch = Path(tempfile.mkdtemp(prefix="berth-bench-deploy-"))
    for name in ("BERTH_ARTIFACT_STORE", "BERTH_UPLOAD_DIR", "BERTH_SCRATCH_DIR"):
        path = scratch / name.lower()
        path.mkdir()
        setattr(settings, name, str(path))
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["*"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(
            scratch / "bench.sqlite3"
        )
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    print(
        f"database: {connection.vendor} {test_db}; broker: {settings.CELERY_BROKER_URL.split('://')[0]}"
    )

    from dataplane.tests.gateway_fixtures import GatewayProcess

    gateway = GatewayProcess(scratch / "gateway", []).start()
    settings.BERTH_DATAPLANE_URL = gateway.url
    settings.BERTH_DATAPLANE_STORE = str(gateway.store_root)
    queue = f"berth-bench-{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "CELERY_DEFAULT_QUEUE": queue,
        "BERTH_ARTIFACT_STORE": settings.BERTH_ARTIFACT_STORE,
        "BERTH_UPLOAD_DIR": settings.BERTH_UPLOAD_DIR,
        "BERTH_SCRATCH_DIR": settings.BERTH_SCRATCH_DIR,
        "BERTH_DATAPLANE_URL": gateway.url,
        "BERTH_DATAPLANE_STORE": str(gateway.store_root),
    }
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    from portal.celery import app

    app.conf.update(CELERY_TASK_DEFAULT_QUEUE=queue)
    worker = start_worker(env, scratch / "worker.log", queue)
    try:
        bench = Bench(gateway, scratch)
        bench.warm_up()
        if "latency" in args.case:
            bench.latency(args.runs)
        if "queue" in args.case:
            bench.queue(args.queue)
        if "size" in args.case:
            for size_mb in args.size_mb:
                bench.size(size_mb, worker.pid)
        return 0
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        gateway.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        # Stores, uploads and packages: gigabytes after the size case.
        shutil.rmtree(scratch, ignore_errors=True)


class Bench:
    """The portal's API with a CI token, the gateway's runtime API, and the cases."""

    def __init__(self, gateway, scratch: Path):
        import numpy as np
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from rest_framework.test import APIClient

        from portal.dataplane import runtime_client
        from portal.services import token_create
        from toolkit.examples import demo_test_cases

        self.gateway = gateway
        self.scratch = scratch
        user = get_user_model().objects.create_user("bench-ci")
        user.groups.add(Group.objects.get(name="data scientist"))
        _, self.token = token_create(actor=user, name="bench")
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        case = demo_test_cases()[0]
        self.demo_request = json.dumps(
            {
                "inputs": [
                    {
                        "name": n,
                        "datatype": s["datatype"],
                        "shape": s["shape"],
                        "data": np.ravel(s["data"]).tolist(),
                    }
                    for n, s in case["inputs"].items()
                ]
            }
        )
        self.runtime = runtime_client(gateway.url)

    # -- the API -------------------------------------------------------------------------

    def invocation_ok(self, model: str, body: str | None = None) -> bool:
        try:
            answer = self.runtime.invoke_endpoint(
                EndpointName="local-staging",
                TargetModel=model,
                ContentType="application/json",
                Body=body or self.demo_request,
            )
        except Exception:  # noqa: BLE001 - not live yet: 4xx until the alias exists
            return False
        return answer["ResponseMetadata"]["HTTPStatusCode"] == 200

    def register(self, name: str) -> int:
        from toolkit.examples import build_demo_archive

        archive = build_demo_archive(self.scratch / f"{name}.tar.gz")
        assert self.api.post("/api/v1/models/", {"name": name}, format="json").status_code == 201
        with open(archive, "rb") as handle:
            answer = self.api.post(
                f"/api/v1/models/{name}/versions/",
                {"archive": handle, "lineage": json.dumps({"source_commit": "bench"})},
                format="multipart",
            )
        assert answer.status_code == 201, answer.content
        return answer.json()["version"]

    def status(self, name: str, number: int) -> str:
        from registry.models import ModelVersion

        status = (
            ModelVersion.objects.filter(model__name=name, version=number)
            .values_list("status", flat=True)
            .first()
        )
        if status in {"invalid", "test_failed"}:
            body = self.api.get(f"/api/v1/models/{name}/versions/{number}/").json()
            raise SystemExit(f"{name} v{number}: {status} {body.get('problems')}")
        return status

    def packaged(self, name: str, number: int) -> bool:
        body = self.api.get(f"/api/v1/models/{name}/versions/{number}/").json()
        if body["status"] in {"invalid", "test_failed"}:
            raise SystemExit(f"{name} v{number}: {body['status']} {body.get('problems')}")
        return body["status"] == "packaged" and not body["in_progress"]

    def deploy(self, name: str, number: int) -> None:
        answer = self.api.post(
            "/api/v1/deployments/",
            {"endpoint": "local-staging", "model": name, "version": number},
            format="json",
        )
        assert answer.status_code == 202, answer.content

    # -- the cases -----------------------------------------------------------------------

    def warm_up(self) -> None:
        """The gateway's Triton and the worker's imports, not counted."""
        self.register("warmup")
        wait(lambda: self.packaged("warmup", 1), 300, "warm-up packaging")
        self.deploy("warmup", 1)
        wait(lambda: self.invocation_ok("warmup"), 120, "warm-up invocation")

    def latency(self, runs: int) -> None:
        end_to_end, to_first_200, phases = [], [], []
        for index in range(runs):
            name = f"bench{index}"
            started = time.perf_counter()
            number = self.register(name)
            wait(lambda n=name, v=number: self.packaged(n, v), 300, f"{name} packaged")
            packaged_at = time.perf_counter()
            self.deploy(name, number)
            wait(lambda n=name: self.invocation_ok(n), 120, f"{name} invocation")
            done = time.perf_counter()
            end_to_end.append(done - started)
            phases.append((packaged_at - started, done - packaged_at))

        # Packaged version -> first 200, on versions packaged beforehand.
        ready = [(f"ready{index}", self.register(f"ready{index}")) for index in range(runs)]
        for name, number in ready:
            wait(lambda n=name, v=number: self.packaged(n, v), 300, f"{name} packaged")
        for name, number in ready:
            started = time.perf_counter()
            self.deploy(name, number)
            wait(lambda n=name: self.invocation_ok(n), 120, f"{name} invocation")
            to_first_200.append(time.perf_counter() - started)

        print(f"\nlatency: {runs} runs each (seconds):")
        label = "register -> first successful invocation on staging"
        to_packaged = [p for p, _ in phases]
        print(f"{label:55} {_stats(end_to_end)}  goal <= 2.5 s")
        print(f"{'   of which register -> packaged':55} {_stats(to_packaged)}  goal <= 1.5 s")
        print(f"{'   of which deploy -> first 200':55} {_stats([d for _, d in phases])}")
        print(f"{'packaged version -> first 200':55} {_stats(to_first_200)}  goal <= 2 s")
        ok = (
            statistics.median(end_to_end) <= 2.5
            and statistics.median(to_packaged) <= 1.5
            and statistics.median(to_first_200) <= 2
        )
        print("every goal met (medians)" if ok else "goal missed (medians)")

    def queue(self, count: int) -> None:
        """`count` registrations at once (each a model of its own, as CI jobs of several
        teams), then every step run's wait and work from the engine's own timestamps."""
        from django.contrib.contenttypes.models import ContentType

        from registry.models import ModelVersion
        from runs.models import Run

        started = time.perf_counter()
        names = [f"queued{index}" for index in range(count)]
        numbers = {name: self.register(name) for name in names}
        registered = time.perf_counter() - started
        for name in names:
            wait(lambda n=name: self.packaged(n, numbers[n]), 600, f"{name} packaged")
        total = time.perf_counter() - started
        ids = list(ModelVersion.objects.filter(model__name__in=names).values_list("pk", flat=True))
        runs = list(
            Run.objects.filter(
                content_type=ContentType.objects.get_for_model(ModelVersion), object_id__in=ids
            ).values("plan", "created_at", "started_at", "finished_at")
        )
        work: dict[str, list[float]] = {}
        waits = []
        for run in runs:
            step = run["plan"].rsplit(".", 1)[-1].removesuffix("Plan").lower()
            work.setdefault(step, []).append(
                (run["finished_at"] - run["started_at"]).total_seconds()
            )
            waits.append((run["started_at"] - run["created_at"]).total_seconds())
        busy = sum(sum(values) for values in work.values())
        first = min(r["created_at"] for r in runs)
        last = max(r["finished_at"] for r in runs)
        span = (last - first).total_seconds()
        print(f"\nqueue: {count} registrations queued at once ({len(runs)} step runs)")
        print(f"{'registering all (the API, one after another)':55} {registered:7.2f} s")
        print(f"{'first registration -> all packaged':55} {total:7.2f} s  goal <= 60 s")
        for step, values in work.items():
            print(f"{'   ' + step + ' runs (s each)':55} {_stats(values)}")
        print(f"{'   wait from queued to started (s each)':55} {_stats(waits)}")
        print(
            f"{'   first queued -> last finished, less the steps':55} "
            f"{span - busy:7.2f} s = {(span - busy) / len(runs) * 1000:6.0f} ms per step run"
        )
        print("goal met" if total <= 60 else "goal missed")

    def size(self, size_mb: int, worker_pid: int) -> None:
        """A Python model with `size_mb` MiB of random weights, from upload to first 200."""
        from registry.models import ModelVersion
        from registry.packaging import build_tar_gz
        from toolkit.examples import write_python_model_repository

        name = f"weights{size_mb}"
        repo = write_python_model_repository(self.scratch / f"{name}-repo", name)
        with open(repo / name / "1" / "weights.bin", "wb") as handle:
            for _ in range(size_mb):
                handle.write(os.urandom(1024 * 1024))
        archive = build_tar_gz(repo, self.scratch / f"{name}.tar.gz").path
        shutil.rmtree(repo)
        # The archive is on disk before the clock starts, as a CI job's is: its written pages
        # must not hold up the pipeline's own writes (the kernel throttles writers once
        # enough of memory waits to be written).
        os.sync()
        assert self.api.post("/api/v1/models/", {"name": name}, format="json").status_code == 201

        meter = PeakMemory(
            {"worker": worker_pid, "data plane": self.gateway.proc.pid, "portal": os.getpid()}
        )
        meter.start()
        try:
            started = time.perf_counter()
            number = self.stream_register(name, archive)
            uploaded = time.perf_counter()
            seen = {"registered": uploaded}
            while True:
                status = self.status(name, number)
                seen.setdefault(status, time.perf_counter())
                if status == "packaged" and self.packaged(name, number):
                    break
                if time.perf_counter() - started > 900:
                    raise SystemExit(f"{name}: not packaged after 900 s ({status})")
                time.sleep(POLL)
            packaged_at = time.perf_counter()
            self.deploy(name, number)
            body = json.dumps(
                {
                    "inputs": [
                        {"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                    ]
                }  # fmt: skip
            )
            wait(lambda: self.invocation_ok(name, body), 600, f"{name} invocation")
            done = time.perf_counter()
        finally:
            meter.stop()
        version = ModelVersion.objects.get(model__name=name, version=number)
        order = ["registered", "validating", "validated", "testing", "tested", "packaging"]
        marks = [(s, seen[s]) for s in order if s in seen] + [("packaged", packaged_at)]
        print(
            f"\nsize: {size_mb} MiB of random weights "
            f"(archive {archive.stat().st_size / 1e6:.0f} MB, "
            f"package {version.package_size_bytes / 1e6:.0f} MB)"
        )
        print(f"{'upload (streamed multipart through the portal)':55} {uploaded - started:7.2f} s")
        for (status, at), (_, following) in zip(marks, marks[1:], strict=False):
            print(f"{'   ' + status:55} {following - at:7.2f} s")
        print(f"{'register -> packaged':55} {packaged_at - started:7.2f} s  goal <= 30 s at 1 GB")
        print(f"{'packaged -> first 200':55} {done - packaged_at:7.2f} s  goal <= 10 s at 1 GB")
        for part, peak in meter.peaks().items():
            print(f"{'   peak RSS of ' + part:55} {peak / 1e6:7.0f} MB")
        archive.unlink()

    def stream_register(self, name: str, archive: Path) -> int:
        """Register `archive` with a multipart body read from disk as Django reads it: the
        portal's own WSGI handler, its upload handlers spooling the file to disk."""
        from django.core import signals
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import close_old_connections

        boundary = uuid.uuid4().hex
        lineage = json.dumps({"source_commit": "bench"})
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="lineage"\r\n\r\n'
            f"{lineage}\r\n"
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="archive"; filename="{archive.name}"\r\n'
            "Content-Type: application/gzip\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = len(head) + archive.stat().st_size + len(tail)
        answer: dict = {}

        def start_response(status, headers, exc_info=None):
            answer["status"] = int(status.split()[0])

        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/api/v1/models/{name}/versions/",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "testserver",
            "HTTP_AUTHORIZATION": f"Bearer {self.token}",
            "CONTENT_TYPE": f"multipart/form-data; boundary={boundary}",
            "CONTENT_LENGTH": str(length),
            "wsgi.input": _StreamedBody(head, archive, tail),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        # As Django's test client: the bench's database connection stays open.
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            body = b"".join(WSGIHandler()(environ, start_response))
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)
        assert answer["status"] == 201, body[:2000]
        return json.loads(body)["version"]


class _StreamedBody:
    """A request body of `head`, the file's bytes and `tail`, read from disk as asked for."""

    def __init__(self, head: bytes, path: Path, tail: bytes):
        self._parts = [head, path, tail]
        self._handle = None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self._parts and (size < 0 or len(out) < size):
            part = self._parts[0]
            want = -1 if size < 0 else size - len(out)
            if isinstance(part, bytes):
                taken = part if want < 0 else part[:want]
                out += taken
                rest = part[len(taken) :]
                if rest:
                    self._parts[0] = rest
                else:
                    self._parts.pop(0)
                continue
            if self._handle is None:
                self._handle = open(part, "rb")  # noqa: SIM115 - closed at its end
            chunk = self._handle.read(want if want >= 0 else 1024 * 1024)
            if chunk:
                out += chunk
            else:
                self._handle.close()
                self._parts.pop(0)
        return bytes(out)

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


class PeakMemory:
    """The largest resident set of each process tree named, sampled every 50 ms (children
    that come and go, the data plane's staging processes, count while they live)."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots
        self._peaks = dict.fromkeys(roots, 0)
        self._children = {f"{part} children": 0 for part in roots if part != "portal"}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self) -> dict[str, int]:
        peaks = {**self._peaks, **self._children}
        # This process's own peak over its life: the sampler may miss a short one.
        peaks["portal"] = max(
            peaks["portal"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        return peaks

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            for part, pid in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    self._peaks[part] = max(self._peaks[part], root.memory_info().rss)
                    if part == "portal":
                        continue
                    for child in root.children(recursive=True):
                        name = child.name()
                        if "triton" in name or name == "bwrap":
                            continue  # Triton's memory is the model's, not the pipeline's
                        key = f"{part} children"
                        self._children[key] = max(self._children[key], child.memory_info().rss)
                except psutil.Error:
                    continue


def _stats(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.2f}  min {min(values):6.2f}  max {max(values):6.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
