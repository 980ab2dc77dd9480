"""The README's least-privilege policy for the portal allows every AWS call Berth makes: a
first deployment, the model registry's approval and decommissioning run against moto while
botocore reports each operation, and each must be an action the policy grants. A call added
to the backend without its permission fails here, not on a real account."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from deployments import services
from deployments.backends.sagemaker import SageMakerBackend
from portal import aws as portal_aws

from .factories import packaged_version, queue_answer, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db

# IAM's prefix per botocore service, where they differ, and the IAM action an S3 operation
# needs (HeadObject is authorised by s3:GetObject, a multipart upload by s3:PutObject).
IAM_PREFIX = {"sagemaker-runtime": "sagemaker"}
# Calls IAM authorises for everyone: "No permissions are required to perform this operation."
# https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
NO_PERMISSION_NEEDED = {"sts:GetCallerIdentity"}
S3_ACTIONS = {
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
}


def readme_policies() -> list[dict]:
    text = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = text[text.index("### Least-privilege IAM") :]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def granted(policy: dict) -> set[str]:
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


@pytest.fixture
def calls(monkeypatch):
    """Every AWS operation made through portal.aws, as `<iam prefix>:<action>`."""
    made: set[str] = set()
    real_client = portal_aws.client

    def observed(service_name, **kwargs):
        client = real_client(service_name, **kwargs)

        def record(model, **_):
            service = model.service_model.service_name
            prefix = IAM_PREFIX.get(service, service)
            name = S3_ACTIONS.get(model.name, model.name) if prefix == "s3" else model.name
            made.add(f"{prefix}:{name}")

        client.meta.events.register("before-call", record)
        return client

    monkeypatch.setattr(portal_aws, "client", observed)
    return made


def test_the_portal_policy_allows_every_call_berth_makes(aws, scientist, calls):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    result = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert result.error == ""
    SageMakerBackend().approve_model_package(endpoint=endpoint, version=version)
    SageMakerBackend().decommission(endpoint)

    portal_policy, execution_policy = readme_policies()
    allowed = granted(portal_policy) | NO_PERMISSION_NEEDED
    assert calls, "no AWS call was observed"
    assert {"iam:GetRole", "iam:SimulatePrincipalPolicy"} <= calls  # the preflight ran
    assert calls <= allowed, sorted(calls - allowed)
    # Calls only the Stubber contract tests reach (moto has no UpdateEndpoint, no Failed).
    assert {"sagemaker:UpdateEndpoint", "sagemaker:DeleteEndpoint"} <= allowed
    # ...and a custom image's preflight (the SDK's Triton image is not described).
    assert "ecr:DescribeImages" in allowed
    # The execution role reads packages and pulls the image; it creates nothing.
    assert not any(a.startswith("sagemaker:") for a in granted(execution_policy))
