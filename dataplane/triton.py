"""The Triton Inference Server process: the `tritonserver` binary that nvidia-pytriton ships.

Two layers:

- `TritonProcess` owns the process: it finds the binary, assembles a backend folder with the
  Python backend stub matching this interpreter, builds a clean environment (libraries,
  PYTHONPATH limited to the standard library and this venv's site-packages so models import
  numpy/onnxruntime), starts Triton inside the sandbox of `toolkit.sandbox` (model code is
  user code: no network, no portal secret, a read-only view of little more than the model
  repository, an unprivileged uid, rlimits), waits for health, and stops it without leaving
  stub processes behind. Triton's HTTP, gRPC and metrics frontends listen on Unix sockets in
  a runtime folder bound into the sandbox, since the sandbox has no network. It has no
  client logic, so an asyncio gateway can drive it with its own HTTP client.
- `TritonServer` adds a small synchronous KServe v2 HTTP client (load, unload, infer,
  metadata), over that Unix socket, for the registry's test step and for tests.

Triton's HTTP/REST API: https://github.com/triton-inference-server/server/blob/main/docs/protocol/
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from toolkit.codec import decode_response, encode_request
from toolkit.sandbox import (
    SOCKET_DIR,
    UNSAFE_OPT_OUT,
    Sandbox,
    SandboxError,
    SandboxPolicy,
    bind_sources,
    clean_environment,
    python_paths,
    sandbox_disabled,
)

log = logging.getLogger(__name__)

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
        _readable_by_all(final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        (staging / "python").mkdir()
        for path in sources:
            shutil.copy2(path, staging / "python" / path.name)
        shutil.copy2(stub_src, staging / "python" / STUB_NAME)
        os.chmod(staging / "python" / STUB_NAME, 0o755)
        # mkdtemp made it 0700: the sandbox's unprivileged uid must read it.
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process finished first: theirs is identical.
            if not (final / "python" / STUB_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _readable_by_all(folder: Path) -> None:
    """Folders built before the sandbox existed were 0700; open them if they are ours."""
    with contextlib.suppress(OSError):
        st = folder.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o005 != 0o005:
            os.chmod(folder, 0o755)


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
    """PYTHONPATH for Python-backend models: the standard library and this venv's
    site-packages. Not the rest of `sys.path`: the project folder holds the settings and,
    on SQLite, the database."""
    return os.pathsep.join(python_paths())


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


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: how this process talks to a sandboxed Triton."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_request(
    path: str | Path,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One HTTP request over the Unix socket at `path`: (status, body). Raises OSError."""
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad answer from Triton: {exc!r}") from exc
    finally:
        conn.close()


