"""How the portal shows structured values: lineage metrics as a small table, lists as tags,
hashes shortened with a copy button, URLs as links (never a Python repr on a page)."""

from __future__ import annotations

import re
from typing import Any

from django import template

register = template.Library()

# Lineage fields that hold a content hash or a commit: shown shortened, copied whole.
HASH_FIELDS = {"source_commit", "dataset_version", "package_sha256", "content_sha256"}
TRAINING_JOB_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):\d{12}:training-job/(?P<name>[A-Za-z0-9-]+)$"
)
HEX = re.compile(r"^(?:(?P<algo>[a-z0-9]+):)?(?P<digest>[0-9a-f]{16,})$", re.IGNORECASE)
SHORT_DIGEST = 12


def short_hash(value: str) -> str:
    """`sha256:1d2e…` keeps its algorithm and the first 12 hex digits; anything that is not a
    hex digest is returned as it is."""
    match = HEX.match(value)
    if not match:
        return value
    digest = match["digest"][:SHORT_DIGEST]
    return f"{match['algo']}:{digest}" if match["algo"] else digest


def value_shape(field: str, value: Any) -> dict[str, Any]:
    """What to draw for one lineage value, decided once for every page that shows lineage."""
    if value is None or value == "" or value == [] or value == {}:
        return {"kind": "empty"}
    if isinstance(value, dict):
        return {"kind": "metrics", "items": sorted(value.items())}
    if isinstance(value, list | tuple):
        return {"kind": "tags", "items": [str(item) for item in value]}
    text = str(value)
    if text.startswith(("https://", "http://")):
        return {"kind": "url", "text": text, "href": text}
    job = TRAINING_JOB_ARN.match(text)
    if job:
        # The SageMaker console's page of the training job.
        href = (
            f"https://{job['region']}.console.aws.amazon.com/sagemaker/home"
            f"?region={job['region']}#/jobs/{job['name']}"
        )
        return {"kind": "url", "text": text, "href": href}
    if field in HASH_FIELDS or HEX.match(text):
        short = short_hash(text)
        return {"kind": "hash", "text": text, "short": short, "shortened": short != text}
    return {"kind": "text", "text": text}


@register.inclusion_tag("registry/_lineage_value.html")
def lineage_value(field: str, value: Any) -> dict[str, Any]:
    return value_shape(field, value)


@register.inclusion_tag("registry/_lineage_value.html")
def hash_value(value: str) -> dict[str, Any]:
    return value_shape("content_sha256", value)
