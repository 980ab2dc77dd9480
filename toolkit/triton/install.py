"""Where the `tritonserver` binary that nvidia-pytriton ships lives, and what one run of it is
made of: the backend folder with the Python backend stub matching this interpreter, the
command line, the environment (built from scratch) and the sandbox it runs in.

Facts these rest on: the wheel's stubs sit in `python_backend_stubs/<python version>/`, one
of them must be in the backend folder's `python/`; Python models import from `PYTHONPATH`.
Triton's command-line options: `tritonserver --help`, and
https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_management.md
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.sandbox import Sandbox, SandboxPolicy, bind_sources, clean_environment, python_paths
from toolkit.triton.errors import TritonStartError

STUB_NAME = "triton_python_backend_stub"
# Threads Triton keeps per Python-backend model instance for its BLS calls and decoupled
# responses (the backend's `thread-pool-size`, 32 unless told). At 32 every instance costs
# some 35 Triton threads: 30 small models made 1,075 threads and a 9.9 GB address space,
# and each stub Triton then forks copies that map (6 to 9 ms, while Triton's serving threads
# wait on the memory-map lock). At 4: 235 threads, 3 GB, 2 to 4 ms. An instance still runs
# four BLS calls at once; BERTH_TRITON_PYTHON_THREADS raises it for models that need more.
DEFAULT_PYTHON_BACKEND_THREADS = 4
# The SageMaker frontend's port inside the sandbox (its own network namespace: any port is
# free there); SageMaker's containers use 8080.
SAGEMAKER_PORT = 8080
# The relay's Unix socket, in the sandbox's socket folder.
SAGEMAKER_SOCKET = "sagemaker.sock"


def tritonserver_dist() -> Path:
    """The `pytriton/tritonserver` folder of the installed nvidia-pytriton wheel.

    Found without importing `pytriton`: the wheel is installed without its Python
    dependencies (scripts/bootstrap), so its own modules may not import.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(
            "Triton is not installed: pip install --no-deps nvidia-pytriton==0.7.0 "
            "(scripts/bootstrap does)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "tritonserver"


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
        readable_by_all(final)
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


def readable_by_all(folder: Path) -> None:
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


def server_arguments(
    repository: Path,
    *,
    backends: Path,
    socket_dir: str,
    shm_prefix: str,
    gpu: bool,
    sagemaker_port: int = SAGEMAKER_PORT,
    log_verbose: int = 0,
) -> list[str]:
    """The tritonserver command line for `repository`, its frontends on Unix sockets in
    `socket_dir` (as Triton sees it), and SageMaker's on `sagemaker_port`.

    Packages load as SageMaker's Triton loads them: through the SageMaker frontend's
    `POST /models`, each package folder registered as a model repository of its own, with
    namespacing so that two packages may hold models of the same name (see
    `toolkit.triton.packages`).
    """
    args = [
        str(tritonserver_binary()),
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        "--model-namespacing=true",
        f"--backend-directory={backends}",
        # Unix sockets: the sandbox has no network to listen on, and nothing but the
        # launching process (which created the runtime folder) can reach them.
        f"--http-address=unix:{socket_dir}/http.sock",
        f"--grpc-address=unix:{socket_dir}/grpc.sock",
        "--grpc-port=0",
        "--allow-metrics=true",
        f"--metrics-address=unix:{socket_dir}/metrics.sock",
        f"--allow-gpu-metrics={'true' if gpu else 'false'}",
        # The frontend binds 0.0.0.0 (it has no address option): in the sandbox's network
        # namespace only the relay (toolkit.triton.relay) reaches it.
        "--allow-sagemaker=true",
        f"--sagemaker-port={sagemaker_port}",
        "--allow-vertex-ai=false",
        "--exit-on-error=false",
        "--strict-readiness=false",
        "--exit-timeout-secs=10",
        # Completing a Python model's config starts a stub of its own before the serving
        # one: 2.0 s instead of 0.35 s to load the demo ensemble. Configs declare their
        # inputs and outputs instead (registry validation checks it).
        "--disable-auto-complete-config",
        f"--log-verbose={log_verbose}",
        # Unique shared-memory names, so a killed server's regions can be found and removed.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--backend-config=python,thread-pool-size={python_backend_threads()}",
    ]
    if not gpu:
        # No pinned or device memory pools on a CPU-only server.
        args += ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
    return args


def with_relay(command: list[str], *, socket_dir: str, sagemaker_port: int) -> list[str]:
    """`command` (tritonserver's) preceded by the relay to its SageMaker frontend, both in
    the sandbox: a shell starts the relay in the background, then becomes tritonserver
    (`exec`), so Triton stays the sandbox's main process and the relay ends with it. A relay
    that dies is started again (0.2 s later) for as long as Triton runs (`$$`, the shell's
    pid, is Triton's after the `exec`): without it no package could load or unload.

    The relay runs from its source text (`python -I -c`): the project folder is not in the
    sandbox, and the interpreter's own standard library is all it needs.
    """
    relay = (Path(__file__).parent / "relay.py").read_text(encoding="utf-8")
    script = (
        '(while kill -0 $$ 2>/dev/null; do "$1" -I -c "$2" "$3" "$4"; sleep 0.2; done) & '
        'shift 4; exec "$@"'
    )
    return [
        "/bin/sh",
        "-c",
        script,
        "berth-triton",
        sys.executable,
        relay,
        f"{socket_dir}/{SAGEMAKER_SOCKET}",
        str(sagemaker_port),
        *command,
    ]


def server_environment(*, gpu: bool) -> dict[str, str]:
    """The environment tritonserver (and so every stub) runs with: built from scratch, so no
    secret of the launching process (database URL, Django secret key, AWS credentials, the
    admin token) reaches model code."""
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
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def server_sandbox(
    repository: Path, *, backends: Path, gpu: bool, policy: SandboxPolicy | None
) -> Sandbox:
    """What the sandbox lets Triton see: the Python installation, the venv, the Triton
    distribution and backend folder, the model repository (all read-only) and the runtime
    folder for its sockets (writable)."""
    read_only = bind_sources(
        [
            sys.base_prefix,
            sys.prefix,
            tritonserver_dist(),
            *library_dirs(),
            *os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep),
            backends,
            repository,
        ]
    )
    return Sandbox(
        read_only=read_only,
        env=server_environment(gpu=gpu),
        gpu=gpu,
        policy=policy or SandboxPolicy.from_environ(),
    )


def die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL Triton when the process that launched it dies,
    even by SIGKILL, so a killed gateway or worker leaves no server holding memory and ports.
    The signal follows the launching *thread*, so it is only armed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return arm
