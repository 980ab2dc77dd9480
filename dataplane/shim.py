"""Prepare a Triton model repository for the Triton that the nvidia-pytriton wheel ships.

That Triton has the Python backend only. `prepare_repository` copies a package's models into
a serving repository and rewrites what this Triton cannot run as is:

- `onnxruntime_onnx` models (platform, or backend "onnxruntime") become Python-backend models
  whose `model.py` runs the same `model.onnx` with onnxruntime, with the same inputs, outputs,
  batching and instance groups;
- `pytorch_libtorch` models get the same treatment with `torch.jit` when torch is installed
  (otherwise they are copied as they are and Triton reports the missing backend);
- with a prefix, every model folder becomes `<prefix><name>` and ensemble steps follow, so
  several packages (or versions of one) share one Triton repository without name clashes.

The source repository is never modified: the package sent to SageMaker stays as uploaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from dataplane.modelconfig import format_model_config, model_config_pb2, read_model_config
from toolkit.limits import model_filename_problem, resolves_inside

ONNX_PLATFORMS = {"onnxruntime_onnx"}
ONNX_BACKENDS = {"onnxruntime"}
TORCH_PLATFORMS = {"pytorch_libtorch"}
TORCH_BACKENDS = {"pytorch"}

# Config parameters the generated model.py reads; names match Triton's onnxruntime backend
# where one exists, so a package's own thread settings keep working.
PARAM_MODEL_FILENAME = "berth_model_filename"
PARAM_SOURCE_PLATFORM = "berth_source_platform"

_KIND = model_config_pb2.ModelInstanceGroup.Kind

_RUNTIME_COMMON = '''
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
@RUNTIME_IMPORT@


def _param(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


def _to_output(array, dtype):
    array = np.asarray(array)
    if dtype == np.object_:
        return np.array(
            [v.encode() if isinstance(v, str) else v for v in array.ravel()], dtype=np.object_
        ).reshape(array.shape)
    return array.astype(dtype, copy=False)


class _Unbatchable(Exception):
    pass


class _BatchingModel:
    """Runs requests one by one, or concatenated along the batch axis when they can be."""

    def _setup(self, args):
        self.config = json.loads(args["model_config"])
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.input_names = [i["name"] for i in self.config.get("input", [])]
        self.output_names = [o["name"] for o in self.config.get("output", [])]
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
            for o in self.config.get("output", [])
        }
        filename = _param(self.config, "@FILENAME_PARAM@", "@DEFAULT_FILENAME@")
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

    def _feeds(self, request):
        feeds = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                feeds[name] = tensor.as_numpy()
        return feeds

    def _respond(self, request, outputs):
        requested = None
        if hasattr(request, "requested_output_names"):
            requested = set(request.requested_output_names()) or None
        tensors = [
            pb_utils.Tensor(name, _to_output(outputs[name], self.output_dtypes[name]))
            for name in self.output_names
            if requested is None or name in requested
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, exc):
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
        )

    def _execute_one(self, request):
        try:
            return self._respond(request, self._run(self._feeds(request)))
        except Exception as exc:
            return self._error(exc)

    def _execute_batched(self, requests):
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
            f[name].shape[0] != size for f, size in zip(per_request, sizes) for name in names
        ):
            raise _Unbatchable()
        merged = {n: np.concatenate([f[n] for f in per_request], axis=0) for n in names}
        outputs = self._run(merged)
        offsets = np.cumsum(sizes)[:-1]
        split = {n: np.split(np.asarray(v), offsets, axis=0) for n, v in outputs.items()}
        return [
            self._respond(request, {n: parts[i] for n, parts in split.items()})
            for i, request in enumerate(requests)
        ]

    def execute(self, requests):
        if self.max_batch_size > 0 and len(requests) > 1:
            try:
                return self._execute_batched(requests)
            except Exception:
                # One bad request must not fail the others: answer each on its own.
                pass
        return [self._execute_one(r) for r in requests]
'''


def _runtime_common(default_filename: str, runtime_import: str) -> str:
    return (
        _RUNTIME_COMMON.replace("@FILENAME_PARAM@", PARAM_MODEL_FILENAME)
        .replace("@DEFAULT_FILENAME@", default_filename)
        .replace("@RUNTIME_IMPORT@", runtime_import)
    )


ONNX_MODEL_PY = (
    '"""Runs an ONNX model with onnxruntime in Triton\'s Python backend (Berth data plane)."""\n'
    + _runtime_common("model.onnx", "import onnxruntime as ort")
    + """

_ORT_TYPES = {
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


class TritonPythonModel(_BatchingModel):
    def initialize(self, args):
        self._setup(args)
        options = ort.SessionOptions()
        intra = _param(self.config, "intra_op_thread_count")
        inter = _param(self.config, "inter_op_thread_count")
        if intra is not None:
            options.intra_op_num_threads = int(intra)
        if inter is not None:
            options.inter_op_num_threads = int(inter)
        providers = ["CPUExecutionProvider"]
        if self.on_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device_id}))
        self.session = ort.InferenceSession(
            self.model_path, sess_options=options, providers=providers
        )
        self.session_inputs = {
            i.name: _ORT_TYPES.get(i.type) for i in self.session.get_inputs()
        }
        session_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.output_names if n not in session_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"outputs {missing} of config.pbtxt are not outputs of {self.model_path}"
            )
        unknown = [n for n in self.input_names if n not in self.session_inputs]
        if unknown:
            raise pb_utils.TritonModelException(
                f"inputs {unknown} of config.pbtxt are not inputs of {self.model_path}"
            )

    def _run(self, feeds):
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
        return dict(zip(self.output_names, results))

    def finalize(self):
        self.session = None
"""
)

