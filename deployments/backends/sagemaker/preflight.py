"""Checks before SageMaker is asked to create an endpoint (its first deployment, a changed
model, a recovery): that the execution role exists, trusts SageMaker and may be passed by the
portal's identity, and that the image is in Amazon ECR in the endpoint's region and has the
tag it names. Without them CreateModel or CreateEndpoint fails later, or the endpoint ends
`Failed` after minutes of provisioning. What the portal's identity may not look at is said
to be unchecked, not passed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from ..base import DeploymentStepError
from .rules import UnknownImageRegion, triton_image_uri

if TYPE_CHECKING:
    from deployments.models import Endpoint

# https://docs.aws.amazon.com/AmazonECR/latest/userguide/docker-pull-ecr-image.html
ECR_IMAGE_PATTERN = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
ASSUMED_ROLE_PATTERN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


@dataclass
class PreflightResult:
    """What was checked (`checked`), what could not be (`unchecked`, with why) and what
    would fail (`failures`)."""

    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def raise_for_failures(self) -> None:
        if self.failures:
            raise DeploymentStepError("Preflight: " + " ".join(self.failures))


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _trusts_sagemaker(document) -> bool:
    if isinstance(document, str):
        document = json.loads(unquote(document))
    for statement in document.get("Statement", []):
        principal = statement.get("Principal") or {}
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        services = [services] if isinstance(services, str) else services
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if (
            statement.get("Effect") == "Allow"
            and SAGEMAKER_SERVICE in services
            and ("sts:AssumeRole" in actions or "sts:*" in actions)
        ):
            return True
    return False


def _principal_arn(caller_arn: str) -> str:
    """The IAM principal SimulatePrincipalPolicy takes for an STS caller: an assumed role's
    session is its role."""
    match = ASSUMED_ROLE_PATTERN.match(caller_arn)
    if match:
        partition, account, role = match.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return caller_arn


def check_role(client, endpoint: Endpoint, result: PreflightResult) -> None:
    """The role exists in the portal's account, trusts SageMaker, and the portal's identity
    may pass it to SageMaker (iam:PassRole, simulated for its own policies)."""
    role_arn = endpoint.execution_role_arn
    role_name = role_arn.rsplit("/", 1)[-1]
    region = endpoint.region or settings.AWS_REGION
    iam, sts = client("iam", region), client("sts", region)
    try:
        caller = sts.get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        result.unchecked.append(f"the role {role_arn} (who the portal is: {exc})")
        return
    if role_arn.split(":")[4:5] != [caller["Account"]]:
        result.unchecked.append(
            f"the role {role_arn}: it is not in the portal's account {caller['Account']}"
        )
        return
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as exc:
        if _code(exc) == "NoSuchEntity":
            result.failures.append(f"The execution role {role_arn} does not exist.")
        else:
            result.unchecked.append(f"the role {role_arn} (iam:GetRole: {_code(exc)})")
        return
    if role.get("Arn") != role_arn:
        result.failures.append(f"The execution role is {role.get('Arn')}, not {role_arn}.")
        return
    if not _trusts_sagemaker(role.get("AssumeRolePolicyDocument") or {}):
        result.failures.append(
            f"The execution role {role_arn} does not trust {SAGEMAKER_SERVICE} "
            "(its trust policy needs sts:AssumeRole for that service)."
        )
        return
    result.checked.append(f"the role {role_name} exists and trusts SageMaker")
    principal = _principal_arn(caller["Arn"])
    try:
        answer = iam.simulate_principal_policy(
            PolicySourceArn=principal,
            ActionNames=["iam:PassRole"],
            ResourceArns=[role_arn],
            ContextEntries=[
                {
                    "ContextKeyName": "iam:PassedToService",
                    "ContextKeyValues": [SAGEMAKER_SERVICE],
                    "ContextKeyType": "string",
                }
            ],
        )
    except (ClientError, BotoCoreError) as exc:
        reason = _code(exc) if isinstance(exc, ClientError) else str(exc)
        result.unchecked.append(
            f"whether {principal} may pass the role (iam:SimulatePrincipalPolicy: {reason}; "
            "CreateModel refuses a role it may not pass)"
        )
        return
    decisions = {r.get("EvalDecision") for r in answer.get("EvaluationResults", [])}
    if decisions != {"allowed"}:
        result.failures.append(
            f"The portal's identity {principal} may not pass {role_arn} to SageMaker "
            f"(iam:PassRole: {', '.join(sorted(d or '?' for d in decisions)) or 'no answer'})."
        )
    else:
        result.checked.append(f"{principal} may pass it to SageMaker")


def check_image(client, endpoint: Endpoint, image: str, result: PreflightResult) -> None:
    """The image is in ECR in the endpoint's region, and its repository has the tag (or
    digest). The Triton image the sagemaker SDK names for the region is AWS's own, in an
    account the portal may pull from but not describe: it is taken as it is."""
    region = endpoint.region or settings.AWS_REGION
    match = ECR_IMAGE_PATTERN.match(image or "")
    if not match:
        result.failures.append(
            f"{image!r} is not an Amazon ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/"
            "REPOSITORY:TAG); SageMaker hosts images from ECR."
        )
        return
    if match["region"] != region:
        result.failures.append(
            f"The image is in {match['region']} and the endpoint in {region}: SageMaker pulls "
            "the image from ECR in the endpoint's region."
        )
        return
    try:
        sdk_image = triton_image_uri(region)
    except UnknownImageRegion:
        sdk_image = ""
    if image == sdk_image:
        result.checked.append(f"the image is the SageMaker Triton image of {region}")
        return
    image_id = (
        {"imageDigest": match["digest"]}
        if match["digest"]
        else {"imageTag": match["tag"] or "latest"}
    )
    try:
        client("ecr", region).describe_images(
            registryId=match["account"], repositoryName=match["repository"], imageIds=[image_id]
        )
    except ClientError as exc:
        if _code(exc) in {"RepositoryNotFoundException", "ImageNotFoundException"}:
            result.failures.append(
                f"The image {image} does not exist in {region}: "
                f"{exc.response['Error'].get('Message', _code(exc))}"
            )
        else:
            result.unchecked.append(f"the image {image} (ecr:DescribeImages: {_code(exc)})")
        return
    except BotoCoreError as exc:
        result.unchecked.append(f"the image {image} ({exc})")
        return
    result.checked.append(f"the image {match['repository']} has {next(iter(image_id.values()))}")


def preflight(client, endpoint: Endpoint, image: str) -> PreflightResult:
    """Every check; `client(service, region)` hands out AWS clients."""
    result = PreflightResult()
    check_role(client, endpoint, result)
    check_image(client, endpoint, image, result)
    return result
