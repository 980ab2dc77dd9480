"""The test step: load a validated repository into a real Triton server and run its test
cases (or one smoke inference on zero inputs when it has none).

Triton here ships only the Python backend, so the repository is first prepared with
`dataplane.shim.prepare_repository`, which serves `onnxruntime_onnx` models through a Python
model running onnxruntime with the same inputs and outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from .choices import TestKind, TestOutcome
from .validation.testcases import DEFAULT_ATOL, DEFAULT_RTOL

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# How many values of a tensor a stored result keeps; enough to read, bounded in size.
MAX_STORED_VALUES = 1024


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


def to_array(spec: dict) -> np.ndarray:
    datatype = spec.get("datatype", "FP32")
    data = spec["data"]
    if datatype == "BYTES":
        flat = np.array(
            [
                v.encode() if isinstance(v, str) else bytes(v)
                for v in np.array(data, dtype=object).flatten()
            ],
            dtype=np.object_,
        )
        array = flat
    else:
        array = np.array(data, dtype=NUMPY_TYPES[datatype])
    shape = spec.get("shape")
    return array.reshape(shape) if shape is not None else array


def describe(array: np.ndarray) -> dict:
    flat = array.flatten()
    values = flat[:MAX_STORED_VALUES]
    if array.dtype == np.object_:
        data = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values]
        datatype = "BYTES"
    else:
        data = values.tolist()
        datatype = next(
            (
                k
                for k, v in NUMPY_TYPES.items()
                if v is not np.object_ and np.dtype(v) == array.dtype
            ),
            str(array.dtype),
        )
    out = {"datatype": datatype, "shape": list(array.shape), "data": data}
    if flat.size > MAX_STORED_VALUES:
        out["truncated"] = True
    return out


def compare(name: str, expected: dict, actual: np.ndarray) -> str | None:
    """None when `actual` matches `expected` within its tolerance, else why not."""
    shape = expected.get("shape")
    if shape is not None and list(actual.shape) != list(shape):
        return f"{name}: shape {list(actual.shape)}, expected {shape}."
    want_flat = np.array(expected["data"], dtype=object).flatten()
    got_flat = actual.flatten()
    if want_flat.size != got_flat.size:
        return f"{name}: {got_flat.size} values, expected {want_flat.size}."
    if actual.dtype == np.object_ or any(isinstance(v, str) for v in want_flat):
        got = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in got_flat]
        for index, (g, w) in enumerate(zip(got, want_flat, strict=True)):
            if g != w:
                return f"{name}[{index}]: got {g!r}, expected {w!r}."
        return None
    want = want_flat.astype(np.float64)
    got = got_flat.astype(np.float64)
    atol = float(expected.get("atol", DEFAULT_ATOL))
    rtol = float(expected.get("rtol", DEFAULT_RTOL))
    close = np.isclose(got, want, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    index = int(np.argmin(close))
    diff = float(np.abs(got - want).max())
    return (
        f"{name}[{index}]: got {got[index]:.6g}, expected {want[index]:.6g} "
        f"(largest difference {diff:.3g}; tolerance atol={atol:g} + rtol={rtol:g}·|expected|)."
    )


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
            inputs[spec["name"]] = np.zeros(dims, dtype=NUMPY_TYPES.get(datatype, np.float32))
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
    from dataplane.shim import prepare_repository
    from dataplane.triton import TritonInferError, TritonLoadError, TritonServer

    gpu = bool(getattr(settings, "BERTH_TRITON_GPU", False))
    start_timeout = float(getattr(settings, "BERTH_TRITON_START_TIMEOUT", 120))
    load_timeout = float(getattr(settings, "BERTH_TRITON_LOAD_TIMEOUT", 300))
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
        inputs = {tensor: to_array(spec) for tensor, spec in case["inputs"].items()}
    except (ValueError, TypeError) as exc:
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
    failures = []
    for tensor, spec in case["expected"].items():
        if tensor not in outputs:
            failures.append(f"{tensor}: not in the response.")
            continue
        why = compare(tensor, spec, np.asarray(outputs[tensor]))
        if why:
            failures.append(why)
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
