"""A real gateway process for tests and benchmarks: `python -m dataplane` on a free port.

Packages come from `toolkit.examples` (Python models, failing models) packed the way the
registry packs them: `<model>_<version>.tar.gz` with a `.sha256` sidecar.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dataplane.metrics import METRICS
from toolkit.archive import sha256_file
from toolkit.examples import (
    pack_repository,
    write_failing_model_repository,
    write_python_model_repository,
)
from toolkit.triton import free_port

ROOT = Path(__file__).resolve().parents[2]
TARGET_HEADER = "X-Amzn-SageMaker-Target-Model"
# The admin token of the tests' gateways; the portal's settings default to the same one
# under pytest (portal/settings/dataplane.py), so its clients are let in.
TEST_ADMIN_TOKEN = (
    os.environ.get("BERTH_DATAPLANE_ADMIN_TOKEN") or "berth-test-dataplane-admin-token"
)


def publish(store: Path, package: str, repository: Path, *, sidecar: bool = True) -> Path:
    """Pack `repository` as `store/package` (write then rename, as the portal does)."""
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".partial-{package}"
    pack_repository(repository, tmp)
    final = store / package
    os.replace(tmp, final)
    if sidecar:
        (store / f"{package}.sha256").write_text(f"{sha256_file(final)}  {package}\n")
    return final


def python_package(
    store: Path,
    model: str,
    version: int | str,
    *,
    scale: float = 2.0,
    ballast_bytes: int = 0,
    sidecar: bool = True,
) -> str:
    """Publish `<model>_<version>.tar.gz`: a Python model answering OUTPUT = INPUT * scale."""
    package = f"{model}_{version}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="berth-pkg-") as tmp:
        repo = write_python_model_repository(
            Path(tmp) / "repo", model, scale=scale, ballast_bytes=ballast_bytes
        )
        publish(store, package, repo, sidecar=sidecar)
    return package


def failing_package(store: Path, model: str, version: int | str, message: str) -> str:
    """Publish a package whose model raises `message` in `initialize`."""
    package = f"{model}_{version}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="berth-pkg-") as tmp:
        repo = write_failing_model_repository(Path(tmp) / "repo", model, message=message)
        publish(store, package, repo)
    return package


def bls_sibling_package(store: Path, model: str, version: int | str) -> str:
    """Publish `<model>_<version>.tar.gz`: an ensemble `model` whose one step (`caller`) asks
    a sibling model of the package (`adder`, no step of the ensemble) through BLS by its
    plain name, as a package written for one shared repository would."""
    package = f"{model}_{version}.tar.gz"
    io = """
        input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
    """
    python = 'backend: "python"\ninstance_group [ { kind: KIND_CPU count: 1 } ]'
    step = """
        step [ {
          model_name: "caller" model_version: -1
          input_map { key: "INPUT" value: "INPUT" } output_map { key: "OUTPUT" value: "OUTPUT" }
        } ]
    """
    caller = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT")
            answer = pb_utils.InferenceRequest(
                model_name="adder", requested_output_names=["OUTPUT"], inputs=[x]
            ).exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            y = pb_utils.get_output_tensor_by_name(answer, "OUTPUT")
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""
    adder = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", (x + 1).astype(np.float32))])
            for x in (pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests)
        ]
"""
    with tempfile.TemporaryDirectory(prefix="berth-pkg-") as tmp:
        repo = Path(tmp) / "repo"
        files = {
            f"{model}/config.pbtxt": f'name: "{model}"\nplatform: "ensemble"\nmax_batch_size: 8'
            f"\n{io}\nensemble_scheduling {{ {step} }}\n",
            "caller/config.pbtxt": f'name: "caller"\nmax_batch_size: 8\n{python}\n{io}',
            "caller/1/model.py": caller,
            "adder/config.pbtxt": f'name: "adder"\nmax_batch_size: 8\n{python}\n{io}',
            "adder/1/model.py": adder,
        }
        for name, text in files.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text, encoding="utf-8")
        (repo / model / "1").mkdir()
        publish(store, package, repo)
    return package


def infer_body(values: list[float], name: str = "INPUT") -> bytes:
    """A KServe v2 JSON request with one FP32 [1, 4] tensor."""
    return json.dumps(
        {"inputs": [{"name": name, "datatype": "FP32", "shape": [1, len(values)], "data": values}]}
    ).encode()