class TritonProcess:
    """A tritonserver process in explicit model-control mode, sandboxed, on Unix sockets.

    `launch()` starts it and returns at once; `wait_ready()` waits for the HTTP health check;
    `stop()` ends it and every stub it started. The sockets live in the sandbox's own tmpfs;
    this process reaches them through `/proc/<tritonserver pid>/root`, so each launch has
    its own and nothing of the host is writable from inside. (Unsandboxed, they live in a
    fresh private folder.)

    `sandbox=None` follows the environment: sandboxed unless the unsafe opt-out
    (`BERTH_UNSAFE_RUN_MODELS_UNSANDBOXED=1`) is set; without bubblewrap, launching fails
    with a `TritonStartError` naming the package to install.
    """

    def __init__(
        self,
        repository: Path,
        *,
        log_path: Path | None = None,
        gpu: bool = False,
        state_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        log_verbose: int = 0,
        sandbox: bool | None = None,
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.gpu = gpu
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.extra_args = list(extra_args)
        self.log_verbose = log_verbose
        self.sandboxed = not sandbox_disabled() if sandbox is None else sandbox
        self.policy = policy
        self._log_path = Path(log_path) if log_path else None
        self._owned_log_dir: Path | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._triton_pid: int | None = None
        self._log_file: Any = None
        self._log_offset = 0
        self.runtime_dir: Path | None = None
        self.shm_prefix = ""
        self.started_at: float | None = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def _socket_dir_inside(self) -> str:
        """The sockets' folder as Triton sees it."""
        if self.sandboxed:
            return SOCKET_DIR
        if self.runtime_dir is None:
            raise TritonError("tritonserver has not been launched")
        return str(self.runtime_dir)

    def _socket(self, name: str) -> Path:
        if not self.sandboxed:
            return Path(self._socket_dir_inside) / name
        if self._triton_pid is None:
            raise TritonError("tritonserver is not running")
        return Path(f"/proc/{self._triton_pid}/root{SOCKET_DIR}") / name

    @property
    def http_socket(self) -> Path:
        return self._socket("http.sock")

    @property
    def grpc_socket(self) -> Path:
        # Triton appends ":<grpc-port>" to a Unix gRPC address; port 0 it is.
        return self._socket("grpc.sock:0")

    @property
    def metrics_socket(self) -> Path:
        return self._socket("metrics.sock")

    @property
    def http_url(self) -> str:
        """Where Triton's HTTP frontend listens, as `unix:<path>`."""
        return f"unix:{self.http_socket}"

    @property
    def grpc_url(self) -> str:
        """The gRPC target (`unix:<path>`), as grpc and tritonclient.grpc accept it."""
        return f"unix:{self.grpc_socket}"

    @property
    def metrics_url(self) -> str:
        return f"unix:{self.metrics_socket}"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._owned_log_dir = Path(tempfile.mkdtemp(prefix="berth-triton-log-"))
            self._log_path = self._owned_log_dir / "tritonserver.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The tritonserver process (inside the sandbox, its host pid); its stubs are its
        children. Before Triton has started inside the sandbox: the launcher's pid."""
        if self._triton_pid is not None:
            return self._triton_pid
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    # -- launching ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The tritonserver command line (unsandboxed: `launch` wraps it)."""
        backends = prepare_backend_directory(self.state_dir)
        args = [
            str(tritonserver_binary()),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            # Unix sockets: the sandbox has no network to listen on, and nothing but the
            # launching process (which created the runtime folder) can reach them.
            f"--http-address=unix:{self._socket_dir_inside}/http.sock",
            f"--grpc-address=unix:{self._socket_dir_inside}/grpc.sock",
            "--grpc-port=0",
            "--allow-metrics=true",
            f"--metrics-address=unix:{self._socket_dir_inside}/metrics.sock",
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
        """The environment tritonserver (and so every stub) runs with: built from scratch,
        so no secret of the launching process (database URL, Django secret key, AWS
        credentials, the admin token) reaches model code."""
        libs = [str(p) for p in library_dirs()]
        if os.environ.get("LD_LIBRARY_PATH"):
            libs.append(os.environ["LD_LIBRARY_PATH"])
        env = clean_environment(
            {
                "LD_LIBRARY_PATH": os.pathsep.join(libs),
                "PYTHONPATH": python_path_for_models(),
                # The stub finds its Python home through the first `python` on PATH: this
                # venv's, so it runs this interpreter's standard library and not /usr's.
                "PATH": os.pathsep.join(
                    [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
                ),
                "HOME": "/tmp",
                "TMPDIR": "/tmp",
                "LANG": "C.UTF-8",
                # Model code must not write .pyc files into the (read-only) model repository.
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        # Every Python-backend instance is a process of its own: numpy's OpenBLAS would start
        # a thread per core in each, which slows every load (a third of a stub's start-up)
        # and oversubscribes the CPU. One thread each unless the operator says otherwise.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        if not self.gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def sandbox(self) -> Sandbox:
        """What the sandbox lets Triton see: the Python installation, the venv, the Triton
        distribution and backend folder, the model repository (all read-only) and the
        runtime folder for its sockets (writable)."""
        dist = tritonserver_dist()
        read_only = bind_sources(
            [
                sys.base_prefix,
                sys.prefix,
                dist,
                *library_dirs(),
                *os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep),
                prepare_backend_directory(self.state_dir),
                self.repository,
            ]
        )
        return Sandbox(
            read_only=read_only,
            env=self.environment(),
            gpu=self.gpu,
            policy=self.policy or SandboxPolicy.from_environ(),
        )

    def full_command(self) -> list[str]:
        """The command that runs: tritonserver wrapped in the sandbox (unless opted out)."""
        command = self.command()
        if not self.sandboxed:
            return command
        try:
            return self.sandbox().wrap(command)
        except SandboxError as exc:
            raise TritonStartError(
                f"cannot run model code sandboxed: {exc}. (Development only: set "
                f"{UNSAFE_OPT_OUT}=1 to run it unconfined.)"
            ) from exc

    def _prepare_runtime_dir(self) -> None:
        self._remove_runtime_dir()
        self.runtime_dir = None
        if not self.sandboxed:
            # 0700: other local users cannot reach the sockets.
            self.runtime_dir = Path(tempfile.mkdtemp(prefix="berth-triton-"))
        elif os.geteuid() == 0:
            # Triton runs as the sandbox's unprivileged uid: it must read the repository.
            _readable_by_all(self.repository)

    def _remove_runtime_dir(self) -> None:
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _rotate_log(self) -> None:
        """Keep the log under half the sandbox's file-size limit: Triton writes it (through
        its stdout) under that limit and would be killed by SIGXFSZ past it."""
        limit = (self.policy or SandboxPolicy.from_environ()).max_file_bytes // 2
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > limit:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))

    def launch(self) -> None:
        """Start tritonserver; returns without waiting for readiness."""
        if self.alive:
            raise TritonError("tritonserver is already running")
        check_model_environment()
        if not self.repository.is_dir():
            # Triton would keep running without a repository and never become live.
            raise TritonStartError(f"model repository {self.repository} is not a folder")
        if not self.sandboxed:
            log.warning(
                "model code runs UNSANDBOXED (%s or sandbox=False): it can read and write "
                "whatever this user can",
                UNSAFE_OPT_OUT,
            )
        self._prepare_runtime_dir()
        self.shm_prefix = f"berth{os.getpid()}_{secrets.token_hex(4)}_"
        self._triton_pid = None
        try:
            command = self.full_command()
        except BaseException:
            self._remove_runtime_dir()
            raise
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_offset = self._log_file.tell()
        try:
            self._popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.log_path.parent),
                # Own process group: stop() can signal the sandbox and everything in it at once.
                start_new_session=True,
                preexec_fn=_die_with_parent() if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self._log_file.close()
            self._log_file = None
            raise TritonStartError(f"cannot start tritonserver: {exc}") from exc
        self.started_at = time.monotonic()

    def _find_triton(self) -> int | None:
        """The tritonserver process under bwrap (bwrap, its PID-1 reaper, then Triton)."""
        if self._popen is None:
            return None
        if not self.sandboxed:
            return self._popen.pid
        binary = str(tritonserver_binary())
        try:
            for child in psutil.Process(self._popen.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmdline = child.cmdline()
                    if cmdline and cmdline[0] == binary:
                        return child.pid
        except psutil.Error:
            return None
        return None

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
        if self.sandboxed and self._triton_pid is None:
            self._triton_pid = self._find_triton()
            if self._triton_pid is None:
                return False
        if not self.http_socket.exists():
            return False
        try:
            status, _ = unix_request(self.http_socket, "GET", "/v2/health/live", timeout=timeout)
        except OSError:
            return False
        return status == 200

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
            time.sleep(0.05)
        raise TritonStartError(
            f"tritonserver not ready after {timeout:.0f} s", self.startup_problems()
        )

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Launch and wait for readiness; on failure nothing is left running."""
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop Triton (graceful first), then make sure no process of it survives.

        In the sandbox, SIGTERM goes to tritonserver itself (bwrap does not forward signals);
        once it exits, bwrap's PID-1 reaper exits and the kernel kills whatever else is left
        in the PID namespace. The final SIGKILL of the process group covers the rest.
        """
        popen = self._popen
        if popen is None:
            return None
        pgid = popen.pid
        if popen.poll() is None:
            target = self._triton_pid or self._find_triton() or popen.pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGTERM)
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
        self._remove_runtime_dir()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return popen.returncode

    def _remove_shared_memory(self) -> None:
        # A sandboxed server's /dev/shm is its own tmpfs, gone with its last process.
        if not self.shm_prefix or self.sandboxed:
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
# Triton's error answers (requests and answers go through toolkit.codec)


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
