"""A synchronous client for one Triton server: `TritonServer` starts a `TritonProcess` and
speaks Triton's KServe v2 HTTP API to it (load, unload, infer, metadata, statistics) over
its Unix socket. The registry's test step and the tests use it; the gateway speaks to the
same process with its own asyncio client.

Triton's HTTP/REST API: https://github.com/triton-inference-server/server/blob/main/docs/protocol/
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.codec import decode_response, encode_request
from toolkit.sandbox import SandboxPolicy
from toolkit.triton.errors import (
    TritonError,
    TritonInferError,
    TritonLoadError,
    triton_error_message,
)
from toolkit.triton.packages import load_package, loaded_packages, unload_package
from toolkit.triton.process import DEFAULT_START_TIMEOUT, TritonProcess
from toolkit.triton.stubs import StubProcess
from toolkit.triton.unixhttp import unix_request

DEFAULT_LOAD_TIMEOUT = 180.0


class TritonServer:
    """A Triton server with a synchronous HTTP client; a context manager.

    ```
    with TritonServer(repo) as triton:
        triton.load("demo_ensemble")
        triton.infer("demo_ensemble", {"RAW": np.ones((1, 4), np.float32)})
    ```
    """

    def __init__(
        self,
        repository: Path,
        *,
        log_path: Path | None = None,
        gpu: bool = False,
        state_dir: Path | None = None,
        sandbox: bool | None = None,
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.process = TritonProcess(
            repository,
            log_path=log_path,
            gpu=gpu,
            state_dir=state_dir,
            sandbox=sandbox,
            policy=policy,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> TritonServer:
        self.process.start(timeout)
        return self

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def repository(self) -> Path:
        return self.process.repository

    @property
    def http_url(self) -> str:
        return self.process.http_url

    @property
    def metrics_url(self) -> str:
        return self.process.metrics_url

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def process_tree_rss(self) -> int:
        return self.process.process_tree_rss()

    def stub_processes(self) -> list[StubProcess]:
        return self.process.stub_processes()

    # -- HTTP -----------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: Any = None, timeout: float = 60.0
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        return unix_request(self.process.http_socket, method, path, data, headers, timeout)

    def _json(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        status, payload = self._request(method, path, body, timeout)
        if status >= 400:
            raise TritonError(f"{method} {path}: HTTP {status}: {triton_error_message(payload)}")
        return json.loads(payload) if payload else None

    def live(self) -> bool:
        return self.process.health_live()

    def load(
        self, name: str, timeout: float = DEFAULT_LOAD_TIMEOUT, *, config: str | None = None
    ) -> float:
        """Load (or reload) `name`; return the seconds it took. Raises `TritonLoadError`.

        `config` (JSON text of a model config) overrides the repository's config.pbtxt.
        """
        body: dict[str, Any] = {}
        if config is not None:
            body = {"parameters": {"config": config}}
        started = time.perf_counter()
        try:
            status, payload = self._request(
                "POST", f"/v2/repository/models/{name}/load", body, timeout
            )
        except (TimeoutError, OSError) as exc:
            if not self.alive:
                raise TritonLoadError(name, "tritonserver exited while loading") from exc
            raise TritonLoadError(name, f"no answer from Triton within {timeout:.0f} s") from exc
        if status >= 400:
            raise TritonLoadError(name, triton_error_message(payload))
        return time.perf_counter() - started

    def unload(
        self, name: str, dependents: bool = True, *, wait: bool = True, timeout: float = 60.0
    ) -> float:
        """Unload `name` (and, for an ensemble, its steps); return the seconds it took.

        Triton answers the unload call before instances have finished; with `wait` this
        returns once the model is no longer listed as loaded and nothing is still unloading
        (an ensemble's steps unload after it).
        """
        body = {"parameters": {"unload_dependents": dependents}}
        started = time.perf_counter()
        status, payload = self._request(
            "POST", f"/v2/repository/models/{name}/unload", body, timeout
        )
        if status >= 400:
            raise TritonError(f"unload of '{name}' failed: {triton_error_message(payload)}")
        if wait:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                index = self.repository_index()
                busy = any(
                    m.get("state") == "UNLOADING"
                    or (m["name"] == name and m.get("state") in ("READY", "LOADING"))
                    for m in index
                )
                if not busy:
                    break
                time.sleep(0.05)
        return time.perf_counter() - started

    def load_package(
        self, folder: Path, name: str, *, timeout: float = DEFAULT_LOAD_TIMEOUT
    ) -> None:
        """Load the package in `folder` (`toolkit.shim.install_package`'s, a folder inside
        this server's repository) as SageMaker's Triton does, under `name` (the model Triton
        maps it to answers at /v2/models/<name>). Raises `TritonLoadError` with
        Triton's reason (`TritonOutOfMemory` when it ran out of memory); see
        `toolkit.triton.packages`."""
        load_package(self.process, folder, name, timeout=timeout)

    def unload_package(self, name: str, *, timeout: float = 60.0) -> None:
        """Unload the package loaded as `name` and wait until Triton has let go of it."""
        unload_package(self.process, name, timeout=timeout)

    def loaded_packages(self) -> dict[str, Path]:
        """{name: folder} of the packages loaded through `load_package` and ready."""
        return loaded_packages(self.process)

    def repository_index(self) -> list[dict[str, Any]]:
        """Triton's repository index: [{"name", "version", "state", "reason"}, ...]."""
        return list(self._json("POST", "/v2/repository/index", {}) or [])

    def loaded_models(self, *, include_unloading: bool = False) -> set[str]:
        states = {"READY", "LOADING"} | ({"UNLOADING"} if include_unloading else set())
        return {m["name"] for m in self.repository_index() if m.get("state") in states}

    def model_ready(self, name: str) -> bool:
        status, _ = self._request("GET", f"/v2/models/{name}/ready", timeout=5.0)
        return status == 200

    def model_metadata(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v2/models/{name}"))

    def model_config(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v2/models/{name}/config"))

    def model_statistics(self, name: str) -> dict[str, Any]:
        """Triton's statistics of `name` (counts, batch sizes, queue and compute times)."""
        stats = self._json("GET", f"/v2/models/{name}/stats")
        entries = stats.get("model_stats", []) if stats else []
        return dict(entries[0]) if entries else {}

    def infer(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Iterable[str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> dict[str, np.ndarray]:
        """Run one inference request; raise `TritonInferError` with Triton's message."""
        body = encode_request(inputs, outputs)
        try:
            status, payload = self._request("POST", f"/v2/models/{name}/infer", body, timeout)
        except (TimeoutError, OSError) as exc:
            raise TritonInferError(name, f"no answer from Triton: {exc}") from exc
        if status >= 400:
            raise TritonInferError(name, triton_error_message(payload), status)
        return decode_response(json.loads(payload))

    def metrics_text(self) -> str:
        """Triton's Prometheus metrics text."""
        status, body = unix_request(self.process.metrics_socket, "GET", "/metrics", timeout=5.0)
        if status != 200:
            raise TritonError(f"GET /metrics: HTTP {status}")
        return body.decode()
