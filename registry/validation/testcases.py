"""Test cases: `berth.yaml`'s `tests:` list, or the same shape given at registration.

tests:
  - name: setosa-like
    model: demo_ensemble            # optional, the entry model by default
    inputs:  {RAW: {datatype: FP32, shape: [1, 4], data: [5.1, 3.5, 1.4, 0.2]}}
    expected: {PROBABILITIES: {data: [0.8, 0.1, 0.1], atol: 0.0001, rtol: 0.001}}
"""

import math
from typing import Any

from toolkit.limits import MAX_TENSOR_DIMS, MAX_TENSOR_ELEMENTS, MAX_TEST_CASES

from .problems import Problem
from .yamllines import Path_, line_of

# KServe v2 / Triton tensor data types.
DATATYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
}
CASE_KEYS = {"name", "model", "inputs", "expected", "description"}
INPUT_KEYS = {"datatype", "shape", "data"}
EXPECTED_KEYS = {"datatype", "shape", "data", "atol", "rtol"}


def _flatten(data: Any, depth: int = 1) -> list | None:
    """Nested lists flattened; None when `data` is not a list of scalars or lists, or is
    nested deeper than a tensor may have dims."""
    if not isinstance(data, list) or depth > MAX_TENSOR_DIMS:
        return None
    out: list = []
    for item in data:
        if isinstance(item, list):
            inner = _flatten(item, depth + 1)
            if inner is None:
                return None
            out.extend(inner)
        elif isinstance(item, bool | int | float | str):
            out.append(item)
        else:
            return None
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_cases_schema_problems(
    cases: Any,
    *,
    file: str,
    lines: dict[Path_, int] | None = None,
    base: Path_ = (),
) -> list[Problem]:
    """Problems with the shape of a test-case list, without looking at any model."""
    problems: list[Problem] = []

    def add(path: Path_, message: str) -> None:
        problems.append(Problem(file, message, line_of(lines, base + path)))

    if not isinstance(cases, list):
        add((), "Test cases must be a list of cases (name, inputs, expected).")
        return problems
    if len(cases) > MAX_TEST_CASES:
        add((), f"{len(cases)} test cases; the limit is {MAX_TEST_CASES}.")
        return problems
    names: set[str] = set()
    for index, case in enumerate(cases):
        label = f"Test case {index + 1}"
        if not isinstance(case, dict):
            add((index,), f"{label} must be a mapping with name, inputs and expected.")
            continue
        name = case.get("name", f"case-{index + 1}")
        if not isinstance(name, str) or not name.strip():
            add((index, "name"), f"{label}: name must be a non-empty string.")
        else:
            label = f"Test case {name!r}"
            if name in names:
                add((index, "name"), f"{label}: two test cases have this name.")
            names.add(name)
        for key in sorted(set(case) - CASE_KEYS):
            add(
                (index, key),
                f"{label}: unknown key {key!r} (known: {', '.join(sorted(CASE_KEYS))}).",
            )
        if "model" in case and not isinstance(case["model"], str):
            add((index, "model"), f"{label}: model must be a model name.")
        inputs = case.get("inputs")
        if not isinstance(inputs, dict) or not inputs:
            add(
                (index, "inputs"),
                f"{label}: inputs must map each input tensor name to datatype, shape, data.",
            )
        else:
            for tensor, spec in inputs.items():
                _check_tensor(
                    spec,
                    required=INPUT_KEYS,
                    allowed=INPUT_KEYS,
                    where=f"{label}, input {tensor}",
                    add=add,
                    path=(index, "inputs", tensor),
                )
        expected = case.get("expected", {})
        if not isinstance(expected, dict):
            add((index, "expected"), f"{label}: expected must map output tensor names to data.")
        else:
            for tensor, spec in expected.items():
                _check_tensor(
                    spec,
                    required={"data"},
                    allowed=EXPECTED_KEYS,
                    where=f"{label}, expected {tensor}",
                    add=add,
                    path=(index, "expected", tensor),
                )
    return problems


