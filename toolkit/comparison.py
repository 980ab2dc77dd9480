"""The test-case comparison: does an answer match what a test case expects?

One rule, used by the registry's test step and by the deployments' smoke test, so a version
that passes one passes the other. What it decides:

- **Missing outputs** fail.
- **Data type**: when the case names a `datatype`, the answer's must be the same.
- **Shape**: when the case names a `shape`, the answer's must be exactly that. Without one,
  only the number of values must agree (nested lists in `data` are read flat).
- **BYTES / strings** compare exactly, value by value, as UTF-8 text.
- **Booleans and integers** compare exactly, unless the case sets `atol` or `rtol`.
- **Floating point** passes where |actual − expected| ≤ atol + rtol·|expected|, with
  `DEFAULT_ATOL` and `DEFAULT_RTOL` unless the case sets them (numpy's `isclose` rule).
- **NaN** matches only NaN: an expected NaN passes when the answer has NaN there, and a NaN
  where a number was expected fails. **Infinities** match only the infinity of the same sign.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .codec import TensorError, kserve_datatype

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


def _expectation(spec: Any) -> Mapping[str, Any]:
    """A case's expectation for one output: a mapping, or a bare list of values."""
    return spec if isinstance(spec, Mapping) else {"data": spec}


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def compare_tensor(name: str, expected: Any, actual: np.ndarray) -> str | None:
    """None when `actual` matches the expectation for output `name`, else why not."""
    spec = _expectation(expected)
    actual = np.asarray(actual)
    want_datatype = spec.get("datatype")
    if want_datatype:
        try:
            got_datatype = kserve_datatype(actual)
        except TensorError:
            got_datatype = str(actual.dtype)
        if got_datatype != want_datatype:
            return f"{name}: data type {got_datatype}, expected {want_datatype}."
    shape = spec.get("shape")
    if shape is not None and list(actual.shape) != list(shape):
        return f"{name}: shape {list(actual.shape)}, expected {list(shape)}."
    want = np.array(spec.get("data", []), dtype=object).ravel()
    got = actual.ravel()
    if want.size != got.size:
        return f"{name}: {got.size} values, expected {want.size}."
    if actual.dtype.kind in ("U", "S", "O") or any(isinstance(v, str | bytes) for v in want):
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            if _text(g) != _text(w):
                return f"{name}[{index}]: got {_text(g)!r}, expected {_text(w)!r}."
        return None
    exact = actual.dtype.kind in ("b", "i", "u") and "atol" not in spec and "rtol" not in spec
    if exact:
        for index, (g, w) in enumerate(zip(got.tolist(), want, strict=True)):
            if g != w:
                return f"{name}[{index}]: got {g!r}, expected {w!r}."
        return None
    atol = float(spec.get("atol", DEFAULT_ATOL))
    rtol = float(spec.get("rtol", DEFAULT_RTOL))
    got_f = got.astype(np.float64)
    want_f = want.astype(np.float64)
    close = np.isclose(got_f, want_f, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    index = int(np.argmin(close))
    with np.errstate(invalid="ignore"):
        failing = np.abs(got_f - want_f)[~close]
    largest = float("nan") if np.isnan(failing).all() else float(np.nanmax(failing))
    return (
        f"{name}[{index}]: got {got_f[index]:.6g}, expected {want_f[index]:.6g} "
        f"(largest difference {largest:.3g}; tolerance atol={atol:g} + rtol={rtol:g}·|expected|)."
    )


def compare_outputs(expected: Mapping[str, Any], actual: Mapping[str, np.ndarray]) -> list[str]:
    """Why each expected output does not match the answer; empty when all match."""
    problems = []
    for name, spec in expected.items():
        if name not in actual:
            problems.append(f"{name}: not in the answer.")
            continue
        why = compare_tensor(name, spec, actual[name])
        if why:
            problems.append(why)
    return problems
