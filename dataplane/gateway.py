"""The multi-model endpoints: resolving target models, loading on a miss, LRU eviction.

This is what a SageMaker multi-model endpoint does on its instances
(https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoints.html): a request
names a package (`TargetModel`); when the package is not loaded it is fetched from the
endpoint's store, unpacked and loaded, then the request is answered; models that have
not been used for the longest time are unloaded when memory runs short.

Several endpoints share one Triton process; each has its own store and memory budget.
Every package is installed into a folder of its own under the serving repository and loaded
as SageMaker's Triton loads it (through its SageMaker frontend, with model namespacing: the
ensemble, or lone model, mapped to a served name, its steps loaded as dependencies, nothing
else of the package), under a served name made of the endpoint and the package, so two
versions (or two endpoints holding the same version) never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dataplane.errors import (
    GatewayError,
    insufficient_memory,
    is_out_of_memory,
    model_error,
    service_unavailable,
    validation_error,
)
from dataplane.memory import MemoryProbe, host_utilization
from dataplane.metrics import (
    Dimensions,
    InvocationSeries,
    MetricsRegistry,
    endpoint_dimensions,
    model_dimensions,
)
from dataplane.staging import (
    DEFAULT_NICENESS,
    StagingPool,
    install_package_folder,
    read_memory,
    remove_tree,
    stage_package,
)
from dataplane.stores import (
    ModelStore,
    StoreError,
    check_name,
    is_package_name,
    open_store,
    package_stem,
)
from dataplane.supervisor import TritonSupervisor
from dataplane.upstream import UpstreamError
from toolkit.archive import ArchiveLimits
from toolkit.store_layout import StoreLayoutError, endpoint_folder

log = logging.getLogger(__name__)

ENDPOINTS_FILE = "endpoints.json"
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def _from_environment(name: str, default: float) -> float:
    """A bound from the environment (`BERTH_GATEWAY_*`), else its default."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {text}")
    return value


@dataclass
class GatewaySettings:
    """Knobs of one gateway process (the CLI fills them).

    The bounds on clients default to the environment's `BERTH_GATEWAY_*` values, so that a
    deployment (or a test) sets them without a flag of its own.
    """

    state_dir: Path
    store_root: Path | None = None
    max_request_bytes: int = 6 * 1024 * 1024  # SageMaker's real-time payload limit.
    load_timeout: float = 600.0
    infer_timeout: float = 60.0  # SageMaker's limit on a container's answer.
    metrics_window_minutes: int = 180
    sample_interval: float = 10.0
    default_budget_bytes: int = 2 * 1024**3
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    gpu: bool | None = None  # None: use a GPU when NVML finds one.
    # Endpoints named on the command line: (name, budget or None to keep the saved one).
    endpoints: list[tuple[str, int | None]] = field(default_factory=list)
    # Bearer token the admin API asks for; None leaves it open (loopback-only gateways).
    admin_token: str | None = None
    # Nice value of the processes that stage packages (dataplane.staging): below serving.
    staging_niceness: int = DEFAULT_NICENESS
    # Bounds on clients (dataplane.httpserver): seconds for a request head to arrive, for its
    # body, for an idle kept-alive connection; connections served at once (more get a 503).
    header_timeout: float = field(
        default_factory=lambda: _from_environment("BERTH_GATEWAY_HEADER_TIMEOUT", 10.0)
    )
    body_timeout: float = field(
        default_factory=lambda: _from_environment("BERTH_GATEWAY_BODY_TIMEOUT", 30.0)
    )
    keep_alive_timeout: float = field(
        default_factory=lambda: _from_environment("BERTH_GATEWAY_KEEP_ALIVE_TIMEOUT", 15.0)
    )
    max_connections: int = field(
        default_factory=lambda: int(_from_environment("BERTH_GATEWAY_MAX_CONNECTIONS", 512))
    )
    # Packages per endpoint with metric series of their own (least recently used dropped).
    max_model_series: int = field(
        default_factory=lambda: int(_from_environment("BERTH_GATEWAY_MAX_MODEL_SERIES", 1000))
    )


