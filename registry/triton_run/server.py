"""The worker process's test tritonserver, kept warm between runs of the test step.

One tritonserver per worker process, started on first use and reused by the next runs;
restarted when it died, stopped answering or a run needs other launch settings (GPU, sandbox
limits); stopped after `BERTH_TRITON_IDLE_TIMEOUT` idle seconds, at worker shutdown
(registry.tasks) and at exit, and killed with its parent in any case (PDEATHSIG in
toolkit.triton). Still the toolkit's sandboxed `TritonServer`: nothing of the sandboxing
changes with reuse.

Runs on one server take turns: under model namespacing a step's plain name is ambiguous as
soon as two packages with that step are loaded (Triton: "There are 2 identifiers of model
..."), so a case that invokes a step would fail only because another run's package was
loaded beside it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from django.conf import settings

if TYPE_CHECKING:
    from toolkit.sandbox import SandboxPolicy
    from toolkit.triton import TritonServer

logger = logging.getLogger(__name__)

# How long a stopping server may take to exit before it is killed: Triton waits up to its
# --exit-timeout-secs (10) for models to unload; a server thrown away need not.
STOP_GRACE_SECONDS = 15.0
DISCARD_GRACE_SECONDS = 1.0
# A test server's folder under BERTH_SCRATCH_DIR: `triton-test-<worker pid>-<random>`.
HOME_PREFIX = "triton-test-"


@dataclass(frozen=True)
class LaunchSettings:
    """What a server was launched with; a run that needs other settings gets a new server."""

    gpu: bool
    sandboxed: bool
    policy: SandboxPolicy


def launch_settings(*, gpu: bool) -> LaunchSettings:
    from toolkit.sandbox import SandboxPolicy, sandbox_disabled

    return LaunchSettings(
        gpu=gpu, sandboxed=not sandbox_disabled(), policy=SandboxPolicy.from_environ()
    )


class TestServer:
    """The worker process's test tritonserver: one at a time, reused across runs.

    `session()` hands the server to one run at a time (a lock), starting it first when there
    is none, it died, it does not answer its health check, or the run needs other launch
    settings. Its repository is a folder of its own under BERTH_SCRATCH_DIR, into which each
    run installs its package in a folder of its own; `stop()` ends the server and removes it.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: TritonServer | None = None
        self._settings: LaunchSettings | None = None
        self._home: Path | None = None
        self._timer: threading.Timer | None = None
        # Set to let the thread that launched the server end (see `_launch`).
        self._keeper: threading.Event | None = None
        self._runs = 0
        self._atexit = False

    @property
    def server(self) -> TritonServer | None:
        return self._server

    @contextlib.contextmanager
    def session(
        self, *, gpu: bool, start_timeout: float, log: Callable[[str], None]
    ) -> Iterator[tuple[TritonServer, list[Callable[[], None]]]]:
        """The server, for one run, and a list the run appends its cleanups to.

        Cleanups (unloading the package: over a second for the demo ensemble, most of it
        Triton waiting for stubs to exit) run after the run has returned its results, on a
        thread that still holds the server: the next run, `stop()` and exit wait for them.
        """
        wanted = launch_settings(gpu=gpu)
        cleanups: list[Callable[[], None]] = []
        self._lock.acquire()
        try:
            self._cancel_idle_stop()
            yield self._ready_server(wanted, start_timeout, log), cleanups
        except BaseException:
            self._finish(cleanups)
            raise
        if cleanups:
            # Not a daemon: an exiting interpreter waits for it before its atexit stop.
            threading.Thread(
                target=self._finish, args=(cleanups,), name="berth-test-cleanup"
            ).start()
        else:
            self._finish(cleanups)

    def wait(self) -> None:
        """Return once no run holds the server and its cleanups are done."""
        with self._lock:
            pass

    def discard(self) -> None:
        """Stop a server a run found unusable (called while holding `session`), without
        waiting for a graceful exit: nothing on it is worth keeping."""
        self._stop_locked(grace=DISCARD_GRACE_SECONDS)

    def stop(self) -> None:
        """Stop the server (worker shutdown, exit, idle): runs in progress finish first."""
        with self._lock:
            self._cancel_idle_stop()
            self._stop_locked()

    # -- internals ------------------------------------------------------------------------------

    def _finish(self, cleanups: list[Callable[[], None]]) -> None:
        """Run a run's cleanups, then hand the server to the next run (releases the lock
        `session` took, possibly on another thread: a plain Lock allows it)."""
        try:
            for cleanup in cleanups:
                try:
                    cleanup()
                except Exception:
                    logger.exception("cleaning up after a test run failed")
            self._runs += 1
            self._arm_idle_stop()
        finally:
            self._lock.release()

    def _ready_server(
        self, wanted: LaunchSettings, start_timeout: float, log: Callable[[str], None]
    ) -> TritonServer:
        server = self._server
        if server is not None:
            if self._settings != wanted:
                log("Triton runs with other launch settings (GPU, sandbox limits): restarting it.")
                self.discard()
            elif not server.alive:
                log(
                    f"Triton (pid {server.pid}) exited with status "
                    f"{server.process.returncode}: starting a new one."
                )
                self.discard()
            elif not server.live():
                log(f"Triton (pid {server.pid}) does not answer its health check: restarting it.")
                self.discard()
            else:
                started_at = server.process.started_at or time.monotonic()
                log(
                    f"Triton warm (pid {server.pid}, up {time.monotonic() - started_at:.0f} s, "
                    f"{self._runs} run(s) before this one)."
                )
                return server
        return self._start_locked(wanted, start_timeout, log)

    def _start_locked(
        self, wanted: LaunchSettings, start_timeout: float, log: Callable[[str], None]
    ) -> TritonServer:
        from toolkit.triton import TritonServer

        base = Path(settings.BERTH_SCRATCH_DIR)
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_homes(base)
        home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=base))
        repository = home / "repository"
        repository.mkdir()
        server = TritonServer(
            repository,
            log_path=home / "triton.log",
            gpu=wanted.gpu,
            sandbox=wanted.sandboxed,
            policy=wanted.policy,
        )
        started = time.monotonic()
        try:
            self._keeper = _launch(server, start_timeout)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        self._server, self._settings, self._home, self._runs = server, wanted, home, 0
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        log(f"Triton started (pid {server.pid}) in {time.monotonic() - started:.1f} s.")
        return server

    def _stop_locked(self, grace: float = STOP_GRACE_SECONDS) -> None:
        server, home, keeper = self._server, self._home, self._keeper
        if server is not None:
            try:
                server.process.stop(timeout=grace)
            except Exception:
                logger.exception("stopping the test tritonserver failed")
        if keeper is not None:
            keeper.set()
        self._server = self._settings = self._home = self._keeper = None
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)

    def _arm_idle_stop(self) -> None:
        if self._server is None:
            return
        idle = float(settings.BERTH_TRITON_IDLE_TIMEOUT)
        if idle <= 0:
            self._stop_locked()
            return
        timer = threading.Timer(idle, self._idle_stop)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_idle_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_stop(self) -> None:
        # A run holding the lock re-arms the timer when it ends: nothing to do now.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._timer is not None and self._timer is threading.current_thread():
                self._timer = None
                self._stop_locked()
        finally:
            self._lock.release()

    def _forget(self) -> None:
        """In a forked child: the parent's server is not ours to use or stop."""
        self._lock = threading.Lock()
        self._server = self._settings = self._home = self._timer = self._keeper = None
        self._runs = 0


