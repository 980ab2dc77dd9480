"""The test step: load a validated package into a real Triton exactly as the data plane and
SageMaker's Triton load it, and run its test cases (or one smoke inference on zero inputs when
it has none).

Loading: `toolkit.shim.install_package` prepares the package's own serving folder (ONNX
models served through a Python model running onnxruntime, since this Triton ships only the
Python backend; original model names), and `TritonServer.load_package` loads that folder
through Triton's SageMaker frontend with model namespacing: the package's ensemble (or lone
model) under a load name of its own, its steps as dependencies, nothing else. So a Python model
that calls a sibling through BLS, or a case that names a model outside the entry model's
ensemble, fails here as it fails once served, and what passes here serves.

The server is warm: one tritonserver per worker process, reused across runs, one run at a
time (`registry.triton_run.server`). Each run installs its package in a folder of its own,
loads it under a name no other run uses, and unloads it and removes the folder afterwards,
whatever happened; a run whose model code killed Triton or one of its stubs leaves the next
run a new server.

SageMaker's multi-model loading: https://github.com/triton-inference-server/server/blob/main/src/sagemaker_server.cc
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings

from toolkit.codec import TensorError, describe, numpy_dtype, tensor_from_spec
from toolkit.comparison import compare_outputs

from ..choices import TestKind, TestOutcome
from .server import TEST_SERVER, TestServer, stop_test_server

if TYPE_CHECKING:
    from toolkit.triton import TritonServer

__all__ = [
    "TEST_SERVER",
    "CaseResult",
    "TestRun",
    "TestServer",
    "run_tests",
    "smoke_inputs",
    "stop_test_server",
]

logger = logging.getLogger(__name__)

# The part of the server log a run copies into its scratch folder, and shows when Triton died.
RUN_LOG_MAX_BYTES = 256 * 1024
CRASH_LOG_LINES = 20
# The Python backend's answer once a model's stub process died ("Stub process '<instance>' is
# not healthy."): that model never finishes unloading, so the server is not reused.
DEAD_STUB = re.compile(r"Stub process \S* ?is not healthy")


@dataclass
class CaseResult:
    name: str
    kind: str
    outcome: str
    message: str = ""
    inputs: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    actual: dict = field(default_factory=dict)
    duration_ms: float | None = None


@dataclass
class TestRun:
    results: list[CaseResult]
    # Problems that stop testing altogether (the package does not load).
    problems: list[dict]

    __test__ = False  # not a pytest test class, whatever its name says

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.outcome == TestOutcome.PASSED for r in self.results)


def smoke_inputs(model: dict) -> dict[str, np.ndarray]:
    """Zero inputs of the declared shapes: -1 dimensions become 1, and a batching model gets a
    batch of one."""
    inputs = {}
    for spec in model.get("inputs", []):
        dims = [1 if d < 0 else d for d in spec["dims"]]
        if model.get("max_batch_size", 0) > 0:
            dims = [1, *dims]
        datatype = spec["datatype"]
        if datatype == "BYTES":
            inputs[spec["name"]] = np.full(dims, b"", dtype=np.object_)
        else:
            inputs[spec["name"]] = np.zeros(dims, dtype=numpy_dtype(datatype))
    return inputs


# -- one run ---------------------------------------------------------------------------------


def load_name(version_id: int | None = None) -> str:
    """A name no other run's package loads under (a valid Triton model name and URL path
    segment)."""
    token = uuid.uuid4().hex[:8]
    return f"t-{version_id}-{token}" if version_id is not None else f"t-{token}"


def run_tests(
    repository: Path,
    *,
    summary: dict,
    scratch: Path,
    log: Callable[[str], None],
    version_id: int | None = None,
) -> TestRun:
    """Load the package `repository` as SageMaker's Triton would, on this worker's test
    server, and run the cases in `summary["tests"]`. The run's part of the Triton log is
    copied to `scratch/triton.log`."""
    gpu = bool(settings.BERTH_TRITON_GPU)
    start_timeout = float(settings.BERTH_TRITON_START_TIMEOUT)
    session = TEST_SERVER.session(gpu=gpu, start_timeout=start_timeout, log=log)
    with session as (server, cleanups):
        log_start = _log_size(server.log_path)
        try:
            run = _run_on(
                server,
                repository,
                summary=summary,
                name=load_name(version_id),
                log=log,
                cleanups=cleanups,
            )
            if any(DEAD_STUB.search(result.message) for result in run.results):
                log("A stub process of this package died: Triton restarts for the next run.")
                cleanups.append(TEST_SERVER.discard)
            return run
        finally:
            _copy_run_log(server.log_path, log_start, scratch / "triton.log")
            if TEST_SERVER.server is server and not server.alive:
                log(
                    f"Triton exited during this run (status {server.process.returncode}); "
                    "the next run starts a new one. The end of its log:\n"
                    + _log_lines(server.log_path, log_start, CRASH_LOG_LINES)
                )
                TEST_SERVER.discard()


def _run_on(
    server: TritonServer,
    repository: Path,
    *,
    summary: dict,
    name: str,
    log: Callable[[str], None],
    cleanups: list[Callable[[], None]],
) -> TestRun:
    from toolkit.shim import install_package
    from toolkit.triton import TritonLoadError

    gpu = bool(settings.BERTH_TRITON_GPU)
    load_timeout = float(settings.BERTH_TRITON_LOAD_TIMEOUT)
    models = {m["name"]: m for m in summary.get("models", [])}
    cases = summary.get("tests") or []
    folder = server.repository / name
    loaded = False
    try:
        try:
            target = install_package(repository, folder, gpu=gpu)
        except (ValueError, OSError) as exc:
            log(f"Cannot prepare the package for Triton: {exc}")
            return _problem("", f"Cannot prepare the package for Triton: {exc}")
        package = LoadedPackage(server, name=name, folder=folder, target=target, models=models)
        started = time.monotonic()
        try:
            server.load_package(folder, name, timeout=load_timeout)
        except TritonLoadError as exc:
            reason = package.plain(getattr(exc, "reason", str(exc)))
            message = f"Triton could not load {target} as SageMaker loads this package: {reason}"
            log(message)
            return _problem(f"{target}/config.pbtxt", message)
        loaded = True
        package.find_served()
        log(
            f"Loaded {target} as {name} in {time.monotonic() - started:.1f} s"
            + (f", with its steps {', '.join(package.steps)}." if package.steps else ".")
        )
        results: list[CaseResult] = []
        if not cases:
            results.append(_smoke(package, log))
        for case in cases:
            if results and not server.alive:
                results.append(_not_run(case, results[-1].name))
                continue
            results.append(_run_case(package, case, log))
        return TestRun(results=results, problems=[])
    finally:
        if loaded:
            cleanups.append(lambda: _unload(server, name, folder, timeout=load_timeout))
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _unload(server: TritonServer, name: str, folder: Path, *, timeout: float) -> None:
    """Unload a run's package and remove its folder; a server that cannot is stopped, so
    that no run ever finds another's models loaded."""
    from toolkit.triton import TritonError

    try:
        if TEST_SERVER.server is server and server.alive:
            server.unload_package(name, timeout=timeout)
    except (TritonError, OSError) as exc:
        logger.warning("test tritonserver could not unload %s (%s): stopping it", name, exc)
        TEST_SERVER.discard()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _problem(file: str, message: str) -> TestRun:
    return TestRun(results=[], problems=[{"file": file, "line": None, "message": message}])


