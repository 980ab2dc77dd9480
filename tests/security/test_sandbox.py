"""Hostile model code: a Python-backend `model.py` that tries, from inside Triton, to read the
portal's secrets and files, write outside its scratch space, reach the database, the broker
and the data plane's admin API, and fork without bound.

The probe runs through the real registry test step (`registry.triton_run.run_tests` on a real
tritonserver) and through the real data plane (a gateway process loading it from a model
store on first invocation). Its `execute()` answers what it managed, as one JSON string; each
test asserts every attempt was denied, and that ordinary models still pass.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from dataplane.tests.gateway_fixtures import GatewayProcess, infer_body, publish, python_package
from toolkit.examples import write_berth_yaml, write_demo_repository
from toolkit.triton import tritonserver_binary

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[2]
CANARIES = {
    "DJANGO_SECRET_KEY": "canary-django-secret-key-7f3a",
    "DATABASE_URL": "postgres://canary:canary-db-password-7f3a@127.0.0.1:5432/berth",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-7f3a",
    "BERTH_DATAPLANE_ADMIN_TOKEN": "canary-admin-token-7f3a-0123456789",
}
# The sandbox's process allowance for these tests: small, so the fork loop meets it quickly.
MAX_PROCESSES = 300
FORK_ATTEMPTS = 1500

PROBE = '''
"""A hostile model: tries everything model code must not do and reports what worked."""

import errno
import json
import os
import resource
import socket
import time

import numpy as np
import triton_python_backend_utils as pb_utils

TARGETS = json.loads({targets!r})


def outcome(action):
    try:
        return "ok:" + str(action())[:60]
    except OSError as exc:
        return "denied:" + (errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__)
    except Exception as exc:
        return "denied:" + type(exc).__name__


def read(path):
    with open(path, "rb") as fh:
        return fh.read(40)


def write(folder):
    path = os.path.join(folder, "probe-was-here")
    with open(path, "w") as fh:
        fh.write("x")
    return path


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def fork_loop(limit):
    children, error = [], ""
    for _ in range(limit):
        try:
            pid = os.fork()
        except OSError as exc:
            error = errno.errorcode.get(exc.errno, str(exc.errno))
            break
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        children.append(pid)
    for pid in children:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    return {{"forked": len(children), "error": error}}


def probe():
    limits = {{
        name: list(resource.getrlimit(getattr(resource, "RLIMIT_" + name)))
        for name in ("NPROC", "FSIZE", "NOFILE", "CORE", "AS")
    }}
    return {{
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "environ": dict(os.environ),
        "read": {{name: outcome(lambda p=p: read(p)) for name, p in TARGETS["read"].items()}},
        "write": {{
            **{{name: outcome(lambda p=p: write(p)) for name, p in TARGETS["write"].items()}},
            # Its own served folder, wherever the launcher put the package.
            "own_model_folder": outcome(lambda: write(os.path.dirname(os.path.abspath(__file__)))),
        }},
        "connect": {{
            name: outcome(lambda p=p: connect(p)) for name, p in TARGETS["connect"].items()
        }},
        "limits": limits,
        "forks": fork_loop(TARGETS["forks"]),
        "visible_pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "root_entries": sorted(os.listdir("/")),
    }}


class TritonPythonModel:
    def execute(self, requests):
        report = json.dumps(probe())
        out = np.array([report.encode()], dtype=np.object_)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", out)]) for _ in requests
        ]
'''


def write_probe_repository(dest: Path, name: str, targets: dict) -> Path:
    """A one-model repository whose model is the probe; its test case expects nothing we
    could know in advance (the test reads the report from the result)."""
    (dest / name / "1").mkdir(parents=True, exist_ok=True)
    (dest / name / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""
            name: "{name}"
            backend: "python"
            max_batch_size: 0
            input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            output [ {{ name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] }} ]
            instance_group [ {{ kind: KIND_CPU count: 1 }} ]
            """
        )
    )
    (dest / name / "1" / "model.py").write_text(PROBE.format(targets=json.dumps(targets)))
    write_berth_yaml(dest, name, [])
    return dest


@pytest.fixture
def listener():
    """A port something listens on at 127.0.0.1, so 'cannot connect' means isolation."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """Files of the host the probe goes after: a project folder with settings and an SQLite
    database, another model's files, a model store."""
    project = tmp_path / "project"
    (project / "var").mkdir(parents=True)
    (project / "var" / "berth.sqlite3").write_bytes(b"SQLite format 3\x00users tokens")
    (project / "settings.py").write_text("SECRET_KEY = 'canary'\n")
    other = tmp_path / "other-model" / "1"
    other.mkdir(parents=True)
    (other / "model.py").write_text("WEIGHTS = 'someone else's model'\n")
    store = tmp_path / "store"
    store.mkdir()
    (store / "other_1.tar.gz").write_bytes(b"\x1f\x8b other package")
    return {"project": project, "other": other, "store": store}


