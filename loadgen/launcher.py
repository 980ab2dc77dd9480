"""Starting and controlling a generator process from its parent (a Celery task).

The generator runs as `python -m loadgen`, never inside the parent: Celery's prefork
worker would share its event loop and CPU with the load, and a frozen worker must not
leave load running. The child is tied to the parent three ways: its stdin (the control
channel) ends when the parent dies; the kernel sends it SIGHUP when the parent dies
(`PR_SET_PDEATHSIG`, which `die_with_parent` asks for); and it never runs past its spec's
`max_duration_s`.

The death signal is asked for by the child itself, first thing, with the parent's pid
from `PARENT_PID_ENV` to close the race with a parent that died before: not in a
`preexec_fn` between fork and exec, which is unsafe in a parent with threads (this
launcher's reader threads, a worker's own) and would be the only Python run there.
Linux sends the signal when the *thread* that started the child exits, so start the
generator from a thread that lives as long as the test (a Celery task's own thread does).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "BERTH_LOADGEN_PARENT_PID"
#: Bounds on what is read from the child: one event line, and the stderr kept.
MAX_EVENT_BYTES = 1 << 20
STDERR_TAIL_BYTES = 16 * 1024


def die_with_parent() -> bool:
    """In the generator: SIGHUP when the launching parent dies; False if it already has.

    Without a parent pid in the environment (started by hand) it does nothing.
    """
    raw = os.environ.get(PARENT_PID_ENV, "")
    if not raw.isdigit():
        return True
    with contextlib.suppress(OSError, AttributeError):  # Not Linux: stdin's end still works.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0)
    return os.getppid() == int(raw)


class GeneratorProcess:
    """One `python -m loadgen` process: spec in, parsed event lines out.

    `env` is the child's whole environment (default: this process's); the project root is
    put on its PYTHONPATH either way. Use as a context manager: leaving it stops the
    generator, waits up to 2 s, then kills it.
    """

    def __init__(
        self, spec: dict, *, python: str = sys.executable, env: dict | None = None
    ) -> None:
        self.spec = spec
        self.python = python
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr = bytearray()
        self._stopped = False
        self._lock = threading.Lock()
        self.eof = False

    def start(self) -> GeneratorProcess:
        """Spawn the generator and write its spec line."""
        env = dict(os.environ if self.env is None else self.env)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        env[PARENT_PID_ENV] = str(os.getpid())
        self._proc = subprocess.Popen(
            [self.python, "-m", "loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(ROOT),
            close_fds=True,
        )
        threading.Thread(target=self._read_events, args=(self._proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True).start()
        line = json.dumps(self.spec, separators=(",", ":")).encode() + b"\n"
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # The child already exited; its error line and exit code say why.
        return self

    def _read_events(self, stream: IO[bytes]) -> None:
        for raw in iter(lambda: stream.readline(MAX_EVENT_BYTES), b""):
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "invalid", "line": raw[:200].decode("utf-8", "replace")}
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put(None)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self._stderr += chunk
            if len(self._stderr) > STDERR_TAIL_BYTES:
                del self._stderr[: len(self._stderr) - STDERR_TAIL_BYTES]

    @property
    def stderr_tail(self) -> str:
        """The end of what the generator wrote on stderr (a traceback when it failed)."""
        return self._stderr.decode("utf-8", "replace")

    def events(self, timeout: float) -> list[dict]:
        """Event lines that arrive within `timeout` seconds: all that are ready once one is.

        Returns [] when none came (or the generator's output has ended: see `eof`).
        """
        out: list[dict] = []
        if self.eof:
            return out
        try:
            first = self._events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return out
        item: dict | None = first
        while True:
            if item is None:
                self.eof = True
                return out
            out.append(item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return out

    def stop(self) -> None:
        """Ask the generator to stop (it reports what it measured, then exits)."""
        with self._lock:
            if self._stopped or self._proc is None:
                return
            self._stopped = True
            stdin = self._proc.stdin
            try:
                if stdin is not None:
                    stdin.write(b"stop\n")
                    stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None while it still runs after `timeout` seconds."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the generator has not been started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> GeneratorProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self.wait(2.0) is None:
            self.kill()
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._proc.stdin.close()