@dataclass
class LoadedPackage:
    """One run's package on the server: what it was loaded as, and what Triton loaded."""

    server: TritonServer
    name: str  # the load name the target answers to
    folder: Path
    target: str  # the model SageMaker's Triton maps the load name to
    models: dict  # {model name: its summary} of every model in the package
    # {model name in the package: the name it is invoked by}, once loaded.
    served: dict[str, str] = field(default_factory=dict)

    def find_served(self) -> None:
        """What Triton loaded: the target under the load name, its steps (dependencies)
        under their own names. Runs take turns on the server, so everything ready besides
        the target is this package's."""
        ready = {
            entry["name"]
            for entry in self.server.repository_index()
            if entry.get("state") == "READY" and entry.get("name")
        }
        self.served = {model: model for model in ready if model != self.name}
        self.served[self.target] = self.name

    @property
    def steps(self) -> list[str]:
        return sorted(set(self.served) - {self.target})

    def plain(self, text: str) -> str:
        """Triton's text in the package's own terms: its files and models as the package
        names them, not where this worker keeps them (`<folder>/caller/1/model.py`,
        `<folder>::caller`) nor the load name."""
        for folder in {str(self.folder), str(self.folder.resolve())}:
            text = text.replace(f"{folder}::", "").replace(f"{folder}/", "")
        return text.replace(self.name, self.target)

    def not_loaded_message(self, model: str) -> str:
        loaded = (
            f"{self.target} and its steps {', '.join(self.steps)}" if self.steps else self.target
        )
        return (
            f"Model {model} is not loaded as SageMaker loads this package: it is neither the "
            f"entry model nor one of its steps (loaded: {loaded}). Name one of those in the "
            "case's `model:`, or make it a step of the ensemble."
        )

    def unloaded_call_hint(self, message: str) -> str:
        """Why a model the package holds answered "not ready" to a call from another (BLS)."""
        called = [
            m for m in self.models if m not in self.served and f"'{m}' is not ready" in message
        ]
        if not called:
            return ""
        return (
            f" ({', '.join(called)} is in the package but not loaded: SageMaker's Triton loads "
            "only the entry model and its steps, so a BLS call reaches only those. Make it a "
            "step of the ensemble, or put the logic in one model.)"
        )

    def infer_failure(self, exc: Exception, what: str = "Inference") -> str:
        if _exited(self.server, exc):
            return (
                f"{what} failed: tritonserver exited (status {self.server.process.returncode}) "
                "while running it."
            )
        return f"{what} failed: {self.plain(str(exc))}" + self.unloaded_call_hint(str(exc))


