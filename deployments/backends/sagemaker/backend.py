"""The SageMaker backend's deployment plan: upload, model, endpoint configuration, endpoint
(created, or updated to a changed configuration), autoscaling, smoke test, activation."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.utils import timezone

from monitoring.choices import DEFAULT_VARIANT
from monitoring.sources import CloudWatchSource, MetricTarget
from portal import aws
from toolkit.codec import case_request

from ..base import (
    DeploymentStepError,
    EndpointBackend,
    Step,
    StepContext,
    check_smoke_answer,
    smoke_case,
)
from .calls import _already_exists, _describe, _digest, invoke_when_loaded
from .lifecycle import EndpointLifecycle
from .registry import ModelRegistryMirror
from .rollout import EndpointRollout
from .rules import _check_allowed, _check_choices, _image, package_problems, split_s3_uri

if TYPE_CHECKING:
    from deployments.models import Endpoint

IN_SERVICE_TIMEOUT_SECONDS = 45 * 60
POLL_SECONDS = 15
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# Endpoint states SageMaker passes through on its own; a deployment waits them out.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html
SETTLING_STATES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
# DescribeEndpoint right after CreateEndpoint may answer "could not find" for a moment.
NOT_FOUND_RETRIES = 10
NOT_FOUND_RETRY_SECONDS = 2.0


class SageMakerBackend(ModelRegistryMirror, EndpointLifecycle, EndpointRollout, EndpointBackend):
    """Deploys onto a SageMaker multi-model endpoint. The model and endpoint configuration
    are named after what the endpoint's settings ask for, so each step finds what an
    earlier (or concurrent) deployment created with the same settings and creates only
    what a change needs."""

    name = "sagemaker"

    def plan(self, endpoint: Endpoint) -> list[Step]:
        return [
            Step("upload_package", "Check the endpoint's choices, role and image; upload"),
            Step("ensure_model", "Create the multi-model SageMaker model (first deploy, change)"),
            Step(
                "ensure_endpoint_config",
                "Create the endpoint configuration (first deploy, change)",
            ),
            Step(
                "ensure_endpoint",
                "Create the endpoint, or update it blue/green with its guardrails; wait for "
                "InService (first deploy, change)",
            ),
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

    # What the endpoint's settings ask SageMaker for --------------------------------------

    @staticmethod
    def model_spec(endpoint: Endpoint) -> dict[str, Any]:
        """The SageMaker model the endpoint's settings describe (what CreateModel gets and
        DescribeModel answers)."""
        return {
            "Image": _image(endpoint),
            "Mode": "MultiModel",
            "ModelDataUrl": endpoint.s3_prefix,
            "ExecutionRoleArn": endpoint.execution_role_arn,
        }

    @staticmethod
    def _model_matches(described: dict[str, Any], spec: dict[str, Any]) -> bool:
        container = described.get("PrimaryContainer") or {}
        return (
            container.get("Image") == spec["Image"]
            and container.get("Mode") == spec["Mode"]
            and container.get("ModelDataUrl") == spec["ModelDataUrl"]
            and described.get("ExecutionRoleArn") == spec["ExecutionRoleArn"]
        )

    def model_names(self, endpoint: Endpoint) -> list[str]:
        """Where the model for the endpoint's settings lives: `<name>-model` as first
        created, or `<name>-m-<digest of the settings>` once they changed."""
        spec = self.model_spec(endpoint)
        return [endpoint.sagemaker_model_name, f"{endpoint.name}-m-{_digest(spec)}"]

    @staticmethod
    def variant_spec(endpoint: Endpoint, model_name: str) -> dict[str, Any]:
        return {
            "VariantName": endpoint.variant_name,
            "ModelName": model_name,
            "InstanceType": endpoint.instance_type,
            "InitialInstanceCount": endpoint.initial_instance_count,
        }

    @staticmethod
    def _config_matches(described: dict[str, Any], variant: dict[str, Any]) -> bool:
        variants = described.get("ProductionVariants") or []
        return len(variants) == 1 and all(variants[0].get(k) == v for k, v in variant.items())

    def config_names(self, endpoint: Endpoint, model_name: str) -> list[str]:
        variant = self.variant_spec(endpoint, model_name)
        return [endpoint.sagemaker_config_name, f"{endpoint.name}-c-{_digest(variant)}"]

    def _find(
        self, names: list[str], describe: Callable[[str], dict | None], matches
    ) -> tuple[str | None, str | None]:
        """(the first name whose resource matches, the first free name)."""
        free = None
        for name in names:
            described = describe(name)
            if described is None:
                free = free or name
            elif matches(described):
                return name, None
        return None, free

    def resolve_model(self, sm, endpoint: Endpoint) -> tuple[str | None, str | None]:
        spec = self.model_spec(endpoint)
        return self._find(
            self.model_names(endpoint),
            lambda name: _describe(sm.describe_model, ModelName=name),
            lambda described: self._model_matches(described, spec),
        )

    def resolve_config(self, sm, endpoint: Endpoint) -> tuple[str | None, str | None]:
        model, _ = self.resolve_model(sm, endpoint)
        if model is None:
            raise DeploymentStepError("The endpoint's SageMaker model does not exist yet.")
        variant = self.variant_spec(endpoint, model)
        return self._find(
            self.config_names(endpoint, model),
            lambda name: _describe(sm.describe_endpoint_config, EndpointConfigName=name),
            lambda described: self._config_matches(described, variant),
        )

    # Steps -------------------------------------------------------------------------------

    def step_upload_package(self, ctx: StepContext) -> dict[str, Any]:
        """Check what AWS would refuse, then place the package under the prefix, and every
        version live on the endpoint too: after a change of prefix the new model serves from
        the new one."""
        from deployments.models import LiveVersion

        endpoint, version = ctx.deployment.endpoint, ctx.deployment.version
        if not version.package_uri:
            raise DeploymentStepError(f"{version} has no package; deploy a packaged version.")
        _check_allowed(endpoint)
        _check_choices(endpoint)
        refused = package_problems(version.repository_summary or {})
        if refused:
            raise DeploymentStepError(" ".join(refused))
        sm = self._client(endpoint, "sagemaker")
        if endpoint.provisioned_at is None or self.resolve_model(sm, endpoint)[0] is None:
            # SageMaker is about to be asked for a model (and an endpoint): what would fail
            # there fails here, before anything is uploaded or created.
            checks = self.preflight(endpoint)
            checks.raise_for_failures()
            if checks.checked:
                ctx.log("Preflight: " + "; ".join(checks.checked) + ".")
            for unchecked in checks.unchecked:
                ctx.log(f"Preflight did not check {unchecked}.", level="warning")
        bucket, prefix = split_s3_uri(endpoint.s3_prefix)
        s3 = self._client(endpoint, "s3")
        self._check_bucket_region(s3, bucket, endpoint)
        uri = self._place(ctx, s3, bucket, prefix, version)
        others = (
            LiveVersion.objects.filter(endpoint=endpoint)
            .exclude(model=version.model)
            .select_related("version__model")
        )
        for live in others:
            self._place(ctx, s3, bucket, prefix, live.version)
        return {"uri": uri}

    @staticmethod
    def _check_bucket_region(s3, bucket: str, endpoint: Endpoint) -> None:
        """SageMaker loads a model's data only from a bucket in the endpoint's region; the
        endpoint would otherwise be created and fail (or fail at the first cold load)."""
        region = endpoint.region or settings.AWS_REGION
        try:
            answer = s3.get_bucket_location(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            raise DeploymentStepError(f"Cannot read the region of bucket {bucket}: {exc}") from exc
        # No constraint means us-east-1; "EU" is the old name of eu-west-1.
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html
        location = answer.get("LocationConstraint") or "us-east-1"
        location = "eu-west-1" if location == "EU" else location
        if location != region:
            raise DeploymentStepError(
                f"The bucket {bucket} is in {location} and the endpoint in {region}: SageMaker "
                "loads models only from a bucket in the endpoint's region."
            )

    def _place(self, ctx: StepContext, s3, bucket: str, prefix: str, version) -> str:
        from registry.storage import artifact_store

        key = prefix + version.package_name
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == version.package_sha256:
                ctx.log(f"s3://{bucket}/{key} is already there with the same sha256.")
                return f"s3://{bucket}/{key}"
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
        return f"s3://{bucket}/{key}"

    def step_ensure_model(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        spec = self.model_spec(endpoint)
        found, free = self.resolve_model(sm, endpoint)
        if found is not None:
            ctx.log(f"SageMaker model {found} exists with the endpoint's settings.")
            return {"skipped": True, "model": found}
        if free is None:
            raise DeploymentStepError(
                f"Models named for {endpoint.name} exist with other settings; none is free."
            )
        _check_allowed(endpoint)
        try:
            sm.create_model(
                ModelName=free,
                ExecutionRoleArn=spec["ExecutionRoleArn"],
                PrimaryContainer={
                    "Image": spec["Image"],
                    "Mode": "MultiModel",
                    "ModelDataUrl": spec["ModelDataUrl"],
                    # The Triton image reads the model repository name from here.
                    "Environment": {
                        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": ctx.deployment.model.name
                    },
                },
            )
        except ClientError as exc:
            # Two first deployments (of different models) may race here: the model the
            # other one created is as good as ours when it has the same settings.
            described = _describe(sm.describe_model, ModelName=free)
            if _already_exists(exc) and described and self._model_matches(described, spec):
                ctx.log(f"SageMaker model {free} was just created by another deployment.")
                return {"skipped": True, "model": free}
            raise DeploymentStepError(f"Creating SageMaker model {free} failed: {exc}") from exc
        ctx.log(
            f"Created SageMaker model {free} (MultiModel, {spec['Image']}, {endpoint.s3_prefix})."
        )
        return {"model": free, "image": spec["Image"]}

    def step_ensure_endpoint_config(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        found, free = self.resolve_config(sm, endpoint)
        if found is not None:
            ctx.log(f"Endpoint configuration {found} exists with the endpoint's settings.")
            return {"skipped": True, "config": found}
        if free is None:
            raise DeploymentStepError(
                f"Configurations named for {endpoint.name} exist with other settings."
            )
        model, _ = self.resolve_model(sm, endpoint)
        variant = self.variant_spec(endpoint, model)
        try:
            sm.create_endpoint_config(EndpointConfigName=free, ProductionVariants=[variant])
        except ClientError as exc:
            described = _describe(sm.describe_endpoint_config, EndpointConfigName=free)
            if _already_exists(exc) and described and self._config_matches(described, variant):
                ctx.log(f"Endpoint configuration {free} was just created by another deployment.")
                return {"skipped": True, "config": free}
            raise DeploymentStepError(
                f"Creating endpoint configuration {free} failed: {exc}"
            ) from exc
        ctx.log(
            f"Created endpoint configuration {free}: {endpoint.initial_instance_count} × "
            f"{endpoint.instance_type}, model {model}."
        )
        return {"config": free}

    def _describe_endpoint(self, sm, endpoint: Endpoint) -> dict | None:
        return _describe(sm.describe_endpoint, EndpointName=endpoint.target_name)

    def _wait_settled(self, ctx: StepContext, sm, endpoint: Endpoint, described: dict) -> dict:
        """Wait while SageMaker creates, updates or rolls back the endpoint."""
        deadline = time.monotonic() + IN_SERVICE_TIMEOUT_SECONDS
        status = described["EndpointStatus"]
        while status in SETTLING_STATES:
            if time.monotonic() > deadline:
                raise DeploymentStepError(f"Endpoint {endpoint.name} is still {status}; giving up.")
            ctx.heartbeat()
            time.sleep(POLL_SECONDS)
            described = sm.describe_endpoint(EndpointName=endpoint.target_name)
            if described["EndpointStatus"] != status:
                status = described["EndpointStatus"]
                ctx.log(f"Endpoint {endpoint.name} is {status}.")
        return described

    def step_ensure_endpoint(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        sm = self._client(endpoint, "sagemaker")
        config, _ = self.resolve_config(sm, endpoint)
        if config is None:
            raise DeploymentStepError("The endpoint's configuration does not exist yet.")
        described = self._describe_endpoint(sm, endpoint)
        changed = False
        if described is None:
            try:
                sm.create_endpoint(EndpointName=endpoint.target_name, EndpointConfigName=config)
            except ClientError as exc:
                if not _already_exists(exc):
                    raise DeploymentStepError(
                        f"Creating endpoint {endpoint.target_name} failed: {exc}"
                    ) from exc
            changed = True
            ctx.log(f"Creating endpoint {endpoint.target_name} with {config}.")
            described = self._describe_after_create(ctx, sm, endpoint)
        described = self._wait_settled(ctx, sm, endpoint, described)
        if described["EndpointStatus"] == "Failed":
            raise DeploymentStepError(
                f"Endpoint {endpoint.target_name} is Failed: "
                f"{described.get('FailureReason') or 'no reason given'}. Recover it (this "
                "deletes the failed endpoint) and deploy again."
            )
        if (
            described["EndpointStatus"] == "InService"
            and described.get("EndpointConfigName") != config
        ):
            self._roll_out(ctx, sm, endpoint, described, config)
            changed = True
            described = self._wait_settled(
                ctx, sm, endpoint, sm.describe_endpoint(EndpointName=endpoint.target_name)
            )
            if described.get("EndpointConfigName") != config:
                # It serves on the old configuration again: so does its autoscaling.
                if described["EndpointStatus"] == "InService":
                    self.apply_autoscaling(endpoint)
                raise DeploymentStepError(
                    f"SageMaker rolled endpoint {endpoint.target_name} back to "
                    f"{described.get('EndpointConfigName')}: "
                    f"{described.get('FailureReason') or 'no reason given'}."
                )
        status = described["EndpointStatus"]
        if status != "InService":
            reason = described.get("FailureReason", "")
            raise DeploymentStepError(f"Endpoint {endpoint.name} is {status}. {reason}".strip())
        ctx.log(f"Endpoint {endpoint.target_name} is InService on {config}.")
        if endpoint.provisioned_at is None:
            type(endpoint).objects.filter(pk=endpoint.pk, provisioned_at__isnull=True).update(
                provisioned_at=timezone.now()
            )
        result = {"status": status, "config": config}
        return result if changed else {"skipped": True, **result}

    def _describe_after_create(self, ctx: StepContext, sm, endpoint: Endpoint) -> dict:
        """DescribeEndpoint right after CreateEndpoint may not find it for a moment."""
        for _ in range(NOT_FOUND_RETRIES):
            described = self._describe_endpoint(sm, endpoint)
            if described is not None:
                return described
            ctx.heartbeat()
            time.sleep(NOT_FOUND_RETRY_SECONDS)
        raise DeploymentStepError(
            f"SageMaker accepted endpoint {endpoint.target_name} but does not describe it."
        )

    def _resource_id(self, endpoint: Endpoint) -> str:
        return f"endpoint/{endpoint.target_name}/variant/{endpoint.variant_name}"

    def remove_autoscaling(self, endpoint: Endpoint) -> bool:
        """Deregister the variant's scalable target (its policies go with it); False when
        none was registered."""
        scaling = self._client(endpoint, "application-autoscaling")
        resource_id = self._resource_id(endpoint)
        targets = scaling.describe_scalable_targets(
            ServiceNamespace="sagemaker",
            ResourceIds=[resource_id],
            ScalableDimension=SCALABLE_DIMENSION,
        ).get("ScalableTargets", [])
        if not targets:
            return False
        scaling.deregister_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
        )
        return True

    def step_ensure_autoscaling(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        applied = self.apply_autoscaling(endpoint)
        ctx.log(
            f"Autoscaling {applied['resource_id']}: {endpoint.autoscaling_min_instances}–"
            f"{endpoint.autoscaling_max_instances} instances, target "
            f"{endpoint.target_invocations_per_instance} invocations per instance."
        )
        return {"resource_id": applied["resource_id"], "policy": applied["policy"]}

    def apply_autoscaling(self, endpoint: Endpoint) -> dict[str, Any]:
        """Register the variant as a scalable target and put the target-tracking policy on
        SageMakerVariantInvocationsPerInstance (both calls update in place)."""
        scaling = self._client(endpoint, "application-autoscaling")
        resource_id = self._resource_id(endpoint)
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
        return {"applied": True, "resource_id": resource_id, "policy": policy_name}

    # Smoke test and activation -----------------------------------------------------------

    def step_smoke_test(self, ctx: StepContext) -> dict[str, Any]:
        endpoint, version = ctx.deployment.endpoint, ctx.deployment.version
        case = smoke_case(ctx.deployment)
        if case is None:
            ctx.log(f"{version} has no test cases: no smoke invocation.", level="warning")
            return {"skipped": True}
        runtime = aws.sagemaker_runtime(endpoint.region or settings.AWS_REGION)

        def on_wait(attempt: int, wait: float, waited: float, message: str) -> None:
            ctx.log(
                f"{version.package_name} is still loading on {endpoint.target_name} "
                f"(ModelNotReadyException after {waited:.0f} s, attempt {attempt}); asking "
                f"again in {wait:.0f} s."
            )
            ctx.heartbeat()

        try:
            # The first invocation of a target model makes SageMaker download and load it.
            response = invoke_when_loaded(
                runtime,
                on_wait=on_wait,
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
