"""Example Triton model repositories: the demo ensemble, and small models for tests and benchmarks.

The demo is the shape most packages take: an ensemble (`demo_ensemble`) that runs a Python
preprocessing step (`demo_preprocess`: standardize the four raw measurements) and an ONNX
classifier (`demo_classifier`: Gemm + Softmax), with `berth.yaml` holding test cases whose
expected outputs come from the same math done here in numpy.

`name_prefix` gives distinct model names (`<prefix>_ensemble`, ...), so many packages can be
written for multi-model tests and benchmarks without two of them sharing a Triton model name.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

# Iris-like feature statistics: the preprocessing step standardizes with these.
DEMO_MEAN = np.array([5.84, 3.05, 3.76, 1.20], dtype=np.float32)
DEMO_STD = np.array([0.83, 0.43, 1.76, 0.76], dtype=np.float32)
# Classifier weights (features x classes) and bias: fixed, so expectations never drift.
DEMO_WEIGHTS = np.array(
    [
        [-1.0, 0.2, 0.8],
        [1.2, -0.6, -0.4],
        [-2.0, 0.3, 1.7],
        [-1.8, 0.1, 1.9],
    ],
    dtype=np.float32,
)
DEMO_BIAS = np.array([0.5, 0.8, -0.3], dtype=np.float32)
DEMO_MAX_BATCH_SIZE = 8

# The demo's own tolerances, written into its berth.yaml: onnxruntime and numpy agree far
# closer than this. (The comparison's defaults, for cases that set none, are in
# toolkit.comparison.)
DEMO_ATOL = 1e-4
DEMO_RTOL = 1e-3

# Opset 13 / IR 7 load in every onnxruntime that Triton images of the last years ship.
ONNX_OPSET = 13
ONNX_IR_VERSION = 7

_DEMO_INPUTS: list[tuple[str, list[list[float]]]] = [
    ("setosa-like", [[5.1, 3.5, 1.4, 0.2]]),
    ("versicolor-like", [[6.0, 2.7, 4.2, 1.3]]),
    ("batch-of-two", [[6.9, 3.1, 5.8, 2.1], [5.0, 3.4, 1.5, 0.2]]),
]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, as ONNX `Softmax(axis=1)` computes it."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def classify(
    features: np.ndarray, weights: np.ndarray = DEMO_WEIGHTS, bias: np.ndarray = DEMO_BIAS
) -> np.ndarray:
    """What the classifier's ONNX graph computes: softmax(features @ weights + bias)."""
    return softmax(features.astype(np.float32) @ weights + bias)


def demo_expected(raw: np.ndarray) -> np.ndarray:
    """What `demo_ensemble` answers for `raw` (shape [batch, 4])."""
    features = (raw.astype(np.float32) - DEMO_MEAN) / DEMO_STD
    return classify(features)


def classifier_onnx_bytes(
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    input_name: str = "FEATURES",
    output_name: str = "PROBABILITIES",
) -> bytes:
    """An ONNX model computing softmax(x @ weights + bias) with a dynamic batch dimension."""
    n_in, n_out = weights.shape
    gemm = helper.make_node("Gemm", [input_name, "W", "B"], ["logits"])
    soft = helper.make_node("Softmax", ["logits"], [output_name], axis=1)
    graph = helper.make_graph(
        [gemm, soft],
        "classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_out])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="berth",
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def _tensor_case(
    name: str,
    input_name: str,
    raw: np.ndarray,
    output_name: str,
    expected: np.ndarray,
) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": {
            input_name: {
                "datatype": "FP32",
                "shape": list(raw.shape),
                "data": [round(float(v), 6) for v in raw.ravel()],
            }
        },
        "expected": {
            output_name: {
                "data": [round(float(v), 6) for v in expected.ravel()],
                "atol": DEMO_ATOL,
                "rtol": DEMO_RTOL,
            }
        },
    }


