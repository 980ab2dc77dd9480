"""The test step: load a validated repository into a real Triton server and run its test
cases (or one smoke inference on zero inputs when it has none).

Triton here ships only the Python backend, so the repository is first prepared with
`toolkit.shim.prepare_repository`, which serves `onnxruntime_onnx` models through a Python
model running onnxruntime with the same inputs and outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from toolkit.codec import TensorError, describe, numpy_dtype, tensor_from_spec
from toolkit.comparison import compare_outputs

from .choices import TestKind, TestOutcome


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
    # Problems that stop testing altogether (the repository does not load).
    problems: list[dict]

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


def _triton_log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_tests(
    repository: Path,
    *,
    summary: dict,
    scratch: Path,
    log: Callable[[str], None],
) -> TestRun:
    """Serve `repository` on a fresh Triton and run the cases in `summary["tests"]`."""
    from toolkit.shim import prepare_repository
    from toolkit.triton import TritonInferError, TritonLoadError, TritonServer

    gpu = bool(settings.BERTH_TRITON_GPU)
    start_timeout = float(settings.BERTH_TRITON_START_TIMEOUT)
    load_timeout = float(settings.BERTH_TRITON_LOAD_TIMEOUT)
    models = {m["name"]: m for m in summary.get("models", [])}
    entry = summary.get("entry_model")
    cases = summary.get("tests") or []

    served_repo = scratch / "serving"
    names = prepare_repository(repository, served_repo, gpu=gpu)
    log(f"Prepared the serving repository ({len(names)} models).")
    to_load = []
    for name in [entry, *(case.get("model") for case in cases)]:
        if name and name not in to_load:
            to_load.append(name)

    results: list[CaseResult] = []
    triton_log = scratch / "triton.log"
    server = TritonServer(served_repo, log_path=triton_log, gpu=gpu)
    try:
        server.start(timeout=start_timeout)
        log(f"Triton started (pid {server.pid}).")
        for name in to_load:
            started = time.monotonic()
            try:
                server.load(names.get(name, name), timeout=load_timeout)
            except TritonLoadError as exc:
                reason = getattr(exc, "reason", str(exc))
                log(f"Triton could not load {name}: {reason}")
                return TestRun(
                    results=[],
                    problems=[
                        {
                            "file": f"{name}/config.pbtxt",
                            "line": None,
                            "message": f"Triton could not load {name}: {reason}",
                        }
                    ],
                )
            log(f"Loaded {name} in {time.monotonic() - started:.1f} s.")
        if not cases:
            results.append(_smoke(server, models.get(entry, {}), names, log, TritonInferError))
        for case in cases:
            results.append(_run_case(server, case, names, log, TritonInferError))
    finally:
        server.stop()
        log("Triton stopped.")
    return TestRun(results=results, problems=[])


def _run_case(server, case: dict, names: dict, log, infer_error) -> CaseResult:
    model = case["model"]
    result = CaseResult(
        name=case["name"],
        kind=TestKind.CASE,
        outcome=TestOutcome.PASSED,
        inputs=case["inputs"],
        expected=case["expected"],
    )
    try:
        inputs = {tensor: tensor_from_spec(spec) for tensor, spec in case["inputs"].items()}
    except (TensorError, ValueError, TypeError) as exc:
        result.outcome, result.message = TestOutcome.ERROR, f"Cannot build the inputs: {exc}"
        return result
    started = time.perf_counter()
    try:
        outputs = server.infer(
            names.get(model, model), inputs, outputs=list(case["expected"]) or None
        )
    except (infer_error, TypeError, ValueError) as exc:
        result.duration_ms = (time.perf_counter() - started) * 1000
        result.outcome, result.message = TestOutcome.ERROR, f"Inference failed: {exc}"
        log(f"Test {case['name']}: error: {exc}")
        return result
    result.duration_ms = (time.perf_counter() - started) * 1000
    result.actual = {tensor: describe(np.asarray(value)) for tensor, value in outputs.items()}
    failures = compare_outputs(case["expected"], outputs)
    if failures:
        result.outcome, result.message = TestOutcome.FAILED, " ".join(failures)
    log(f"Test {case['name']}: {result.outcome} in {result.duration_ms:.1f} ms.")
    return result


def _smoke(server, model: dict, names: dict, log, infer_error) -> CaseResult:
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
        outputs = server.infer(names.get(name, name), inputs)
    except (infer_error, TypeError, ValueError) as exc:
        result.outcome, result.message = TestOutcome.ERROR, f"Smoke inference failed: {exc}"
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
