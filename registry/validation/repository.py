"""Checks on an extracted Triton model repository: configs, version folders, the files each
platform or backend needs, ensemble wiring, EXECUTION_ENV_PATH targets and berth.yaml; what
SageMaker's Triton would serve wrong is checked by the mixin in `sagemaker.py`, and what the
checks know of a model lives in `info.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolkit.limits import (
    MAX_CONFIG_BYTES,
    MAX_YAML_BYTES,
    InputTooLarge,
    model_filename_problem,
    read_bounded,
    resolves_inside,
    tensor_size_problem,
)
from toolkit.repository import (
    EntryModelError,
    loaded_models,
    top_level_models,
)
from toolkit.repository import entry_model as choose_entry_model

from .info import (
    BERTH_FILE,
    BERTH_KEYS,
    CONFIG_FILE,
    DEFAULT_MODEL_FILE,
    ENV_PATH_KEY,
    MODEL_DIR_VAR,
    MUST_BE_FOLDER,
    PLATFORM_BACKEND,
    ModelInfo,
    ValidationReport,
    completes_its_own_config,
    count_files,
    datatype_name,
    find_repository_root,
    line_containing,
    onnx_io,
    rel_path,
    sentence,
)
from .problems import Problem
from .sagemaker import SageMakerLayoutChecks
from .testcases import check_test_cases, normalize_test_cases, test_cases_schema_problems
from .yamllines import YamlError, line_of, load_with_lines


class _Validator(SageMakerLayoutChecks):
    def __init__(self, extracted: Path, extra_test_cases: list | None):
        self.extracted = extracted
        self.root: Path | None = None
        self.extra_test_cases = extra_test_cases or []
        self.problems: list[Problem] = []
        self.models: dict[str, ModelInfo] = {}

    def add(self, file: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(file, message, line))

    def rel(self, path: Path) -> str:
        return rel_path(path, self.extracted)

    def run(self) -> ValidationReport:
        self.root = find_repository_root(self.extracted)
        if self.root is None:
            self.add(
                "",
                "No model found: a Triton model repository holds one folder per model, each "
                f"with a {CONFIG_FILE} and numbered version folders (e.g. my_model/{CONFIG_FILE}, "
                "my_model/1/model.onnx), at the top of the archive or inside one top folder.",
            )
            return ValidationReport(None, self.problems, {}, [])
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and not child.is_symlink():
                if (child / CONFIG_FILE).is_file():
                    self.load_model(child)
                elif any(p.is_dir() and p.name.isdigit() for p in child.iterdir()):
                    self.add(
                        self.rel(child),
                        f"Model folder {child.name} has version folders but no {CONFIG_FILE}.",
                    )
        for info in self.models.values():
            if info.config is not None:
                self.check_model(info)
        for info in self.models.values():
            if info.config is not None and info.is_ensemble:
                self.check_ensemble(info)
        for info in self.models.values():
            if info.config is not None:
                self.check_sagemaker_sees_platform(info)
                if info.backend == "python":
                    self.check_bls_calls(info)
        self.check_top_level_folders()
        entry_model, test_cases = self.check_berth_yaml()
        files, total = count_files(self.root)
        configs = {name: info.config for name, info in self.models.items()}
        summary = {
            "root": rel_path(self.root, self.extracted) if self.root != self.extracted else "",
            "entry_model": entry_model,
            # What SageMaker's Triton picks the target model among; more than one is refused
            # above (and by SageMaker endpoints: see deployments.backends.sagemaker).
            "top_level_models": top_level_models(configs),
            # The entry model and its ensemble steps: the package's models that serve.
            "loaded_models": loaded_models(configs, entry_model) if entry_model else [],
            "models": [info.as_summary() for info in self.models.values()],
            "steps": [step for info in self.models.values() for step in info.steps],
            "frameworks": sorted({info.kind for info in self.models.values() if info.kind}),
            "tests": test_cases,
            "file_count": files,
            "unpacked_bytes": total,
        }
        return ValidationReport(self.root, self.problems, summary, test_cases)

    # -- one model ---------------------------------------------------------------------------
    def load_model(self, folder: Path) -> None:
        from toolkit.modelconfig import ConfigError, parse_model_config

        config_path = folder / CONFIG_FILE
        info = ModelInfo(name=folder.name, folder=folder, config_file=self.rel(config_path))
        self.models[info.name] = info
        try:
            # Bounded before parsing: protobuf's text parser holds the whole file and its
            # tokens in memory.
            info.config_text = read_bounded(config_path, MAX_CONFIG_BYTES, what=CONFIG_FILE).decode(
                "utf-8"
            )
        except InputTooLarge as exc:
            self.add(info.config_file, exc.message)
            return
        except UnicodeDecodeError:
            self.add(info.config_file, "config.pbtxt is not UTF-8 text.")
            return
        try:
            config = parse_model_config(info.config_text)
        except ConfigError as exc:
            self.add(info.config_file, f"Cannot parse config: {exc.message}", exc.line)
            return
        info.config = config
        info.platform = config.platform
        info.backend = config.backend
        info.max_batch_size = config.max_batch_size
        if config.input or config.output or info.is_ensemble:
            info.inputs = self._tensors(config.input, with_optional=True)
            info.outputs = self._tensors(config.output)
        info.versions = sorted(
            int(child.name) for child in folder.iterdir() if child.is_dir() and child.name.isdigit()
        )

    def _tensors(self, specs, *, with_optional: bool = False) -> dict[str, dict]:
        return {
            spec.name: {
                "datatype": datatype_name(spec.data_type),
                "dims": list(spec.dims),
                "optional": bool(getattr(spec, "optional", False)) if with_optional else False,
            }
            for spec in specs
        }

    def check_model(self, info: ModelInfo) -> None:
        config, text, file = info.config, info.config_text, info.config_file
        if config.name and config.name != info.name:
            self.add(
                file,
                f"Config name {config.name!r} differs from its folder {info.name!r}; Triton "
                "requires them to match.",
                line_containing(text, "name", config.name),
            )
        platform, backend = config.platform, config.backend
        if not platform and not backend:
            self.add(file, "The config names neither a platform nor a backend.")
        if platform and platform not in PLATFORM_BACKEND:
            self.add(
                file,
                f"Unknown platform {platform!r} (known: {', '.join(sorted(PLATFORM_BACKEND))}).",
                line_containing(text, "platform"),
            )
        if platform and backend and PLATFORM_BACKEND.get(platform) not in (None, backend):
            self.add(
                file,
                f"Platform {platform!r} is served by backend {PLATFORM_BACKEND[platform]!r}, "
                f"not {backend!r}.",
                line_containing(text, "backend"),
            )
        if info.is_ensemble and not config.HasField("ensemble_scheduling"):
            self.add(file, "An ensemble needs an ensemble_scheduling block with its steps.")
        if config.HasField("ensemble_scheduling") and not info.is_ensemble:
            self.add(
                file,
                'ensemble_scheduling is only allowed with platform: "ensemble".',
                line_containing(text, "ensemble_scheduling"),
            )
        self.check_tensors(info)
        self.check_versions(info)
        self.check_tensor_sizes(info)
        self.check_env_path(info)

    def check_tensors(self, info: ModelInfo) -> None:
        config, text, file = info.config, info.config_text, info.config_file
        for kind, specs in (("input", config.input), ("output", config.output)):
            seen: set[str] = set()
            for spec in specs:
                line = line_containing(text, f'"{spec.name}"') if spec.name else None
                if not spec.name:
                    self.add(file, f"An {kind} has no name.")
                    continue
                if spec.name in seen:
                    self.add(file, f"{kind.capitalize()} {spec.name!r} is declared twice.", line)
                seen.add(spec.name)
                if spec.data_type == 0:
                    self.add(file, f"{kind.capitalize()} {spec.name!r} has no data_type.", line)
                if any(d < -1 for d in spec.dims):
                    self.add(
                        file, f"{kind.capitalize()} {spec.name!r}: dims must be -1 or more.", line
                    )
        if info.backend == "python" and (
            not config.output or (not config.input and completes_its_own_config(info))
        ):
            self.add(
                file,
                f"Python model {info.name} declares no "
                f"{'outputs' if not config.output else 'inputs'} in config.pbtxt. Berth tests "
                "and serves with Triton's config auto-completion off (it would start every "
                "Python model twice per load), so auto_complete_config() in model.py is not "
                "called: declare the inputs and outputs in config.pbtxt.",
            )
        if info.is_ensemble and not config.input:
            self.add(file, "An ensemble must declare its inputs.")
        if info.is_ensemble and not config.output:
            self.add(file, "An ensemble must declare its outputs.")

    def check_tensor_sizes(self, info: ModelInfo) -> None:
        """Inputs the test step could not allocate, and tensors of absurd rank, refused here:
        declared by the config, or read from the ONNX graph when the config leaves them out."""
        for kind, specs in (("input", info.inputs), ("output", info.outputs)):
            for name, spec in (specs or {}).items():
                dims = list(spec.get("dims") or [])
                if info.max_batch_size > 0:
                    dims = [1, *dims]  # the smoke inference sends a batch of one
                # Outputs are bounded in rank only: the test step never allocates them, and a
                # large declared output (logits over a vocabulary) is legitimate.
                problem = tensor_size_problem(
                    name, spec.get("datatype", ""), dims, kind=kind, check_size=kind == "input"
                )
                if problem:
                    line = line_containing(info.config_text, f'"{name}"')
                    self.add(info.config_file, problem, line)

    def check_versions(self, info: ModelInfo) -> None:
        config, file = info.config, info.config_file
        if not info.versions:
            self.add(
                self.rel(info.folder),
                f"Model {info.name} has no version folder (e.g. {info.name}/1/); Triton loads "
                "nothing without one"
                + (" (an ensemble's version folder may be empty)." if info.is_ensemble else "."),
            )
            return
        selected = info.versions
        policy = config.version_policy
        which = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else None
        if which == "specific":
            wanted = list(policy.specific.versions)
            for number in wanted:
                if number not in info.versions:
                    self.add(
                        file,
                        f"version_policy names version {number}, but there is no folder "
                        f"{info.name}/{number}/.",
                        line_containing(info.config_text, "versions"),
                    )
            selected = [v for v in info.versions if v in wanted]
        elif which == "latest":
            selected = info.versions[-max(1, policy.latest.num_versions) :]
        elif which is None:
            # Triton's default policy serves the latest version only.
            selected = info.versions[-1:]
        if info.is_ensemble:
            return
        filename_problem = model_filename_problem(config.default_model_filename)
        if filename_problem:
            self.add(
                file, filename_problem, line_containing(info.config_text, "default_model_filename")
            )
            return
        filename = config.default_model_filename or DEFAULT_MODEL_FILE.get(
            info.platform or info.backend
        )
        if not filename:
            return  # A custom backend: its files are its own business.
        for number in selected:
            target = info.folder / str(number) / filename
            rel = self.rel(target)
            if not resolves_inside(target, info.folder / str(number)):
                self.add(rel, f"{filename} resolves outside {info.name}/{number}/.")
                continue
            if filename in MUST_BE_FOLDER or filename.endswith(".savedmodel"):
                if not target.is_dir():
                    self.add(
                        rel,
                        f"{info.kind} model {info.name} version {number} needs the folder "
                        f"{filename}/.",
                    )
            elif not (target.is_file() or (target.is_dir() and filename.endswith(".onnx"))):
                hint = " (set default_model_filename if it is named differently)"
                self.add(
                    rel, f"{info.kind} model {info.name} version {number} needs {filename}{hint}."
                )
            elif filename.endswith(".onnx") and info.inputs is None:
                io = onnx_io(target if target.is_file() else target / "model.onnx")
                if io is not None:
                    info.inputs, info.outputs = io

    def check_env_path(self, info: ModelInfo) -> None:
        parameter = info.config.parameters.get(ENV_PATH_KEY)
        if parameter is None:
            return
        value = parameter.string_value
        line = line_containing(info.config_text, ENV_PATH_KEY)
        if not value:
            self.add(info.config_file, f"{ENV_PATH_KEY} is empty.", line)
            return
        expanded = value.replace(MODEL_DIR_VAR, str(info.folder))
        if value.startswith(MODEL_DIR_VAR):
            target = Path(os.path.normpath(expanded))
        elif os.path.isabs(value):
            self.add(
                info.config_file,
                f"{ENV_PATH_KEY} {value!r} is an absolute path outside the archive; point it "
                f"inside the model folder with {MODEL_DIR_VAR}/<file>.tar.gz.",
                line,
            )
            return
        else:
            # Triton resolves a relative path against the model folder.
            target = Path(os.path.normpath(info.folder / value))
        root = self.root.resolve()
        resolved = target.resolve() if target.exists() else target
        if not resolved.is_relative_to(root):
            self.add(
                info.config_file, f"{ENV_PATH_KEY} {value!r} points outside the archive.", line
            )
        elif not resolved.is_file():
            self.add(
                info.config_file,
                f"{ENV_PATH_KEY} {value!r}: no such file in the archive ({self.rel(target)}).",
                line,
            )
        elif not (resolved.name.endswith(".tar.gz") or resolved.name.endswith(".tgz")):
            self.add(
                info.config_file,
                f"{ENV_PATH_KEY} {value!r} must be a conda-pack .tar.gz archive.",
                line,
            )

    # -- ensembles ---------------------------------------------------------------------------
    def check_ensemble(self, info: ModelInfo) -> None:
        config, text, file = info.config, info.config_text, info.config_file
        steps = list(config.ensemble_scheduling.step)
        if not steps and config.HasField("ensemble_scheduling"):
            self.add(
                file, "The ensemble has no steps.", line_containing(text, "ensemble_scheduling")
            )
        available = set((info.inputs or {}).keys())
        produced: set[str] = set()
        for step in steps:
            produced.update(step.output_map.values())
        available |= produced
        for number, step in enumerate(steps, start=1):
            where = f"Step {number} ({step.model_name or 'no model'})"
            line = line_containing(text, "model_name", f'"{step.model_name}"')
            info.steps.append(
                {
                    "ensemble": info.name,
                    "model": step.model_name,
                    "model_version": step.model_version,
                    "input_map": dict(step.input_map),
                    "output_map": dict(step.output_map),
                }
            )
            target = self.models.get(step.model_name)
            if not step.model_name:
                self.add(file, f"{where}: model_name is missing.", line)
                continue
            if target is None:
                self.add(
                    file,
                    f"{where} names model {step.model_name!r}, which is not in the archive.",
                    line,
                )
            elif step.model_version not in (-1, 0) and step.model_version not in target.versions:
                self.add(
                    file,
                    f"{where} asks for version {step.model_version} of {step.model_name}, which "
                    f"has versions {target.versions or 'none'}.",
                    line_containing(text, "model_version", str(step.model_version)) or line,
                )
            step_inputs = target.inputs if target is not None else None
            step_outputs = target.outputs if target is not None else None
            for step_tensor, ensemble_tensor in step.input_map.items():
                tline = line_containing(text, f'"{step_tensor}"') or line
                if step_inputs is not None and step_tensor not in step_inputs:
                    self.add(
                        file,
                        f"{where}: input_map key {step_tensor!r} is not an input of "
                        f"{step.model_name} (inputs: {', '.join(step_inputs) or 'none'}).",
                        tline,
                    )
                if ensemble_tensor not in available:
                    self.add(
                        file,
                        f"{where}: input_map reads tensor {ensemble_tensor!r}, which is neither "
                        f"an input of {info.name} nor an output of any step.",
                        line_containing(text, f'"{ensemble_tensor}"') or line,
                    )
                elif (
                    step_inputs is not None
                    and step_tensor in step_inputs
                    and ensemble_tensor in (info.inputs or {})
                    and info.inputs[ensemble_tensor]["datatype"]
                    != step_inputs[step_tensor]["datatype"]
                ):
                    self.add(
                        file,
                        f"{where}: tensor {ensemble_tensor!r} is "
                        f"{info.inputs[ensemble_tensor]['datatype']} but input {step_tensor!r} of "
                        f"{step.model_name} is {step_inputs[step_tensor]['datatype']}.",
                        tline,
                    )
            if step_inputs is not None:
                for name, spec in step_inputs.items():
                    if name not in step.input_map and not spec.get("optional"):
                        self.add(
                            file,
                            f"{where}: input {name!r} of {step.model_name} is not mapped.",
                            line,
                        )
            for step_tensor in step.output_map:
                if step_outputs is not None and step_tensor not in step_outputs:
                    self.add(
                        file,
                        f"{where}: output_map key {step_tensor!r} is not an output of "
                        f"{step.model_name} (outputs: {', '.join(step_outputs) or 'none'}).",
                        line_containing(text, f'"{step_tensor}"') or line,
                    )
        for name in info.outputs or {}:
            if steps and name not in produced:
                self.add(
                    file,
                    f"Ensemble output {name!r} is not produced by any step's output_map.",
                    line_containing(text, f'"{name}"'),
                )

    # -- berth.yaml ----------------------------------------------------------------------------
    def check_berth_yaml(self) -> tuple[str | None, list[dict]]:
        berth_path = self.root / BERTH_FILE
        file = self.rel(berth_path)
        data: Any = {}
        lines: dict = {}
        if berth_path.is_file():
            try:
                raw = read_bounded(berth_path, MAX_YAML_BYTES, what=BERTH_FILE)
                data, lines = load_with_lines(raw.decode("utf-8"), what=BERTH_FILE)
            except InputTooLarge as exc:
                self.add(file, exc.message)
                data = {}
            except YamlError as exc:
                self.add(file, f"Cannot parse berth.yaml: {exc.message}", exc.line)
                data = {}
            except UnicodeDecodeError:
                self.add(file, "berth.yaml is not UTF-8 text.")
                data = {}
            if data is None:
                data = {}
            if not isinstance(data, dict):
                self.add(file, "berth.yaml must be a mapping (model, tests).", 1)
                data = {}
        for key in sorted(set(data) - BERTH_KEYS):
            self.add(
                file,
                f"Unknown key {key!r} (known: {', '.join(sorted(BERTH_KEYS))}).",
                line_of(lines, (key,)),
            )
        entry_model = self.entry_model(data.get("model"), file, line_of(lines, ("model",)))
        loaded = (
            loaded_models({name: info.config for name, info in self.models.items()}, entry_model)
            if entry_model
            else None
        )
        archive_cases = data.get("tests", [])
        if archive_cases is None:
            archive_cases = []
        schema = test_cases_schema_problems(archive_cases, file=file, lines=lines, base=("tests",))
        self.problems.extend(schema)
        extra_file = "test cases given at registration"
        extra_schema = test_cases_schema_problems(self.extra_test_cases, file=extra_file)
        self.problems.extend(extra_schema)
        cases: list[dict] = []
        if isinstance(archive_cases, list):
            self.problems.extend(
                check_test_cases(
                    archive_cases,
                    models=self.models,
                    entry_model=entry_model,
                    loaded=loaded,
                    file=file,
                    lines=lines,
                    base=("tests",),
                )
            )
            cases.extend(archive_cases)
        if isinstance(self.extra_test_cases, list):
            self.problems.extend(
                check_test_cases(
                    self.extra_test_cases,
                    models=self.models,
                    entry_model=entry_model,
                    loaded=loaded,
                    file=extra_file,
                )
            )
            cases.extend(self.extra_test_cases)
        names = [case.get("name") for case in cases if isinstance(case, dict) and case.get("name")]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates and not schema and not extra_schema:
            self.add(extra_file, f"Test case names used twice: {', '.join(duplicates)}.")
        return entry_model, normalize_test_cases(cases, default_model=entry_model)

    def entry_model(self, named: Any, file: str, line: int | None) -> str | None:
        """The entry model by the toolkit's rule, or None with the problem reported."""
        configs = {name: info.config for name, info in self.models.items()}
        try:
            return choose_entry_model(configs, named)
        except EntryModelError as exc:
            if exc.kind == "unknown":
                self.add(
                    file,
                    f"Entry model {named!r} is not in the repository "
                    f"(models: {', '.join(self.models) or 'none'}).",
                    line,
                )
            elif exc.kind == "mismatch":
                self.add(
                    file,
                    f"model: names {named!r}, but SageMaker's Triton serves {exc.entry!r} for "
                    "this package (its ensemble), and berth.yaml does not reach SageMaker. Name "
                    f"{exc.entry!r}, or leave model: out.",
                    line,
                )
            elif exc.kind in ("ensembles", "models") and None not in configs.values():
                # With a config that did not parse (reported), the choice is not known.
                self.add("", sentence(str(exc)))
            return None


def validate_repository(
    extracted: Path, *, extra_test_cases: list | None = None
) -> ValidationReport:
    """Check the repository extracted at `extracted` and report every problem found."""
    return _Validator(Path(extracted), extra_test_cases).run()