def probe_targets(host: dict[str, Path], listener: int, repository: Path, **extra) -> dict:
    return {
        "read": {
            "etc_passwd": "/etc/passwd",
            "project_settings": str(ROOT / "portal" / "settings" / "base.py"),
            "manage_py": str(ROOT / "manage.py"),
            "sqlite": str(host["project"] / "var" / "berth.sqlite3"),
            "settings": str(host["project"] / "settings.py"),
            "other_model": str(host["other"] / "model.py"),
            "store_package": str(host["store"] / "other_1.tar.gz"),
            "launcher_environ": f"/proc/{os.getpid()}/environ",
            **extra.get("read", {}),
        },
        "write": {
            "project": str(ROOT),
            "project_var": str(host["project"] / "var"),
            "store": str(host["store"]),
            "repository": str(repository),
            "scratch": "/tmp",
            **extra.get("write", {}),
        },
        "connect": {
            "postgresql": 5432,
            "redis": 6379,
            "listener": listener,
            **extra.get("connect", {}),
        },
        "forks": FORK_ATTEMPTS,
    }


def assert_contained(report: dict, host: dict[str, Path]) -> None:
    leaked = {
        name for name, value in report["environ"].items() if name in CANARIES or "canary" in value
    }
    assert not leaked, f"portal secrets in model code's environment: {leaked}"
    assert set(report["environ"]) <= {
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONDONTWRITEBYTECODE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "TZ",
        "PWD",
        "SHLVL",
        "_",
    }, report["environ"]
    assert str(ROOT) not in report["environ"]["PYTHONPATH"].split(os.pathsep)
    opened = {name: r for name, r in report["read"].items() if not r.startswith("denied:")}
    assert not opened, f"model code read host files: {opened}"
    written = {
        name: r
        for name, r in report["write"].items()
        if name != "scratch" and not r.startswith("denied:")
    }
    assert not written, f"model code wrote outside its scratch space: {written}"
    # Refused because the folder is read-only, not because it is missing.
    assert report["write"]["own_model_folder"] in ("denied:EROFS", "denied:EACCES"), report["write"]
    # Its own scratch works, and is its own: nothing lands in the host's /tmp.
    assert report["write"]["scratch"].startswith("ok:")
    assert not Path("/tmp/probe-was-here").exists()
    for folder in (ROOT, host["project"] / "var", host["store"]):
        assert not (folder / "probe-was-here").exists()
    reached = {name: r for name, r in report["connect"].items() if not r.startswith("denied:")}
    assert not reached, f"model code reached the network: {reached}"
    assert report["uid"] != 0 and report["euid"] != 0
    assert "etc" not in report["root_entries"] or report["read"]["etc_passwd"].startswith("denied")
    assert report["visible_pids"] < 50, "model code sees the host's processes"
    nproc_soft, nproc_hard = report["limits"]["NPROC"]
    assert 0 < nproc_soft == nproc_hard < 100_000
    assert report["limits"]["CORE"] == [0, 0]
    assert 0 < report["limits"]["FSIZE"][0] < 2**63 - 1
    assert report["forks"]["error"] == "EAGAIN", report["forks"]
    # The fork loop ends on the limit, not on its own count. (How many forks that allows
    # depends on what else runs as the sandbox's uid at that moment, so the count itself
    # is only bounded by the limit.)
    assert report["forks"]["forked"] < nproc_soft


def host_uids(pids: list[int]) -> set[int]:
    uids = set()
    for pid in pids:
        try:
            uids.add(psutil.Process(pid).uids().real)
        except psutil.Error:
            continue
    return uids


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        tritonserver_binary()
    except Exception as exc:  # pragma: no cover - the wheel is a test dependency
        pytest.skip(str(exc))
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BERTH_SANDBOX_MAX_PROCESSES", str(MAX_PROCESSES))


def test_the_registry_test_step_runs_a_hostile_model_contained(
    tmp_path: Path, host, listener: int, canaries, settings
) -> None:
    from registry.triton_run import run_tests
    from registry.validation import validate_repository

    settings.BERTH_TRITON_GPU = False
    source = tmp_path / "upload"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    targets = probe_targets(host, listener, scratch / "serving", write={"upload": str(source)})
    write_probe_repository(source, "probe", targets)
    report = validate_repository(source)
    assert not report.problems, report.problems
    lines: list[str] = []
    run = run_tests(source, summary=report.summary, scratch=scratch, log=lines.append)
    assert not run.problems, run.problems
    [result] = run.results
    assert result.outcome == "passed", (result.message, lines)
    probe = json.loads(result.actual["REPORT"]["data"][0])
    assert_contained(probe, host)
    if os.geteuid() == 0:
        assert probe["uid"] == 65534  # the sandbox dropped root before running Triton


