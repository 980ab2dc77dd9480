"""The preflight before SageMaker is asked for a model or an endpoint: the execution role
(exists, trusts SageMaker, may be passed) and the image (ECR, the endpoint's region, the tag
exists). IAM and ECR run on moto; what moto does not implement (SimulatePrincipalPolicy's
refusals, an endpoint SageMaker left Failed) on botocore's Stubber."""

from __future__ import annotations

import json

import boto3
import pytest

from deployments import services
from deployments.backends.sagemaker import SageMakerBackend
from deployments.choices import DeploymentState
from deployments.models import Deployment, Endpoint
from portal.errors import Conflict

from .factories import AWS_REGION, packaged_version, queue_answer, run, sagemaker_endpoint
from .test_sagemaker_contract import (  # noqa: F401 (stubs: a fixture)
    ACCOUNT,
    caller,
    described_endpoint,
    role,
    stubs,
)

pytestmark = pytest.mark.django_db

CUSTOM_IMAGE = f"{ACCOUNT}.dkr.ecr.{AWS_REGION}.amazonaws.com/berth-triton:24.09-custom"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "b" * 64,
        },
        "layers": [],
    }
)


def messages(deployment: Deployment) -> list[tuple[str, str]]:
    return [(line.level, line.message) for line in deployment.log_lines]


def deploy(endpoint, scientist) -> Deployment:
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    return run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))


def nothing_created() -> bool:
    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    s3 = boto3.client("s3", region_name=AWS_REGION)
    return (
        not sm.list_models()["Models"]
        and not sm.list_endpoints()["Endpoints"]
        and s3.list_objects_v2(Bucket="berth-models").get("KeyCount", 0) == 0
    )


def test_the_first_deployment_checks_role_and_image_first(aws, scientist):
    done = deploy(sagemaker_endpoint(), scientist)
    assert done.state == DeploymentState.SUCCEEDED, done.error
    preflight = next(m for _, m in messages(done) if m.startswith("Preflight:"))
    assert "the role berth-sagemaker exists and trusts SageMaker" in preflight
    assert "may pass it to SageMaker" in preflight
    assert "the image is the SageMaker Triton image of us-east-1" in preflight

    # Later deployments to the same settings find the model: no preflight again.
    again = deploy(Endpoint.objects.get(name="sm-staging"), scientist)
    assert again.state == DeploymentState.SUCCEEDED, again.error
    assert not any(m.startswith("Preflight") for _, m in messages(again))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/gone"},
            f"The execution role arn:aws:iam::{ACCOUNT}:role/gone does not exist.",
        ),
        (
            {"image_uri": CUSTOM_IMAGE.replace("24.09-custom", "nope")},
            "berth-triton:nope does not exist in us-east-1",
        ),
        (
            {"image_uri": CUSTOM_IMAGE.replace(AWS_REGION, "eu-west-1")},
            "The image is in eu-west-1 and the endpoint in us-east-1",
        ),
        ({"image_uri": "docker.io/nvidia/tritonserver:24.09"}, "is not an Amazon ECR image"),
    ],
)
def test_a_failing_preflight_stops_before_anything_is_created(aws, scientist, fields, reason):
    boto3.client("ecr", region_name=AWS_REGION).create_repository(repositoryName="berth-triton")
    endpoint = sagemaker_endpoint(**fields)
    done = deploy(endpoint, scientist)
    assert done.state == DeploymentState.FAILED
    assert reason in done.error and done.error.startswith("Preflight:")
    assert nothing_created()


def test_a_role_that_does_not_trust_sagemaker_is_refused(aws, scientist):
    iam = boto3.client("iam", region_name=AWS_REGION)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn = iam.create_role(RoleName="ec2-only", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    done = deploy(sagemaker_endpoint(execution_role_arn=arn), scientist)
    assert "does not trust sagemaker.amazonaws.com" in done.error
    assert nothing_created()


def test_a_custom_image_with_its_tag_in_ecr_passes(aws, scientist):
    ecr = boto3.client("ecr", region_name=AWS_REGION)
    ecr.create_repository(repositoryName="berth-triton")
    ecr.put_image(repositoryName="berth-triton", imageManifest=MANIFEST, imageTag="24.09-custom")
    done = deploy(sagemaker_endpoint(image_uri=CUSTOM_IMAGE), scientist)
    assert done.state == DeploymentState.SUCCEEDED, done.error
    preflight = next(m for _, m in messages(done) if m.startswith("Preflight:"))
    assert "the image berth-triton has 24.09-custom" in preflight


def test_an_assumed_role_that_may_not_pass_the_role_is_refused(stubs):  # noqa: F811
    endpoint = sagemaker_endpoint()
    caller(stubs["sts"], f"arn:aws:sts::{ACCOUNT}:assumed-role/berth-portal/i-0abc")
    role(stubs["iam"])
    stubs["iam"].add_response(
        "simulate_principal_policy",
        {
            "EvaluationResults": [
                {
                    "EvalActionName": "iam:PassRole",
                    "EvalResourceName": endpoint.execution_role_arn,
                    "EvalDecision": "implicitDeny",
                }
            ]
        },
        {
            # The session's role is the principal IAM simulates.
            "PolicySourceArn": f"arn:aws:iam::{ACCOUNT}:role/berth-portal",
            "ActionNames": ["iam:PassRole"],
            "ResourceArns": [endpoint.execution_role_arn],
            "ContextEntries": [
                {
                    "ContextKeyName": "iam:PassedToService",
                    "ContextKeyValues": ["sagemaker.amazonaws.com"],
                    "ContextKeyType": "string",
                }
            ],
        },
    )
    result = SageMakerBackend().preflight(endpoint)
    assert result.failures == [
        f"The portal's identity arn:aws:iam::{ACCOUNT}:role/berth-portal may not pass "
        f"{endpoint.execution_role_arn} to SageMaker (iam:PassRole: implicitDeny)."
    ]


def test_what_the_portal_may_not_look_at_is_unchecked_not_passed(stubs):  # noqa: F811
    endpoint = sagemaker_endpoint(image_uri=CUSTOM_IMAGE)
    caller(stubs["sts"], f"arn:aws:iam::{ACCOUNT}:user/berth")
    role(stubs["iam"])
    stubs["iam"].add_client_error(
        "simulate_principal_policy", service_error_code="AccessDenied", http_status_code=403
    )
    stubs["ecr"].add_client_error(
        "describe_images", service_error_code="AccessDeniedException", http_status_code=400
    )
    result = SageMakerBackend().preflight(endpoint)
    assert result.failures == []
    assert [u.split(" (")[0] for u in result.unchecked] == [
        f"whether arn:aws:iam::{ACCOUNT}:user/berth may pass the role",
        f"the image {CUSTOM_IMAGE}",
    ]


def test_recovery_is_refused_while_the_role_is_missing(stubs, platform_admin):  # noqa: F811
    endpoint = sagemaker_endpoint()
    stubs["sagemaker"].add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "Failed", endpoint.sagemaker_config_name, "No role"),
        {"EndpointName": "sm-staging"},
    )
    caller(stubs["sts"], f"arn:aws:iam::{ACCOUNT}:user/berth")
    stubs["iam"].add_client_error(
        "get_role", service_error_code="NoSuchEntity", http_status_code=404
    )
    # Nothing is deleted: the Stubber would refuse DeleteEndpoint.
    with pytest.raises(Conflict, match="role/berth-sagemaker does not exist"):
        services.endpoint_recover(actor=platform_admin, endpoint=endpoint)
