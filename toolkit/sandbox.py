"""The sandbox Triton runs in: bubblewrap, a clean environment, an unprivileged uid, rlimits.

A model's `model.py` is user code, and Triton runs it in its Python-backend stubs, children
of `tritonserver`. So the whole server is started inside one sandbox, built here for both the
registry's test step and the data plane:

- bubblewrap (`bwrap`, Debian's `bubblewrap`; https://github.com/containers/bubblewrap) makes
  a new mount, PID, network, IPC and UTS namespace. The root is an empty tmpfs holding only
  read-only binds of what Triton and the stub need (`/usr`, the Python installation, the
  virtual environment, the backend folder, the model repository) plus a size-capped `/tmp`
  and `/dev/shm` (the Python backend exchanges tensors through shared memory there) and a
  1 MiB tmpfs for Triton's Unix sockets, which the launcher reaches from outside through
  `/proc/<pid>/root`. Nothing of the host is writable. No `/etc/passwd`, no project folder,
  no model store, no other repository: they do not exist in there.
- No network namespace is shared: only a loopback of its own, so model code cannot reach
  PostgreSQL, Redis, the portal or the gateway's admin API. Triton's HTTP, gRPC and metrics
  frontends listen on Unix sockets instead.
- The environment is cleared (`--clearenv`) and rebuilt from an explicit list: no portal
  secret (`DJANGO_SECRET_KEY`, `DATABASE_URL`, AWS credentials, the admin token) gets in.
- Started as root, bwrap keeps the host's user namespace (so it can mount), then the command
  drops to an unprivileged uid with `setpriv` and no capabilities: RLIMIT_NPROC is not
  enforced for uid 0, and a root process could read any file bound in. Started as an
  ordinary user, bwrap uses a user namespace and the processes keep that user's uid.
- `prlimit` then caps processes (threads included), file size, open files, core dumps and,
  on CPU servers, each process's address space.

Why bubblewrap and not hand-written namespace code: bwrap is small, audited, packaged by
Debian and used by Flatpak; mounting a new root correctly (pivot_root, propagation, `/proc`
for a new PID namespace, device nodes) is exactly what it does.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# The opt-out, for development machines where bubblewrap cannot run (for example inside a
# container started without the privileges it needs). Named so nobody sets it by accident.
UNSAFE_OPT_OUT = "BERTH_UNSAFE_RUN_MODELS_UNSANDBOXED"
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
)
# Folders of the merged-/usr layout; on older layouts they are real folders and bound as such.
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Dynamic-linker and time-zone files: the only part of /etc the sandbox sees.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime")
# Variables of the launching process the sandbox may inherit (thread counts, which GPU).
ENV_PASSTHROUGH = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "TZ",
)
NOBODY = 65534
# Where Triton's Unix sockets live inside the sandbox (a 1 MiB tmpfs of its own).
SOCKET_DIR = "/run/berth"
SOCKET_DIR_BYTES = 1 * MIB


class SandboxError(RuntimeError):
    """The sandbox cannot be built here (no bubblewrap, no util-linux tools, bad setting)."""


def _env_int(environ: Mapping[str, str], name: str, default: int, *, size: bool = False) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    text = raw.lower()
    factor = 1
    if size:
        for suffix, mult in (("gib", GIB), ("mib", MIB), ("kib", KIB), ("g", GIB), ("m", MIB)):
            if text.endswith(suffix):
                text, factor = text[: -len(suffix)].strip(), mult
                break
    if not text.isdigit():
        raise SandboxError(f"{name} must be a non-negative integer{' or size' * size}, not {raw!r}")
    return int(text) * factor


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits of the sandbox. Defaults fit a data plane serving tens of small models on a CPU;
    each is read from its `BERTH_SANDBOX_*` variable by `from_environ` (sizes take KiB/MiB/GiB).
    """

    # Processes *and threads* the sandbox may add (RLIMIT_NPROC counts both, per uid). Triton
    # runs ~90 threads with the demo ensemble and ~240 with 30 models; each stub a handful.
    max_processes: int = 2048
    # Largest file a sandboxed process may write (RLIMIT_FSIZE). Shared-memory regions grow
    # with ftruncate and count too, as does Triton's own log file (written through its stdout).
    max_file_bytes: int = 8 * GIB
    max_open_files: int = 8192
    # Address space of each process (RLIMIT_AS); 0 = unlimited. Triton reserves ~2 GB of
    # address space idle and ~3 GB with 30 models; a stub 0.2 to 0.5 GB. Not applied on GPU
    # servers: CUDA reserves tens of gigabytes of virtual addresses at start.
    max_address_space: int = 16 * GIB
    scratch_bytes: int = 1 * GIB  # /tmp (Python execution environments unpack here)
    shm_bytes: int = 2 * GIB  # /dev/shm (tensors between Triton and the stubs)
    # The unprivileged uid/gid model code runs as when the launcher is root.
    uid: int = NOBODY
    gid: int = NOBODY

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SandboxPolicy:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            max_processes=_env_int(env, "BERTH_SANDBOX_MAX_PROCESSES", d.max_processes),
            max_file_bytes=_env_int(
                env, "BERTH_SANDBOX_MAX_FILE_SIZE", d.max_file_bytes, size=True
            ),
            max_open_files=_env_int(env, "BERTH_SANDBOX_MAX_OPEN_FILES", d.max_open_files),
            max_address_space=_env_int(
                env, "BERTH_SANDBOX_MAX_ADDRESS_SPACE", d.max_address_space, size=True
            ),
            scratch_bytes=_env_int(env, "BERTH_SANDBOX_SCRATCH_SIZE", d.scratch_bytes, size=True),
            shm_bytes=_env_int(env, "BERTH_SANDBOX_SHM_SIZE", d.shm_bytes, size=True),
            uid=_env_int(env, "BERTH_SANDBOX_UID", d.uid),
            gid=_env_int(env, "BERTH_SANDBOX_GID", d.gid),
        )


