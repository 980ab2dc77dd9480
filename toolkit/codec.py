"""KServe v2 JSON tensors <-> numpy arrays: the one codec for inference requests and answers.

The registry's test step, the deployments' smoke test and the data plane's tools all build
requests and read answers through these functions, so a tensor means the same everywhere.
Data-type names map through `tritonclient.utils` (Triton's own table, BF16 included); it
imports numpy only, no gRPC.

Protocol: https://github.com/kserve/kserve/blob/master/docs/predict-api/v2/required_api.md
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

# How many values of a tensor a stored result keeps: enough to read, bounded in size.
MAX_DESCRIBED_VALUES = 1024


class TensorError(ValueError):
    """A tensor that cannot be built from what was given (unknown type, data that does not
    fit the shape)."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a KServe v2 data type (`BYTES` -> object)."""
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise TensorError(f"unknown data type {datatype!r}")
    return np.dtype(dtype)


def kserve_datatype(array: np.ndarray) -> str:
    """The KServe v2 data type of a numpy array (strings and bytes are `BYTES`)."""
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    datatype = np_to_triton_dtype(array.dtype)
    if datatype is None:
        raise TensorError(f"no KServe v2 data type for numpy {array.dtype}")
    return datatype


def tensor_from_spec(spec: Mapping[str, Any]) -> np.ndarray:
    """A tensor from a test case's spec (`{datatype, shape, data}`, as in berth.yaml).

    `datatype` defaults to FP32; without `shape` the data's own nesting gives it. BYTES data
    are kept as bytes (strings are UTF-8 encoded), as Triton hands them to a model."""
    datatype = spec.get("datatype", "FP32")
    data = spec.get("data", [])
    if datatype == "BYTES":
        flat = [
            value.encode() if isinstance(value, str) else bytes(value)
            for value in np.array(data, dtype=object).ravel()
        ]
        array = np.array(flat, dtype=np.object_)
        if spec.get("shape") is None:
            array = array.reshape(np.array(data, dtype=object).shape)
    else:
        try:
            array = np.array(data, dtype=numpy_dtype(datatype))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TensorError(f"data do not fit {datatype}: {exc}") from exc
    shape = spec.get("shape")
    if shape is None:
        return array
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise TensorError(f"{array.size} values do not fill the shape {list(shape)}") from exc


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """One KServe v2 JSON tensor (`name`, `shape`, `datatype`, flat `data`)."""
    array = np.asarray(array)
    datatype = kserve_datatype(array)
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    else:
        data = array.ravel().tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def encode_request(
    inputs: Mapping[str, np.ndarray], outputs: Iterable[str] | None = None
) -> dict[str, Any]:
    """A KServe v2 JSON inference request; `outputs` names the outputs to return (all when
    None)."""
    body: dict[str, Any] = {"inputs": [encode_tensor(name, v) for name, v in inputs.items()]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def case_request(case: Mapping[str, Any]) -> dict[str, Any]:
    """The KServe v2 request of a test case: its inputs, asking for its expected outputs."""
    inputs = {name: tensor_from_spec(spec) for name, spec in (case.get("inputs") or {}).items()}
    expected = case.get("expected") or {}
    return encode_request(inputs, list(expected) or None)


def decode_response(payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """numpy arrays from a KServe v2 JSON answer, each shaped as the answer says.

    BYTES outputs come back as an object array of the JSON strings."""
    result = {}
    for output in payload.get("outputs") or []:
        datatype = output.get("datatype", "")
        data = output.get("data", [])
        if datatype == "BYTES":
            array = np.array(data, dtype=np.object_)
        else:
            array = np.array(data, dtype=numpy_dtype(datatype))
        try:
            result[output["name"]] = array.reshape(output.get("shape", array.shape))
        except ValueError as exc:
            raise TensorError(
                f"output {output['name']}: {array.size} values do not fill the shape "
                f"{output.get('shape')}"
            ) from exc
    return result


def describe(array: np.ndarray, max_values: int = MAX_DESCRIBED_VALUES) -> dict[str, Any]:
    """A tensor as a test result stores it: type, shape and its first `max_values` values."""
    array = np.asarray(array)
    flat = array.ravel()
    values = flat[:max_values]
    try:
        datatype = kserve_datatype(array)
    except TensorError:
        datatype = str(array.dtype)
    if datatype == "BYTES":
        data = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values]
    else:
        data = values.tolist()
    described = {"datatype": datatype, "shape": list(array.shape), "data": data}
    if flat.size > max_values:
        described["truncated"] = True
    return described
