"""SageMaker's model registry as a mirror of Berth's verdict on a version: registered
`PendingManualApproval` when it reaches staging, `Approved` when its promotion is approved.
https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry-approve.html"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.db import transaction

from ..base import DeploymentStepError, StepContext
from .calls import _already_exists, _describe, _paginate
from .rules import _image, model_package_group_name, split_s3_uri

if TYPE_CHECKING:
    from deployments.models import Endpoint, PromotionRequest
    from registry.models import ModelVersion

logger = logging.getLogger(__name__)


class ModelRegistryMirror:
    """The SageMaker backend's model package steps and hooks (a part of SageMakerBackend)."""

    def _find_model_package(self, sm, group: str, version: ModelVersion) -> dict | None:
        """The model package of the group that mirrors `version`, described; None if none."""
        for summary in _paginate(
            sm, "list_model_packages", "ModelPackageSummaryList", ModelPackageGroupName=group
        ):
            described = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            properties = described.get("CustomerMetadataProperties", {})
            if properties.get("berth_version") == str(version.version):
                return described
        return None

    def step_register_model_package(self, ctx: StepContext) -> dict[str, Any]:
        """Mirror the version in SageMaker's model registry with Berth's own verdict:
        PendingManualApproval while it is only on staging, Approved once a promotion of it
        is approved (here, for a deployment an approved promotion started; otherwise when
        the approval happens, `promotion_approved`)."""
        from deployments.choices import PromotionState

        deployment = ctx.deployment
        endpoint, version = deployment.endpoint, deployment.version
        approved = bool(
            deployment.promotion_id and deployment.promotion.state == PromotionState.APPROVED
        )
        status = "Approved" if approved else "PendingManualApproval"
        sm = self._client(endpoint, "sagemaker")
        group = model_package_group_name(version.model.name)
        if _describe(sm.describe_model_package_group, ModelPackageGroupName=group) is None:
            try:
                sm.create_model_package_group(
                    ModelPackageGroupName=group,
                    ModelPackageGroupDescription=f"Berth model {version.model.name}"[:1024],
                )
            except ClientError as exc:
                if not _already_exists(exc):
                    raise
        existing = self._find_model_package(sm, group, version)
        if existing is not None:
            arn = existing["ModelPackageArn"]
            if approved and existing.get("ModelApprovalStatus") != "Approved":
                sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
                ctx.log(f"Model package {arn} approved (promotion #{deployment.promotion_id}).")
                return {"arn": arn, "status": "Approved"}
            ctx.log(f"Model package {arn} already mirrors {version}.")
            return {"skipped": True, "arn": arn}
        bucket, prefix = split_s3_uri(endpoint.s3_prefix)
        answer = sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{version} as deployed to {endpoint.name}"[:1024],
            ModelApprovalStatus=status,
            CustomerMetadataProperties={
                "berth_model": version.model.name[:256],
                "berth_version": str(version.version),
                "package_sha256": version.package_sha256,
            },
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": _image(endpoint),
                        "ModelDataUrl": f"s3://{bucket}/{prefix}{version.package_name}",
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": [endpoint.instance_type],
            },
        )
        ctx.log(f"Registered model package {answer['ModelPackageArn']} ({status}).")
        return {"arn": answer["ModelPackageArn"], "status": status}

    def approve_model_package(self, *, endpoint: Endpoint, version: ModelVersion) -> str | None:
        """Set the version's model package to Approved; its ARN, or None when the version
        was never mirrored in the endpoint's region."""
        sm = self._client(endpoint, "sagemaker")
        group = model_package_group_name(version.model.name)
        if _describe(sm.describe_model_package_group, ModelPackageGroupName=group) is None:
            return None
        existing = self._find_model_package(sm, group, version)
        if existing is None:
            return None
        if existing.get("ModelApprovalStatus") != "Approved":
            sm.update_model_package(
                ModelPackageArn=existing["ModelPackageArn"], ModelApprovalStatus="Approved"
            )
        return existing["ModelPackageArn"]

    def promotion_approved(self, *, promotion: PromotionRequest) -> None:
        """Once the approval commits, mark the version's model package (registered when it
        deployed to this staging endpoint) Approved. The production deployment does the same
        when it registers the version, so a failure here is logged, never raised: approval
        in Berth does not wait on AWS."""
        endpoint = promotion.staging_deployment.endpoint
        version = promotion.version

        def approve() -> None:
            try:
                self.approve_model_package(endpoint=endpoint, version=version)
            except (ClientError, BotoCoreError, DeploymentStepError):
                logger.exception("Approving the model package of %s failed", version)

        transaction.on_commit(approve)