def write_berth_yaml(dest: Path, model: str, tests: list[dict[str, Any]]) -> Path:
    """Write `berth.yaml` (entry model and test cases) at the repository root."""
    path = dest / "berth.yaml"
    document = {"model": model, "tests": tests}
    path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None))
    return path


def demo_test_cases() -> list[dict[str, Any]]:
    """The demo ensemble's test cases, expected values computed with numpy."""
    cases = []
    for name, rows in _DEMO_INPUTS:
        raw = np.array(rows, dtype=np.float32)
        cases.append(_tensor_case(name, "RAW", raw, "PROBABILITIES", demo_expected(raw)))
    return cases


def _write_python_preprocess(dest: Path, name: str) -> None:
    mean = ", ".join(repr(float(v)) for v in DEMO_MEAN)
    std = ", ".join(repr(float(v)) for v in DEMO_STD)
    _write(
        dest / name / "config.pbtxt",
        f"""
        name: "{name}"
        backend: "python"
        max_batch_size: {DEMO_MAX_BATCH_SIZE}
        input [
          {{ name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] }}
        ]
        output [
          {{ name: "FEATURES" data_type: TYPE_FP32 dims: [ 4 ] }}
        ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """,
    )
    _write(
        dest / name / "1" / "model.py",
        f'''
        """Standardizes the four raw measurements with fixed statistics."""

        import numpy as np
        import triton_python_backend_utils as pb_utils

        MEAN = np.array([{mean}], dtype=np.float32)
        STD = np.array([{std}], dtype=np.float32)


        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy()
                    features = ((raw.astype(np.float32) - MEAN) / STD).astype(np.float32)
                    responses.append(
                        pb_utils.InferenceResponse([pb_utils.Tensor("FEATURES", features)])
                    )
                return responses
        ''',
    )


def _write_onnx_classifier(
    dest: Path,
    name: str,
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    input_name: str = "FEATURES",
    output_name: str = "PROBABILITIES",
    max_batch_size: int = DEMO_MAX_BATCH_SIZE,
) -> None:
    n_in, n_out = weights.shape
    # The instance kind is left to Triton (KIND_AUTO): the GPU where there is one.
    _write(
        dest / name / "config.pbtxt",
        f"""
        name: "{name}"
        platform: "onnxruntime_onnx"
        max_batch_size: {max_batch_size}
        input [
          {{ name: "{input_name}" data_type: TYPE_FP32 dims: [ {n_in} ] }}
        ]
        output [
          {{ name: "{output_name}" data_type: TYPE_FP32 dims: [ {n_out} ] }}
        ]
        instance_group [ {{ count: 1 }} ]
        """,
    )
    model_path = dest / name / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(
        classifier_onnx_bytes(weights, bias, input_name=input_name, output_name=output_name)
    )


