"""API shapes of environments, endpoints, deployments, live versions and promotion requests."""

from rest_framework import serializers

from deployments.choices import GPU_INSTANCE_TYPES, Backend
from deployments.models import (
    Deployment,
    Endpoint,
    Environment,
    LiveVersion,
    LiveVersionHistory,
    PromotionRequest,
)
from deployments.services.endpoints import ENDPOINT_FIELDS
from portal.api import StrictCharField
from registry.api.serializers import MAX_VERSION
from runs.serializers import RunFollowSerializer, RunLogLineSerializer, RunStepSerializer


class EnvironmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Environment
        fields = [
            "name",
            "label",
            "requires_approval",
            "order",
            "description",
            "allowed_s3_buckets",
            "allowed_role_arns",
        ]


class LiveVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="version.version")
    target_model = serializers.CharField(source="version.package_name")
    deployment = serializers.IntegerField(source="deployment_id")

    class Meta:
        model = LiveVersion
        fields = ["model", "version", "target_model", "deployment", "since"]


class EndpointSerializer(serializers.ModelSerializer):
    environment = serializers.SlugRelatedField(slug_field="name", read_only=True)
    requires_approval = serializers.BooleanField(
        source="environment.requires_approval", read_only=True
    )
    live_versions = LiveVersionSerializer(many=True, read_only=True)
    created_by = serializers.StringRelatedField(
        allow_null=True, help_text="Null for endpoints the installation created."
    )
    instance_type = serializers.ChoiceField(
        choices=GPU_INSTANCE_TYPES,
        allow_blank=True,
        read_only=True,
        help_text="The GPU instance type (SageMaker); empty for local endpoints.",
    )
    dataplane_endpoint = serializers.CharField(
        read_only=True, help_text="target_name for local endpoints, empty for SageMaker ones."
    )

    class Meta:
        model = Endpoint
        # The configured fields as the service lists them, between what identifies the
        # endpoint and what the portal records about it.
        fields = [
            "name",
            "environment",
            "requires_approval",
            "backend",
            "dataplane_endpoint",
            *ENDPOINT_FIELDS,
            "provisioned_at",
            "created_by",
            "created_at",
            "live_versions",
        ]
        read_only_fields = fields


class EndpointCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    environment = serializers.SlugRelatedField(
        slug_field="name", queryset=Environment.objects.all()
    )
    backend = serializers.ChoiceField(choices=Backend.choices, default=Backend.LOCAL)
    description = serializers.CharField(required=False, allow_blank=True)
    target_name = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=63,
        help_text="The data-plane endpoint (local) or SageMaker endpoint (sagemaker) this "
        "endpoint deploys to; default its name. A name, unique per backend.",
    )
    dataplane_endpoint = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=63,
        help_text="The earlier name of target_name, for local endpoints.",
    )
    memory_budget_bytes = serializers.IntegerField(required=False, min_value=1)
    region = serializers.CharField(required=False, allow_blank=True)
    instance_type = serializers.ChoiceField(choices=GPU_INSTANCE_TYPES, required=False)
    initial_instance_count = serializers.IntegerField(required=False, min_value=1)
    execution_role_arn = serializers.CharField(required=False, allow_blank=True)
    s3_prefix = serializers.CharField(required=False, allow_blank=True)
    image_uri = serializers.CharField(required=False, allow_blank=True)
    autoscaling_min_instances = serializers.IntegerField(required=False, min_value=1)
    autoscaling_max_instances = serializers.IntegerField(required=False, min_value=1)
    target_invocations_per_instance = serializers.IntegerField(required=False, min_value=1)
    scale_in_cooldown_seconds = serializers.IntegerField(required=False, min_value=0)
    scale_out_cooldown_seconds = serializers.IntegerField(required=False, min_value=0)
    # How a change of a SageMaker endpoint rolls out (bounds and alarms: the service checks).
    rollout_traffic = serializers.ChoiceField(
        choices=Endpoint._meta.get_field("rollout_traffic").choices,
        required=False,
        allow_blank=True,
    )
    rollout_step_type = serializers.ChoiceField(
        choices=Endpoint._meta.get_field("rollout_step_type").choices,
        required=False,
        allow_blank=True,
    )
    rollout_step_size = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    rollout_wait_seconds = serializers.IntegerField(required=False, min_value=0, max_value=3600)
    rollout_termination_wait_seconds = serializers.IntegerField(
        required=False, min_value=0, max_value=3600
    )
    rollout_timeout_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=600, max_value=28800
    )
    rollback_alarms = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, max_length=10
    )


