"""What validation knows of a repository: the files each platform needs, a model's parsed
config and files (`ModelInfo`), the report it returns, and small helpers the checks share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.limits import (
    model_filename_problem,
    resolves_inside,
)

from .problems import Problem

CONFIG_FILE = "config.pbtxt"
BERTH_FILE = "berth.yaml"
BERTH_KEYS = {"model", "tests", "description"}

# platform -> the backend that serves it.
PLATFORM_BACKEND = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "tensorrt_plan": "tensorrt",
    "ensemble": "",
}
# The file (or folder) Triton looks for in a version folder, unless default_model_filename
# says otherwise. TensorFlow's default depends on the platform.
DEFAULT_MODEL_FILE = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "python": "model.py",
    "openvino": "model.xml",
    "dali": "model.dali",
}
MUST_BE_FOLDER = {"model.savedmodel"}
ENV_PATH_KEY = "EXECUTION_ENV_PATH"
MODEL_DIR_VAR = "$$TRITON_MODEL_DIRECTORY"
IGNORED_TOP_LEVEL = {"__MACOSX"}


@dataclass
class ModelInfo:
    """What validation learnt about one model folder."""

    name: str
    folder: Path
    config_file: str
    config_text: str = ""
    config: Any = None
    platform: str = ""
    backend: str = ""
    versions: list[int] = field(default_factory=list)
    max_batch_size: int = 0
    # name -> {"datatype", "dims", "optional"}; None when unknown (config declares none and
    # the model file cannot tell).
    inputs: dict[str, dict] | None = None
    outputs: dict[str, dict] | None = None
    steps: list[dict] = field(default_factory=list)

    @property
    def is_ensemble(self) -> bool:
        return self.platform == "ensemble"

    @property
    def kind(self) -> str:
        return self.platform or self.backend

    def as_summary(self) -> dict:
        def tensors(spec: dict[str, dict] | None) -> list[dict]:
            return [{"name": name, **value} for name, value in (spec or {}).items()]

        return {
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "versions": self.versions,
            "max_batch_size": self.max_batch_size,
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }


@dataclass
class ValidationReport:
    root: Path | None
    problems: list[Problem]
    summary: dict
    test_cases: list[dict]

    @property
    def ok(self) -> bool:
        return not self.problems


def rel_path(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def line_containing(text: str, *needles: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if all(needle in line for needle in needles):
            return number
    return None


def sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def datatype_name(value: int) -> str:
    from toolkit.modelconfig import model_config_pb2

    name = model_config_pb2.DataType.Name(value)
    name = name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def completes_its_own_config(info: ModelInfo) -> bool:
    """Whether the model's newest model.py defines auto_complete_config (Triton's hook)."""
    filename = info.config.default_model_filename or DEFAULT_MODEL_FILE["python"]
    if model_filename_problem(filename):
        return False
    for number in reversed(info.versions):
        path = info.folder / str(number) / filename
        if not resolves_inside(path, info.folder):
            continue
        try:
            source = path.read_text(errors="replace")
        except OSError:
            continue
        return "def auto_complete_config" in source
    return False


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / CONFIG_FILE).is_file()


def find_repository_root(extracted: Path) -> Path | None:
    """The folder holding the model folders: the archive's top level, or its single top
    folder when the archive wraps the repository in one."""
    if any(is_model_folder(child) for child in extracted.iterdir()):
        return extracted
    children = [
        child
        for child in extracted.iterdir()
        if child.name not in IGNORED_TOP_LEVEL and not child.name.startswith(".")
    ]
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        inner = children[0]
        if any(is_model_folder(child) for child in inner.iterdir()):
            return inner
    return None


def count_files(root: Path) -> tuple[int, int]:
    count = total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                count += 1
                total += path.stat().st_size
    return count, total


def onnx_io(path: Path) -> tuple[dict[str, dict], dict[str, dict]] | None:
    """Inputs and outputs read from an ONNX file, for configs that leave them to Triton's
    auto-complete."""
    try:
        import onnx
    except ImportError:  # pragma: no cover
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return None
    initializers = {init.name for init in graph.initializer}

    def tensors(values) -> dict[str, dict]:
        out = {}
        for value in values:
            if value.name in initializers:
                continue
            elem = value.type.tensor_type.elem_type
            datatype = onnx.TensorProto.DataType.Name(elem) if elem else "UNDEFINED"
            datatype = {
                "FLOAT": "FP32",
                "DOUBLE": "FP64",
                "FLOAT16": "FP16",
                "STRING": "BYTES",
            }.get(datatype, datatype)
            dims = [
                d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim
            ]
            out[value.name] = {"datatype": datatype, "dims": dims, "optional": False}
        return out

    return tensors(graph.input), tensors(graph.output)