def write_demo_repository(dest: Path, *, name_prefix: str = "demo") -> Path:
    """Write the demo ensemble repository (three model folders + berth.yaml) into `dest`.

    Models are `<prefix>_ensemble`, `<prefix>_preprocess` and `<prefix>_classifier`; with the
    default prefix these are `demo_ensemble`, `demo_preprocess`, `demo_classifier`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    ensemble = f"{name_prefix}_ensemble"
    preprocess = f"{name_prefix}_preprocess"
    classifier = f"{name_prefix}_classifier"
    _write_python_preprocess(dest, preprocess)
    _write_onnx_classifier(dest, classifier, DEMO_WEIGHTS, DEMO_BIAS)
    _write(
        dest / ensemble / "config.pbtxt",
        f"""
        name: "{ensemble}"
        platform: "ensemble"
        max_batch_size: {DEMO_MAX_BATCH_SIZE}
        input [
          {{ name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] }}
        ]
        output [
          {{ name: "PROBABILITIES" data_type: TYPE_FP32 dims: [ 3 ] }}
        ]
        ensemble_scheduling {{
          step [
            {{
              model_name: "{preprocess}"
              model_version: -1
              input_map {{ key: "RAW" value: "RAW" }}
              output_map {{ key: "FEATURES" value: "standardized" }}
            }},
            {{
              model_name: "{classifier}"
              model_version: -1
              input_map {{ key: "FEATURES" value: "standardized" }}
              output_map {{ key: "PROBABILITIES" value: "PROBABILITIES" }}
            }}
          ]
        }}
        """,
    )
    # Triton needs a (here empty) version folder for an ensemble too.
    (dest / ensemble / "1").mkdir(parents=True, exist_ok=True)
    write_berth_yaml(dest, ensemble, demo_test_cases())
    return dest


def onnx_model_parameters(
    seed: int, num_features: int = 4, num_classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the seeded classifier that `write_onnx_model_repository` writes."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(num_features, num_classes)).astype(np.float32)
    bias = rng.normal(size=(num_classes,)).astype(np.float32)
    return weights, bias


def write_onnx_model_repository(
    dest: Path,
    name: str,
    *,
    seed: int = 0,
    num_features: int = 4,
    num_classes: int = 3,
    max_batch_size: int = DEMO_MAX_BATCH_SIZE,
) -> Path:
    """Write a one-model repository: an ONNX classifier `name` (INPUT -> PROBABILITIES).

    The weights come from `seed`, so distinct seeds give distinct models with their own
    expected outputs in berth.yaml.
    """
    dest.mkdir(parents=True, exist_ok=True)
    weights, bias = onnx_model_parameters(seed, num_features, num_classes)
    _write_onnx_classifier(
        dest, name, weights, bias, input_name="INPUT", max_batch_size=max_batch_size
    )
    rng = np.random.default_rng(seed + 1)
    cases = []
    for i, batch in enumerate((1, 2)):
        x = rng.normal(size=(batch, num_features)).astype(np.float32).round(4)
        cases.append(
            _tensor_case(f"case-{i + 1}", "INPUT", x, "PROBABILITIES", classify(x, weights, bias))
        )
    write_berth_yaml(dest, name, cases)
    return dest


def write_python_model_repository(
    dest: Path,
    name: str,
    *,
    scale: float = 2.0,
    ballast_bytes: int = 0,
    max_batch_size: int = DEMO_MAX_BATCH_SIZE,
) -> Path:
    """Write a one-model repository: a Python model `name` answering OUTPUT = INPUT * scale.

    `ballast_bytes` makes each instance hold that much resident memory once loaded, which
    lets memory-budget tests see a model's footprint clearly.
    """
    dest.mkdir(parents=True, exist_ok=True)
    _write(
        dest / name / "config.pbtxt",
        f"""
        name: "{name}"
        backend: "python"
        max_batch_size: {max_batch_size}
        input [
          {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }}
        ]
        output [
          {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }}
        ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """,
    )
    _write(
        dest / name / "1" / "model.py",
        f'''
        """Scales its input by a constant."""

        import numpy as np
        import triton_python_backend_utils as pb_utils

        SCALE = np.float32({float(scale)!r})
        BALLAST_BYTES = {int(ballast_bytes)}


        class TritonPythonModel:
            def initialize(self, args):
                # Touch every page so the memory is resident, not just reserved.
                self.ballast = np.ones(BALLAST_BYTES, dtype=np.uint8) if BALLAST_BYTES else None

            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                    y = (x.astype(np.float32) * SCALE).astype(np.float32)
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
                return responses
        ''',
    )
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    write_berth_yaml(
        dest,
        name,
        [_tensor_case("scale", "INPUT", x, "OUTPUT", (x * np.float32(scale)).astype(np.float32))],
    )
    return dest


def write_failing_model_repository(
    dest: Path, name: str, *, message: str = "weights file is corrupt"
) -> Path:
    """Write a one-model repository whose Python model raises `message` while loading."""
    dest.mkdir(parents=True, exist_ok=True)
    _write(
        dest / name / "config.pbtxt",
        f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """,
    )
    _write(
        dest / name / "1" / "model.py",
        f"""
        class TritonPythonModel:
            def initialize(self, args):
                raise RuntimeError({message!r})

            def execute(self, requests):
                return []
        """,
    )
    return dest


