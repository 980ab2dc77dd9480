"""Staging packages for Triton in helper processes: fetch, verify, unpack, place, measure.

Serving runs on the gateway's event loop, one thread. The rest of a model load (reading the
package from its store, hashing it, unpacking it, rewriting its configs into the serving
repository, walking /proc for the Triton tree's memory) is Python that holds the GIL for
milliseconds at a time. In a thread of the same process that work stalls every request
arriving meanwhile, up to the interpreter's 5 ms switch interval each time, which doubled the
hot models' p99 whenever another model loaded. In processes of their own, at a lower CPU
priority, the kernel shares the CPU at a much finer grain and serving goes first.

The functions here run in those processes (`StagingPool.run`): module-level, arguments and
results that pickle, and client-facing failures raised as `GatewayError`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dataplane.errors import service_unavailable, validation_error
from dataplane.memory import MemoryProbe, MemoryReading
from dataplane.stores import ModelStore, PackageNotFound, StoreError, open_store
from toolkit import yamlsafe
from toolkit.archive import ArchiveLimits, UnsafeArchive, safe_extract, sha256_file
from toolkit.modelconfig import ConfigError, read_model_config
from toolkit.repository import EntryModelError, model_folders
from toolkit.repository import entry_model as choose_entry_model
from toolkit.shim import install_package

log = logging.getLogger(__name__)

T = TypeVar("T")

# How much lower than serving the staging processes run (nice value, 0 to 19). At 10 a
# staging process gets about a tenth of a core's share against a busy serving process, and
# all of the CPU serving leaves idle.
DEFAULT_NICENESS = 10
# Two processes: one slow store (an S3 fetch) does not hold up every other load.
DEFAULT_PROCESSES = 2


# ---------------------------------------------------------------------------------------------
# The pool


class StagingPool:
    """Helper processes at lower CPU priority that run this module's functions."""

    def __init__(
        self,
        *,
        gpu: bool,
        niceness: int = DEFAULT_NICENESS,
        processes: int = DEFAULT_PROCESSES,
    ) -> None:
        self.gpu = gpu
        self.niceness = niceness
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # Spawned, not forked: the gateway has gRPC and event-loop threads a fork would copy
        # mid-flight.
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(os.getpid(), self.niceness, self.gpu),
        )

    async def start(self) -> None:
        """Start the processes now, so the first load does not wait for their imports."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.processes))
        )

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a staging process; a pool whose process died is replaced."""
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = self._new_pool()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            # Killed from outside (the OOM killer, an operator): the work is repeatable.
            log.warning("a staging process died; starting new ones")
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            return await loop.run_in_executor(self._pool, function, *args)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_probe: MemoryProbe | None = None
_stores: dict[str, ModelStore] = {}


def _start_worker(parent: int, niceness: int, gpu: bool) -> None:
    global _probe
    if niceness:
        os.nice(niceness)
    if sys.platform == "linux":
        # End with the gateway, even a SIGKILLed one.
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(0)
    # The gateway handles Ctrl-C and stops this pool itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _probe = MemoryProbe(use_gpu=gpu)


def _ready() -> int:
    return os.getpid()


def _store(location: str) -> ModelStore:
    store = _stores.get(location)
    if store is None:
        store = _stores[location] = open_store(location)
    return store


# ---------------------------------------------------------------------------------------------
# The work


def stage_package(
    store_location: str, endpoint: str, target: str, work: Path, limits: ArchiveLimits
) -> tuple[Path, str]:
    """Fetch, verify and unpack a package into `work`; (its repository, its entry model)."""
    store = _store(store_location)
    package = work / "package" / target
    try:
        store.fetch(target, package)
    except PackageNotFound as exc:
        raise validation_error(
            f"Could not find model data for {target} in the model store of endpoint "
            f"{endpoint} ({store_location}).",
            error_code="ModelNotFound",
        ) from exc
    except StoreError as exc:
        raise service_unavailable(str(exc)) from exc
    expected = store.expected_sha256(target)
    if expected is not None:
        actual = sha256_file(package)
        if actual != expected:
            raise validation_error(
                f"Model data for {target} does not match its sha256 (expected {expected}, "
                f"got {actual}).",
                error_code="ChecksumMismatch",
            )
    repository = work / "repository"
    try:
        safe_extract(package, repository, limits)
    except UnsafeArchive as exc:
        raise validation_error(
            f"Model data for {target} was refused: {exc}", error_code="InvalidModelData"
        ) from exc
    package.unlink(missing_ok=True)
    return repository, entry_model(repository, target)


def install_package_folder(source: Path, folder: Path, gpu: bool, target: str) -> str:
    """Make `folder` the package folder of `source` (`toolkit.shim.install_package`: its
    models shimmed, under their own names); the model Triton will map its load name to."""
    try:
        return install_package(source, folder, gpu=gpu)
    except (ConfigError, ValueError, OSError) as exc:
        raise validation_error(
            f"Model data for {target} is not a usable Triton repository: {exc}",
            error_code="InvalidModelData",
        ) from exc


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def read_memory(pid: int | None) -> MemoryReading:
    """Resident (and GPU) memory of the Triton process tree rooted at `pid`."""
    assert _probe is not None, "read_memory runs in a staging process (see _start_worker)"
    return _probe.read(pid)


def entry_model(repository: Path, target: str) -> str:
    """The model clients invoke (`toolkit.repository.entry_model`), with the package's
    problems answered as the client's error."""
    folders = {folder.name: folder for folder in model_folders(repository)}
    if not folders:
        raise validation_error(
            f"Model data for {target} holds no model folder (a folder with config.pbtxt).",
            error_code="InvalidModelData",
        )
    named = None
    berth_yaml = repository / "berth.yaml"
    if berth_yaml.is_file():
        try:
            spec = yamlsafe.load_file(berth_yaml) or {}
        except yaml.YAMLError as exc:
            raise validation_error(
                f"berth.yaml of {target} does not parse: {exc}", error_code="InvalidModelData"
            ) from exc
        named = spec.get("model") if isinstance(spec, dict) else None
    # Parsed even when berth.yaml names the model: the name must be the model SageMaker's
    # Triton maps, which the configs decide.
    configs: dict[str, Any] = {}
    for name, folder in folders.items():
        try:
            configs[name] = read_model_config(folder / "config.pbtxt")
        except ConfigError as exc:
            raise validation_error(
                f"{folder.name}/config.pbtxt of {target}: {exc}",
                error_code="InvalidModelData",
            ) from exc
    try:
        return choose_entry_model(configs, named)
    except EntryModelError as exc:
        if exc.unknown:
            message = f"berth.yaml of {target} names model {named!r}, which the package lacks."
        else:
            message = f"Cannot tell which model of {target} to invoke: {exc}."
        raise validation_error(message, error_code="InvalidModelData") from exc