def test_the_registry_test_step_still_passes_ordinary_models(tmp_path: Path, canaries) -> None:
    from registry.triton_run import run_tests
    from registry.validation import validate_repository

    source = write_demo_repository(tmp_path / "demo")
    report = validate_repository(source)
    assert not report.problems
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = run_tests(source, summary=report.summary, scratch=scratch, log=lambda _: None)
    assert run.passed, [(r.name, r.outcome, r.message) for r in run.results]
    assert run.results


def test_the_data_plane_runs_a_hostile_model_contained(
    tmp_path: Path, host, listener: int, canaries
) -> None:
    root = tmp_path / "gateway"
    gateway = GatewayProcess(
        root,
        ["probe:2GiB"],
        env={**CANARIES, "BERTH_SANDBOX_MAX_PROCESSES": str(MAX_PROCESSES)},
    )
    store = gateway.store("probe")
    targets = probe_targets(
        host,
        listener,
        gateway.state_dir / "repository",
        read={
            "gateway_log": str(root / "gateway.log"),
            "own_store_package": str(store / "scale_1.tar.gz"),
        },
        write={"state_dir": str(gateway.state_dir), "own_store": str(store)},
        connect={"gateway_admin_api": gateway.port},
    )
    with gateway:
        # An ordinary model of the same endpoint still serves.
        ordinary = python_package(store, "scale", 1)
        status, _, answer = gateway.invoke("probe", ordinary, infer_body([1, 2, 3, 4]))
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]

        with_probe = tmp_path / "probe-repo"
        write_probe_repository(with_probe, "probe", targets)
        publish(store, "probe_1.tar.gz", with_probe)
        body = json.dumps(
            {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [0.0]}]}
        ).encode()
        status, _, answer = gateway.invoke("probe", "probe_1.tar.gz", body)
        assert status == 200, answer
        report = json.loads(answer["outputs"][0]["data"][0])
        triton_pid = gateway.status()["triton"]["pid"]
        tree = [triton_pid, *(c.pid for c in psutil.Process(triton_pid).children(recursive=True))]
        uids = host_uids(tree)
    assert_contained(report, host)
    assert "canary" not in (root / "gateway.log").read_text(errors="replace")
    if os.geteuid() == 0:
        # Seen from outside (ps -o uid): Triton and its stubs run as nobody, not root.
        assert uids == {65534}, uids


def test_the_admin_api_always_asks_for_its_token(gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, answer_headers, body = gateway.request("GET", "/admin/status", headers=headers)
        assert status == 401 and answer_headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = gateway.request("GET", "/admin/status")  # the fixture sends the token
    assert status == 200
    request = urllib.request.Request(gateway.url + "/admin/endpoints", method="GET")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_a_gateway_without_an_admin_token_refuses_to_start(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BERTH_DATAPLANE_ADMIN_TOKEN", "BERTH_DATAPLANE_ADMIN_TOKEN_FILE")
    }
    for args in ([], ["--host", "127.0.0.1"], ["--admin-token", ""]):
        done = subprocess.run(
            [sys.executable, "-m", "dataplane", "--state-dir", str(tmp_path / "s"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "admin API needs a token" in done.stderr
    assert not (tmp_path / "s" / "repository").exists()


def test_the_portal_refuses_production_defaults(tmp_path: Path) -> None:
    """With DEBUG off, the development secret key or no admin token stops the portal."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "BERTH_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    check = [sys.executable, "-c", "import django; django.setup()"]
    cases = [
        ({}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "a-real-secret-key-for-this-test"}, "ADMIN_TOKEN"),
    ]
    for extra, needle in cases:
        done = subprocess.run(
            check, cwd=ROOT, env={**base, **extra}, capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0 and "ImproperlyConfigured" in done.stderr
        assert needle in done.stderr
    token_file = tmp_path / "admin-token"
    token_file.write_text("a-token-from-a-0600-file-0123456789\n")
    ok = {
        "DJANGO_SECRET_KEY": "a-real-secret-key-for-this-test",
        "BERTH_DATAPLANE_ADMIN_TOKEN_FILE": str(token_file),
    }
    done = subprocess.run(
        [
            *check[:2],
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.BERTH_DATAPLANE_ADMIN_TOKEN)",
        ],
        cwd=ROOT,
        env={**base, **ok},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a-token-from-a-0600-file-0123456789"
    debug = subprocess.run(
        check,
        cwd=ROOT,
        env={**base, "DJANGO_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 0, debug.stderr
