"""What a Triton model repository is made of: its model folders, their version folders, and
the one rule that says which model clients invoke (the entry model).

The registry's validation and the data plane's staging both need the entry model; they read
`berth.yaml` and the configs their own way (validation reports every problem with its line,
staging answers the first one to a client), then ask `entry_model` here, so the two can never
pick different models for the same package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.pbtxt"


def model_folders(repository: Path) -> list[Path]:
    """The model folders of a repository: top-level folders holding a config.pbtxt."""
    return sorted(
        p for p in Path(repository).iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file()
    )


def version_folders(model_dir: Path) -> list[Path]:
    """The numbered version folders of a model folder, in name order."""
    return sorted(p for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


class EntryModelError(ValueError):
    """No single entry model: `named` is not a model of the repository (`unknown`), or it
    names none and `candidates` (the models no ensemble uses as a step) are not exactly one."""

    def __init__(self, *, named: Any = None, candidates: list[str], models: list[str]) -> None:
        self.named = named
        self.candidates = candidates
        self.models = models
        self.unknown = named is not None
        if self.unknown:
            message = f"entry model {named!r} is not in the repository"
        elif candidates:
            message = f"several models are not steps of an ensemble ({', '.join(candidates)})"
        else:
            message = "every model is a step of an ensemble"
        super().__init__(message)


def ensemble_steps(config: Any) -> set[str]:
    """The models an ensemble's config calls as steps (none for any other model)."""
    if config is None or config.platform != "ensemble":
        return set()
    return {step.model_name for step in config.ensemble_scheduling.step}


def top_level_models(models: Mapping[str, Any]) -> list[str]:
    """The models no ensemble of the package uses as a step. SageMaker's Triton loads the
    package's ensemble as the TargetModel, or, with no ensemble, one of these in no defined
    order: a package with several can only be served there by chance (berth.yaml's
    `model:` does not reach SageMaker)."""
    steps: set[str] = set()
    for config in models.values():
        steps |= ensemble_steps(config)
    return [name for name in models if name not in steps]


def entry_model(models: Mapping[str, Any], named: Any = None) -> str:
    """The model clients invoke, among `models` ({folder name: parsed ModelConfig, or None
    when its config did not parse}).

    `named` is berth.yaml's `model:`: when given (anything but None) it must be one of the
    models. Otherwise the entry is the one model that no ensemble uses as a step: a lone
    model, or the ensemble that wires the others. SageMaker's Triton maps the TargetModel
    to the ensemble of a package the same way (`SageMakerMMELoadModel`). Raises
    `EntryModelError` when there is not exactly one.
    """
    names = list(models)
    if named is not None:
        if not isinstance(named, str) or named not in models:
            raise EntryModelError(named=named, candidates=[], models=names)
        return named
    candidates = top_level_models(models)
    if len(candidates) != 1:
        raise EntryModelError(candidates=candidates, models=names)
    return candidates[0]
