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

`install_package` prepares a package the way SageMaker's Triton serves it instead: its models
under their own names in a folder of its own, which Triton registers as a repository of its
own and loads through its SageMaker frontend (`toolkit.triton.packages`).

The converted models' `model.py` is a copy of `toolkit/shim_models/runtime_model.py`, a real
module; what it runs (runtime, model file) is written into the config's parameters.

The source repository is never modified: the package sent to SageMaker stays as uploaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from toolkit.files import link_or_copy
from toolkit.limits import model_filename_problem, resolves_inside
from toolkit.modelconfig import format_model_config, model_config_pb2, read_model_config
from toolkit.repository import CONFIG_FILE, entry_model, model_folders, version_folders
from toolkit.shim_models import RUNTIME_MODEL

ONNX_PLATFORMS = {"onnxruntime_onnx"}
ONNX_BACKENDS = {"onnxruntime"}
TORCH_PLATFORMS = {"pytorch_libtorch"}
TORCH_BACKENDS = {"pytorch"}

# Config parameters the runtime model reads (see toolkit/shim_models/runtime_model.py), and
# the platform the package declared, kept for whoever reads the served config.
PARAM_RUNTIME = "berth_runtime"
PARAM_MODEL_FILENAME = "berth_model_filename"
PARAM_SOURCE_PLATFORM = "berth_source_platform"

_KIND = model_config_pb2.ModelInstanceGroup.Kind


def _is_onnx(config: model_config_pb2.ModelConfig) -> bool:
    return config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS


def _is_torch(config: model_config_pb2.ModelConfig) -> bool:
    return config.platform in TORCH_PLATFORMS or config.backend in TORCH_BACKENDS


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


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
    runtime: str,
    default_filename: str,
) -> None:
    """Turn `config` into a Python-backend config that runs its model file with `runtime`,
    and copy the runtime model in as each version's model.py."""
    filename = config.default_model_filename or default_filename
    # Validation refuses these already; the data plane also serves packages that reached a
    # store some other way, so the file the generated model.py opens is checked again.
    problem = model_filename_problem(filename)
    if problem:
        raise ValueError(f"{model_dir.name}/config.pbtxt: {problem}")
    for version in version_folders(model_dir):
        if not resolves_inside(version / filename, version):
            raise ValueError(
                f"{model_dir.name}/{version.name}/{filename} resolves outside its version folder."
            )
    if not config.input or not config.output:
        for version in version_folders(model_dir):
            candidate = version / filename
            if candidate.exists() and _is_onnx(config):
                _onnx_io_from_model(config, candidate)
                break
    config.parameters[PARAM_SOURCE_PLATFORM].string_value = config.platform or config.backend
    config.parameters[PARAM_RUNTIME].string_value = runtime
    config.parameters[PARAM_MODEL_FILENAME].string_value = filename
    config.platform = ""
    config.backend = "python"
    # For the Python backend default_model_filename names the .py file: ours is model.py.
    config.default_model_filename = ""
    # Accelerator settings belong to the native backend; the Python backend rejects none of
    # them but honours none either, so they are dropped to keep the config truthful.
    if config.HasField("optimization"):
        config.optimization.ClearField("execution_accelerators")
    for version in version_folders(model_dir):
        (version / "model.py").unlink(missing_ok=True)  # never through a link to the source
        shutil.copyfile(RUNTIME_MODEL, version / "model.py")


def _link_into_serving(src: str, dst: str) -> None:
    """Files reach a serving folder linked, not written again (`toolkit.files`); the files
    this module rewrites (config.pbtxt, a shimmed model.py) are unlinked first and written
    anew, so the source never changes, and Triton only reads the folder (the sandbox mounts
    it read-only)."""
    link_or_copy(Path(src), Path(dst))


def _write_new(path: Path, text: str) -> None:
    """Write `path` as a file of its own, never through a hard link to the source's."""
    path.unlink(missing_ok=True)
    path.write_text(text)


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
    shutil.copytree(src_dir, target, symlinks=False, copy_function=_link_into_serving)
    config.name = served_name
    converted = False
    if _is_onnx(config):
        _convert(config, target, runtime="onnxruntime", default_filename="model.onnx")
        converted = True
    elif _is_torch(config) and _torch_available():
        _convert(config, target, runtime="torch", default_filename="model.pt")
        converted = True
    if config.platform == "ensemble":
        for step in config.ensemble_scheduling.step:
            step.model_name = names.get(step.model_name, step.model_name)
    else:
        _set_instance_kinds(config, gpu=gpu, converted=converted)
    _write_new(target / "config.pbtxt", format_model_config(config))


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


def install_package(source: Path, folder: Path, *, gpu: bool) -> str:
    """Prepare the package repository `source` as `folder`, a package folder to load with
    `TritonServer.load_package`: its models shimmed as `prepare_repository` does, under
    their own names, and nothing else (SageMaker's Triton counts every folder in it).

    Returns the model SageMaker's Triton maps the load name to (the package's ensemble, or
    its lone model: `toolkit.repository.entry_model`); raises `EntryModelError` when there
    is none, `ConfigError` or `ValueError` for a model it cannot prepare. A `folder` already
    there is replaced whole; `source` is never modified.
    """
    source = Path(source)
    folder = Path(folder)
    configs = {p.name: read_model_config(p / CONFIG_FILE) for p in model_folders(source)}
    entry = entry_model(configs)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed in: Triton never sees half a package.
    staging = Path(tempfile.mkdtemp(prefix=f".installing-{folder.name}-", dir=folder.parent))
    try:
        prepare_repository(source, staging, gpu=gpu)
        # mkdtemp made it 0700; a sandboxed Triton runs as another uid and must read it.
        os.chmod(staging, 0o755)
        if folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".retired-{folder.name}-", dir=folder.parent))
            os.rename(folder, retired / folder.name)
            shutil.rmtree(retired, ignore_errors=True)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry
