"""The Triton Inference Server process: the `tritonserver` binary that nvidia-pytriton ships.

Two layers:

- `TritonProcess` owns the process: it finds the binary, assembles a backend folder with the
  Python backend stub matching this interpreter, picks free ports on 127.0.0.1, sets the
  environment (libraries, PYTHONPATH so models import this venv's numpy/onnxruntime), starts
  Triton in its own process group, waits for health, and stops it without leaving stub
  processes behind. It has no client logic, so an asyncio gateway can drive it with its
  own HTTP client.
- `TritonServer` adds a small synchronous KServe v2 HTTP client (load, unload, infer,
  metadata) for the registry's test step and for tests.

Triton's HTTP/REST API: https://github.com/triton-inference-server/server/blob/main/docs/protocol/
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

STUB_NAME = "triton_python_backend_stub"
# Triton's glog-style error lines: "E1123 18:34:50.209927 32211 file.cc:123] message".
_LOG_ERROR = re.compile(r"^E\d{4} ")
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_LOAD_TIMEOUT = 180.0
# Threads Triton keeps per Python-backend model instance for its BLS calls and decoupled
# responses (the backend's `thread-pool-size`, 32 unless told). At 32 every instance costs
# some 35 Triton threads: 30 small models made 1,075 threads and a 9.9 GB address space,
# and each stub Triton then forks copies that map (6 to 9 ms, while Triton's serving threads
# wait on the memory-map lock). At 4: 235 threads, 3 GB, 2 to 4 ms. An instance still runs
# four BLS calls at once; BERTH_TRITON_PYTHON_THREADS raises it for models that need more.
DEFAULT_PYTHON_BACKEND_THREADS = 4

TRITON_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMPY_TO_TRITON: dict[Any, str] = {np.dtype(v): k for k, v in TRITON_TO_NUMPY.items()}


class TritonError(RuntimeError):
    """Base of the errors this module raises."""


class TritonStartError(TritonError):
    """tritonserver did not come up; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n{self.log_tail}" if self.log_tail else base


class TritonLoadError(TritonError):
    """Triton refused to load a model; `reason` is Triton's own message."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"failed to load model '{model}': {reason}")
        self.model = model
        self.reason = reason


class TritonInferError(TritonError):
    """An inference request failed; `status` is the HTTP status Triton answered (0: no answer)."""

    def __init__(self, model: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.model = model
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------
# Locating the binary and preparing the backend folder


def tritonserver_dist() -> Path:
    """The `pytriton/tritonserver` folder of the installed nvidia-pytriton wheel."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    """Path of the `tritonserver` executable."""
    binary = tritonserver_dist() / "bin" / "tritonserver"
    if not binary.is_file():
        raise TritonStartError(f"tritonserver binary not found at {binary}")
    return binary


def library_dirs() -> list[Path]:
    """Folders tritonserver and the stub load shared libraries from, most specific first."""
    dist = tritonserver_dist()
    dirs: list[Path] = []
    # The stub links libpython3.X: use this interpreter's own, not some other install's.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        dirs.append(Path(libdir))
    # Installed wheels keep their bundled libraries here; editable installs in external_libs.
    for candidate in (dist.parent.parent / "nvidia_pytriton.libs", dist / "external_libs"):
        if candidate.is_dir():
            dirs.append(candidate)
    return dirs


def python_version_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_state_dir() -> Path:
    """Where backend folders are cached between runs (per user)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "berth" / "triton"


def prepare_backend_directory(state_dir: Path | None = None) -> Path:
    """Build (once) a backends folder whose python/ holds the stub for this interpreter.

    Returns the folder to pass as --backend-directory. Built in a temporary folder and
    renamed into place, so concurrent starts never see a half-copied backend.
    """
    dist = tritonserver_dist()
    python_src = dist / "backends" / "python"
    stub_src = dist / "python_backend_stubs" / python_version_tag() / STUB_NAME
    if not stub_src.is_file():
        raise TritonStartError(
            f"no Python backend stub for Python {python_version_tag()} in {stub_src.parent.parent}"
        )
    sources = [python_src / "libtriton_python.so", python_src / "triton_python_backend_utils.py"]
    key = hashlib.sha256()
    for path in [*sources, stub_src]:
        st = path.stat()
        key.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    root = (state_dir or default_state_dir()) / f"backends-py{python_version_tag()}"
    final = root / key.hexdigest()[:16]
    if (final / "python" / STUB_NAME).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        (staging / "python").mkdir()
        for path in sources:
            shutil.copy2(path, staging / "python" / path.name)
        shutil.copy2(stub_src, staging / "python" / STUB_NAME)
        os.chmod(staging / "python" / STUB_NAME, 0o755)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process finished first: theirs is identical.
            if not (final / "python" / STUB_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def check_model_environment() -> None:
    """Refuse an environment whose numpy the Python backend stub cannot exchange tensors with.

    The stub in nvidia-pytriton is built against numpy 1; under numpy 2 it misreads element
    sizes (its pybind11 predates numpy 2's descriptor layout), so tensors arrive empty and
    BYTES inputs crash the stub.
    """
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise TritonStartError(
            f"numpy {np.__version__} is installed; the Triton Python backend stub shipped with "
            "nvidia-pytriton needs numpy<2 (pip install 'numpy>=1.26,<2')"
        )


def python_backend_threads() -> int:
    """Threads per Python-backend model instance: $BERTH_TRITON_PYTHON_THREADS or 4."""
    value = os.environ.get("BERTH_TRITON_PYTHON_THREADS", "").strip()
    if not value:
        return DEFAULT_PYTHON_BACKEND_THREADS
    if not value.isdigit() or int(value) < 1:
        raise TritonStartError(
            f"BERTH_TRITON_PYTHON_THREADS must be a positive integer, not {value!r}"
        )
    return int(value)


def python_path_for_models() -> str:
    """PYTHONPATH for Python-backend models: this interpreter's import path."""
    entries = []
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry not in entries:
            entries.append(os.path.abspath(entry))
    return os.pathsep.join(entries)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class StubProcess:
    """One Python-backend stub: one model instance, its own process."""

    pid: int
    model: str
    instance: str
    rss_bytes: int


# ---------------------------------------------------------------------------------------------
# The process


def _die_with_parent():
    """A pre-exec hook asking Linux to SIGKILL Triton when the process that launched it dies,
    even by SIGKILL, so a killed gateway or worker leaves no server holding memory and ports.
    The signal follows the launching *thread*, so it is only armed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return arm


class TritonProcess:
    """A tritonserver process in explicit model-control mode bound to 127.0.0.1.

    `launch()` starts it and returns at once; `wait_ready()` waits for the HTTP health check;
    `stop()` ends the whole process group. Ports are picked when launching, so a relaunch
    after a crash gets fresh ones.
    """

    def __init__(
        self,
        repository: Path,
        *,
        log_path: Path | None = None,
        gpu: bool = False,
        state_dir: Path | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.gpu = gpu
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.host = host
        self.extra_args = list(extra_args)
        self.log_verbose = log_verbose
        self._log_path = Path(log_path) if log_path else None
        self._owned_log_dir: Path | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._log_offset = 0
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self.shm_prefix = ""
        self.started_at: float | None = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._owned_log_dir = Path(tempfile.mkdtemp(prefix="berth-triton-log-"))
            self._log_path = self._owned_log_dir / "tritonserver.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    # -- launching ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The tritonserver command line for the current ports."""
        backends = prepare_backend_directory(self.state_dir)
        args = [
            str(tritonserver_binary()),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--allow-gpu-metrics={'true' if self.gpu else 'false'}",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--exit-timeout-secs=10",
            # Completing a Python model's config starts a stub of its own before the serving
            # one: 2.0 s instead of 0.35 s to load the demo ensemble. Configs declare their
            # inputs and outputs instead (registry validation checks it).
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            # Unique shared-memory names, so a killed server's regions can be found and removed.
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--backend-config=python,thread-pool-size={python_backend_threads()}",
        ]
        if not self.gpu:
            # No pinned or device memory pools on a CPU-only server.
            args += ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        """The environment tritonserver (and so every stub) runs with."""
        env = dict(os.environ)
        libs = [str(p) for p in library_dirs()]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        model_path = python_path_for_models()
        if env.get("PYTHONPATH"):
            model_path = os.pathsep.join([model_path, env["PYTHONPATH"]])
        env["PYTHONPATH"] = model_path
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Model code must not write .pyc files into the (read-mostly) model repository.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # Every Python-backend instance is a process of its own: numpy's OpenBLAS would start
        # a thread per core in each, which slows every load (a third of a stub's start-up)
        # and oversubscribes the CPU. One thread each unless the operator says otherwise.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        if not self.gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def launch(self) -> None:
        """Start tritonserver on fresh free ports; returns without waiting for readiness."""
        if self.alive:
            raise TritonError("tritonserver is already running")
        check_model_environment()
        if not self.repository.is_dir():
            # Triton would keep running without a repository and never become live.
            raise TritonStartError(f"model repository {self.repository} is not a folder")
        self.http_port = free_port(self.host)
        self.grpc_port = free_port(self.host)
        self.metrics_port = free_port(self.host)
        while len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
            self.metrics_port = free_port(self.host)
        self.shm_prefix = f"berth{os.getpid()}_{secrets.token_hex(4)}_"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_offset = self._log_file.tell()
        try:
            self._popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.log_path.parent),
                # Own process group: stop() can signal Triton and every stub it started at once.
                start_new_session=True,
                preexec_fn=_die_with_parent() if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self._log_file.close()
            self._log_file = None
            raise TritonStartError(f"cannot start tritonserver: {exc}") from exc
        self.started_at = time.monotonic()

    def log_tail(self, max_bytes: int = 8000) -> str:
        """The end of this run's log (earlier runs appended to the same file are skipped)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_offset, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def startup_problems(self, max_lines: int = 20) -> str:
        """Error lines of this run's log: what to show when Triton did not come up."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read(4 * 1024 * 1024).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [
            line
            for line in text.splitlines()
            if _LOG_ERROR.match(line) or line.lower().startswith(("error", "bad option", "invalid"))
        ]
        return "\n".join(lines[:max_lines]) or self.log_tail(2000)

    def health_live(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/live", timeout=timeout) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Wait until Triton answers its health check, or raise `TritonStartError`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise TritonStartError(
                    f"tritonserver exited with status {self.returncode} while starting",
                    self.startup_problems(),
                )
            if self.health_live(timeout=1.0):
                return
            time.sleep(0.1)
        raise TritonStartError(
            f"tritonserver not ready after {timeout:.0f} s", self.startup_problems()
        )

    def start(self, timeout: float = DEFAULT_START_TIMEOUT, attempts: int = 3) -> None:
        """Launch and wait for readiness, retrying with new ports if one was taken meanwhile."""
        for attempt in range(attempts):
            self.launch()
            try:
                self.wait_ready(timeout)
                return
            except TritonStartError as exc:
                self.stop()
                port_clash = "already in use" in exc.log_tail.lower()
                if not port_clash or attempt == attempts - 1:
                    raise

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop Triton (graceful first), then make sure no process of its group survives."""
        popen = self._popen
        if popen is None:
            return None
        pgid = popen.pid
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                popen.wait(timeout=10)
        # Stubs notice their parent is gone only after a while: end any that remain now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._remove_shared_memory()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return popen.returncode

    def _remove_shared_memory(self) -> None:
        if not self.shm_prefix:
            return
        shm = Path("/dev/shm")
        if shm.is_dir():
            for region in shm.glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    region.unlink()

    # -- resources ------------------------------------------------------------------------------

    def _processes(self) -> list[psutil.Process]:
        if not self.alive or self.pid is None:
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def process_tree_rss(self) -> int:
        """Resident memory of tritonserver and all its stub processes, in bytes."""
        total = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += proc.memory_info().rss
        return total

    def stub_processes(self) -> list[StubProcess]:
        """The running Python-backend stubs, with the model each serves and its memory."""
        stubs = []
        for proc in self._processes()[1:]:
            try:
                cmdline = proc.cmdline()
                if not cmdline or not cmdline[0].endswith(STUB_NAME):
                    continue
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            model, instance = _stub_model(cmdline, self.repository)
            stubs.append(StubProcess(pid=proc.pid, model=model, instance=instance, rss_bytes=rss))
        return stubs


def _stub_model(cmdline: list[str], repository: Path) -> tuple[str, str]:
    """Model and instance names from a stub's command line.

    The stub is started as: stub <model_dir>/<version>/model.py <shm region> <shm size>
    <shm growth> <parent pid> <python lib> <ipc handle> <instance name> <runtime model dir>.
    """
    model = ""
    if len(cmdline) > 1:
        path = Path(cmdline[1])
        with contextlib.suppress(ValueError):
            model = path.relative_to(repository).parts[0]
        if not model and len(path.parts) >= 3:
            model = path.parts[-3]
    instance = cmdline[8] if len(cmdline) > 8 else ""
    return model, instance


# ---------------------------------------------------------------------------------------------
# KServe v2 JSON encoding, shared by the sync client below and by other clients


def encode_infer_request(
    inputs: Mapping[str, np.ndarray], outputs: Iterable[str] | None = None
) -> dict[str, Any]:
    """A KServe v2 JSON inference request for numpy inputs."""
    body: dict[str, Any] = {"inputs": []}
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in ("U", "S", "O"):
            datatype = "BYTES"
            data = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        else:
            datatype = NUMPY_TO_TRITON.get(array.dtype)
            if datatype is None:
                raise TypeError(f"input {name}: unsupported dtype {array.dtype}")
            data = array.ravel().tolist()
        body["inputs"].append(
            {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
        )
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def decode_infer_response(payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """numpy arrays from a KServe v2 JSON inference response."""
    result = {}
    for output in payload.get("outputs", []):
        dtype = TRITON_TO_NUMPY.get(output["datatype"], np.object_)
        data = output.get("data", [])
        array = np.array(data, dtype=dtype) if dtype is not np.object_ else np.array(data, object)
        result[output["name"]] = array.reshape(output["shape"])
    return result


def triton_error_message(body: bytes) -> str:
    """The message of a Triton error answer ({"error": "..."}), or the raw text."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    return text.strip()


# ---------------------------------------------------------------------------------------------
# Synchronous server handle


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
    ) -> None:
        self.process = TritonProcess(repository, log_path=log_path, gpu=gpu, state_dir=state_dir)

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
        request = urllib.request.Request(
            f"{self.http_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

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
        body = encode_infer_request(inputs, outputs)
        try:
            status, payload = self._request("POST", f"/v2/models/{name}/infer", body, timeout)
        except (TimeoutError, OSError) as exc:
            raise TritonInferError(name, f"no answer from Triton: {exc}") from exc
        if status >= 400:
            raise TritonInferError(name, triton_error_message(payload), status)
        return decode_infer_response(json.loads(payload))

    def metrics_text(self) -> str:
        """Triton's Prometheus metrics text."""
        with urllib.request.urlopen(self.metrics_url, timeout=5.0) as response:
            return response.read().decode()
