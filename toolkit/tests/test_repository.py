"""The entry-model rule that registry validation and data-plane staging share."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.examples import write_demo_repository
from toolkit.modelconfig import parse_model_config, read_model_config
from toolkit.repository import (
    EntryModelError,
    entry_model,
    model_folders,
    top_level_models,
    version_folders,
)

ENSEMBLE = 'name: "e"\nplatform: "ensemble"\nensemble_scheduling {\n{steps}}\n'


def ensemble(*steps: str):
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


def test_a_lone_model_is_the_entry() -> None:
    assert entry_model({"m": PYTHON}) == "m"


def test_a_named_model_wins_over_the_ensemble_rule() -> None:
    configs = {"e": ensemble("a"), "a": PYTHON, "b": PYTHON}
    assert entry_model(configs, "b") == "b"


@pytest.mark.parametrize("named", ["missing", "", 3, ["a"]])
def test_a_name_that_is_not_a_model_is_refused(named: object) -> None:
    with pytest.raises(EntryModelError) as info:
        entry_model({"e": ensemble("a"), "a": PYTHON}, named)
    assert info.value.unknown
    assert info.value.models == ["e", "a"]


def test_several_standalone_models_are_ambiguous() -> None:
    with pytest.raises(EntryModelError, match=r"several models .*\(a, b\)") as info:
        entry_model({"a": PYTHON, "b": PYTHON})
    assert not info.value.unknown
    assert info.value.candidates == ["a", "b"]


def test_no_candidate_when_every_model_is_a_step() -> None:
    with pytest.raises(EntryModelError) as info:
        entry_model({"x": ensemble("y"), "y": ensemble("x")})
    assert info.value.candidates == []


def test_only_ensembles_have_steps_and_unparsed_configs_stand_alone() -> None:
    scheduled = parse_model_config(
        'name: "p"\nbackend: "python"\nensemble_scheduling { step { model_name: "q" } }\n'
    )
    # A non-ensemble's ensemble_scheduling is not wiring Triton follows.
    with pytest.raises(EntryModelError) as info:
        entry_model({"p": scheduled, "q": PYTHON})
    assert info.value.candidates == ["p", "q"]
    # A model whose config did not parse (None) is still a model of the repository.
    with pytest.raises(EntryModelError) as info:
        entry_model({"e": ensemble("a"), "a": PYTHON, "broken": None})
    assert info.value.candidates == ["e", "broken"]


def test_top_level_models_are_those_no_ensemble_uses() -> None:
    """What SageMaker would choose among: the ensemble alone, or several standalone models
    even when berth.yaml names one of them (SageMaker does not read berth.yaml)."""
    assert top_level_models({"e": ensemble("a", "b"), "a": PYTHON, "b": PYTHON}) == ["e"]
    configs = {"e": ensemble("a"), "a": PYTHON, "b": PYTHON}
    assert top_level_models(configs) == ["e", "b"]
    assert entry_model(configs, "b") == "b"
    assert top_level_models({"a": PYTHON, "broken": None}) == ["a", "broken"]
