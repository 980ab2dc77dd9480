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


PYTHON_MODEL = """
    backend: "python"
    input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
    """


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """Where a test writes its package (tmp_path also holds the registry's folders)."""
    return tmp_path / "pkg"


def python_models(*names: str) -> dict[str, str]:
    files = {}
    for name in names:
        files[f"{name}/config.pbtxt"] = PYTHON_MODEL
        files[f"{name}/1/model.py"] = "class TritonPythonModel: pass\n"
    return files


def test_several_models_and_no_ensemble_are_refused_even_when_named(pkg):
    """SageMaker's Triton maps one of them in no defined order; berth.yaml does not reach it."""
    write(pkg, {**python_models("scorer", "ranker"), "berth.yaml": "model: scorer\n"})
    report = validate_repository(pkg)
    [problem] = report.problems
    assert problem.file == ""
    assert problem.message.startswith("Several models (ranker, scorer) and no ensemble")
    assert "in no defined order" in problem.message
    assert "one ensemble that wires the models" in problem.message
    assert "one model per package" in problem.message
    assert report.summary["entry_model"] is None
    assert report.summary["top_level_models"] == ["ranker", "scorer"]


def test_several_ensembles_are_refused(pkg):
    write_demo_repository(pkg)
    (pkg / "berth.yaml").unlink()
    ensemble = (pkg / "demo_ensemble" / "config.pbtxt").read_text()
    ensemble = ensemble.replace('name: "demo_ensemble"', 'name: "second"')
    write(pkg, {"second/config.pbtxt": ensemble, "second/1/.keep": ""})
    report = validate_repository(pkg)
    [problem] = report.problems
    assert problem.message.startswith("Several ensembles (demo_ensemble, second)")
    assert "no defined order" in problem.message
    assert "one ensemble per package" in problem.message
    assert report.summary["top_level_models"] == ["demo_ensemble", "second"]


def test_berth_yaml_must_name_the_model_sagemaker_serves(pkg):
    write_demo_repository(pkg)
    berth = pkg / "berth.yaml"
    berth.write_text(berth.read_text().replace("model: demo_ensemble", "model: demo_classifier"))
    found = [p for p in validate_repository(pkg).problems if p.file == "berth.yaml"]
    assert found[0].line == 1
    assert found[0].message == (
        "model: names 'demo_classifier', but SageMaker's Triton serves 'demo_ensemble' for this "
        "package (its ensemble), and berth.yaml does not reach SageMaker. Name 'demo_ensemble', "
        "or leave model: out."
    )


def test_an_extra_model_beside_the_ensemble_is_allowed_and_not_loaded(pkg):
    write_demo_repository(pkg)
    write(pkg, python_models("spare"))
    report = validate_repository(pkg)
    assert report.ok, messages(report)
    assert report.summary["entry_model"] == "demo_ensemble"
    assert report.summary["top_level_models"] == ["demo_ensemble"]
    assert report.summary["loaded_models"] == [
        "demo_ensemble",
        "demo_preprocess",
        "demo_classifier",
    ]


