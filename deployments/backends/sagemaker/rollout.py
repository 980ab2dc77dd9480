"""Rolling out a change of a SageMaker endpoint (a part of SageMakerBackend): what the
endpoint runs now against what its settings ask for, the preflight before SageMaker is asked
for a model, and UpdateEndpoint with the endpoint's deployment guardrails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from portal import aws

from ..base import DeploymentStepError, StepContext
from .calls import _describe
from .guardrails import deployment_config, describe_rollout, missing_alarms
from .preflight import PreflightResult, preflight
from .rules import _image

if TYPE_CHECKING:
    from deployments.models import Endpoint

# What an endpoint change rolls out, in the order the review shows it.
ROLLED_OUT_SETTINGS = {
    "instance_type": "Instance type",
    "instance_count": "Instance count",
    "image": "Image",
    "execution_role_arn": "Execution role",
    "s3_prefix": "S3 prefix",
}


class EndpointRollout:
    """What an endpoint change rolls out, and how (a part of SageMakerBackend)."""

    def wanted_settings(self, endpoint: Endpoint) -> dict[str, Any]:
        """What the endpoint's settings ask SageMaker to run, in ROLLED_OUT_SETTINGS' terms."""
        spec = self.model_spec(endpoint)
        return {
            "instance_type": endpoint.instance_type,
            "instance_count": endpoint.initial_instance_count,
            "image": spec["Image"],
            "execution_role_arn": spec["ExecutionRoleArn"],
            "s3_prefix": spec["ModelDataUrl"],
        }

    def current_settings(self, sm, described: dict[str, Any]) -> dict[str, Any]:
        """What the endpoint runs now (DescribeEndpoint's configuration, its variant and
        model), in ROLLED_OUT_SETTINGS' terms; None where SageMaker no longer has it."""
        name = described["EndpointConfigName"]
        config = _describe(sm.describe_endpoint_config, EndpointConfigName=name) or {}
        variant = (config.get("ProductionVariants") or [{}])[0]
        model = (
            _describe(sm.describe_model, ModelName=variant["ModelName"])
            if variant.get("ModelName")
            else None
        ) or {}
        container = model.get("PrimaryContainer") or {}
        return {
            "instance_type": variant.get("InstanceType"),
            "instance_count": variant.get("InitialInstanceCount"),
            "image": container.get("Image"),
            "execution_role_arn": model.get("ExecutionRoleArn"),
            "s3_prefix": container.get("ModelDataUrl"),
        }

    def endpoint_change(self, endpoint: Endpoint) -> dict[str, Any]:
        """What a deployment would roll out on the endpoint: SageMaker's endpoint (None when
        there is none yet, and the deployment creates it), its status and configuration,
        each setting that differs (label, current, new), and the guardrail policy an update
        uses."""
        sm = self._client(endpoint, "sagemaker")
        wanted = self.wanted_settings(endpoint)
        described = self._describe_endpoint(sm, endpoint)
        answer: dict[str, Any] = {
            "exists": described is not None,
            "status": described["EndpointStatus"] if described else None,
            "config": described.get("EndpointConfigName") if described else None,
            "changes": [],
            "policy": describe_rollout(endpoint),
        }
        if described is None:
            return answer
        current = self.current_settings(sm, described)
        answer["changes"] = [
            {"field": key, "label": label, "current": current[key], "new": wanted[key]}
            for key, label in ROLLED_OUT_SETTINGS.items()
            if current[key] != wanted[key]
        ]
        return answer

    def preflight(self, endpoint: Endpoint) -> PreflightResult:
        """The role, PassRole and image checks (deployments.backends.sagemaker.preflight)."""
        return preflight(
            lambda service, region: aws.client(service, region_name=region),
            endpoint,
            _image(endpoint),
        )

    def _roll_out(self, ctx: StepContext, sm, endpoint: Endpoint, described: dict, config: str):
        """UpdateEndpoint to the configuration the endpoint's settings ask for, with the
        endpoint's guardrails (blue/green traffic shifting, baking, auto-rollback alarms,
        which must exist). The fleet keeps the instance count autoscaling gave it unless the
        endpoint's count itself changed. AWS wants the variant deregistered from autoscaling
        first; `ensure_autoscaling` registers it again once the endpoint is InService.
        https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-delete.html
        https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html"""
        if endpoint.rollback_alarms:
            try:
                missing = missing_alarms(
                    self._client(endpoint, "cloudwatch"), endpoint.rollback_alarms
                )
            except (ClientError, BotoCoreError) as exc:
                raise DeploymentStepError(f"Cannot read the rollback alarms: {exc}") from exc
            if missing:
                raise DeploymentStepError(
                    f"The rollback alarms {', '.join(missing)} do not exist in "
                    f"{endpoint.region or settings.AWS_REGION}; nothing was updated."
                )
        params: dict[str, Any] = {
            "EndpointName": endpoint.target_name,
            "EndpointConfigName": config,
            "DeploymentConfig": deployment_config(endpoint),
            "RetainAllVariantProperties": True,
        }
        if self.current_settings(sm, described)["instance_count"] != (
            endpoint.initial_instance_count
        ):
            params["ExcludeRetainedVariantProperties"] = [
                {"VariantPropertyType": "DesiredInstanceCount"}
            ]
        if self.remove_autoscaling(endpoint):
            ctx.log(f"Deregistered {endpoint.target_name}'s autoscaling for the update.")
        try:
            sm.update_endpoint(**params)
        except ClientError as exc:
            self.apply_autoscaling(endpoint)
            raise DeploymentStepError(
                f"Updating endpoint {endpoint.target_name} to {config} failed: {exc}"
            ) from exc
        ctx.log(
            f"Updating endpoint {endpoint.target_name} from "
            f"{described.get('EndpointConfigName')} to {config}; it stays in service. "
            + describe_rollout(endpoint)
        )