@dataclass(eq=False)
class LoadedModel:
    """A package loaded into Triton for one endpoint."""

    target_model: str
    # The name the package is loaded under: its entry model's name in Triton.
    served_name: str
    # Triton's names of the package's models that differ from the package's own names (the
    # entry model's; its steps keep their own names, namespaced by the package folder).
    served_names: list[str]
    # What starts every name the gateway chose for the package (`Endpoint.prefix`): its
    # served name, which is also its folder's name.
    prefix: str
    rss_bytes: int
    gpu_bytes: int
    loaded_at: float
    generation: int
    last_used: float = 0.0
    in_flight: int = 0
    invocations: int = 0
    infer_path: str = ""
    # The package's own name for the model clients invoke (the ensemble or lone model).
    model_name: str = ""
    # The package folder Triton registered as its repository (`<serving root>/<served name>`).
    folder: Path | None = None

    def footprint(self, gpu: bool) -> int:
        return self.gpu_bytes if gpu else self.rss_bytes

    @cached_property
    def answer_renaming(self) -> tuple[bytes, bytes]:
        """(`"model_name":"<served name>"`, `"model_name":"<model name>"`) as Triton writes
        them (raw UTF-8), so an answer names the model as the package does, as SageMaker's
        Triton would, not by the name it has in this gateway's shared repository."""

        def key(name: str) -> bytes:
            return b'"model_name":' + json.dumps(name, ensure_ascii=False).encode()

        return key(self.served_name), key(self.model_name or self.served_name)

    def as_json(self) -> dict[str, Any]:
        return {
            "target_model": self.target_model,
            "served_model": self.served_name,
            "size_bytes": self.rss_bytes,
            "gpu_bytes": self.gpu_bytes,
            "loaded_at": _iso(self.loaded_at),
            "last_used": _iso(self.last_used) if self.last_used else None,
            "in_flight": self.in_flight,
            "invocations": self.invocations,
        }


@dataclass
class LoadOutcome:
    """What a request learnt from waiting for its target model."""

    model: LoadedModel
    cache_hit: bool
    wait_us: float = 0.0
    downloading_us: float = 0.0
    loading_us: float = 0.0


