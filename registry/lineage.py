"""Checks of what a registration brings besides its archive: lineage (where the version
came from), tags and test cases. Each returns clean values or raises ServiceError naming the
field, before anything is stored."""

from __future__ import annotations

import math
import re
from typing import Any

from portal.errors import ServiceError

from .models import ModelVersion, RegisteredModel
from .validation import test_cases_schema_problems

LINEAGE_TEXT_FIELDS = {
    "source_repository": 512,
    "source_commit": 64,
    "dataset_uri": 1024,
    "dataset_version": 128,
    "training_job": 1024,
}
LINEAGE_KEYS = set(LINEAGE_TEXT_FIELDS) | {"parent", "metrics", "frameworks", "tags"}
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
PARENT_PATTERN = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})[:/]v?(?P<version>\d+)$")


def clean_tags(value: Any, *, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ServiceError("Tags must be a list of strings.", field=field)
    tags = []
    for tag in value:
        tag = tag.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ServiceError(
                f"Tag {tag[:20]!r}… is longer than {MAX_TAG_LENGTH} characters.", field=field
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ServiceError(f"At most {MAX_TAGS} tags.", field=field)
    return tags


def _resolve_parent(value: Any, *, model: RegisteredModel) -> ModelVersion | None:
    field = "lineage.parent"
    if value in (None, ""):
        return None
    model_name, number = model.name, None
    if isinstance(value, bool):
        raise ServiceError(
            "parent must be 'model:version', a version number or a mapping.", field=field
        )
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            number = int(text)
        else:
            match = PARENT_PATTERN.match(text)
            if not match:
                raise ServiceError(
                    f"parent {text!r} is not 'model:version' (e.g. 'iris:3') or a version number.",
                    field=field,
                )
            model_name, number = match["model"], int(match["version"])
    elif isinstance(value, dict):
        model_name = value.get("model", model.name)
        number = value.get("version")
        if (
            not isinstance(model_name, str)
            or not isinstance(number, int)
            or isinstance(number, bool)
        ):
            raise ServiceError(
                "parent needs 'model' (a name) and 'version' (a number).", field=field
            )
    else:
        raise ServiceError(
            "parent must be 'model:version', a version number or a mapping.", field=field
        )
    parent = (
        ModelVersion.objects.select_related("model")
        .filter(model__name=model_name, version=number)
        .first()
    )
    if parent is None:
        raise ServiceError(
            f"parent {model_name}:{number} is not a registered version.", field=field
        )
    return parent


def lineage_clean(*, model: RegisteredModel, lineage: dict | None) -> dict[str, Any]:
    """Check a lineage mapping and return the ModelVersion field values it sets.

    Keys: source_repository, source_commit, dataset_uri, dataset_version, training_job,
    parent ('model:version', a version number of the same model, or {model, version}),
    metrics ({name: number}), frameworks and tags (lists of strings).
    """
    if lineage is None:
        lineage = {}
    if not isinstance(lineage, dict):
        raise ServiceError("lineage must be a JSON object.", field="lineage")
    unknown = sorted(set(lineage) - LINEAGE_KEYS)
    if unknown:
        raise ServiceError(
            f"Unknown lineage field(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(LINEAGE_KEYS))}).",
            field="lineage",
        )
    values: dict[str, Any] = {}
    for key, limit in LINEAGE_TEXT_FIELDS.items():
        value = lineage.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ServiceError(f"{key} must be a string.", field=f"lineage.{key}")
        value = value.strip()
        if len(value) > limit:
            raise ServiceError(f"{key} is longer than {limit} characters.", field=f"lineage.{key}")
        values[key] = value
    if values["source_commit"] and not re.fullmatch(r"[A-Za-z0-9._/-]+", values["source_commit"]):
        raise ServiceError(
            "source_commit must be a commit id (letters, digits, '.', '_', '/', '-').",
            field="lineage.source_commit",
        )
    metrics = lineage.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ServiceError("metrics must map metric names to numbers.", field="lineage.metrics")
    clean_metrics = {}
    for name, number in metrics.items():
        if (
            not isinstance(number, int | float)
            or isinstance(number, bool)
            or not math.isfinite(number)
        ):
            raise ServiceError(f"metric {name!r} must be a finite number.", field="lineage.metrics")
        if not str(name).strip() or len(str(name)) > 100:
            raise ServiceError("metric names are 1 to 100 characters.", field="lineage.metrics")
        clean_metrics[str(name).strip()] = number
    values["metrics"] = clean_metrics
    values["frameworks"] = clean_tags(lineage.get("frameworks"), field="lineage.frameworks")
    values["tags"] = clean_tags(lineage.get("tags"), field="lineage.tags")
    values["parent"] = _resolve_parent(lineage.get("parent"), model=model)
    return values


def test_cases_clean(test_cases: Any) -> list[dict]:
    """Check the shape of test cases given at registration (models are checked by validation)."""
    if test_cases in (None, ""):
        return []
    problems = test_cases_schema_problems(test_cases, file="test_cases")
    if problems:
        raise ServiceError(
            " ".join(problem.message for problem in problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
            field="test_cases",
        )
    return test_cases