def sandbox_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True only when the operator set the unsafe opt-out to `1`/`true`/`yes`."""
    env = os.environ if environ is None else environ
    return env.get(UNSAFE_OPT_OUT, "").strip().lower() in ("1", "true", "yes")


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin")
    if path is None:
        raise SandboxError(f"{name} not found: install {package}")
    return os.path.realpath(path)


def find_bwrap() -> str:
    """Path of bubblewrap, or a `SandboxError` naming the package to install."""
    path = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if path is None:
        raise SandboxError(
            f"model code runs sandboxed and bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
        )
    return path


def python_paths() -> list[str]:
    """PYTHONPATH for model code: this interpreter's standard library and the virtual
    environment's site-packages, nothing else (not the project folder, not the cwd)."""
    entries: list[str] = []
    stdlib = sysconfig.get_path("stdlib")
    names = [
        os.path.join(
            sys.base_prefix, "lib", f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
        ),
        stdlib,
        sysconfig.get_path("platstdlib"),
        os.path.join(stdlib, "lib-dynload"),
        sysconfig.get_path("purelib"),
        sysconfig.get_path("platlib"),
    ]
    for entry in names:
        if entry and os.path.exists(entry) and entry not in entries:
            entries.append(entry)
    return entries


def tasks_of(uid: int) -> int:
    """Processes and threads the host runs as `uid` now: RLIMIT_NPROC counts them all."""
    count = 0
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status, encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            continue
    return count


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[: i + 1])) for i in range(1, len(parts) - 1)]