class Endpoint:
    """One named multi-model endpoint: its store, budget, loaded models and aliases."""

    def __init__(
        self, name: str, store: str, budget_bytes: int, *, max_model_series: int = 1000
    ) -> None:
        self.name = name
        self.store_location = store
        self.store: ModelStore = open_store(store)
        self.budget_bytes = int(budget_bytes)
        self.loaded: dict[str, LoadedModel] = {}
        self.loading: dict[str, asyncio.Future[LoadOutcome]] = {}
        self.known_footprints: dict[str, int] = {}
        self.dimensions = endpoint_dimensions(name)
        self._aliases: dict[str, str] = {}
        self._aliases_version: object = object()
        self._endpoint_series: tuple[InvocationSeries] | None = None
        # Packages with series of their own, least recently used first; see `admit_model`.
        self._model_series: OrderedDict[
            str, tuple[Dimensions, tuple[InvocationSeries, InvocationSeries]]
        ] = OrderedDict()
        self.max_model_series = max(1, int(max_model_series))
        self._package_names: set[str] = set()

    def invocation_series(
        self, metrics: MetricsRegistry, target: str | None
    ) -> tuple[InvocationSeries, ...]:
        """The series a request for `target` records into: the endpoint's, and the model's
        when `target` has series of its own (a package that was staged); a name a client
        made up counts in the endpoint's series only."""
        if target is not None:
            entry = self._model_series.get(target)
            if entry is not None:
                self._model_series.move_to_end(target)
                return entry[1]
            if target in self.loaded:  # Its series were dropped while it stayed loaded.
                self.admit_model(metrics, target)
                return self._model_series[target][1]
        found = self._endpoint_series
        if found is None:
            found = self._endpoint_series = (InvocationSeries(metrics, self.dimensions),)
        return found

    def admit_model(self, metrics: MetricsRegistry, target: str) -> Dimensions:
        """Give `target` series of its own (or mark them used); its dimensions.

        Called once a package has been fetched from the store, so only names of real packages
        get series; at most `max_model_series` of them, the least recently used dropped.
        """
        entry = self._model_series.get(target)
        if entry is not None:
            self._model_series.move_to_end(target)
            return entry[0]
        dims = model_dimensions(self.name, target)
        endpoint_series = self.invocation_series(metrics, None)[0]
        self._model_series[target] = (dims, (endpoint_series, InvocationSeries(metrics, dims)))
        while len(self._model_series) > self.max_model_series:
            _, (old_dims, _) = self._model_series.popitem(last=False)
            metrics.drop(old_dims)
        return dims

    def model_dims(self, target: str) -> Dimensions:
        """The dimensions of `target`'s own series (whether it has any or not)."""
        entry = self._model_series.get(target)
        return entry[0] if entry is not None else model_dimensions(self.name, target)

    def configure(self, store: str, budget_bytes: int) -> None:
        if store != self.store_location:
            self.store = open_store(store)
            self.store_location = store
            self._aliases_version = object()
        self.budget_bytes = int(budget_bytes)

    def used_bytes(self, gpu: bool) -> int:
        return sum(m.footprint(gpu) for m in self.loaded.values())

    def estimate(self, target: str) -> int:
        """Expected footprint of `target` before it loads: what it took last time, else the
        mean of what this endpoint's models took (0 before anything was measured)."""
        if target in self.known_footprints:
            return self.known_footprints[target]
        if self.known_footprints:
            values = list(self.known_footprints.values())
            return sum(values) // len(values)
        return 0

    def served_name(self, target: str) -> str:
        """The name `target` is loaded under on this endpoint: a Triton model name, a URL
        path segment and a folder name at once, unique per (endpoint, package)."""
        stem = _UNSAFE_NAME_CHARS.sub("_", package_stem(target))[:48].strip("_") or "model"
        digest = hashlib.sha1(f"{self.name}/{target}".encode()).hexdigest()[:12]
        return f"{stem}-{digest}"

    def prefix(self, target: str) -> str:
        """What starts every name the gateway chooses for `target` (its served name, its
        folder's): the served name itself, since the package's models keep their names."""
        return self.served_name(target)

    # -- aliases --------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        version = self.store.aliases_version()
        if version != self._aliases_version:
            self._aliases = self.store.read_aliases()
            self._aliases_version = version
        return self._aliases

    def set_alias(self, model: str, target: str) -> dict[str, str]:
        aliases = dict(self.store.read_aliases())
        aliases[model] = target
        self.store.write_aliases(aliases)
        self._aliases = aliases
        self._aliases_version = self.store.aliases_version()
        return aliases

    def resolve(self, target: str) -> str:
        """The package a `TargetModel` value names: itself, or the live version of a model."""
        if target in self._package_names:
            return target
        problem = check_name(target)
        if problem is not None:
            raise validation_error(f"TargetModel {target!r} {problem}.")
        if is_package_name(target):
            if len(self._package_names) > 10_000:  # Bounded: names come from clients.
                self._package_names.clear()
            self._package_names.add(target)
            return target
        try:
            package = self.aliases().get(target)
        except StoreError as exc:
            raise service_unavailable(f"cannot read the aliases of {self.name}: {exc}") from exc
        if package is None:
            raise validation_error(
                f"Could not find model {target!r} on endpoint {self.name}: it is neither a "
                f"package name nor a model with a live version (alias).",
                error_code="ModelNotFound",
            )
        return package

    def as_json(self, gpu: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "store": self.store_location,
            "memory_budget_bytes": self.budget_bytes,
            "memory_used_bytes": self.used_bytes(gpu),
            "memory_kind": "gpu" if gpu else "host",
            "loaded_model_count": len(self.loaded),
        }


