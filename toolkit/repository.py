"""What a Triton model repository is made of: its model folders, their version folders, and
the one rule that says which model clients invoke (the entry model).

A package is served the way SageMaker's Triton serves it (`SageMakerMMELoadModel` in
https://github.com/triton-inference-server/server/blob/main/src/sagemaker_server.cc): the
package folder is registered as a repository of its own, with model namespacing on; its
ensemble (or its only model) is mapped to the endpoint's TargetModel and loaded, an
ensemble's steps loading with it as dependencies, and nothing else is loaded.

The registry's validation, the data plane's staging and the test step all need the entry
model; they read `berth.yaml` and the configs their own way (validation reports every problem
with its line, staging answers the first one to a client), then ask `entry_model` here, so
they can never pick different models for the same package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.pbtxt"

# How SageMaker's Triton tells an ensemble: this pattern found anywhere in the raw text of a
# config.pbtxt (`platform_ensemble_regex_` in src/sagemaker_server.h; RE2's \s is
# [\t\n\f\r ]), not the parsed platform.
SAGEMAKER_ENSEMBLE_PATTERN = re.compile(r'platform:[\t\n\f\r ]*"ensemble"')

WAYS_OUT = "Add one ensemble that wires the models as its steps, or register one model per package."


def model_folders(repository: Path) -> list[Path]:
    """The model folders of a repository: top-level folders holding a config.pbtxt."""
    return sorted(
        p for p in Path(repository).iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file()
    )


def version_folders(model_dir: Path) -> list[Path]:
    """The numbered version folders of a model folder, in name order."""
    return sorted(p for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


def sagemaker_sees_ensemble(config_text: str) -> bool:
    """Whether SageMaker's Triton takes a config.pbtxt for an ensemble's (a text match that a
    comment satisfies and `platform : "ensemble"` does not)."""
    return SAGEMAKER_ENSEMBLE_PATTERN.search(config_text) is not None


def _is_ensemble(config: Any) -> bool:
    return config is not None and config.platform == "ensemble"


class EntryModelError(ValueError):
    """No entry model SageMaker's Triton would serve, or berth.yaml names another one.

    `kind` says which: "unknown" (`named` is not a model of the package), "mismatch" (`named`
    is a model, but SageMaker serves `entry`), "ensembles" (several ensembles: `candidates`),
    "models" (several models and no ensemble: `candidates`), "empty" (no model at all).
    The message says why and the ways out; callers show it as is.
    """

    def __init__(
        self,
        *,
        named: Any = None,
        candidates: list[str],
        models: list[str],
        kind: str | None = None,
        entry: str | None = None,
    ) -> None:
        self.named = named
        self.candidates = candidates
        self.models = models
        self.entry = entry
        if kind is None:
            kind = "unknown" if named is not None else ("models" if candidates else "empty")
        self.kind = kind
        self.unknown = kind == "unknown"
        super().__init__(self._message())

    def _message(self) -> str:
        names = ", ".join(self.candidates)
        if self.kind == "unknown":
            return f"entry model {self.named!r} is not in the repository"
        if self.kind == "mismatch":
            # Only reachable with an ensemble: a lone model is the model any name must be.
            return (
                f"berth.yaml names model {self.named!r}, but SageMaker's Triton serves "
                f"{self.entry!r} for this package (its ensemble): berth.yaml's model: does "
                f"not reach SageMaker. Name {self.entry!r} there, or leave model: out."
            )
        if self.kind == "ensembles":
            return (
                f"several ensembles ({names}): SageMaker's Triton serves one of them as the "
                "target model, picked in no defined order (the last ensemble folder it "
                "happens to read), even when one is a step of another. Keep one ensemble per "
                "package (move a nested ensemble's steps into the outer one), or register "
                "each ensemble as a package of its own."
            )
        if self.kind == "models":
            return (
                f"several models ({names}) and no ensemble: SageMaker's Triton serves one of "
                "them as the target model, picked in no defined order, and loads no other. "
                + WAYS_OUT
            )
        return "the package holds no model"


def ensemble_steps(config: Any) -> set[str]:
    """The models an ensemble's config calls as steps (none for any other model)."""
    if not _is_ensemble(config):
        return set()
    return {step.model_name for step in config.ensemble_scheduling.step}


def top_level_models(models: Mapping[str, Any]) -> list[str]:
    """The models SageMaker's Triton chooses the target model among: the package's ensembles
    when it has any, else every model. More than one: which one serves is chance.

    `models` is {folder name: parsed ModelConfig, or None when its config did not parse (taken
    for no ensemble)}."""
    ensembles = [name for name, config in models.items() if _is_ensemble(config)]
    return ensembles or list(models)


def entry_model(models: Mapping[str, Any], named: Any = None) -> str:
    """The model clients invoke, among `models` ({folder name: parsed ModelConfig, or None
    when its config did not parse}): the package's one ensemble, or its only model, as
    SageMaker's Triton maps the TargetModel (`SageMakerMMELoadModel`).

    `named` is berth.yaml's `model:`. It does not reach SageMaker, so when given (anything
    but None) it must be a model of the package and the same model. Raises
    `EntryModelError` otherwise, or when there is not exactly one candidate.
    """
    names = list(models)
    if named is not None and (not isinstance(named, str) or named not in models):
        raise EntryModelError(named=named, candidates=[], models=names)
    candidates = top_level_models(models)
    has_ensemble = any(_is_ensemble(config) for config in models.values())
    if len(candidates) != 1:
        kind = "ensembles" if has_ensemble else ("models" if candidates else "empty")
        raise EntryModelError(candidates=candidates, models=names, kind=kind)
    entry = candidates[0]
    if named is not None and named != entry:
        raise EntryModelError(
            named=named,
            candidates=candidates,
            models=names,
            kind="mismatch",
            entry=entry,
        )
    return entry


def loaded_models(models: Mapping[str, Any], entry: str) -> list[str]:
    """The models that load when `entry` does: itself, then the steps of an ensemble (and of
    a nested ensemble's), each once, those present in `models`. Triton loads an ensemble's
    steps as its dependencies; nothing else of the package is loaded."""
    order: list[str] = []
    pending = [entry]
    while pending:
        name = pending.pop(0)
        if name in order or name not in models:
            continue
        order.append(name)
        config = models[name]
        if _is_ensemble(config):
            pending.extend(step.model_name for step in config.ensemble_scheduling.step)
    return order
