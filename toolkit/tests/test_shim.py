"""prepare_repository: what the serving copy of a package looks like (no Triton needed)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from toolkit.examples import write_demo_repository, write_onnx_model_repository
from toolkit.modelconfig import read_model_config
from toolkit.repository import EntryModelError, model_folders
from toolkit.shim import PARAM_MODEL_FILENAME, PARAM_RUNTIME, install_package, prepare_repository
from toolkit.shim_models import RUNTIME_MODEL

KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU
KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def test_source_is_never_modified(demo_repository: Path, tmp_path: Path) -> None:
    before = _tree_digest(demo_repository)
    prepare_repository(demo_repository, tmp_path / "serving", prefix="x-", gpu=True)
    assert _tree_digest(demo_repository) == before


def test_files_are_linked_not_written_again_and_rewrites_leave_the_source_alone(
    demo_repository: Path, tmp_path: Path
) -> None:
    # A stray model.py beside the ONNX file: the shim writes its own there.
    stray = demo_repository / "demo_classifier" / "1" / "model.py"
    stray.write_text("# the package's own file\n")
    config_before = (demo_repository / "demo_classifier" / "config.pbtxt").read_bytes()
    prepare_repository(demo_repository, tmp_path / "serving")
    served = tmp_path / "serving" / "demo_classifier"
    weights = demo_repository / "demo_classifier" / "1" / "model.onnx"
    assert (served / "1" / "model.onnx").stat().st_ino == weights.stat().st_ino
    assert stray.read_text() == "# the package's own file\n"
    assert (served / "1" / "model.py").read_bytes() == RUNTIME_MODEL.read_bytes()
    assert (demo_repository / "demo_classifier" / "config.pbtxt").read_bytes() == config_before
    assert (served / "config.pbtxt").stat().st_ino != (
        demo_repository / "demo_classifier" / "config.pbtxt"
    ).stat().st_ino


def test_onnx_model_becomes_a_python_model_with_the_same_signature(
    demo_repository: Path, tmp_path: Path
) -> None:
    names = prepare_repository(demo_repository, tmp_path / "serving")
    assert names == {n: n for n in ("demo_classifier", "demo_ensemble", "demo_preprocess")}
    served = tmp_path / "serving" / "demo_classifier"
    original = read_model_config(demo_repository / "demo_classifier" / "config.pbtxt")
    config = read_model_config(served / "config.pbtxt")
    assert config.backend == "python"
    assert config.platform == ""
    assert config.name == "demo_classifier"
    assert config.max_batch_size == original.max_batch_size
    assert list(config.input) == list(original.input)
    assert list(config.output) == list(original.output)
    assert [g.kind for g in config.instance_group] == [KIND_CPU]
    assert config.parameters[PARAM_MODEL_FILENAME].string_value == "model.onnx"
    # The ONNX file stays where it was, next to the runtime that loads it.
    assert (served / "1" / "model.onnx").read_bytes() == (
        demo_repository / "demo_classifier" / "1" / "model.onnx"
    ).read_bytes()
    assert "onnxruntime" in (served / "1" / "model.py").read_text()
    # Python and ensemble models are copied unchanged apart from placement.
    assert (tmp_path / "serving" / "demo_preprocess" / "1" / "model.py").read_text() == (
        demo_repository / "demo_preprocess" / "1" / "model.py"
    ).read_text()
    assert not (tmp_path / "serving" / "berth.yaml").exists()


@pytest.mark.parametrize(("gpu", "kind"), [(False, KIND_CPU), (True, KIND_GPU)])
def test_instance_kind_follows_the_machine(
    gpu: bool, kind: int, demo_repository: Path, tmp_path: Path
) -> None:
    prepare_repository(demo_repository, tmp_path / "serving", gpu=gpu)
    classifier = read_model_config(tmp_path / "serving" / "demo_classifier" / "config.pbtxt")
    assert [g.kind for g in classifier.instance_group] == [kind]
    # A group the package pinned to the CPU stays there, GPU or not.
    preprocess = read_model_config(tmp_path / "serving" / "demo_preprocess" / "config.pbtxt")
    assert [g.kind for g in preprocess.instance_group] == [KIND_CPU]


def test_prefix_renames_folders_configs_and_ensemble_steps(
    demo_repository: Path, tmp_path: Path
) -> None:
    serving = tmp_path / "serving"
    first = prepare_repository(demo_repository, serving, prefix="demo_1--")
    second = prepare_repository(demo_repository, serving, prefix="demo_2--")
    assert first["demo_ensemble"] == "demo_1--demo_ensemble"
    assert second["demo_classifier"] == "demo_2--demo_classifier"
    assert sorted(p.name for p in model_folders(serving)) == sorted(
        [*first.values(), *second.values()]
    )
    for names in (first, second):
        for served in names.values():
            assert read_model_config(serving / served / "config.pbtxt").name == served
        ensemble = read_model_config(serving / names["demo_ensemble"] / "config.pbtxt")
        assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
            names["demo_preprocess"],
            names["demo_classifier"],
        ]
    # No staging leftovers are visible to Triton.
    assert sorted(p.name for p in serving.iterdir()) == sorted([*first.values(), *second.values()])


def test_preparing_again_replaces_the_served_copy(demo_repository: Path, tmp_path: Path) -> None:
    serving = tmp_path / "serving"
    prepare_repository(demo_repository, serving)
    stale = serving / "demo_classifier" / "1" / "stale.txt"
    stale.write_text("left over")
    prepare_repository(demo_repository, serving)
    assert not stale.exists()
    assert (serving / "demo_classifier" / "1" / "model.onnx").exists()


def test_default_model_filename_and_missing_io_are_handled(tmp_path: Path) -> None:
    src = write_onnx_model_repository(tmp_path / "src", "custom", seed=4)
    version = src / "custom" / "1"
    (version / "model.onnx").rename(version / "classifier.onnx")
    # Leave inputs and outputs to be completed from the model, as Triton's ORT backend does.
    (src / "custom" / "config.pbtxt").write_text(
        'name: "custom"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'default_model_filename: "classifier.onnx"\n'
    )
    prepare_repository(src, tmp_path / "serving")
    config = read_model_config(tmp_path / "serving" / "custom" / "config.pbtxt")
    assert config.default_model_filename == ""
    assert config.parameters[PARAM_MODEL_FILENAME].string_value == "classifier.onnx"
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("INPUT", model_config_pb2.TYPE_FP32, [4])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("PROBABILITIES", model_config_pb2.TYPE_FP32, [3])
    ]


def test_non_model_entries_are_not_served(tmp_path: Path) -> None:
    src = write_demo_repository(tmp_path / "src")
    (src / "notes").mkdir()
    (src / "notes" / "README.md").write_text("not a model")
    names = prepare_repository(src, tmp_path / "serving")
    assert "notes" not in names
    assert not (tmp_path / "serving" / "notes").exists()


def test_converted_models_run_a_copy_of_the_runtime_module(
    demo_repository: Path, tmp_path: Path
) -> None:
    prepare_repository(demo_repository, tmp_path / "serving")
    served = tmp_path / "serving" / "demo_classifier"
    assert (served / "1" / "model.py").read_bytes() == RUNTIME_MODEL.read_bytes()
    config = read_model_config(served / "config.pbtxt")
    assert config.parameters[PARAM_RUNTIME].string_value == "onnxruntime"


def test_the_runtime_module_imports_nothing_of_the_project() -> None:
    """Triton loads it inside the sandbox, where only the venv's site-packages are visible:
    an import of the project's own packages would fail there."""
    tree = ast.parse(RUNTIME_MODEL.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {
        "__future__",
        "json",
        "os",
        "typing",
        "numpy",
        "triton_python_backend_utils",
        "onnxruntime",
        "torch",
    }


def test_install_package_makes_a_folder_of_the_models_under_their_own_names(
    demo_repository: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "serving" / "demo-0123"
    assert install_package(demo_repository, folder, gpu=False) == "demo_ensemble"
    # Only the model folders: SageMaker's Triton counts every folder in the package's.
    assert sorted(p.name for p in folder.iterdir()) == [
        "demo_classifier",
        "demo_ensemble",
        "demo_preprocess",
    ]
    classifier = read_model_config(folder / "demo_classifier" / "config.pbtxt")
    assert (classifier.name, classifier.backend) == ("demo_classifier", "python")
    steps = read_model_config(folder / "demo_ensemble" / "config.pbtxt").ensemble_scheduling.step
    assert {step.model_name for step in steps} == {"demo_preprocess", "demo_classifier"}
    # A sandboxed Triton runs as another uid: it must be able to read the folder.
    assert folder.stat().st_mode & 0o005 == 0o005
    # Nothing is left beside it.
    assert [p.name for p in folder.parent.iterdir()] == ["demo-0123"]


def test_install_package_maps_a_lone_model_and_replaces_the_folder_whole(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "serving" / "pkg"
    install_package(write_demo_repository(tmp_path / "demo"), folder, gpu=False)
    lone = write_onnx_model_repository(tmp_path / "lone", "lone_classifier")
    assert install_package(lone, folder, gpu=True) == "lone_classifier"
    assert [p.name for p in folder.iterdir()] == ["lone_classifier"]
    assert [p.name for p in folder.parent.iterdir()] == ["pkg"]


def test_install_package_refuses_a_package_sagemaker_could_not_map(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_onnx_model_repository(source, "first")
    write_onnx_model_repository(source, "second")
    with pytest.raises(EntryModelError):
        install_package(source, tmp_path / "serving" / "pkg", gpu=False)
    assert not (tmp_path / "serving" / "pkg").exists()