class StepSerializer(RunStepSerializer):
    """A step of a deployment's run."""


class DeploymentSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name")
    environment = serializers.CharField(source="endpoint.environment.name")
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="version.version")
    target_model = serializers.CharField(source="version.package_name")
    previous_version = serializers.IntegerField(source="previous_version.version", allow_null=True)
    created_by = serializers.StringRelatedField(allow_null=True)
    steps = StepSerializer(many=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "id",
            "url",
            "endpoint",
            "environment",
            "model",
            "version",
            "target_model",
            "previous_version",
            "kind",
            "state",
            "promotion",
            "reason",
            "created_by",
            "source",
            "created_at",
            "started_at",
            "finished_at",
            "attempts",
            "steps",
            "error",
        ]
        read_only_fields = fields

    def get_url(self, obj: Deployment) -> str:
        request = self.context.get("request")
        path = obj.get_absolute_url()
        return request.build_absolute_uri(path) if request else path


class DeploymentCreateSerializer(serializers.Serializer):
    endpoint = StrictCharField(help_text="Endpoint name, e.g. local-staging.")
    model = StrictCharField(help_text="Registered model name.")
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    reason = StrictCharField(required=False, allow_blank=True, default="")


class DeploymentLogSerializer(RunLogLineSerializer):
    """A line of a deployment's run log."""


class DeploymentFollowSerializer(RunFollowSerializer):
    """A deployment's log: the engine's one shape for any run's log."""


class LiveVersionHistorySerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="version.version")
    target_model = serializers.CharField(source="version.package_name")
    deployment = serializers.IntegerField(source="deployment_id")
    deployment_kind = serializers.CharField(source="deployment.kind")

    class Meta:
        model = LiveVersionHistory
        fields = [
            "model",
            "version",
            "target_model",
            "deployment",
            "deployment_kind",
            "since",
            "until",
        ]


class RollbackSerializer(serializers.Serializer):
    model = StrictCharField()
    reason = StrictCharField(required=False, allow_blank=True, default="")


class EndpointActionSerializer(serializers.Serializer):
    """Why a SageMaker endpoint is recovered or decommissioned (the audit trail keeps it)."""

    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)


class EndpointActionResultSerializer(serializers.Serializer):
    """What the action did in AWS."""

    endpoint = serializers.CharField()
    action = serializers.CharField()
    outcome = serializers.DictField(help_text="What was deleted in AWS, as the audit records it.")


class PromotionRequestSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="version.model.name")
    version = serializers.IntegerField(source="version.version")
    target_endpoint = serializers.CharField(source="target_endpoint.name")
    requested_by = serializers.StringRelatedField()
    decided_by = serializers.StringRelatedField(allow_null=True, help_text="Null until decided.")

    class Meta:
        model = PromotionRequest
        fields = [
            "id",
            "model",
            "version",
            "target_endpoint",
            "staging_deployment",
            "state",
            "comment",
            "evidence",
            "requested_by",
            "requested_at",
            "source",
            "decided_by",
            "decided_at",
            "decision_comment",
            "deployment",
        ]
        read_only_fields = fields


class PromotionRequestCreateSerializer(serializers.Serializer):
    model = StrictCharField()
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    target_endpoint = StrictCharField(help_text="A production endpoint, e.g. local-production.")
    comment = StrictCharField(required=False, allow_blank=True, default="")


class DecisionSerializer(serializers.Serializer):
    comment = StrictCharField(required=False, allow_blank=True, default="")


class RejectionSerializer(serializers.Serializer):
    comment = StrictCharField(help_text="Why the request is rejected (required).")