def write_python_step_model(
    root: Path, name: str, execute_body: str, *, parameters: str = ""
) -> None:
    """A Python model `name`: INPUT (FP32 [4]) -> OUTPUT (FP32 [4]); `execute_body` computes
    `y` from `x` (the input as numpy) with `self` (and `self.parameters`, the config's
    `parameters`) at hand; json, os, signal, numpy and pb_utils are imported for it."""
    _write(
        root / name / "config.pbtxt",
        f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        {parameters}
        """,
    )
    body = textwrap.indent(textwrap.dedent(execute_body).strip(), " " * 12)
    source = textwrap.dedent(
        """
        import json
        import os
        import signal

        import numpy as np
        import triton_python_backend_utils as pb_utils


        class TritonPythonModel:
            def initialize(self, args):
                config = json.loads(args["model_config"])
                self.parameters = {
                    key: value["string_value"]
                    for key, value in config.get("parameters", {}).items()
                }

            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
        BODY
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
                return responses
        """
    ).lstrip()
    _write(root / name / "1" / "model.py", source.replace("BODY\n", body + "\n"))


def write_one_step_ensemble(root: Path, name: str, step: str) -> None:
    """An ensemble `name` over the one step `step`, INPUT -> OUTPUT (FP32 [4]) passed through."""
    _write(
        root / name / "config.pbtxt",
        f"""
        name: "{name}"
        platform: "ensemble"
        max_batch_size: 8
        input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        ensemble_scheduling {{
          step [
            {{
              model_name: "{step}"
              model_version: -1
              input_map {{ key: "INPUT" value: "INPUT" }}
              output_map {{ key: "OUTPUT" value: "OUTPUT" }}
            }}
          ]
        }}
        """,
    )
    (root / name / "1").mkdir(parents=True, exist_ok=True)


def _reset_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Fixed owner and time: the same repository always gives the same archive bytes.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack_repository(src: Path, dest_file: Path) -> Path:
    """Archive the contents of `src` (model folders at the top level) as .tar.gz/.tgz/.tar/.zip.

    The archive is reproducible: sorted members, fixed owners, modes and times.
    """
    name = dest_file.name.lower()
    entries = sorted(p for p in src.rglob("*") if not p.is_symlink())
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".zip"):
        with zipfile.ZipFile(dest_file, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in entries:
                arcname = path.relative_to(src).as_posix()
                if path.is_dir():
                    info = zipfile.ZipInfo(arcname + "/", date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = (0o40755 << 16) | 0x10
                    zf.writestr(info, b"")
                else:
                    info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o100644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
        return dest_file
    if name.endswith((".tar.gz", ".tgz")):
        mode = "w:gz"
    elif name.endswith(".tar"):
        mode = "w"
    else:
        raise ValueError(f"unsupported archive suffix: {dest_file.name}")
    # gzip writes the time into its header; mtime=0 keeps the bytes stable.
    with open(dest_file, "wb") as raw:
        if mode == "w:gz":
            with (
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
            ):
                _add_entries(tf, src, entries)
        else:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
                _add_entries(tf, src, entries)
    return dest_file


def _add_entries(tf: tarfile.TarFile, src: Path, entries: list[Path]) -> None:
    for path in entries:
        info = _reset_tarinfo(tf.gettarinfo(str(path), path.relative_to(src).as_posix()))
        if path.is_dir():
            tf.addfile(info)
        else:
            with open(path, "rb") as fh:
                tf.addfile(info, io.BufferedReader(fh))


def build_demo_archive(dest_file: Path, *, name_prefix: str = "demo") -> Path:
    """Write the demo repository packed as `dest_file` (.tar.gz, .tgz, .tar or .zip)."""
    with tempfile.TemporaryDirectory(prefix="berth-demo-") as tmp:
        repo = write_demo_repository(Path(tmp) / "repo", name_prefix=name_prefix)
        return pack_repository(repo, dest_file)