class GatewayProcess:
    """`python -m dataplane` in a subprocess, with its own state folder and store root."""

    def __init__(
        self,
        root: Path,
        endpoints: list[str],
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.store_root = self.root / "stores"
        self.state_dir = self.root / "state"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.endpoints = endpoints
        self.extra_args = extra_args or []
        self.env = env or {}
        # The admin API always asks for a token; `--admin-token` in extra_args overrides it.
        self.admin_token = TEST_ADMIN_TOKEN
        if "--admin-token" in self.extra_args:
            self.admin_token = self.extra_args[self.extra_args.index("--admin-token") + 1]
        self.log_path = self.root / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def store(self, endpoint: str) -> Path:
        return self.store_root / endpoint

    def start(self, timeout: float = 120.0) -> GatewayProcess:
        self.store_root.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "dataplane",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--store-root",
            str(self.store_root),
            "--state-dir",
            str(self.state_dir),
            *[arg for ep in self.endpoints for arg in ("--endpoint", ep)],
            *(
                ["--admin-token", self.admin_token]
                if "--admin-token" not in self.extra_args
                else []
            ),
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_tail()}")
            try:
                if self.get("/ping")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, max_bytes: int = 6000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode("utf-8", "replace")
        except OSError:
            return ""

    def triton_log(self) -> str:
        return (self.state_dir / "triton.log").read_text(encoding="utf-8", errors="replace")

    def triton_loads(self, served_prefix: str) -> int:
        """How many times Triton started loading a package whose served name begins with the
        prefix (namespaced, Triton logs `loading: <package folder>::<name>:<version>`)."""
        pattern = re.compile(r'\] "?loading: [^\s]*::' + re.escape(served_prefix) + r"[^:\s]*:\d+")
        return len(pattern.findall(self.triton_log()))

    # -- HTTP -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 300.0,
        *,
        authorize: bool | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; admin paths carry the admin token unless `headers` is given or
        `authorize` is False (tests of the 401 answer)."""
        headers = dict(headers) if headers is not None else None
        if authorize is None:
            authorize = headers is None and path.startswith("/admin/")
        headers = headers or {}
        if authorize:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str) -> tuple[int, Any]:
        status, _, body = self.request("GET", path, timeout=30)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def send_json(self, method: str, path: str, data: Any) -> tuple[int, Any]:
        status, _, body = self.request(
            method,
            path,
            json.dumps(data).encode(),
            {"Content-Type": "application/json"},
            authorize=path.startswith("/admin/"),
        )
        return status, json.loads(body)

    def invoke(
        self, endpoint: str, target: str | None, body: bytes, **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        all_headers = {"Content-Type": "application/json", **headers}
        if target is not None:
            all_headers[TARGET_HEADER] = target
        status, response_headers, payload = self.request(
            "POST", f"/endpoints/{endpoint}/invocations", body, all_headers
        )
        try:
            data: Any = json.loads(payload)
        except ValueError:
            data = payload
        return status, response_headers, data

    def status(self) -> dict[str, Any]:
        return self.get("/admin/status")[1]

    def loaded(self, endpoint: str) -> list[str]:
        return [
            m["target_model"] for m in self.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
        ]

    def metric(
        self,
        endpoint: str,
        metric: str,
        stat: str,
        target_model: str | None = None,
    ) -> float | None:
        """The statistic over the last hours as one value (one day-long period), None if no data."""
        now = time.time()
        dims = [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ]
        if target_model:
            dims.append({"Name": "TargetModel", "Value": target_model})
        status, data = self.send_json(
            "POST",
            "/admin/metric-data",
            {
                "MetricDataQueries": [
                    {
                        "Id": "q",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": METRICS[metric].namespace,
                                "MetricName": metric,
                                "Dimensions": dims,
                            },
                            "Period": 86400,
                            "Stat": stat,
                        },
                    }
                ],
                "StartTime": now - 86400,
                "EndTime": now + 60,
            },
        )
        assert status == 200, data
        values = data["MetricDataResults"][0]["Values"]
        if not values:
            return None
        if stat in ("Sum", "SampleCount"):
            return float(sum(values))
        return float(values[0])


_shared: GatewayProcess | None = None

SHARED_ENDPOINTS = ["main:4GiB", "small:1GiB", "aliased:1GiB"]


def shared_gateway() -> GatewayProcess:
    """One gateway for the test session (several test modules use it); stopped at exit."""
    global _shared
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="berth-gateway-test-"))
        _shared = GatewayProcess(
            root, SHARED_ENDPOINTS, extra_args=["--max-request-bytes", "1MiB"]
        ).start()
        atexit.register(_stop_shared, _shared)
    return _shared


def _stop_shared(gateway: GatewayProcess) -> None:
    gateway.stop()
    shutil.rmtree(gateway.root, ignore_errors=True)
