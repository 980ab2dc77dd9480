"""Runs an ONNX model (onnxruntime) or a TorchScript model (torch.jit) in Triton's Python
backend, with the inputs, outputs and batching its config.pbtxt declares.

`toolkit.shim` copies this file as the `model.py` of each model it converts, and says in the
config's `parameters` (string values) what to run:

- `berth_runtime`: `onnxruntime` or `torch`;
- `berth_model_filename`: the model file in the version folder (`model.onnx`, `model.pt`...);
- `intra_op_thread_count`, `inter_op_thread_count`: onnxruntime's thread pools, named as
  Triton's onnxruntime backend names them, so a package's own settings keep working.

Self-contained on purpose: it runs inside the sandbox, which shows the venv's site-packages
but not the project, so it imports nothing of Berth. Triton passes the model config to
`initialize` as JSON in `args["model_config"]`:
https://github.com/triton-inference-server/python_backend#usage
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

PARAM_RUNTIME = "berth_runtime"
PARAM_MODEL_FILENAME = "berth_model_filename"
DEFAULT_FILENAMES = {"onnxruntime": "model.onnx", "torch": "model.pt"}

# onnxruntime's input type names -> the numpy type a feed must have.
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _param(config: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


def _to_output(array: Any, dtype: Any) -> np.ndarray:
    array = np.asarray(array)
    if dtype == np.object_:
        return np.array(
            [v.encode() if isinstance(v, str) else v for v in array.ravel()], dtype=np.object_
        ).reshape(array.shape)
    return array.astype(dtype, copy=False)


class _Unbatchable(Exception):
    pass


class OnnxRuntime:
    """One onnxruntime session over the model file."""

    def __init__(self, model: TritonPythonModel) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        intra = _param(model.config, "intra_op_thread_count")
        inter = _param(model.config, "inter_op_thread_count")
        if intra is not None:
            options.intra_op_num_threads = int(intra)
        if inter is not None:
            options.inter_op_num_threads = int(inter)
        providers: list[Any] = ["CPUExecutionProvider"]
        if model.on_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": model.device_id}))
        self.session = ort.InferenceSession(
            model.model_path, sess_options=options, providers=providers
        )
        self.output_names = model.output_names
        self.session_inputs = {i.name: ORT_TYPES.get(i.type) for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in model.output_names if n not in session_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"outputs {missing} of config.pbtxt are not outputs of {model.model_path}"
            )
        unknown = [n for n in model.input_names if n not in self.session_inputs]
        if unknown:
            raise pb_utils.TritonModelException(
                f"inputs {unknown} of config.pbtxt are not inputs of {model.model_path}"
            )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        prepared = {}
        for name, value in feeds.items():
            want = self.session_inputs.get(name)
            if want is np.object_:
                value = np.array(
                    [v.decode() if isinstance(v, bytes) else v for v in value.ravel()],
                    dtype=np.object_,
                ).reshape(value.shape)
            elif want is not None and value.dtype != want:
                value = value.astype(want)
            prepared[name] = value
        results = self.session.run(self.output_names, prepared)
        return dict(zip(self.output_names, results, strict=False))

    def close(self) -> None:
        self.session = None


class TorchRuntime:
    """A TorchScript module, on the instance's GPU when it has one."""

    def __init__(self, model: TritonPythonModel) -> None:
        import torch

        self.torch = torch
        self.input_names = model.input_names
        self.output_names = model.output_names
        self.device = torch.device(
            f"cuda:{model.device_id}" if model.on_gpu and torch.cuda.is_available() else "cpu"
        )
        self.module = torch.jit.load(model.model_path, map_location=self.device)
        self.module.eval()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        torch = self.torch
        # Triton's libtorch backend passes inputs in config order and maps outputs by position.
        tensors = [
            torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
            for n in self.input_names
            if n in feeds
        ]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = (result,)
        return {
            name: value.detach().cpu().numpy()
            for name, value in zip(self.output_names, result, strict=False)
        }

    def close(self) -> None:
        self.module = None


RUNTIMES = {"onnxruntime": OnnxRuntime, "torch": TorchRuntime}


class TritonPythonModel:
    """Runs requests one by one, or concatenated along the batch axis when they can be."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.config = json.loads(args["model_config"])
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.input_names = [i["name"] for i in self.config.get("input", [])]
        self.output_names = [o["name"] for o in self.config.get("output", [])]
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
            for o in self.config.get("output", [])
        }
        runtime = _param(self.config, PARAM_RUNTIME, "onnxruntime")
        if runtime not in RUNTIMES:
            raise pb_utils.TritonModelException(
                f"parameter {PARAM_RUNTIME} is {runtime!r}; known: {', '.join(RUNTIMES)}"
            )
        filename = _param(self.config, PARAM_MODEL_FILENAME, DEFAULT_FILENAMES[runtime])
        version_dir = os.path.realpath(
            os.path.join(args["model_repository"], args["model_version"])
        )
        self.model_path = os.path.realpath(os.path.join(version_dir, filename))
        # The package names its model file; it must stay inside the version folder.
        if os.path.dirname(self.model_path) != version_dir:
            raise pb_utils.TritonModelException(
                f"model file {filename!r} is not a file of the version folder"
            )
        self.on_gpu = args.get("model_instance_kind") == "GPU"
        self.device_id = int(args.get("model_instance_device_id") or 0)
        self.runtime = RUNTIMES[runtime](self)

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                feeds[name] = tensor.as_numpy()
        return feeds

    def _respond(self, request: Any, outputs: dict[str, Any]) -> Any:
        requested = None
        if hasattr(request, "requested_output_names"):
            requested = set(request.requested_output_names()) or None
        tensors = [
            pb_utils.Tensor(name, _to_output(outputs[name], self.output_dtypes[name]))
            for name in self.output_names
            if requested is None or name in requested
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
        )

    def _execute_one(self, request: Any) -> Any:
        try:
            return self._respond(request, self.runtime.run(self._feeds(request)))
        except Exception as exc:
            return self._error(exc)

    def _execute_batched(self, requests: list[Any]) -> list[Any]:
        per_request = [self._feeds(r) for r in requests]
        names = set(per_request[0])
        for feeds in per_request[1:]:
            if set(feeds) != names:
                raise _Unbatchable()
            for name in names:
                a, b = feeds[name], per_request[0][name]
                if a.ndim == 0 or a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                    raise _Unbatchable()
        sizes = [next(iter(f.values())).shape[0] for f in per_request] if names else []
        if not names or any(
            f[name].shape[0] != size
            for f, size in zip(per_request, sizes, strict=False)
            for name in names
        ):
            raise _Unbatchable()
        merged = {n: np.concatenate([f[n] for f in per_request], axis=0) for n in names}
        outputs = self.runtime.run(merged)
        offsets = np.cumsum(sizes)[:-1]
        split = {n: np.split(np.asarray(v), offsets, axis=0) for n, v in outputs.items()}
        return [
            self._respond(request, {n: parts[i] for n, parts in split.items()})
            for i, request in enumerate(requests)
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.max_batch_size > 0 and len(requests) > 1:
            try:
                return self._execute_batched(requests)
            except Exception:
                # One bad request must not fail the others: answer each on its own.
                pass
        return [self._execute_one(r) for r in requests]

    def finalize(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.close()
