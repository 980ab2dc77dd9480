"""The Amazon SageMaker multi-model endpoint backend (boto3).

A multi-model endpoint is one SageMaker model in `Mode: MultiModel` on the Triton serving
image, whose `ModelDataUrl` is an S3 prefix; every `<model>_<version>.tar.gz` under the
prefix is a target model clients name with `TargetModel`. The first deployment to an
endpoint creates the model, the endpoint configuration (GPU instance type and count) and the
endpoint, waits for InService, and registers target-tracking autoscaling on
`SageMakerVariantInvocationsPerInstance`; later deployments only upload.
https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoints.html
https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-policy.html

SageMaker has no alias for a target model: the live pointer is Berth's record of which
version clients should name, shown in the portal and the API."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.utils import timezone

from monitoring.choices import DEFAULT_VARIANT
from monitoring.sources import CloudWatchSource, MetricTarget
from portal import aws
from toolkit.codec import case_request

from .base import (
    DeploymentStepError,
    EndpointBackend,
    Step,
    StepContext,
    check_smoke_answer,
    smoke_case,
)

if TYPE_CHECKING:
    from deployments.models import Endpoint

TRITON_IMAGE_VERSION = "24.09"
# The account serving the SageMaker Triton images per region, as the sagemaker SDK's
# image_uris config lists them; used when the SDK cannot answer (no such region in the
# installed version). https://github.com/aws/deep-learning-containers/blob/master/available_images.md
TRITON_IMAGE_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-south-1": "692866216735",
    "il-central-1": "780543022126",
    "me-south-1": "217643126080",
}
DEFAULT_TRITON_IMAGE_ACCOUNT = "763104351884"
IN_SERVICE_TIMEOUT_SECONDS = 45 * 60
POLL_SECONDS = 15
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def triton_image_uri(region: str, version: str = TRITON_IMAGE_VERSION) -> str:
    """The SageMaker Triton serving image for `region`. The sagemaker SDK answers from the
    config it ships (no network); the account map is the fallback."""
    try:
        from sagemaker import image_uris

        return image_uris.retrieve(
            "sagemaker-tritonserver", region, version=version, instance_type="ml.g4dn.xlarge"
        )
    except Exception:  # noqa: BLE001 - any SDK failure falls back to the documented map
        account = TRITON_IMAGE_ACCOUNTS.get(region, DEFAULT_TRITON_IMAGE_ACCOUNT)
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return f"{account}.dkr.ecr.{region}.{domain}/sagemaker-tritonserver:{version}-py3"


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DeploymentStepError(f"{uri!r} is not an s3://bucket/prefix/ URI.")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def _missing(exc: ClientError) -> bool:
    """SageMaker answers Describe* of something absent with ValidationException."""
    error = exc.response.get("Error", {})
    return error.get("Code") in {"ValidationException", "ResourceNotFound", "404"} or (
        "not found" in error.get("Message", "").lower()
        or "could not find" in error.get("Message", "").lower()
    )


def _check_allowed(endpoint: Endpoint) -> None:
    """Refuse a bucket or role the endpoint's environment does not allow (any more): the
    endpoint service checked them when they were set, but an admin may have narrowed the
    allow-lists since, and the portal acts with its own AWS credentials here."""
    refusals = endpoint.environment.sagemaker_refusals(
        s3_prefix=endpoint.s3_prefix, execution_role_arn=endpoint.execution_role_arn
    )
    if refusals:
        raise DeploymentStepError(" ".join(refusals.values()))


class SageMakerBackend(EndpointBackend):
    name = "sagemaker"

    def plan(self, endpoint: Endpoint) -> list[Step]:
        return [
            Step("upload_package", "Upload the package under the endpoint's S3 prefix"),
            Step("ensure_model", "Create the multi-model SageMaker model (first deploy)"),
            Step("ensure_endpoint_config", "Create the endpoint configuration (first deploy)"),
            Step("ensure_endpoint", "Create the endpoint and wait for InService (first deploy)"),
            Step("ensure_autoscaling", "Register target-tracking autoscaling"),
            Step("register_model_package", "Mirror the version as a SageMaker model package"),
            Step("smoke_test", "Smoke-invoke with TargetModel"),
            Step("activate", "Record the live version"),
        ]

    @staticmethod
    def _client(endpoint: Endpoint, service: str):
        return aws.client(service, region_name=endpoint.region or settings.AWS_REGION)

    def metric_source(self, endpoint: Endpoint) -> MetricTarget:
        """CloudWatch, in the endpoint's region, for its endpoint and variant."""
        return MetricTarget(
            endpoint=endpoint,
            source=CloudWatchSource(self._client(endpoint, "cloudwatch")),
            source_endpoint=endpoint.target_name,
            variant=endpoint.variant_name or DEFAULT_VARIANT,
        )

    def step_upload_package(self, ctx: StepContext) -> dict[str, Any]:
        from registry.storage import artifact_store

        endpoint, version = ctx.deployment.endpoint, ctx.deployment.version
        if not version.package_uri:
            raise DeploymentStepError(f"{version} has no package; deploy a packaged version.")
        _check_allowed(endpoint)
        bucket, prefix = split_s3_uri(endpoint.s3_prefix)
        key = prefix + version.package_name
        s3 = self._client(endpoint, "s3")
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == version.package_sha256:
                ctx.log(f"s3://{bucket}/{key} is already there with the same sha256.")
                return {"skipped": True, "uri": f"s3://{bucket}/{key}"}
        except ClientError:
            pass
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(
                artifact_store().fetch(version.package_uri, Path(scratch) / version.package_name)
            )
            ctx.heartbeat()
            try:
                s3.upload_file(
                    str(local),
                    bucket,
                    key,
                    ExtraArgs={"Metadata": {"sha256": version.package_sha256}},
                )
            except (ClientError, BotoCoreError) as exc:
                raise DeploymentStepError(
                    f"Uploading to s3://{bucket}/{key} failed: {exc}"
                ) from exc
        ctx.log(f"Uploaded {version.package_name} to s3://{bucket}/{key}.")
        return {"uri": f"s3://{bucket}/{key}"}

    def step_ensure_model(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        name = endpoint.sagemaker_model_name
        try:
            sm.describe_model(ModelName=name)
            ctx.log(f"SageMaker model {name} exists.")
            return {"skipped": True, "model": name}
        except ClientError as exc:
            if not _missing(exc):
                raise
        _check_allowed(endpoint)
        image = endpoint.image_uri or triton_image_uri(endpoint.region or settings.AWS_REGION)
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn=endpoint.execution_role_arn,
            PrimaryContainer={
                "Image": image,
                "Mode": "MultiModel",
                "ModelDataUrl": endpoint.s3_prefix,
                # The Triton image reads the model repository name from here.
                "Environment": {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": ctx.deployment.model.name},
            },
        )
        ctx.log(f"Created SageMaker model {name} (MultiModel, {image}, {endpoint.s3_prefix}).")
        return {"model": name, "image": image}

    def step_ensure_endpoint_config(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        name = endpoint.sagemaker_config_name
        try:
            sm.describe_endpoint_config(EndpointConfigName=name)
            ctx.log(f"Endpoint configuration {name} exists.")
            return {"skipped": True, "config": name}
        except ClientError as exc:
            if not _missing(exc):
                raise
        try:
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": endpoint.variant_name,
                        "ModelName": endpoint.sagemaker_model_name,
                        "InstanceType": endpoint.instance_type,
                        "InitialInstanceCount": endpoint.initial_instance_count,
                    }
                ],
            )
        except ClientError as exc:
            raise DeploymentStepError(
                f"Creating endpoint configuration {name} failed: {exc}"
            ) from exc
        ctx.log(
            f"Created endpoint configuration {name}: {endpoint.initial_instance_count} × "
            f"{endpoint.instance_type}."
        )
        return {"config": name}

    def step_ensure_endpoint(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        created = False
        try:
            status = sm.describe_endpoint(EndpointName=endpoint.target_name)["EndpointStatus"]
        except ClientError as exc:
            if not _missing(exc):
                raise
            sm.create_endpoint(
                EndpointName=endpoint.target_name, EndpointConfigName=endpoint.sagemaker_config_name
            )
            created = True
            ctx.log(f"Creating endpoint {endpoint.name}.")
            status = sm.describe_endpoint(EndpointName=endpoint.target_name)["EndpointStatus"]
        deadline = time.monotonic() + IN_SERVICE_TIMEOUT_SECONDS
        while status in {"Creating", "Updating", "SystemUpdating"}:
            if time.monotonic() > deadline:
                raise DeploymentStepError(f"Endpoint {endpoint.name} is still {status}; giving up.")
            ctx.heartbeat()
            time.sleep(POLL_SECONDS)
            status = sm.describe_endpoint(EndpointName=endpoint.target_name)["EndpointStatus"]
        if status != "InService":
            described = sm.describe_endpoint(EndpointName=endpoint.target_name)
            reason = described.get("FailureReason", "")
            raise DeploymentStepError(f"Endpoint {endpoint.name} is {status}. {reason}".strip())
        ctx.log(f"Endpoint {endpoint.name} is InService.")
        if endpoint.provisioned_at is None:
            type(endpoint).objects.filter(pk=endpoint.pk, provisioned_at__isnull=True).update(
                provisioned_at=timezone.now()
            )
        return {"status": status} if created else {"skipped": True, "status": status}

    def step_ensure_autoscaling(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        scaling = self._client(endpoint, "application-autoscaling")
        resource_id = f"endpoint/{endpoint.target_name}/variant/{endpoint.variant_name}"
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
            MinCapacity=endpoint.autoscaling_min_instances,
            MaxCapacity=endpoint.autoscaling_max_instances,
        )
        policy_name = f"{endpoint.name}-invocations-per-instance"
        scaling.put_scaling_policy(
            PolicyName=policy_name,
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(endpoint.target_invocations_per_instance),
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": endpoint.scale_in_cooldown_seconds,
                "ScaleOutCooldown": endpoint.scale_out_cooldown_seconds,
            },
        )
        ctx.log(
            f"Autoscaling {resource_id}: {endpoint.autoscaling_min_instances}–"
            f"{endpoint.autoscaling_max_instances} instances, target "
            f"{endpoint.target_invocations_per_instance} invocations per instance."
        )
        return {"resource_id": resource_id, "policy": policy_name}

    def step_register_model_package(self, ctx: StepContext) -> dict[str, Any]:
        """Mirror the version in SageMaker's model registry, approved for deployment, so
        AWS-side tooling sees what Berth deployed."""
        endpoint, version = ctx.deployment.endpoint, ctx.deployment.version
        sm = self._client(endpoint, "sagemaker")
        group = version.model.name.replace("_", "-").replace(".", "-")[:63]
        try:
            sm.describe_model_package_group(ModelPackageGroupName=group)
        except ClientError as exc:
            if not _missing(exc):
                raise
            sm.create_model_package_group(
                ModelPackageGroupName=group,
                ModelPackageGroupDescription=f"Berth model {version.model.name}",
            )
        existing = sm.list_model_packages(ModelPackageGroupName=group).get(
            "ModelPackageSummaryList", []
        )
        for summary in existing:
            described = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if described.get("CustomerMetadataProperties", {}).get("berth_version") == str(
                version.version
            ):
                ctx.log(f"Model package {summary['ModelPackageArn']} already mirrors {version}.")
                return {"skipped": True, "arn": summary["ModelPackageArn"]}
        bucket, prefix = split_s3_uri(endpoint.s3_prefix)
        image = endpoint.image_uri or triton_image_uri(endpoint.region or settings.AWS_REGION)
        answer = sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{version} as deployed to {endpoint.name}",
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={
                "berth_version": str(version.version),
                "package_sha256": version.package_sha256,
            },
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": image,
                        "ModelDataUrl": f"s3://{bucket}/{prefix}{version.package_name}",
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": [endpoint.instance_type],
            },
        )
        ctx.log(f"Registered model package {answer['ModelPackageArn']} (Approved).")
        return {"arn": answer["ModelPackageArn"]}

    def step_smoke_test(self, ctx: StepContext) -> dict[str, Any]:
        endpoint, version = ctx.deployment.endpoint, ctx.deployment.version
        case = smoke_case(ctx.deployment)
        if case is None:
            ctx.log(f"{version} has no test cases: no smoke invocation.", level="warning")
            return {"skipped": True}
        runtime = self._client(endpoint, "sagemaker-runtime")
        try:
            # The first invocation of a target model makes SageMaker download and load it.
            response = runtime.invoke_endpoint(
                EndpointName=endpoint.target_name,
                TargetModel=version.package_name,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(case_request(case)).encode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise DeploymentStepError(
                f"Invoking {version.package_name} on {endpoint.name} failed: {exc}"
            ) from exc
        return check_smoke_answer(
            ctx, case, response["Body"].read(), target_model=version.package_name
        )

    def step_activate(self, ctx: StepContext) -> dict[str, Any]:
        target = ctx.deployment.version.package_name
        ctx.log(
            f"Live version recorded: clients invoke {ctx.deployment.endpoint.target_name} with "
            f"TargetModel={target}."
        )
        return {"target_model": target}