def _check_tensor(spec, *, required, allowed, where, add, path) -> None:
    if not isinstance(spec, dict):
        add(path, f"{where}: must be a mapping with {', '.join(sorted(required))}.")
        return
    for key in sorted(required - set(spec)):
        add(path, f"{where}: {key} is missing.")
    for key in sorted(set(spec) - allowed):
        add(path + (key,), f"{where}: unknown key {key!r}.")
    datatype = spec.get("datatype")
    if datatype is not None and datatype not in DATATYPES:
        add(
            path + ("datatype",),
            f"{where}: datatype {datatype!r} is not one of {', '.join(sorted(DATATYPES))}.",
        )
    shape = spec.get("shape")
    if shape is not None and (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        add(path + ("shape",), f"{where}: shape must be a list of non-negative integers.")
        shape = None
    elif shape is not None and len(shape) > MAX_TENSOR_DIMS:
        add(
            path + ("shape",),
            f"{where}: shape has {len(shape)} dims; the limit is {MAX_TENSOR_DIMS}.",
        )
        shape = None
    if "data" in spec:
        flat = _flatten(spec["data"])
        if flat is None:
            add(
                path + ("data",),
                f"{where}: data must be a list (nested lists allowed, at most "
                f"{MAX_TENSOR_DIMS} deep) of values.",
            )
        elif len(flat) > MAX_TENSOR_ELEMENTS:
            add(
                path + ("data",),
                f"{where}: data has {len(flat)} values; the limit is {MAX_TENSOR_ELEMENTS}.",
            )
        else:
            if shape is not None and math.prod(shape) != len(flat):
                add(
                    path + ("data",),
                    f"{where}: shape {shape} holds {math.prod(shape)} values "
                    f"but data has {len(flat)}.",
                )
            if datatype not in (None, "BYTES") and not all(
                _is_number(v) or isinstance(v, bool) for v in flat
            ):
                add(path + ("data",), f"{where}: data must be numbers for datatype {datatype}.")
    for key in ("atol", "rtol"):
        if key in spec and (not _is_number(spec[key]) or spec[key] < 0):
            add(path + (key,), f"{where}: {key} must be a non-negative number.")


def normalize_test_cases(cases: list[dict], *, default_model: str | None) -> list[dict]:
    """Cases with every optional key filled, as the test step runs them."""
    normalized = []
    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            continue
        normalized.append(
            {
                "name": case.get("name") or f"case-{index + 1}",
                "model": case.get("model") or default_model,
                "inputs": case.get("inputs") or {},
                "expected": case.get("expected") or {},
            }
        )
    return normalized


def check_test_cases(
    cases: list[dict],
    *,
    models: dict,
    entry_model: str | None,
    loaded: list[str] | None = None,
    file: str,
    lines: dict[Path_, int] | None = None,
    base: Path_ = (),
) -> list[Problem]:
    """Problems with test cases against the repository's models: the model each case calls
    exists and is loaded when the package serves (`loaded`: the entry model, then its ensemble
    steps; None when not known), its inputs are the model's inputs (all required ones given),
    and every expected tensor is one of its outputs. `models` maps name -> ModelInfo."""
    problems: list[Problem] = []
    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            continue
        label = f"Test case {case.get('name', index + 1)!r}"
        model_name = case.get("model") or entry_model
        if model_name is None:
            continue
        info = models.get(model_name)
        if info is None:
            problems.append(
                Problem(
                    file,
                    f"{label}: model {model_name!r} is not in the repository.",
                    line_of(lines, base + (index, "model")),
                )
            )
            continue
        if loaded and model_name not in loaded:
            steps = ", ".join(loaded[1:])
            problems.append(
                Problem(
                    file,
                    f"{label}: model {model_name!r} is not loaded when this package serves: "
                    f"SageMaker's Triton loads {loaded[0]!r}"
                    + (f" and its ensemble's steps ({steps})" if steps else "")
                    + " and nothing else of the package. Call "
                    + ("one of those." if steps else f"{loaded[0]!r}."),
                    line_of(lines, base + (index, "model")),
                )
            )
            continue
        inputs = case.get("inputs") if isinstance(case.get("inputs"), dict) else {}
        expected = case.get("expected") if isinstance(case.get("expected"), dict) else {}
        if info.inputs is not None:
            for tensor in inputs:
                if tensor not in info.inputs:
                    problems.append(
                        Problem(
                            file,
                            f"{label}: {model_name} has no input {tensor!r} "
                            f"(inputs: {', '.join(info.inputs) or 'none'}).",
                            line_of(lines, base + (index, "inputs", tensor)),
                        )
                    )
            for tensor, spec in info.inputs.items():
                if tensor not in inputs and not spec.get("optional"):
                    problems.append(
                        Problem(
                            file,
                            f"{label}: input {tensor!r} of {model_name} is not given.",
                            line_of(lines, base + (index, "inputs")),
                        )
                    )
        if info.outputs is not None:
            for tensor in expected:
                if tensor not in info.outputs:
                    problems.append(
                        Problem(
                            file,
                            f"{label}: {model_name} has no output {tensor!r} "
                            f"(outputs: {', '.join(info.outputs) or 'none'}).",
                            line_of(lines, base + (index, "expected", tensor)),
                        )
                    )
    return problems
