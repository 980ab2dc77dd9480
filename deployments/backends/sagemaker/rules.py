"""What SageMaker accepts for a multi-model endpoint, checked before anything is created in
AWS: GPU instance types, names and their derived model and configuration names, the Triton
image of a region, model package group names, S3 prefixes."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from django.conf import settings

from ...choices import gpu_instance_types
from ..base import DeploymentStepError

if TYPE_CHECKING:
    from deployments.models import Endpoint

TRITON_IMAGE_VERSION = "24.09"
# SageMaker names (models, endpoint configurations, endpoints, model package groups).
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModel.html
SAGEMAKER_NAME_MAX = 63
SAGEMAKER_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# A rolled-out model or configuration is named `<endpoint>-m-<6 hex>` / `<endpoint>-c-<6 hex>`
# (the first ones `<endpoint>-model` / `<endpoint>-config`): the longest suffix is 9.
DERIVED_SUFFIX_MAX = 9
SAGEMAKER_ENDPOINT_NAME_MAX = SAGEMAKER_NAME_MAX - DERIVED_SUFFIX_MAX


class UnknownImageRegion(ValueError):
    """The installed sagemaker SDK lists no Triton image for a region."""


def triton_image_uri(region: str, version: str = TRITON_IMAGE_VERSION) -> str:
    """The SageMaker Triton serving image for `region`, from the config the sagemaker SDK
    ships (no network). A region it does not list has no image Berth could name with any
    confidence (the account serving it differs per region): UnknownImageRegion, and the
    endpoint names its image explicitly."""
    from sagemaker import image_uris

    try:
        return image_uris.retrieve(
            "sagemaker-tritonserver", region, version=version, instance_type="ml.g4dn.xlarge"
        )
    except ValueError as exc:
        raise UnknownImageRegion(
            f"The sagemaker SDK knows no Triton {version} image for region {region!r}; give "
            "the endpoint's image URI explicitly (the sagemaker-tritonserver image in that "
            "region's ECR account)."
        ) from exc


def derived_name_problems(name: str) -> list[str]:
    """Why `name` cannot name a SageMaker endpoint whose model and configuration names are
    derived from it; empty when it can."""
    if len(name) > SAGEMAKER_ENDPOINT_NAME_MAX:
        return [
            f"SageMaker names are at most {SAGEMAKER_NAME_MAX} characters and Berth names the "
            f"endpoint's model and configuration after it (up to {DERIVED_SUFFIX_MAX} more): "
            f"a SageMaker endpoint's name has at most {SAGEMAKER_ENDPOINT_NAME_MAX} characters "
            f"({name[:20]}… has {len(name)})."
        ]
    return []


def instance_type_problems(instance_type: str) -> list[str]:
    """Why SageMaker would refuse `instance_type` for a multi-model endpoint; empty when it
    is on AWS's list (or an admin added it)."""
    allowed = [value for value, _ in gpu_instance_types()]
    if instance_type in allowed:
        return []
    return [
        f"{instance_type or 'No instance type'} is not a GPU instance type SageMaker offers for "
        f"multi-model endpoints; choose one of {', '.join(allowed)}."
    ]


def model_package_group_name(model_name: str) -> str:
    """The SageMaker model package group of a Berth model. SageMaker allows letters, digits
    and inner '-' (no '_' or '.', no trailing '-'), 63 characters; a name that had to be
    cleaned gets a short hash of the original, so `a_b` and `a-b` never share a group."""
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", model_name).strip("-")
    if cleaned == model_name and len(cleaned) <= SAGEMAKER_NAME_MAX:
        return cleaned
    digest = hashlib.sha256(model_name.encode()).hexdigest()[:8]
    head = cleaned[: SAGEMAKER_NAME_MAX - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DeploymentStepError(f"{uri!r} is not an s3://bucket/prefix/ URI.")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def _check_allowed(endpoint: Endpoint) -> None:
    """Refuse a bucket or role the endpoint's environment does not allow (any more): the
    endpoint service checked them when they were set, but an admin may have narrowed the
    allow-lists since, and the portal acts with its own AWS credentials here."""
    refusals = endpoint.environment.sagemaker_refusals(
        s3_prefix=endpoint.s3_prefix, execution_role_arn=endpoint.execution_role_arn
    )
    if refusals:
        raise DeploymentStepError(" ".join(refusals.values()))


def _check_choices(endpoint: Endpoint) -> None:
    """Refuse, before anything is created in AWS, what SageMaker would refuse half-way: an
    instance type not offered for multi-model endpoints (an admin may have shortened the
    list, or the endpoint predates it), names past 63 characters, an unknown image region."""
    problems = [
        *instance_type_problems(endpoint.instance_type),
        *derived_name_problems(endpoint.name),
    ]
    if not endpoint.image_uri:
        try:
            triton_image_uri(endpoint.region or settings.AWS_REGION)
        except UnknownImageRegion as exc:
            problems.append(str(exc))
    if problems:
        raise DeploymentStepError(" ".join(problems))


def package_problems(summary: dict) -> list[str]:
    """What SageMaker's Triton would serve wrong in a package (its validated summary):
    several top-level models and no ensemble wiring them, of which it loads one in no
    defined order as the TargetModel."""
    top = summary.get("top_level_models") or []
    if len(top) <= 1:
        return []
    return [
        f"SageMaker would serve one of {', '.join(top)} in no defined order: the package has "
        "several top-level models and no ensemble wiring them (berth.yaml's model: does not "
        "reach SageMaker). Add an ensemble over them, or register one model per package."
    ]


def _image(endpoint: Endpoint) -> str:
    try:
        return endpoint.image_uri or triton_image_uri(endpoint.region or settings.AWS_REGION)
    except UnknownImageRegion as exc:
        raise DeploymentStepError(str(exc)) from exc