def _exited(server: TritonServer, exc: Exception, within: float = 2.0) -> bool:
    """Whether Triton died: a request that got no answer (status 0) waits a moment for the
    process to be seen gone, so the case says what happened."""
    if getattr(exc, "status", None) == 0:
        deadline = time.monotonic() + within
        while server.alive and time.monotonic() < deadline:
            time.sleep(0.05)
    return not server.alive


def _run_case(package: LoadedPackage, case: dict, log: Callable[[str], None]) -> CaseResult:
    from toolkit.triton import TritonInferError

    model = case["model"]
    result = CaseResult(
        name=case["name"],
        kind=TestKind.CASE,
        outcome=TestOutcome.PASSED,
        inputs=case["inputs"],
        expected=case["expected"],
    )
    if model not in package.served:
        result.outcome = TestOutcome.ERROR
        result.message = package.not_loaded_message(model)
        log(f"Test {case['name']}: error: {result.message}")
        return result
    try:
        inputs = {tensor: tensor_from_spec(spec) for tensor, spec in case["inputs"].items()}
    except (TensorError, ValueError, TypeError) as exc:
        result.outcome, result.message = TestOutcome.ERROR, f"Cannot build the inputs: {exc}"
        return result
    started = time.perf_counter()
    try:
        outputs = package.server.infer(
            package.served[model], inputs, outputs=list(case["expected"]) or None
        )
    except (TritonInferError, TypeError, ValueError) as exc:
        result.duration_ms = (time.perf_counter() - started) * 1000
        result.outcome = TestOutcome.ERROR
        result.message = package.infer_failure(exc)
        log(f"Test {case['name']}: error: {result.message}")
        return result
    result.duration_ms = (time.perf_counter() - started) * 1000
    result.actual = {tensor: describe(np.asarray(value)) for tensor, value in outputs.items()}
    failures = compare_outputs(case["expected"], outputs)
    if failures:
        result.outcome, result.message = TestOutcome.FAILED, " ".join(failures)
    log(f"Test {case['name']}: {result.outcome} in {result.duration_ms:.1f} ms.")
    return result


def _not_run(case: dict, crashed_in: str) -> CaseResult:
    return CaseResult(
        name=case["name"],
        kind=TestKind.CASE,
        outcome=TestOutcome.ERROR,
        message=f"Not run: tritonserver exited during {crashed_in}.",
        inputs=case["inputs"],
        expected=case["expected"],
    )


def _smoke(package: LoadedPackage, log: Callable[[str], None]) -> CaseResult:
    from toolkit.triton import TritonInferError

    model = package.models.get(package.target, {"name": package.target})
    name = model.get("name", "")
    inputs = smoke_inputs(model)
    result = CaseResult(
        name=f"smoke: {name}",
        kind=TestKind.SMOKE,
        outcome=TestOutcome.PASSED,
        message="No test cases: one inference on zero inputs of the declared shapes.",
        inputs={tensor: describe(value) for tensor, value in inputs.items()},
    )
    started = time.perf_counter()
    try:
        outputs = package.server.infer(package.served.get(name, name), inputs)
    except (TritonInferError, TypeError, ValueError) as exc:
        result.outcome = TestOutcome.ERROR
        result.message = package.infer_failure(exc, "Smoke inference")
        log(result.message)
        return result
    finally:
        result.duration_ms = (time.perf_counter() - started) * 1000
    result.actual = {tensor: describe(np.asarray(value)) for tensor, value in outputs.items()}
    missing = [o["name"] for o in model.get("outputs", []) if o["name"] not in outputs]
    if missing:
        result.outcome = TestOutcome.FAILED
        result.message = f"Smoke inference answered without {', '.join(missing)}."
    log(f"Smoke inference on {name}: {result.outcome} in {result.duration_ms:.1f} ms.")
    return result


# -- the run's part of the server log --------------------------------------------------------


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_log(path: Path, start: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            # A log moved aside at a restart is shorter than where this run began.
            fh.seek(max(start if start <= end else 0, end - RUN_LOG_MAX_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _log_lines(path: Path, start: int, lines: int) -> str:
    return "\n".join(_read_log(path, start).splitlines()[-lines:])


def _copy_run_log(path: Path, start: int, dest: Path) -> None:
    with contextlib.suppress(OSError):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_read_log(path, start))