def test_a_test_case_calling_a_model_that_does_not_load_is_refused(pkg):
    write_demo_repository(pkg)
    write(pkg, python_models("spare"))
    spare_case = {
        "name": "spare",
        "model": "spare",
        "inputs": {"X": {"datatype": "FP32", "shape": [1], "data": [1]}},
    }
    step_case = {
        "name": "step",
        "model": "demo_classifier",
        "inputs": {"FEATURES": {"datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}},
    }
    report = validate_repository(pkg, extra_test_cases=[spare_case, step_case])
    [problem] = report.problems
    assert problem.file == "test cases given at registration"
    assert problem.message == (
        "Test case 'spare': model 'spare' is not loaded when this package serves: SageMaker's "
        "Triton loads 'demo_ensemble' and its ensemble's steps (demo_preprocess, "
        "demo_classifier) and nothing else of the package. Call one of those."
    )


def test_a_lone_model_and_another_top_level_folder_are_refused(pkg):
    """With no ensemble, SageMaker's Triton maps any top-level folder, model or not."""
    write(pkg, {**python_models("scorer"), "docs/README.md": "notes\n"})
    report = validate_repository(pkg)
    [problem] = report.problems
    assert problem.file == "docs"
    assert "docs/ is a folder at the package's top level but not a model" in problem.message
    assert "no defined order" in problem.message
    # Beside an ensemble, SageMaker maps the ensemble: other folders do not matter.
    write_demo_repository(pkg.parent / "with_ensemble")
    write(pkg.parent / "with_ensemble", {"docs/README.md": "notes\n"})
    assert validate_repository(pkg.parent / "with_ensemble").ok


@pytest.mark.parametrize(
    ("platform_line", "problem"),
    [
        ('platform : "ensemble"', "would not see this one"),
        ("platform: 'ensemble'", "would not see this one"),
    ],
)
def test_an_ensemble_sagemaker_would_not_recognise_is_refused(pkg, platform_line, problem):
    write_demo_repository(pkg)
    config = pkg / "demo_ensemble" / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "ensemble"', platform_line))
    [found] = validate_repository(pkg).problems
    assert found.file == "demo_ensemble/config.pbtxt" and found.line == 2
    assert problem in found.message


def test_a_model_whose_text_looks_like_an_ensemble_is_refused(pkg):
    write(
        pkg,
        {
            **python_models("scorer"),
            "scorer/config.pbtxt": '# was: platform: "ensemble"\n' + textwrap.dedent(PYTHON_MODEL),
        },
    )
    [found] = validate_repository(pkg).problems
    assert found.file == "scorer/config.pbtxt" and found.line == 1
    assert "SageMaker's Triton takes for an ensemble" in found.message


# -- BLS calls to models of the same package ---------------------------------------------------


BLS_PACKAGE = {
    **python_models("add_sub"),
    "bls/config.pbtxt": PYTHON_MODEL,
}


@pytest.mark.parametrize(
    ("source", "line", "how"),
    [
        (
            """
            import triton_python_backend_utils as pb_utils

            class TritonPythonModel:
                def execute(self, requests):
                    request = pb_utils.InferenceRequest(
                        model_name="add_sub", requested_output_names=["Y"], inputs=[]
                    )
                    return [request.exec()]
            """,
            5,
            "InferenceRequest(model_name='add_sub')",
        ),
        (
            """
            import triton_python_backend_utils as utils
            class TritonPythonModel:
                def execute(self, requests):
                    return [utils.InferenceRequest("add_sub", [], ["Y"]).exec()]
            """,
            4,
            "InferenceRequest(model_name='add_sub')",
        ),
        (
            """
            from triton_python_backend_utils import InferenceRequest as Request
            class TritonPythonModel:
                def execute(self, requests):
                    return [Request(model_name="add_sub", inputs=[]).exec()]
            """,
            4,
            "InferenceRequest(model_name='add_sub')",
        ),
        (
            """
            import triton_python_backend_utils
            class TritonPythonModel:
                def initialize(self, args):
                    triton_python_backend_utils.load_model("add_sub")
            """,
            4,
            "load_model('add_sub')",
        ),
        (
            """
            from triton_python_backend_utils import *
            class TritonPythonModel:
                def initialize(self, args):
                    load_model(model_name="add_sub")
            """,
            4,
            "load_model('add_sub')",
        ),
    ],
    ids=["keyword", "positional", "aliased-import", "load_model", "star-import"],
)
def test_a_bls_call_to_a_model_of_the_same_package_is_refused(pkg, source, line, how):
    write(
        pkg,
        {
            **BLS_PACKAGE,
            "bls/1/model.py": source,
            "e/1/.keep": "",
            "e/config.pbtxt": ENSEMBLE_OVER_BLS,
        },
    )
    [found] = validate_repository(pkg).problems
    assert (found.file, found.line) == ("bls/1/model.py", line)
    assert found.message.startswith(
        f"bls calls model 'add_sub' of its own package through BLS ({how})"
    )
    assert "Model 'add_sub' is not ready" in found.message
    for way_out in ("ensemble", "in one model"):
        assert way_out in found.message


ENSEMBLE_OVER_BLS = """
    platform: "ensemble"
    input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
    ensemble_scheduling {
      step [
        {
          model_name: "bls"
          model_version: -1
          input_map { key: "X" value: "X" }
          output_map { key: "Y" value: "Y" }
        }
      ]
    }
    """


@pytest.mark.parametrize(
    "call",
    [
        "pb_utils.InferenceRequest(model_name=self.target, inputs=[])",  # not a literal
        'pb_utils.InferenceRequest(model_name=f"add_{suffix}", inputs=[])',  # not a literal
        'pb_utils.InferenceRequest(model_name="other_package_model", inputs=[])',  # not ours
        'other.InferenceRequest(model_name="add_sub", inputs=[])',  # not the BLS module
        'InferenceRequest(model_name="add_sub", inputs=[])',  # not imported from it
    ],
)
def test_bls_calls_that_are_not_to_a_sibling_by_literal_pass(pkg, call):
    source = f"""
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                return [{call}.exec()]
        """
    write(
        pkg,
        {
            **BLS_PACKAGE,
            "bls/1/model.py": source,
            "e/1/.keep": "",
            "e/config.pbtxt": ENSEMBLE_OVER_BLS,
        },
    )
    report = validate_repository(pkg)
    assert report.ok, messages(report)
    assert report.summary["loaded_models"] == ["e", "bls"]


def test_a_model_py_that_does_not_parse_is_left_to_the_test_step(pkg):
    source = 'import triton_python_backend_utils as pb_utils\npb_utils.load_model("add_sub"\n'
    write(
        pkg,
        {
            **BLS_PACKAGE,
            "bls/1/model.py": source,
            "e/1/.keep": "",
            "e/config.pbtxt": ENSEMBLE_OVER_BLS,
        },
    )
    assert validate_repository(pkg).ok


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
        tmp_path / "pkg",
        {
            "big/config.pbtxt": """
                backend: "python"
                input [ { name: "HUGE" data_type: TYPE_FP32 dims: [ 1000000, 1000000, 1000 ] } ]
                output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 4096, 128000 ] } ]
                """,
            "big/1/model.py": "class TritonPythonModel: pass\n",
        },
    )
    problems = validate_repository(tmp_path / "pkg").problems
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