TORCH_MODEL_PY = (
    '"""Runs a TorchScript model in Triton\'s Python backend (Berth data plane)."""\n'
    + _runtime_common("model.pt", "import torch")
    + """

class TritonPythonModel(_BatchingModel):
    def initialize(self, args):
        self._setup(args)
        self.device = torch.device(
            f"cuda:{self.device_id}" if self.on_gpu and torch.cuda.is_available() else "cpu"
        )
        self.module = torch.jit.load(self.model_path, map_location=self.device)
        self.module.eval()

    def _run(self, feeds):
        # Triton's libtorch backend passes inputs in config order and maps outputs by position.
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
                   for n in self.input_names if n in feeds]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = (result,)
        return {
            name: value.detach().cpu().numpy()
            for name, value in zip(self.output_names, result)
        }
"""
)


def _is_onnx(config: model_config_pb2.ModelConfig) -> bool:
    return config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS


def _is_torch(config: model_config_pb2.ModelConfig) -> bool:
    return config.platform in TORCH_PLATFORMS or config.backend in TORCH_BACKENDS


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def model_folders(src: Path) -> list[Path]:
    """The model folders of a repository: top-level folders holding a config.pbtxt."""
    return sorted(p for p in src.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file())


def _version_folders(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _set_instance_kinds(
    config: model_config_pb2.ModelConfig, *, gpu: bool, converted: bool
) -> None:
    """Place instances where this Triton can run them.

    Without a GPU every instance runs on the CPU. With one, converted models whose groups were
    not pinned to the CPU run on the GPU, as their native backend would have placed them.
    """
    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        if not gpu:
            if group.kind != _KIND.KIND_MODEL:
                group.kind = _KIND.KIND_CPU
                del group.gpus[:]
        elif converted and group.kind in (_KIND.KIND_AUTO, _KIND.KIND_GPU):
            group.kind = _KIND.KIND_GPU


def _onnx_io_from_model(config: model_config_pb2.ModelConfig, model_file: Path) -> None:
    """Fill inputs/outputs from the ONNX graph when config.pbtxt leaves them to auto-complete."""
    import onnx
    from onnx import TensorProto

    onnx_to_triton = {
        TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
        TensorProto.FLOAT16: model_config_pb2.TYPE_FP16,
        TensorProto.DOUBLE: model_config_pb2.TYPE_FP64,
        TensorProto.INT8: model_config_pb2.TYPE_INT8,
        TensorProto.INT16: model_config_pb2.TYPE_INT16,
        TensorProto.INT32: model_config_pb2.TYPE_INT32,
        TensorProto.INT64: model_config_pb2.TYPE_INT64,
        TensorProto.UINT8: model_config_pb2.TYPE_UINT8,
        TensorProto.UINT16: model_config_pb2.TYPE_UINT16,
        TensorProto.UINT32: model_config_pb2.TYPE_UINT32,
        TensorProto.UINT64: model_config_pb2.TYPE_UINT64,
        TensorProto.BOOL: model_config_pb2.TYPE_BOOL,
        TensorProto.STRING: model_config_pb2.TYPE_STRING,
    }
    model = onnx.load(str(model_file), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    batched = config.max_batch_size > 0

    def fill(target, values) -> None:
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            if batched and dims:
                dims = dims[1:]
            entry = target.add(name=value.name, dims=dims)
            entry.data_type = onnx_to_triton.get(tensor.elem_type, model_config_pb2.TYPE_INVALID)

    if not config.input:
        fill(config.input, model.graph.input)
    if not config.output:
        fill(config.output, model.graph.output)


def _convert(
    config: model_config_pb2.ModelConfig,
    model_dir: Path,
    *,
    runtime_source: str,
    default_filename: str,
) -> None:
    """Turn `config` into a Python-backend config and write model.py into each version."""
    filename = config.default_model_filename or default_filename
    # Validation refuses these already; the data plane also serves packages that reached a
    # store some other way, so the file the generated model.py opens is checked again.
    problem = model_filename_problem(filename)
    if problem:
        raise ValueError(f"{model_dir.name}/config.pbtxt: {problem}")
    for version in _version_folders(model_dir):
        if not resolves_inside(version / filename, version):
            raise ValueError(
                f"{model_dir.name}/{version.name}/{filename} resolves outside its version folder."
            )
    if not config.input or not config.output:
        for version in _version_folders(model_dir):
            candidate = version / filename
            if candidate.exists() and _is_onnx(config):
                _onnx_io_from_model(config, candidate)
                break
    config.parameters[PARAM_SOURCE_PLATFORM].string_value = config.platform or config.backend
    config.parameters[PARAM_MODEL_FILENAME].string_value = filename
    config.platform = ""
    config.backend = "python"
    # For the Python backend default_model_filename names the .py file: ours is model.py.
    config.default_model_filename = ""
    # Accelerator settings belong to the native backend; the Python backend rejects none of
    # them but honours none either, so they are dropped to keep the config truthful.
    if config.HasField("optimization"):
        config.optimization.ClearField("execution_accelerators")
    for version in _version_folders(model_dir):
        (version / "model.py").write_text(runtime_source)


def _prepare_model(
    src_dir: Path,
    staging: Path,
    *,
    served_name: str,
    names: dict[str, str],
    gpu: bool,
) -> None:
    config = read_model_config(src_dir / "config.pbtxt")
    target = staging / served_name
    shutil.copytree(src_dir, target, symlinks=False)
    config.name = served_name
    converted = False
    if _is_onnx(config):
        _convert(config, target, runtime_source=ONNX_MODEL_PY, default_filename="model.onnx")
        converted = True
    elif _is_torch(config) and _torch_available():
        _convert(config, target, runtime_source=TORCH_MODEL_PY, default_filename="model.pt")
        converted = True
    if config.platform == "ensemble":
        for step in config.ensemble_scheduling.step:
            step.model_name = names.get(step.model_name, step.model_name)
    else:
        _set_instance_kinds(config, gpu=gpu, converted=converted)
    (target / "config.pbtxt").write_text(format_model_config(config))


def prepare_repository(
    src: Path, dest: Path, *, prefix: str = "", gpu: bool = False
) -> dict[str, str]:
    """Copy the models of repository `src` into the serving repository `dest`.

    Returns {original model name: served model name}. Model folders already in `dest` under a
    served name are replaced; other folders in `dest` are left alone, so several packages can
    be prepared into one repository. `src` is never modified.
    """
    src = Path(src)
    dest = Path(dest)
    folders = model_folders(src)
    names = {folder.name: f"{prefix}{folder.name}" for folder in folders}
    dest.mkdir(parents=True, exist_ok=True)
    # Build next to the destination, then move each model folder in with a rename, so
    # Triton never sees a half-written model folder.
    with tempfile.TemporaryDirectory(prefix=".berth-prepare-", dir=dest) as tmp:
        staging = Path(tmp)
        for folder in folders:
            _prepare_model(folder, staging, served_name=names[folder.name], names=names, gpu=gpu)
        for served in names.values():
            final = dest / served
            if final.exists():
                retired = staging / f".retired-{served}"
                os.rename(final, retired)
            os.rename(staging / served, final)
    return names
