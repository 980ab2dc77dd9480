"""The gateway's Triton process: started, watched, restarted, and called over async HTTP.

Triton runs in explicit model-control mode on its own repository folder, and packages load
through its SageMaker frontend as SageMaker's Triton loads them (`toolkit.triton.packages`).
A watchdog notices when the process dies; the supervisor then starts a fresh one on the same
folder and bumps its `generation`, so that everything loaded into the old process is known to
be gone and is loaded again on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from dataplane.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from toolkit.triton import TritonError, TritonLoadError, TritonServer

log = logging.getLogger(__name__)


class LoadResult(NamedTuple):
    """How a package load went: `reason` is Triton's when not `ok`; `out_of_memory` when the
    SageMaker frontend answered 507 (the gateway also reads the reason's text)."""

    ok: bool
    reason: str = ""
    out_of_memory: bool = False


class TritonSupervisor:
    """Owns one TritonServer process and the connections to it."""

    def __init__(
        self,
        repository: Path,
        *,
        log_path: Path | None = None,
        gpu: bool = False,
        start_timeout: float = 120.0,
        watch_interval: float = 0.2,
    ) -> None:
        self.repository = Path(repository)
        self.log_path = log_path
        self.gpu = gpu
        self.start_timeout = start_timeout
        self.watch_interval = watch_interval
        self.generation = 0
        self.restarts = 0
        self.pool: UpstreamPool | None = None
        # Loads and unloads go to the SageMaker frontend, not the KServe HTTP one that
        # serves inference: Triton blocks the frontend thread that carries a load call, and
        # every inference connection that thread serves would wait for the whole load.
        self.repository_lock = asyncio.Lock()
        self._server: TritonServer | None = None
        self._ready = asyncio.Event()
        self._restarting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_restart: list[Callable[[int], None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    def on_restart(self, callback: Callable[[int], None]) -> None:
        """Call `callback(new_generation)` whenever a new Triton process replaces the old one."""
        self._on_restart.append(callback)

    async def start(self) -> None:
        await self._spawn()
        self._watchdog = asyncio.create_task(self._watch(), name="triton-watchdog")

    async def _spawn(self) -> None:
        self.repository.mkdir(parents=True, exist_ok=True)
        server = TritonServer(self.repository, log_path=self.log_path, gpu=self.gpu)
        await asyncio.to_thread(server.start, self.start_timeout)
        self._server = server
        if self.pool is not None:
            self.pool.close()
        # Triton runs sandboxed without a network: its frontends are Unix sockets.
        self.pool = UpstreamPool("localhost", 80, unix_path=str(server.process.http_socket))
        self.generation += 1
        self._ready.set()
        log.info(
            "triton started (pid %s, %s), generation %d",
            server.pid,
            server.process.http_url,
            self.generation,
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._restarting is not None:
            self._restarting.cancel()
        if self.pool is not None:
            self.pool.close()
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.alive

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.alive

    async def wait_ready(self, timeout: float | None = None) -> int:
        """Wait until a Triton process is serving; return its generation."""
        if not self.alive and self._ready.is_set():
            self.restart()
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self.generation

    def restart(self) -> asyncio.Task[None]:
        """Replace a dead Triton process (once, however many callers ask)."""
        if self._restarting is None or self._restarting.done():
            self._ready.clear()
            self._restarting = asyncio.create_task(self._restart(), name="triton-restart")
        return self._restarting

    async def _restart(self) -> None:
        dead = self._server
        log.warning("triton (pid %s) is gone; restarting", dead.pid if dead else None)
        if dead is not None:
            try:
                await asyncio.to_thread(dead.stop)
            except Exception:  # The process is already gone; stop() only tidies up.
                log.debug("stopping the dead triton failed", exc_info=True)
        self.restarts += 1
        for callback in self._on_restart:
            callback(self.generation + 1)
        delay = 0.5
        while not self._stopping:
            try:
                await self._spawn()
                return
            except Exception:
                log.exception("triton failed to start; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.watch_interval)
            if self._ready.is_set() and not self.alive:
                self.restart()

    # -- calls to Triton ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        pool = self.pool
        if pool is None or not self._ready.is_set():
            raise UpstreamError("Triton is restarting", sent=False)
        try:
            return await pool.request(method, path, body, headers, timeout)
        except UpstreamError:
            if not self.alive and not self._stopping:
                self.restart()
            raise

    def _serving(self) -> TritonServer:
        if self._server is None or not self._ready.is_set():
            raise UpstreamError("Triton is restarting", sent=False)
        return self._server

    def _gone(self, exc: Exception) -> UpstreamError | None:
        """The error to raise when a call failed because Triton is gone."""
        if self.alive:
            return None
        if not self._stopping:
            self.restart()
        return UpstreamError(f"Triton stopped: {exc}", sent=True)

    async def load(self, served_name: str, timeout: float, *, folder: Path) -> LoadResult:
        """Load the package in `folder` (`toolkit.shim.install_package`) as `served_name`,
        with the model Triton maps to it (and, for an ensemble, its steps)."""
        server = self._serving()
        for attempt in range(2):
            try:
                await asyncio.to_thread(server.load_package, folder, served_name, timeout=timeout)
            except TritonLoadError as exc:
                gone = self._gone(exc)
                if gone is not None:
                    raise gone from exc
                if exc.status == 409 and attempt == 0:
                    # Served names are the gateway's own and it loads none it holds: a name
                    # Triton has already is left over from a load that outlived its timeout.
                    log.warning("%s is loaded from an earlier load; unloading it", served_name)
                    await self.unload(served_name, timeout)
                    continue
                return LoadResult(False, exc.reason, exc.out_of_memory)
            break
        return LoadResult(True)

    async def unload(self, served_name: str, timeout: float) -> None:
        """Unload a package with its dependents and wait until Triton has let go of it (its
        stub processes, and their memory, gone)."""
        server = self._serving()
        try:
            await asyncio.to_thread(server.unload_package, served_name, timeout=timeout)
        except TritonError as exc:
            gone = self._gone(exc)
            raise gone or UpstreamError(f"unload failed: {exc}", sent=True) from exc


def error_text(response: UpstreamResponse) -> str:
    """Triton's error message from a KServe v2 error body ({"error": "..."})."""
    try:
        data = json.loads(response.body)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return response.body.decode("utf-8", "replace")[:2000] or f"HTTP {response.status}"
