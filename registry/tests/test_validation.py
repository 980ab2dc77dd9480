"""Validation of Triton model repositories: every problem at once, with file and line."""

import textwrap
from pathlib import Path

import pytest

from registry.validation import find_repository_root, validate_repository
from toolkit.examples import write_demo_repository


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def messages(report) -> list[str]:
    return [f"{p.file}:{p.line}: {p.message}" for p in report.problems]


def test_demo_repository_is_valid_and_summarised(tmp_path):
    write_demo_repository(tmp_path)
    report = validate_repository(tmp_path)
    assert report.problems == []
    summary = report.summary
    assert summary["entry_model"] == "demo_ensemble"
    models = {m["name"]: m for m in summary["models"]}
    assert models["demo_classifier"]["platform"] == "onnxruntime_onnx"
    assert models["demo_preprocess"]["backend"] == "python"
    assert [s["model"] for s in summary["steps"]] == ["demo_preprocess", "demo_classifier"]
    assert len(report.test_cases) == 3
    assert all(case["model"] == "demo_ensemble" for case in report.test_cases)


def test_repository_wrapped_in_one_folder_is_found(tmp_path):
    extracted = tmp_path / "extracted"
    write_demo_repository(extracted / "wrapper")
    assert find_repository_root(extracted) == extracted / "wrapper"
    report = validate_repository(extracted)
    assert report.ok
    assert report.summary["root"] == "wrapper"


def test_every_problem_is_reported_with_file_and_line(tmp_path):
    write(
        tmp_path,
        {
            "ens/config.pbtxt": """
                name: "ens"
                platform: "ensemble"
                input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
                output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] } ]
                ensemble_scheduling {
                  step [
                    {
                      model_name: "pre"
                      model_version: -1
                      input_map { key: "WRONG_INPUT" value: "IN" }
                      output_map { key: "FEATURES" value: "feat" }
                    },
                    {
                      model_name: "ghost"
                      model_version: -1
                      input_map { key: "X" value: "nowhere" }
                      output_map { key: "Y" value: "OUT" }
                    }
                  ]
                }
                """,
            "ens/1/.keep": "",
            "pre/config.pbtxt": """
                name: "pre"
                backend: "python"
                input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] } ]
                output [ { name: "FEATURES" data_type: TYPE_FP32 dims: [ 4 ] } ]
                parameters: {
                  key: "EXECUTION_ENV_PATH" value: { string_value: "/opt/envs/py.tar.gz" } }
                """,
            "pre/1/README": "no model.py here",
            "clf/config.pbtxt": """
                name: "clf"
                platform: "onnxruntime_onnx"
                input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]
                output [ { name: "B" data_type: TYPE_FP32 dims: [ 3 ] } ]
                """,
            "broken/config.pbtxt": """
                name: "broken"
                backend: "python"
                max_batch_sise: 4
                """,
            "berth.yaml": """
                model: ens
                colour: blue
                tests:
                  - name: one
                    inputs: {NOPE: {datatype: FP32, shape: [1, 4], data: [1, 2, 3, 4]}}
                    expected: {OUT: {data: [1, 2]}}
                  - name: two
                    inputs: {IN: {datatype: FP99, shape: [2], data: [1, 2, 3]}}
                """,
        },
    )
    report = validate_repository(tmp_path)
    found = "\n".join(messages(report))
    expected = [
        # config parse error with its line
        ("broken/config.pbtxt:3:", "max_batch_sise"),
        # ensemble step names a model absent from the archive
        ("ens/config.pbtxt:", "Step 2 (ghost) names model 'ghost', which is not in the archive"),
        # input_map key that is not an input of the step's model
        ("ens/config.pbtxt:10:", "input_map key 'WRONG_INPUT' is not an input of pre"),
        # tensor that exists nowhere
        ("ens/config.pbtxt:", "reads tensor 'nowhere'"),
        # required input of the step model left unmapped
        ("ens/config.pbtxt:", "input 'RAW' of pre is not mapped"),
        # python model without model.py
        ("pre/1/model.py:", "needs model.py"),
        # onnx model without a version folder
        ("clf:", "has no version folder"),
        # EXECUTION_ENV_PATH outside the archive
        (
            "pre/config.pbtxt:6:",
            "EXECUTION_ENV_PATH '/opt/envs/py.tar.gz' is an absolute path outside",
        ),
        # berth.yaml: unknown key, wrong tensor names, bad datatype and shape
        ("berth.yaml:2:", "Unknown key 'colour'"),
    ]
    for prefix, text in expected:
        assert any(line.startswith(prefix) and text in line for line in found.splitlines()), (
            f"missing {prefix} {text}\n{found}"
        )
    # Schema problems in berth.yaml come with their lines too.
    assert any("FP99" in m and m.startswith("berth.yaml:8:") for m in found.splitlines()), found
    assert any("holds 2 values but data has 3" in m for m in found.splitlines()), found
    # ... and the other cases are still checked against the models.
    assert any("berth.yaml:5:" in m and "ens has no input 'NOPE'" in m for m in found.splitlines())


