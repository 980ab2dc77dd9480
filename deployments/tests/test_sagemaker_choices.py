"""Choices SageMaker refuses are refused by Berth first: instance types off AWS's list for
multi-model endpoints, names whose derived model and configuration names pass 63
characters, names that differ only in case, regions without a known Triton image."""

from __future__ import annotations

import boto3
import pytest
from django.db import IntegrityError, transaction

from deployments import services
from deployments.backends.sagemaker import (
    SAGEMAKER_ENDPOINT_NAME_MAX,
    SAGEMAKER_NAME_MAX,
    SageMakerBackend,
)
from deployments.choices import DeploymentState, StepState, gpu_instance_types
from deployments.models import Endpoint, Environment
from portal.errors import ServiceError

from .factories import AWS_REGION, allow, packaged_version, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db

ROLE = "arn:aws:iam::123456789012:role/berth-sagemaker"


@pytest.fixture
def staging():
    return allow(Environment.objects.get(name="staging"), s3_prefix="s3://berth-models/", role=ROLE)


def create(actor, environment, name="sm-new", **fields):
    values = {
        "execution_role_arn": ROLE,
        "s3_prefix": f"s3://berth-models/{name}/",
        "region": "us-east-1",
        "instance_type": "ml.g4dn.xlarge",
    }
    values.update(fields)
    return services.endpoint_create(
        actor=actor, name=name, environment=environment, backend="sagemaker", **values
    )


def test_only_awss_multi_model_gpu_types_are_offered():
    offered = {value for value, _ in gpu_instance_types()}
    assert {"ml.g4dn.xlarge", "ml.g5.16xlarge", "ml.p3.2xlarge"} <= offered
    # Not on AWS's list for multi-model endpoints (CreateEndpointConfig refuses them).
    assert not offered & {"ml.g4dn.12xlarge", "ml.g5.12xlarge", "ml.g6.xlarge", "ml.p4d.24xlarge"}


@pytest.mark.parametrize("instance_type", ["ml.g5.12xlarge", "ml.p4d.24xlarge", "ml.g6.xlarge"])
def test_an_instance_type_aws_refuses_for_multi_model_is_refused(
    platform_admin, staging, instance_type
):
    with pytest.raises(ServiceError) as error:
        create(platform_admin, staging, instance_type=instance_type)
    assert (error.value.field, error.value.code) == ("instance_type", "not_offered")
    assert "multi-model" in error.value.message
    assert not Endpoint.objects.filter(name="sm-new").exists()


def test_an_admin_extends_the_list_in_settings(platform_admin, staging, settings):
    settings.BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES = ["ml.g6.xlarge"]
    endpoint = create(platform_admin, staging, instance_type="ml.g6.xlarge")
    assert endpoint.instance_type == "ml.g6.xlarge"


def test_names_leave_room_for_the_derived_model_and_config_names(platform_admin, staging):
    longest = "e" * SAGEMAKER_ENDPOINT_NAME_MAX
    endpoint = create(platform_admin, staging, name=longest)
    backend = SageMakerBackend()
    names = [
        *backend.model_names(endpoint),
        *backend.config_names(endpoint, backend.model_names(endpoint)[1]),
    ]
    assert max(len(n) for n in names) == SAGEMAKER_NAME_MAX
    with pytest.raises(ServiceError) as error:
        create(platform_admin, staging, name="e" * (SAGEMAKER_ENDPOINT_NAME_MAX + 1))
    assert (error.value.field, error.value.code) == ("name", "name_too_long")
    assert f"at most {SAGEMAKER_ENDPOINT_NAME_MAX} characters" in error.value.message


def test_sagemaker_names_are_unique_whatever_their_case(platform_admin, staging):
    create(platform_admin, staging, name="fraud")
    with pytest.raises(ServiceError) as error:
        create(platform_admin, staging, name="Fraud")
    assert error.value.code == "target_taken"
    assert "case-insensitive" in error.value.message
    # Nor may another endpoint map to it under other capitals.
    with pytest.raises(ServiceError) as error:
        create(platform_admin, staging, name="other", target_name="FRAUD")
    assert error.value.field == "target_name"
    # The database holds the rule too, for writes that do not pass the service.
    with pytest.raises(IntegrityError), transaction.atomic():
        Endpoint.objects.create(
            name="fraud-2", environment=staging, backend="sagemaker", target_name="FRAUD"
        )


def test_a_region_without_a_known_image_needs_an_explicit_one(platform_admin, staging):
    with pytest.raises(ServiceError) as error:
        create(platform_admin, staging, region="xx-nowhere-1")
    assert (error.value.field, error.value.code) == ("image_uri", "no_image")
    image = "111122223333.dkr.ecr.xx-nowhere-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
    endpoint = create(platform_admin, staging, region="xx-nowhere-1", image_uri=image)
    assert endpoint.image_uri == image


def test_a_refused_instance_type_stops_the_deployment_before_anything_is_created(aws, scientist):
    endpoint = sagemaker_endpoint()
    # An endpoint saved before the list was narrowed.
    Endpoint.objects.filter(pk=endpoint.pk).update(instance_type="ml.g5.48xlarge")
    version = packaged_version(registered_by=scientist)
    result = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))

    assert result.state == DeploymentState.FAILED
    assert "ml.g5.48xlarge is not a GPU instance type" in result.error
    assert [s["name"] for s in result.steps if s["state"] == StepState.FAILED] == ["upload_package"]
    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    s3 = boto3.client("s3", region_name=AWS_REGION)
    assert s3.list_objects_v2(Bucket="berth-models").get("Contents", []) == []


def test_a_bucket_in_another_region_stops_the_deployment_before_anything_is_created(aws, scientist):
    boto3.client("s3", region_name="us-west-2").create_bucket(
        Bucket="berth-models-oregon",
        CreateBucketConfiguration={"LocationConstraint": "us-west-2"},
    )
    endpoint = sagemaker_endpoint(s3_prefix="s3://berth-models-oregon/sm-staging/")
    version = packaged_version(registered_by=scientist)
    result = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))

    assert result.state == DeploymentState.FAILED
    assert "berth-models-oregon is in us-west-2 and the endpoint in us-east-1" in result.error
    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    assert sm.list_models()["Models"] == []
    s3 = boto3.client("s3", region_name="us-west-2")
    assert s3.list_objects_v2(Bucket="berth-models-oregon").get("Contents", []) == []