@dataclass
class Sandbox:
    """One sandboxed command: what it may read, where it may write, its environment.

    `wrap(argv)` returns the full bwrap command line. Paths are bound at the same place they
    have outside, so the paths Triton prints (stub command lines, errors) mean the same thing
    on both sides. `writable` binds host folders read-write: Triton needs none.
    """

    read_only: Sequence[Path | str]
    writable: Sequence[Path | str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    gpu: bool = False
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    chdir: str = "/tmp"
    socket_dir: str | None = SOCKET_DIR
    # Resolved by `wrap`; defaults to the real effective uid (tests pass one to check argv).
    as_root: bool | None = None
    bwrap: str | None = None
    existing_tasks: int | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        bwrap = self.bwrap or find_bwrap()
        as_root = os.geteuid() == 0 if self.as_root is None else self.as_root
        policy = self.policy
        args = [
            bwrap,
            "--die-with-parent",
            "--new-session",  # no TIOCSTI into a terminal the launcher may have
            "--unshare-pid",  # its own /proc; Triton and its stubs share it
            "--unshare-net",  # loopback only: no database, broker, portal or admin API
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "triton-sandbox",
        ]
        if not as_root:
            # Unprivileged: bwrap needs a user namespace to mount; model code may not nest more.
            args += ["--unshare-user", "--disable-userns"]
        args.append("--clearenv")
        for name, value in sorted(self.env.items()):
            args += ["--setenv", name, value]
        # The new root: an empty tmpfs. Folders bwrap creates for binds are 0700 unless told,
        # which the unprivileged uid could not traverse.
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(policy.shm_bytes), "--tmpfs", "/dev/shm"]
        args += ["--perms", "1777", "--size", str(policy.scratch_bytes), "--tmpfs", "/tmp"]
        made: set[str] = {"/", "/proc", "/dev", "/dev/shm", "/tmp"}
        if self.socket_dir:
            # 0777: the unprivileged uid creates its sockets here; there is 1 MiB to fill.
            parent = os.path.dirname(self.socket_dir)
            args += ["--perms", "0755", "--dir", parent]
            args += ["--perms", "0777", "--size", str(SOCKET_DIR_BYTES), "--tmpfs", self.socket_dir]
            made.update({parent, self.socket_dir})

        def parents(target: str) -> None:
            for folder in _ancestors(target):
                if folder not in made:
                    made.add(folder)
                    args.extend(["--perms", "0755", "--dir", folder])

        args += ["--ro-bind", "/usr", "/usr"]
        made.add("/usr")
        for name in ROOT_LINKS:
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
            made.add(path)
        for name in ETC_FILES:
            path = f"/etc/{name}"
            if os.path.exists(path):
                parents(path)
                args += ["--ro-bind", path, path]
        if self.gpu:
            args += self._gpu_args()
        seen: set[str] = set()
        for source in self.read_only:
            path = os.path.abspath(str(source))
            if path in seen or path == "/usr" or path.startswith("/usr/"):
                continue
            seen.add(path)
            parents(path)
            args += ["--ro-bind", path, path]
        for source in self.writable:
            path = os.path.abspath(str(source))
            parents(path)
            args += ["--bind", path, path]
        # The root tmpfs itself (and the folders made in it) read-only: no unbounded writes.
        args += ["--remount-ro", "/", "--chdir", self.chdir]
        if as_root:
            # bwrap keeps only these capabilities for the child, just long enough for setpriv.
            args += ["--cap-add", "CAP_SETUID,CAP_SETGID"]
            args += [
                find_tool("setpriv", "util-linux"),
                f"--reuid={policy.uid}",
                f"--regid={policy.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        args += [find_tool("prlimit", "util-linux"), *self._limits(as_root), "--", *argv]
        return args

    def _limits(self, as_root: bool) -> list[str]:
        policy = self.policy
        uid = policy.uid if as_root else os.getuid()
        existing = tasks_of(uid) if self.existing_tasks is None else self.existing_tasks
        # The limit is per uid: what that uid already runs, plus the sandbox's allowance.
        nproc = existing + policy.max_processes
        limits = [
            f"--nproc={nproc}",
            f"--fsize={policy.max_file_bytes}",
            f"--nofile={policy.max_open_files}",
            "--core=0",
        ]
        if policy.max_address_space and not self.gpu:
            limits.append(f"--as={policy.max_address_space}")
        return limits

    @staticmethod
    def _gpu_args() -> list[str]:
        """The NVIDIA device nodes, and /sys read-only (NVML and CUDA read PCI topology)."""
        args: list[str] = []
        for node in sorted(glob.glob("/dev/nvidia*")):
            args += ["--dev-bind", node, node]
        if os.path.isdir("/sys"):
            args += ["--ro-bind", "/sys", "/sys"]
        return args


def clean_environment(
    values: Mapping[str, str], *, parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`values` plus the few variables of `parent` on `ENV_PASSTHROUGH`; nothing else."""
    env = os.environ if parent is None else parent
    result = {name: env[name] for name in ENV_PASSTHROUGH if name in env}
    result.update(values)
    return result


def bind_sources(paths: Iterable[Path | str]) -> list[str]:
    """Existing paths only (a missing optional folder must not fail the launch)."""
    return [str(p) for p in paths if p and os.path.exists(str(p))]