def test_test_cases_are_checked_against_the_models(tmp_path):
    write_demo_repository(tmp_path)
    (tmp_path / "berth.yaml").write_text(
        textwrap.dedent(
            """
            model: demo_ensemble
            tests:
              - name: wrong-names
                inputs: {FEATURES: {datatype: FP32, shape: [1, 4], data: [1, 2, 3, 4]}}
                expected: {LOGITS: {data: [1, 2, 3]}}
            """
        )
    )
    report = validate_repository(tmp_path)
    found = "\n".join(messages(report))
    assert "demo_ensemble has no input 'FEATURES'" in found
    assert "input 'RAW' of demo_ensemble is not given" in found
    assert "demo_ensemble has no output 'LOGITS'" in found
    assert "berth.yaml:5:" in found


def test_test_cases_given_at_registration_are_checked_and_merged(tmp_path):
    write_demo_repository(tmp_path)
    extra = [
        {
            "name": "extra",
            "inputs": {"RAW": {"datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}},
        }
    ]
    report = validate_repository(tmp_path, extra_test_cases=extra)
    assert report.ok
    assert [c["name"] for c in report.test_cases][-1] == "extra"
    bad = [{"name": "bad", "inputs": {"NOPE": {"datatype": "FP32", "shape": [1], "data": [1]}}}]
    report = validate_repository(tmp_path, extra_test_cases=bad)
    assert any(
        p.file == "test cases given at registration" and "NOPE" in p.message
        for p in report.problems
    )


def test_execution_env_path_inside_the_archive(tmp_path):
    write_demo_repository(tmp_path)
    config = tmp_path / "demo_preprocess" / "config.pbtxt"
    base = config.read_text()
    env_param = 'parameters: { key: "EXECUTION_ENV_PATH" value: { string_value: "%s" } }\n'
    config.write_text(base + env_param % "$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    report = validate_repository(tmp_path)
    assert any("no such file in the archive" in p.message for p in report.problems)
    (tmp_path / "demo_preprocess" / "env.tar.gz").write_bytes(b"\x1f\x8b")
    assert validate_repository(tmp_path).ok
    config.write_text(base + env_param % "$$TRITON_MODEL_DIRECTORY/../../outside.tar.gz")
    assert any(
        "points outside the archive" in p.message for p in validate_repository(tmp_path).problems
    )


def test_entry_model_must_be_named_when_several_models_stand_alone(tmp_path):
    write_demo_repository(tmp_path)
    (tmp_path / "berth.yaml").unlink()
    write(
        tmp_path,
        {
            "other/config.pbtxt": """
                backend: "python"
                input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
                output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
                """,
            "other/1/model.py": "class TritonPythonModel: pass\n",
        },
    )
    report = validate_repository(tmp_path)
    assert any("Several models are not steps of an ensemble" in p.message for p in report.problems)


def test_version_policy_names_missing_folder(tmp_path):
    write_demo_repository(tmp_path)
    config = tmp_path / "demo_classifier" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { specific: { versions: [ 1, 2 ] } }\n")
    report = validate_repository(tmp_path)
    assert any("version_policy names version 2" in p.message for p in report.problems)


@pytest.mark.parametrize("content", ["", "just text"])
def test_archive_without_models(tmp_path, content):
    (tmp_path / "extracted").mkdir()
    (tmp_path / "extracted" / "README.md").write_text(content)
    report = validate_repository(tmp_path / "extracted")
    assert len(report.problems) == 1
    assert "No model found" in report.problems[0].message


def test_python_models_declare_their_io_since_triton_completes_no_config(tmp_path):
    write_demo_repository(tmp_path)
    (tmp_path / "berth.yaml").unlink()
    write(
        tmp_path,
        {
            "completes/config.pbtxt": """
                backend: "python"
                """,
            "completes/1/model.py": """
                class TritonPythonModel:
                    @staticmethod
                    def auto_complete_config(config):
                        return config
                """,
        },
    )
    found = [p for p in validate_repository(tmp_path).problems if p.file.startswith("completes")]
    assert len(found) == 1
    assert "declares no outputs" in found[0].message
    assert "auto_complete_config() in model.py is not called" in found[0].message


# -- bounds on hostile input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [
        ("model: demo_ensemble\nx: &a [1]\ny: *a\n", "anchors (&a) are not allowed", 2),
        ("model: demo_ensemble\ntests: " + "[" * 40 + "]" * 40 + "\n", "nesting is deeper", 2),
        ("model: demo_ensemble\n" + "#" * (1024 * 1024), "the limit is 1048576 bytes", None),
    ],
)
def test_berth_yaml_is_bounded(tmp_path, text, reason, line):
    write_demo_repository(tmp_path)
    (tmp_path / "berth.yaml").write_text(text)
    found = [p for p in validate_repository(tmp_path).problems if reason in p.message]
    assert len(found) == 1 and found[0].file == "berth.yaml" and found[0].line == line


def test_oversized_config_is_refused_unparsed(tmp_path):
    write_demo_repository(tmp_path)
    config = tmp_path / "demo_classifier" / "config.pbtxt"
    config.write_text(config.read_text() + "#" * (1024 * 1024))
    found = [p for p in validate_repository(tmp_path).problems if "the limit is" in p.message]
    assert len(found) == 1 and found[0].file == "demo_classifier/config.pbtxt"
    assert found[0].message.endswith("bytes; the limit is 1048576 bytes.")


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/passwd", "a/b.onnx", ".."])
def test_default_model_filename_must_stay_in_the_version_folder(tmp_path, filename):
    write_demo_repository(tmp_path)
    config = tmp_path / "demo_classifier" / "config.pbtxt"
    config.write_text(config.read_text() + f'default_model_filename: "{filename}"\n')
    found = [
        p for p in validate_repository(tmp_path).problems if "default_model_filename" in p.message
    ]
    assert len(found) == 1 and found[0].file == "demo_classifier/config.pbtxt"


def test_a_model_file_that_is_a_link_out_of_the_version_folder_is_refused(tmp_path):
    write_demo_repository(tmp_path)
    model_file = tmp_path / "demo_classifier" / "1" / "model.onnx"
    model_file.unlink()
    model_file.symlink_to("/etc/hostname")
    found = [p for p in validate_repository(tmp_path).problems if "resolves outside" in p.message]
    assert len(found) == 1 and found[0].file == "demo_classifier/1/model.onnx"


def test_input_dims_are_bounded_naming_the_tensor(tmp_path):
    write(
        tmp_path,
        {
            "big/config.pbtxt": """
                backend: "python"
                input [ { name: "HUGE" data_type: TYPE_FP32 dims: [ 1000000, 1000000, 1000 ] } ]
                output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 4096, 128000 ] } ]
                """,
            "big/1/model.py": "class TritonPythonModel: pass\n",
        },
    )
    problems = validate_repository(tmp_path).problems
    # The input the test step would allocate is refused; a large declared output is not.
    assert [p.message.split(" with dims")[0] for p in problems] == ["Input 'HUGE'"]
    assert problems[0].line == 2


def test_test_cases_are_bounded(tmp_path):
    write_demo_repository(tmp_path)
    case = {"name": "c", "inputs": {"RAW": {"datatype": "FP32", "shape": [1, 4], "data": [1] * 4}}}
    too_many = [{**case, "name": f"c{i}"} for i in range(501)]
    assert any(
        "501 test cases; the limit is 500" in p.message
        for p in validate_repository(tmp_path, extra_test_cases=too_many).problems
    )
