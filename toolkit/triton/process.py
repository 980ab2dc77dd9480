"""The tritonserver process: launched in explicit model-control mode inside the sandbox of
`toolkit.sandbox`, watched, and stopped without leaving stub processes behind.

Model code is user code, so Triton runs sandboxed (no network, no portal secret, a
read-only view of little more than the model repository, an unprivileged uid, rlimits);
its HTTP, gRPC and metrics frontends listen on Unix sockets in the sandbox's own tmpfs,
which this process reaches through `/proc/<tritonserver pid>/root`. Its SageMaker frontend,
which loads packages, listens on a port of the sandbox's own loopback; a relay started in
the sandbox (`toolkit.triton.relay`) passes it connections from a Unix socket beside them.
`TritonProcess` has no client logic, so an asyncio gateway can drive it with its own HTTP
client; `toolkit.triton.client.TritonServer` adds a synchronous one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from toolkit.sandbox import (
    SOCKET_DIR,
    UNSAFE_OPT_OUT,
    Sandbox,
    SandboxError,
    SandboxPolicy,
    sandbox_disabled,
)
from toolkit.triton.errors import TritonError, TritonStartError
from toolkit.triton.install import (
    SAGEMAKER_PORT,
    SAGEMAKER_SOCKET,
    check_model_environment,
    default_state_dir,
    die_with_parent_hook,
    prepare_backend_directory,
    readable_by_all,
    server_arguments,
    server_environment,
    server_sandbox,
    tritonserver_binary,
    with_relay,
)
from toolkit.triton.serverlog import ServerLog
from toolkit.triton.stubs import StubProcess, process_tree, stub_processes, tree_rss
from toolkit.triton.unixhttp import Address, free_port, unix_request

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0


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
        self.server_log = ServerLog(log_path)
        self._popen: subprocess.Popen[bytes] | None = None
        self._triton_pid: int | None = None
        self.runtime_dir: Path | None = None
        self.shm_prefix = ""
        self.started_at: float | None = None
        # In the sandbox's own network namespace any port is free; outside it, one is picked
        # at each launch.
        self.sagemaker_port = SAGEMAKER_PORT

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
    def sagemaker_address(self) -> Address:
        """Where this process reaches the SageMaker frontend: the relay's Unix socket in the
        sandbox, or the frontend's own port on the loopback when unsandboxed."""
        if not self.sandboxed:
            return ("127.0.0.1", self.sagemaker_port)
        return self._socket(SAGEMAKER_SOCKET)

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
        return self.server_log.path

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
        args = server_arguments(
            self.repository,
            backends=prepare_backend_directory(self.state_dir),
            socket_dir=self._socket_dir_inside,
            shm_prefix=self.shm_prefix,
            gpu=self.gpu,
            sagemaker_port=self.sagemaker_port,
            log_verbose=self.log_verbose,
        )
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        """The environment tritonserver and every stub run with (`server_environment`)."""
        return server_environment(gpu=self.gpu)

    def sandbox(self) -> Sandbox:
        """The sandbox Triton runs in (`server_sandbox`)."""
        return server_sandbox(
            self.repository,
            backends=prepare_backend_directory(self.state_dir),
            gpu=self.gpu,
            policy=self.policy,
        )

    def full_command(self) -> list[str]:
        """The command that runs: tritonserver wrapped in the sandbox (unless opted out)."""
        command = self.command()
        if not self.sandboxed:
            return command
        command = with_relay(
            command, socket_dir=self._socket_dir_inside, sagemaker_port=self.sagemaker_port
        )
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
            readable_by_all(self.repository)

    def _remove_runtime_dir(self) -> None:
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def launch(self) -> None:
        """Start tritonserver; returns without waiting for readiness."""
        if self.alive:
            raise TritonError("tritonserver is already running")
        check_model_environment()
        if not self.repository.is_dir():
            # Triton would keep running without a repository and never become live.
            raise TritonStartError(f"model repository {self.repository} is not a folder")
        if not self.sandboxed:
            self.sagemaker_port = free_port()
            log.warning(
                "model code runs UNSANDBOXED (%s or sandbox=False): it can read and write "
                "whatever this user can, and Triton's SageMaker frontend (which loads any "
                "folder as a model repository) listens on port %d of ALL interfaces",
                UNSAFE_OPT_OUT,
                self.sagemaker_port,
            )
        self._prepare_runtime_dir()
        self.shm_prefix = f"berth{os.getpid()}_{secrets.token_hex(4)}_"
        self._triton_pid = None
        try:
            command = self.full_command()
        except BaseException:
            self._remove_runtime_dir()
            raise
        # Under half the sandbox's file-size limit, which Triton writes its log under.
        policy = self.policy or SandboxPolicy.from_environ()
        log_file = self.server_log.open(max_bytes=policy.max_file_bytes // 2)
        try:
            self._popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.log_path.parent),
                # Own process group: stop() can signal the sandbox and everything in it at once.
                start_new_session=True,
                preexec_fn=die_with_parent_hook() if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self.server_log.close()
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
        """The end of this run's log."""
        return self.server_log.tail(max_bytes)

    def startup_problems(self, max_lines: int = 20) -> str:
        """Error lines of this run's log: what to show when Triton did not come up."""
        return self.server_log.problems(max_lines)

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
        return status == 200 and self.sagemaker_live(timeout)

    def sagemaker_live(self, timeout: float = 2.0) -> bool:
        """The SageMaker frontend (through the relay, in the sandbox) answers its `/ping`:
        Triton starts it after the HTTP frontend, and packages load through it."""
        address = self.sagemaker_address
        if not isinstance(address, tuple) and not address.exists():
            return False
        try:
            status, _ = unix_request(address, "GET", "/ping", timeout=timeout)
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
        self.server_log.close()
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
        return process_tree(self.pid) if self.alive else []

    def process_tree_rss(self) -> int:
        """Resident memory of tritonserver and all its stub processes, in bytes."""
        return tree_rss(self._processes())

    def stub_processes(self) -> list[StubProcess]:
        """The running Python-backend stubs, with the model each serves and its memory."""
        return stub_processes(self._processes()[1:], self.repository)