def _remove_stale_homes(base: Path) -> None:
    """Remove the folders of test servers whose worker process is gone (killed: nothing
    stopped its server or removed its packages)."""
    for home in base.glob(f"{HOME_PREFIX}*-*"):
        pid = home.name[len(HOME_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(home, ignore_errors=True)


def _launch(server: TritonServer, timeout: float) -> threading.Event | None:
    """Start `server` from a thread that outlives the run.

    Linux kills Triton when the *thread* that launched it ends (PR_SET_PDEATHSIG, bwrap's
    --die-with-parent), so a server started by a run on a short-lived thread (a thread pool,
    concurrent runs) would die with that thread. Off the main thread, a thread of its own
    launches it and waits until the returned event is set, after the server stopped.
    """
    if threading.current_thread() is threading.main_thread():
        server.start(timeout=timeout)
        return None
    release = threading.Event()
    started = threading.Event()
    failures: list[BaseException] = []

    def keep() -> None:
        try:
            server.start(timeout=timeout)
        except BaseException as exc:
            failures.append(exc)
            return
        finally:
            started.set()
        release.wait()

    threading.Thread(target=keep, name="berth-test-triton", daemon=True).start()
    started.wait()
    if failures:
        raise failures[0]
    return release


TEST_SERVER = TestServer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TEST_SERVER._forget)


def stop_test_server() -> None:
    """Stop this process's test tritonserver, if it runs (worker shutdown)."""
    TEST_SERVER.stop()