class Gateway:
    """All endpoints of this process, their shared Triton, and their metrics."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir)
        self.repository = self.state_dir / "repository"
        self.work_dir = self.state_dir / "work"
        self.probe = MemoryProbe(use_gpu=settings.gpu)
        self.gpu = self.probe.has_gpu if settings.gpu is None else bool(settings.gpu)
        self.supervisor = TritonSupervisor(
            self.repository, log_path=self.state_dir / "triton.log", gpu=self.gpu
        )
        self.supervisor.on_restart(self._forget_loaded_models)
        self.staging = StagingPool(gpu=self.gpu, niceness=settings.staging_niceness)
        self.metrics = MetricsRegistry(settings.metrics_window_minutes)
        self.endpoints: dict[str, Endpoint] = {}
        self._sampler: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Nothing in the repository survives a gateway restart: Triton starts empty anyway.
        shutil.rmtree(self.repository, ignore_errors=True)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.repository.mkdir(parents=True)
        self.work_dir.mkdir(parents=True)
        self._load_endpoints()
        for name, budget in self.settings.endpoints:
            existing = self.endpoints.get(name)
            store = existing.store_location if existing else self.default_store(name)
            if not store.startswith("s3://"):
                Path(store).mkdir(parents=True, exist_ok=True)
            if existing is None:
                self.endpoints[name] = Endpoint(
                    name,
                    store,
                    budget or self.settings.default_budget_bytes,
                    max_model_series=self.settings.max_model_series,
                )
            elif budget:
                existing.configure(store, budget)
        self._save_endpoints()
        await asyncio.gather(self.staging.start(), self.supervisor.start())
        host_utilization()  # The first CPU reading only sets the baseline.
        self._sampler = asyncio.create_task(self._sample_forever(), name="metrics-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        await self.supervisor.stop()
        await asyncio.to_thread(self.staging.stop)

    # -- endpoints ------------------------------------------------------------------------

    def _endpoints_file(self) -> Path:
        return self.state_dir / ENDPOINTS_FILE

    def _load_endpoints(self) -> None:
        path = self._endpoints_file()
        if not path.exists():
            return
        for name, spec in json.loads(path.read_text(encoding="utf-8")).items():
            self.endpoints[name] = Endpoint(
                name,
                spec["store"],
                spec["memory_budget_bytes"],
                max_model_series=self.settings.max_model_series,
            )

    def _save_endpoints(self) -> None:
        data = {
            name: {"store": ep.store_location, "memory_budget_bytes": ep.budget_bytes}
            for name, ep in sorted(self.endpoints.items())
        }
        fd, tmp = tempfile.mkstemp(prefix=".endpoints-", dir=self.state_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, self._endpoints_file())

    def default_store(self, name: str) -> str:
        if self.settings.store_root is None:
            raise validation_error("store is required (the gateway has no --store-root)")
        try:
            return str(endpoint_folder(self.settings.store_root, name))
        except StoreLayoutError as exc:
            raise validation_error(str(exc)) from exc

    async def put_endpoint(
        self, name: str, *, store: str | None, budget_bytes: int | None
    ) -> tuple[Endpoint, bool]:
        """Create or update an endpoint; (endpoint, created). Persisted at once."""
        problem = check_name(name)
        if problem is not None:
            raise validation_error(f"endpoint name {problem}")
        existing = self.endpoints.get(name)
        store = store or (existing.store_location if existing else self.default_store(name))
        if budget_bytes is None:
            budget_bytes = existing.budget_bytes if existing else self.settings.default_budget_bytes
        if budget_bytes <= 0:
            raise validation_error("memory_budget_bytes must be positive")
        if not store.startswith("s3://"):
            Path(store).mkdir(parents=True, exist_ok=True)
        if existing is None:
            endpoint = Endpoint(
                name, store, budget_bytes, max_model_series=self.settings.max_model_series
            )
            self.endpoints[name] = endpoint
        else:
            endpoint = existing
            endpoint.configure(store, budget_bytes)
        self._save_endpoints()
        if existing is not None:
            async with self.supervisor.repository_lock:
                await self._make_room(endpoint, 0, keep=None)
        return endpoint, existing is None

    def endpoint(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise validation_error(f"Endpoint {name} not found.", error_code="EndpointNotFound")
        return endpoint

    # -- loading --------------------------------------------------------------------------

    async def ensure_loaded(self, endpoint: Endpoint, target: str) -> LoadOutcome:
        """The loaded model for `target`, loading it once however many requests ask."""
        generation = self.supervisor.generation
        model = endpoint.loaded.get(target)
        if model is not None and model.generation == generation:
            return LoadOutcome(model, True)
        started = time.perf_counter()
        for _ in range(3):
            future = endpoint.loading.get(target)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                future.add_done_callback(_consume_exception)
                endpoint.loading[target] = future
                task = asyncio.create_task(self._load(endpoint, target, future))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            outcome = await asyncio.shield(future)
            # Another load may have evicted it between its load and this request resuming.
            if endpoint.loaded.get(target) is outcome.model:
                outcome = LoadOutcome(
                    outcome.model,
                    False,
                    (time.perf_counter() - started) * 1e6,
                    outcome.downloading_us,
                    outcome.loading_us,
                )
                self.metrics.record("ModelLoadingWaitTime", endpoint.dimensions, outcome.wait_us)
                self.metrics.record(
                    "ModelLoadingWaitTime",
                    endpoint.admit_model(self.metrics, target),
                    outcome.wait_us,
                )
                return outcome
        raise service_unavailable(f"{target} was unloaded again before it could serve; retry.")

    async def _load(
        self, endpoint: Endpoint, target: str, future: asyncio.Future[LoadOutcome]
    ) -> None:
        try:
            outcome = await self._load_package(endpoint, target)
        except GatewayError as exc:
            future.set_exception(exc)
        except UpstreamError as exc:
            future.set_exception(
                service_unavailable(f"Triton stopped while loading {target}; retry. ({exc})")
            )
        except Exception as exc:  # Anything else is ours: answer it, keep serving others.
            log.exception("loading %s for %s failed", target, endpoint.name)
            future.set_exception(
                GatewayError(500, "InternalFailure", f"loading {target} failed: {exc}")
            )
        else:
            future.set_result(outcome)
        finally:
            if endpoint.loading.get(target) is future:
                del endpoint.loading[target]

    async def _load_package(self, endpoint: Endpoint, target: str) -> LoadOutcome:
        supervisor = self.supervisor
        generation = await supervisor.wait_ready(self.settings.load_timeout)
        started = time.perf_counter()
        work = self.work_dir / uuid.uuid4().hex
        served = endpoint.served_name(target)
        folder = self.repository / served
        staging = self.staging
        try:
            source, _ = await staging.run(
                stage_package,
                endpoint.store_location,
                endpoint.name,
                target,
                work,
                self.settings.archive_limits,
            )
            # The package exists and unpacked: from here on it has metric series of its own
            # (a name that matches no package never gets any).
            endpoint.admit_model(self.metrics, target)
            async with supervisor.repository_lock:
                if supervisor.generation != generation:
                    raise service_unavailable("Triton restarted while loading; retry.")
                entry = await staging.run(install_package_folder, source, folder, self.gpu, target)
                downloading_us = (time.perf_counter() - started) * 1e6
                await self._make_room(endpoint, endpoint.estimate(target), keep=target)
                loading_started = time.perf_counter()
                before = await staging.run(read_memory, supervisor.pid)
                ok, reason, oom = await supervisor.load(
                    served, self.settings.load_timeout, folder=folder
                )
                if not ok and (oom or is_out_of_memory(reason)):
                    # SageMaker's answer to an out-of-memory load: free memory, try once more.
                    log.warning("out of memory loading %s; evicting and retrying", target)
                    await self._make_room(endpoint, endpoint.budget_bytes + 1, keep=target)
                    before = await staging.run(read_memory, supervisor.pid)
                    ok, reason, oom = await supervisor.load(
                        served, self.settings.load_timeout, folder=folder
                    )
                    if not ok and (oom or is_out_of_memory(reason)):
                        await self._discard(served, folder)
                        raise insufficient_memory(
                            f"Not enough memory to load {target} on endpoint "
                            f"{endpoint.name}: {reason}"
                        )
                if not ok:
                    await self._discard(served, folder)
                    raise model_error(
                        500, f"Failed to load model {target}: {reason}", model_name=target
                    )
                after = await staging.run(read_memory, supervisor.pid)
                loading_us = (time.perf_counter() - loading_started) * 1e6
                if supervisor.generation != generation:
                    raise service_unavailable("Triton restarted while loading; retry.")
                model = LoadedModel(
                    target_model=target,
                    served_name=served,
                    served_names=[served],
                    prefix=endpoint.prefix(target),
                    rss_bytes=max(after.rss_bytes - before.rss_bytes, 0),
                    gpu_bytes=max(after.gpu_bytes - before.gpu_bytes, 0),
                    loaded_at=time.time(),
                    generation=generation,
                    last_used=time.time(),
                    infer_path=f"/v2/models/{served}/infer",
                    model_name=entry,
                    folder=folder,
                )
                endpoint.known_footprints[target] = model.footprint(self.gpu)
                endpoint.loaded[target] = model
                self._record_loaded_count(endpoint)
                # The measured footprint may be larger than the estimate: settle the budget.
                await self._make_room(endpoint, 0, keep=target)
        finally:
            await staging.run(remove_tree, work)
        for dims in (endpoint.dimensions, endpoint.admit_model(self.metrics, target)):
            self.metrics.record("ModelDownloadingTime", dims, downloading_us)
            self.metrics.record("ModelLoadingTime", dims, loading_us)
        log.info(
            "loaded %s on %s as %s: %.0f ms download, %.0f ms load, %d bytes",
            target,
            endpoint.name,
            served,
            downloading_us / 1000,
            loading_us / 1000,
            model.footprint(self.gpu),
        )
        return LoadOutcome(model, False, 0.0, downloading_us, loading_us)

    async def _discard(self, served: str, folder: Path) -> None:
        """Forget a failed load: ask Triton to unload what it may hold, remove the folder."""
        with contextlib.suppress(UpstreamError):
            await self.supervisor.unload(served, timeout=30.0)
        await self.staging.run(remove_tree, folder)

    # -- memory ---------------------------------------------------------------------------

    async def _make_room(self, endpoint: Endpoint, needed: int, *, keep: str | None) -> None:
        """Unload least-recently-used idle models until `needed` more bytes fit the budget.

        Call with the repository lock held. Models serving a request are never unloaded.
        """
        while endpoint.used_bytes(self.gpu) + needed > endpoint.budget_bytes:
            idle = [
                m for m in endpoint.loaded.values() if m.in_flight == 0 and m.target_model != keep
            ]
            if not idle:
                return
            victim = min(idle, key=lambda m: m.last_used)
            await self._unload_locked(endpoint, victim)

    async def _unload_locked(self, endpoint: Endpoint, model: LoadedModel) -> float:
        if endpoint.loaded.get(model.target_model) is model:
            del endpoint.loaded[model.target_model]
        self._record_loaded_count(endpoint)
        started = time.perf_counter()
        if model.generation == self.supervisor.generation:
            try:
                await self.supervisor.unload(model.served_name, timeout=120.0)
            except UpstreamError as exc:
                log.warning("unloading %s failed: %s", model.served_name, exc)
        unloading_us = (time.perf_counter() - started) * 1e6
        await self.staging.run(remove_tree, model.folder or self.repository / model.served_name)
        for dims in (endpoint.dimensions, endpoint.admit_model(self.metrics, model.target_model)):
            self.metrics.record("ModelUnloadingTime", dims, unloading_us)
        log.info(
            "unloaded %s from %s in %.0f ms", model.target_model, endpoint.name, unloading_us / 1000
        )
        return unloading_us

    async def unload(self, endpoint: Endpoint, target: str) -> float | None:
        """Unload `target` now (admin); None when it was not loaded."""
        async with self.supervisor.repository_lock:
            model = endpoint.loaded.get(target)
            if model is None:
                return None
            return await self._unload_locked(endpoint, model)

    def _forget_loaded_models(self, generation: int) -> None:
        for endpoint in self.endpoints.values():
            endpoint.loaded.clear()
            self._record_loaded_count(endpoint)

    def _record_loaded_count(self, endpoint: Endpoint) -> None:
        self.metrics.record("LoadedModelCount", endpoint.dimensions, float(len(endpoint.loaded)))

    # -- periodic samples -----------------------------------------------------------------

    def sample(self) -> None:
        cpu, memory = host_utilization()
        gpu = self.probe.gpu_utilization()
        usage = shutil.disk_usage(self.state_dir)
        disk = 100.0 * usage.used / usage.total if usage.total else 0.0
        for endpoint in self.endpoints.values():
            self._record_loaded_count(endpoint)
            self.metrics.record("CPUUtilization", endpoint.dimensions, cpu)
            self.metrics.record("MemoryUtilization", endpoint.dimensions, memory)
            self.metrics.record("DiskUtilization", endpoint.dimensions, disk)
            if gpu is not None:
                self.metrics.record("GPUUtilization", endpoint.dimensions, gpu[0])
                self.metrics.record("GPUMemoryUtilization", endpoint.dimensions, gpu[1])

    async def _sample_forever(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("metrics sample failed")
            await asyncio.sleep(self.settings.sample_interval)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # Waiters read the exception; this keeps asyncio quiet when nobody is left waiting.
    if not future.cancelled():
        future.exception()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
