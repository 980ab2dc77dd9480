"""Validation of how SageMaker's Triton reads a package: which folder it maps to the target
model, how it recognises an ensemble, and BLS calls it would not resolve
(src/sagemaker_server.cc `SageMakerMMELoadModel` in triton-inference-server/server)."""

from __future__ import annotations

from toolkit.limits import (
    InputTooLarge,
    model_filename_problem,
    read_bounded,
    resolves_inside,
)
from toolkit.repository import (
    SAGEMAKER_ENSEMBLE_PATTERN,
    sagemaker_sees_ensemble,
)

from .bls import MAX_MODEL_SOURCE_BYTES, find_bls_calls
from .info import (
    CONFIG_FILE,
    DEFAULT_MODEL_FILE,
    ModelInfo,
    line_containing,
)


class SageMakerLayoutChecks:
    """Checks `repository._Validator` runs for what SageMaker's Triton would serve wrong;
    they use its `add`, `rel`, `root` and `models`."""

    def check_sagemaker_sees_platform(self, info: ModelInfo) -> None:
        """SageMaker's Triton finds the ensemble by a text match on config.pbtxt, not by
        parsing it: where the two disagree, it would serve another model than Berth does."""
        seen = sagemaker_sees_ensemble(info.config_text)
        if info.is_ensemble and not seen:
            self.add(
                info.config_file,
                'SageMaker\'s Triton finds an ensemble by the text platform: "ensemble" in its '
                "config.pbtxt (double quotes, no space before the colon) and would not see this "
                "one; write the platform line that way.",
                line_containing(info.config_text, "platform"),
            )
        elif seen and not info.is_ensemble:
            match = SAGEMAKER_ENSEMBLE_PATTERN.search(info.config_text)
            self.add(
                info.config_file,
                f"{info.name} is not an ensemble, but its config.pbtxt holds the text "
                'platform: "ensemble" (a comment counts), which SageMaker\'s Triton takes for '
                "an ensemble: it would serve this model as the package's target. Remove or "
                "reword that text.",
                info.config_text.count("\n", 0, match.start()) + 1 if match else None,
            )

    def check_bls_calls(self, info: ModelInfo) -> None:
        """A Python model calling a model of its own package by name through BLS: that name
        does not resolve under model namespacing, loaded or not."""
        filename = info.config.default_model_filename or DEFAULT_MODEL_FILE["python"]
        if model_filename_problem(filename):
            return  # reported by check_versions
        for number in info.versions:
            path = info.folder / str(number) / filename
            if not path.is_file() or not resolves_inside(path, info.folder / str(number)):
                continue
            try:
                source = read_bounded(path, MAX_MODEL_SOURCE_BYTES, what=filename)
            except (InputTooLarge, OSError):
                continue
            for call in find_bls_calls(source.decode("utf-8", errors="replace")) or []:
                if call.model_name not in self.models:
                    continue  # another package's model, or none: not resolved here either
                how = (
                    f"InferenceRequest(model_name={call.model_name!r})"
                    if call.function == "InferenceRequest"
                    else f"load_model({call.model_name!r})"
                )
                self.add(
                    self.rel(path),
                    f"{info.name} calls model {call.model_name!r} of its own package through "
                    f"BLS ({how}). SageMaker's Triton serves each package with model "
                    "namespacing on, where a model is not reachable by its plain name, loaded "
                    f"or not: the call would answer \"Model '{call.model_name}' is not ready\" "
                    "there and on Berth's endpoints, which load packages the same way. Wire "
                    "the two as steps of an ensemble (an ensemble's steps load with it and "
                    "resolve), or put the logic in one model.",
                    call.line,
                )

    def check_top_level_folders(self) -> None:
        """With no ensemble, SageMaker's Triton maps whichever top-level folder it reads last
        (model or not) to the target model: a package then holds its one model folder and
        nothing else at the top."""
        configs = {name: info.config for name, info in self.models.items()}
        if any(info.is_ensemble for info in self.models.values()) or None in configs.values():
            return
        for child in sorted(self.root.iterdir()):
            if not child.is_dir() or child.is_symlink() or child.name in self.models:
                continue
            if any(p.is_dir() and p.name.isdigit() for p in child.iterdir()):
                continue  # reported as a model folder without config.pbtxt
            self.add(
                self.rel(child),
                f"{child.name}/ is a folder at the package's top level but not a model (no "
                f"{CONFIG_FILE}). With no ensemble in the package, SageMaker's Triton maps one "
                "top-level folder, picked in no defined order, to the target model, and may "
                "pick this one. Remove it, or move it into the model's folder.",
            )
