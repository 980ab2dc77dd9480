"""The entry-model rule that registry validation and data-plane staging share."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.examples import write_demo_repository
from toolkit.modelconfig import parse_model_config, read_model_config
from toolkit.repository import (
    EntryModelError,
    entry_model,
    loaded_models,
    model_folders,
    sagemaker_sees_ensemble,
    top_level_models,
    version_folders,
)

ENSEMBLE = 'name: "e"\nplatform: "ensemble"\nensemble_scheduling {\n{steps}}\n'


def ensemble(*steps: str):
    """A parsed ensemble config calling `steps` (no steps: an empty ensemble_scheduling)."""
    text = "".join(f'  step {{ model_name: "{step}" model_version: -1 }}\n' for step in steps)
    return parse_model_config(ENSEMBLE.replace("{steps}", text))


PYTHON = parse_model_config('name: "m"\nbackend: "python"\n')


def test_the_demo_repository_enters_through_its_ensemble(tmp_path: Path) -> None:
    repository = write_demo_repository(tmp_path / "repo")
    folders = model_folders(repository)
    assert [f.name for f in folders] == ["demo_classifier", "demo_ensemble", "demo_preprocess"]
    assert [v.name for v in version_folders(folders[0])] == ["1"]
    configs = {f.name: read_model_config(f / "config.pbtxt") for f in folders}
    assert entry_model(configs) == "demo_ensemble"
    assert entry_model(configs, "demo_ensemble") == "demo_ensemble"
    assert loaded_models(configs, "demo_ensemble") == [
        "demo_ensemble",
        "demo_preprocess",
        "demo_classifier",
    ]


def test_a_lone_model_is_the_entry() -> None:
    assert entry_model({"m": PYTHON}) == "m"


def test_the_one_ensemble_is_the_entry_and_extra_models_stay_unloaded() -> None:
    configs = {"a": PYTHON, "e": ensemble("a"), "extra": PYTHON}
    assert entry_model(configs) == "e"
    assert entry_model(configs, "e") == "e"
    assert top_level_models(configs) == ["e"]
    assert loaded_models(configs, "e") == ["e", "a"]


def test_berth_yaml_naming_another_model_than_sagemaker_serves_is_refused() -> None:
    """berth.yaml's model: does not reach SageMaker: it may only repeat what SageMaker maps."""
    with pytest.raises(EntryModelError) as info:
        entry_model({"e": ensemble("a"), "a": PYTHON, "b": PYTHON}, "b")
    assert info.value.kind == "mismatch" and not info.value.unknown
    assert info.value.entry == "e"
    assert "berth.yaml names model 'b', but SageMaker's Triton serves 'e'" in str(info.value)
    assert "(its ensemble)" in str(info.value)
    # A step of the ensemble is not the target either.
    with pytest.raises(EntryModelError, match="serves 'e'"):
        entry_model({"e": ensemble("a"), "a": PYTHON}, "a")


@pytest.mark.parametrize("named", ["missing", "", 3, ["a"]])
def test_a_name_that_is_not_a_model_is_refused(named: object) -> None:
    with pytest.raises(EntryModelError) as info:
        entry_model({"e": ensemble("a"), "a": PYTHON}, named)
    assert info.value.unknown and info.value.kind == "unknown"
    assert info.value.models == ["e", "a"]


@pytest.mark.parametrize("named", [None, "a"])
def test_several_models_and_no_ensemble_are_refused_even_when_named(named: object) -> None:
    with pytest.raises(EntryModelError) as info:
        entry_model({"a": PYTHON, "b": PYTHON}, named)
    assert info.value.kind == "models" and not info.value.unknown
    assert info.value.candidates == ["a", "b"]
    message = str(info.value)
    assert "several models (a, b) and no ensemble" in message
    assert "in no defined order" in message
    assert "one ensemble that wires the models" in message
    assert "one model per package" in message


def test_several_ensembles_are_refused_even_when_one_wires_the_other() -> None:
    """SageMaker's Triton maps the last ensemble folder it reads: a nested ensemble is as much
    a candidate as the outer one."""
    for configs in (
        {"e1": ensemble("a"), "e2": ensemble("b"), "a": PYTHON, "b": PYTHON},
        {"outer": ensemble("inner", "a"), "inner": ensemble("b"), "a": PYTHON, "b": PYTHON},
    ):
        with pytest.raises(EntryModelError, match=r"several ensembles .*no defined order") as info:
            entry_model(configs, next(iter(configs)))
        assert info.value.kind == "ensembles"
        assert info.value.candidates == [name for name in configs if name not in ("a", "b")]
        assert "one ensemble per package" in str(info.value)


def test_an_empty_package_has_no_entry() -> None:
    with pytest.raises(EntryModelError, match="no model") as info:
        entry_model({})
    assert info.value.kind == "empty" and info.value.candidates == []


def test_only_ensembles_have_steps_and_unparsed_configs_are_no_ensemble() -> None:
    scheduled = parse_model_config(
        'name: "p"\nbackend: "python"\nensemble_scheduling { step { model_name: "q" } }\n'
    )
    # A non-ensemble's ensemble_scheduling is not wiring Triton follows.
    with pytest.raises(EntryModelError) as info:
        entry_model({"p": scheduled, "q": PYTHON})
    assert info.value.candidates == ["p", "q"]
    assert loaded_models({"p": scheduled, "q": PYTHON}, "p") == ["p"]
    # A model whose config did not parse (None) is still a model, and no ensemble.
    assert entry_model({"e": ensemble("a"), "a": PYTHON, "broken": None}) == "e"
    with pytest.raises(EntryModelError) as info:
        entry_model({"a": PYTHON, "broken": None})
    assert info.value.candidates == ["a", "broken"]


def test_top_level_models_are_what_sagemaker_chooses_among() -> None:
    """The ensembles when there are any, else every model: berth.yaml cannot narrow it."""
    assert top_level_models({"e": ensemble("a", "b"), "a": PYTHON, "b": PYTHON}) == ["e"]
    assert top_level_models({"e": ensemble("a"), "a": PYTHON, "b": PYTHON}) == ["e"]
    assert top_level_models({"x": ensemble("y"), "y": ensemble("x")}) == ["x", "y"]
    assert top_level_models({"a": PYTHON, "broken": None}) == ["a", "broken"]
    assert top_level_models({"m": PYTHON}) == ["m"]


def test_loaded_models_follow_nested_steps_once() -> None:
    configs = {
        "outer": ensemble("inner", "a"),
        "inner": ensemble("b", "a"),
        "a": PYTHON,
        "b": PYTHON,
        "c": PYTHON,
    }
    assert loaded_models(configs, "outer") == ["outer", "inner", "a", "b"]
    # A step absent from the package (reported by validation) and a cycle end the walk.
    assert loaded_models({"x": ensemble("y", "ghost"), "y": ensemble("x")}, "x") == ["x", "y"]
    assert loaded_models({"m": PYTHON}, "m") == ["m"]


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ('platform: "ensemble"', True),
        ('platform:"ensemble"', True),
        ('platform:\n  "ensemble"', True),
        ('# platform: "ensemble"\nbackend: "python"', True),
        ('platform : "ensemble"', False),
        ("platform: 'ensemble'", False),
        ('platform: "onnxruntime_onnx"', False),
    ],
)
def test_sagemaker_finds_ensembles_by_their_text(text: str, seen: bool) -> None:
    """`platform_ensemble_regex_` of Triton's sagemaker_server.h, matched on the raw text."""
    assert sagemaker_sees_ensemble(text) is seen
