"""Contract tests with botocore's Stubber for what moto accepts loosely or cannot show:
every request is checked against SageMaker's and Application Auto Scaling's real service
models, and the answers are those AWS gives in states moto never reaches (RollingBack,
not found right after CreateEndpoint, a model another deployment just created, Failed).
The Stubber stands in for AWS only: the clients come from portal.aws as in production."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from deployments import services
from deployments.backends.base import DeploymentStepError, StepContext
from deployments.backends.sagemaker import (
    SCALABLE_DIMENSION,
    SageMakerBackend,
    model_package_group_name,
)
from deployments.backends.sagemaker import backend as sm_backend
from deployments.models import Endpoint
from portal.choices import AuditAction
from portal.errors import Conflict, PermissionDenied
from portal.models import AuditEvent

from .factories import packaged_version, sagemaker_endpoint

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "123456789012"
REGION = "us-east-1"


@pytest.fixture
def stubs(monkeypatch, settings):
    """Stubbed sagemaker and application-autoscaling clients, handed out by portal.aws."""
    settings.AWS_ENDPOINT_URL = ""
    monkeypatch.setattr(sm_backend, "POLL_SECONDS", 0)
    monkeypatch.setattr(sm_backend, "NOT_FOUND_RETRY_SECONDS", 0)
    clients = {
        service: boto3.session.Session().client(
            service,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for service in ("sagemaker", "application-autoscaling", "cloudwatch", "iam", "sts", "ecr")
    }
    stubbers = {service: Stubber(client) for service, client in clients.items()}
    monkeypatch.setattr("portal.aws.client", lambda service, **kwargs: clients[service])
    for stubber in stubbers.values():
        stubber.activate()
    yield stubbers
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def not_found(stub: Stubber, operation: str, what: str, params: dict) -> None:
    stub.add_client_error(
        operation,
        service_error_code="ValidationException",
        service_message=f"Could not find {what}.",
        http_status_code=400,
        expected_params=params,
    )


def described_model(backend: SageMakerBackend, endpoint: Endpoint, name: str) -> dict:
    spec = backend.model_spec(endpoint)
    return {
        "ModelName": name,
        "ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}",
        "CreationTime": NOW,
        "ExecutionRoleArn": spec["ExecutionRoleArn"],
        "PrimaryContainer": {
            "Image": spec["Image"],
            "Mode": "MultiModel",
            "ModelDataUrl": spec["ModelDataUrl"],
        },
    }


def described_config(name: str, variant: dict) -> dict:
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{name}",
        "CreationTime": NOW,
        "ProductionVariants": [variant],
    }


def described_endpoint(endpoint: Endpoint, status: str, config: str, reason: str = "") -> dict:
    answer = {
        "EndpointName": endpoint.target_name,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{endpoint.target_name}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }
    if reason:
        answer["FailureReason"] = reason
    return answer


def context(endpoint: Endpoint, scientist) -> tuple[StepContext, list[str]]:
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(actor=scientist, endpoint=endpoint, version=version)
    lines: list[str] = []
    return (
        StepContext(
            deployment=deployment,
            log=lambda message, **kwargs: lines.append(message),
            heartbeat=lambda: None,
        ),
        lines,
    )


def expect_resolved(stub: Stubber, backend, endpoint, *, old_config: dict | None) -> str:
    """The describes that find the model (as first created) and the configuration the
    endpoint's settings ask for; with `old_config`, `<name>-config` holds other settings
    and the wanted one is the rolled-out `<name>-c-<digest>`."""
    model = endpoint.sagemaker_model_name
    stub.add_response(
        "describe_model", described_model(backend, endpoint, model), {"ModelName": model}
    )
    variant = backend.variant_spec(endpoint, model)
    base = endpoint.sagemaker_config_name
    if old_config is None:
        stub.add_response(
            "describe_endpoint_config",
            described_config(base, variant),
            {"EndpointConfigName": base},
        )
        return base
    rolled = backend.config_names(endpoint, model)[1]
    stub.add_response(
        "describe_endpoint_config", described_config(base, old_config), {"EndpointConfigName": base}
    )
    stub.add_response(
        "describe_endpoint_config",
        described_config(rolled, variant),
        {"EndpointConfigName": rolled},
    )
    return rolled


def expect_current(stub: Stubber, backend, endpoint, old_variant: dict) -> None:
    """The describes that read what the endpoint runs now: its configuration (with
    `old_variant`) and that configuration's model."""
    base = endpoint.sagemaker_config_name
    stub.add_response(
        "describe_endpoint_config",
        described_config(base, old_variant),
        {"EndpointConfigName": base},
    )
    model = old_variant["ModelName"]
    stub.add_response(
        "describe_model", described_model(backend, endpoint, model), {"ModelName": model}
    )


ALL_AT_ONCE = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": 0,
    }
}


def test_a_changed_instance_type_rolls_out_through_update_endpoint(stubs, scientist):
    endpoint = sagemaker_endpoint(instance_type="ml.g5.xlarge")
    ctx, lines = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm, scaling = stubs["sagemaker"], stubs["application-autoscaling"]
    old = backend.variant_spec(endpoint, endpoint.sagemaker_model_name) | {
        "InstanceType": "ml.g4dn.xlarge"
    }
    config = expect_resolved(sm, backend, endpoint, old_config=old)
    name = {"EndpointName": "sm-staging"}
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "InService", endpoint.sagemaker_config_name),
        name,
    )
    expect_current(sm, backend, endpoint, old)
    resource = "endpoint/sm-staging/variant/AllTraffic"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource}
    scaling.add_response(
        "describe_scalable_targets",
        {
            "ScalableTargets": [
                target
                | {
                    "ScalableDimension": SCALABLE_DIMENSION,
                    "MinCapacity": 1,
                    "MaxCapacity": 2,
                    "RoleARN": "arn:aws:iam::123456789012:role/autoscaling",
                    "CreationTime": NOW,
                }
            ]
        },
        {"ServiceNamespace": "sagemaker", "ResourceIds": [resource], "ScalableDimension": ANY},
    )
    # Deregistered before UpdateEndpoint, as AWS requires.
    scaling.add_response(
        "deregister_scalable_target", {}, target | {"ScalableDimension": SCALABLE_DIMENSION}
    )
    # The same count: the fleet keeps what autoscaling gave it; blue/green, all at once.
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": described_endpoint(endpoint, "Updating", config)["EndpointArn"]},
        name
        | {
            "EndpointConfigName": config,
            "DeploymentConfig": ALL_AT_ONCE,
            "RetainAllVariantProperties": True,
        },
    )
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "Updating", config), name)
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "InService", config), name)

    result = backend.step_ensure_endpoint(ctx)

    assert result == {"status": "InService", "config": config}
    assert config.startswith("sm-staging-c-")
    assert any("Deregistered" in line for line in lines)
    assert any(f"from sm-staging-config to {config}" in line for line in lines)


def test_an_update_sagemaker_rolled_back_fails_the_deployment(stubs, scientist):
    endpoint = sagemaker_endpoint(initial_instance_count=2)
    ctx, lines = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm, scaling = stubs["sagemaker"], stubs["application-autoscaling"]
    old = backend.variant_spec(endpoint, endpoint.sagemaker_model_name) | {
        "InitialInstanceCount": 1
    }
    config = expect_resolved(sm, backend, endpoint, old_config=old)
    name = {"EndpointName": "sm-staging"}
    base = endpoint.sagemaker_config_name
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "InService", base), name)
    expect_current(sm, backend, endpoint, old)
    scaling.add_response("describe_scalable_targets", {"ScalableTargets": []}, None)
    # The count changed: the new configuration's count wins over the one retained.
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": described_endpoint(endpoint, "Updating", config)["EndpointArn"]},
        name
        | {
            "EndpointConfigName": config,
            "DeploymentConfig": ALL_AT_ONCE,
            "RetainAllVariantProperties": True,
            "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DesiredInstanceCount"}],
        },
    )
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "Updating", config), name)
    # RollingBack is waited through; the endpoint ends InService on the old configuration.
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "RollingBack", config, "Insufficient capacity"),
        name,
    )
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "InService", base, "Insufficient capacity"),
        name,
    )

    # Serving on the old configuration again, it gets its autoscaling back.
    resource = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/sm-staging/variant/AllTraffic",
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    scaling.add_response(
        "register_scalable_target", {}, resource | {"MinCapacity": 1, "MaxCapacity": 2}
    )
    scaling.add_response(
        "put_scaling_policy",
        {"PolicyARN": "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x"},
        resource
        | {
            "PolicyName": "sm-staging-invocations-per-instance",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": ANY,
        },
    )

    with pytest.raises(DeploymentStepError, match="rolled endpoint sm-staging back") as error:
        backend.step_ensure_endpoint(ctx)
    assert "Insufficient capacity" in str(error.value)
    assert "Endpoint sm-staging is RollingBack." in lines


def test_an_endpoint_not_found_right_after_create_endpoint_is_asked_again(stubs, scientist):
    endpoint = sagemaker_endpoint()
    ctx, _ = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm = stubs["sagemaker"]
    config = expect_resolved(sm, backend, endpoint, old_config=None)
    name = {"EndpointName": "sm-staging"}
    not_found(sm, "describe_endpoint", "endpoint", name)
    sm.add_response(
        "create_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sm-staging"},
        name | {"EndpointConfigName": config},
    )
    not_found(sm, "describe_endpoint", "endpoint", name)
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "Creating", config), name)
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "InService", config), name)

    assert backend.step_ensure_endpoint(ctx) == {"status": "InService", "config": config}
    endpoint.refresh_from_db()
    assert endpoint.provisioned_at is not None


def test_a_failed_endpoint_says_how_to_recover(stubs, scientist):
    endpoint = sagemaker_endpoint()
    ctx, _ = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm = stubs["sagemaker"]
    config = expect_resolved(sm, backend, endpoint, old_config=None)
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "Failed", config, "ResourceLimitExceeded"),
        {"EndpointName": "sm-staging"},
    )
    with pytest.raises(DeploymentStepError, match="ResourceLimitExceeded. Recover it"):
        backend.step_ensure_endpoint(ctx)


def test_a_model_another_first_deployment_just_created_is_taken_as_ours(stubs, scientist):
    endpoint = sagemaker_endpoint()
    ctx, lines = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm = stubs["sagemaker"]
    base, rolled = backend.model_names(endpoint)
    not_found(sm, "describe_model", "model", {"ModelName": base})
    not_found(sm, "describe_model", "model", {"ModelName": rolled})
    sm.add_client_error(
        "create_model",
        service_error_code="ValidationException",
        service_message=f'Cannot create already existing model "arn:...:model/{base}".',
        expected_params={
            "ModelName": base,
            "ExecutionRoleArn": endpoint.execution_role_arn,
            "PrimaryContainer": {
                "Image": endpoint.image_uri,
                "Mode": "MultiModel",
                "ModelDataUrl": "s3://berth-models/sm-staging/",
                "Environment": {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "demo_ensemble"},
            },
        },
    )
    sm.add_response("describe_model", described_model(backend, endpoint, base), {"ModelName": base})

    assert backend.step_ensure_model(ctx) == {"skipped": True, "model": base}
    assert lines == [f"SageMaker model {base} was just created by another deployment."]


def test_the_model_package_is_found_across_pages_and_approved(stubs, scientist):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    sm = stubs["sagemaker"]
    group = model_package_group_name("demo_ensemble")
    sm.add_response(
        "describe_model_package_group",
        {
            "ModelPackageGroupName": group,
            "ModelPackageGroupArn": (
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{group}"
            ),
            "CreationTime": NOW,
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
        },
        {"ModelPackageGroupName": group},
    )

    def summary(n):
        return {
            "ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/{n}",
            "CreationTime": NOW,
            "ModelPackageStatus": "Completed",
            "ModelPackageGroupName": group,
        }

    sm.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [summary(1)], "NextToken": "page-2"},
        {"ModelPackageGroupName": group},
    )
    sm.add_response(
        "describe_model_package",
        {
            "ModelPackageName": group,
            "ModelPackageArn": summary(1)["ModelPackageArn"],
            "CreationTime": NOW,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "ModelApprovalStatus": "Approved",
            "CustomerMetadataProperties": {"berth_version": "99"},
        },
        {"ModelPackageName": summary(1)["ModelPackageArn"]},
    )
    sm.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [summary(2)]},
        {"ModelPackageGroupName": group, "NextToken": "page-2"},
    )
    sm.add_response(
        "describe_model_package",
        {
            "ModelPackageName": group,
            "ModelPackageArn": summary(2)["ModelPackageArn"],
            "CreationTime": NOW,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "ModelApprovalStatus": "PendingManualApproval",
            "CustomerMetadataProperties": {"berth_version": str(version.version)},
        },
        {"ModelPackageName": summary(2)["ModelPackageArn"]},
    )
    sm.add_response(
        "update_model_package",
        {"ModelPackageArn": summary(2)["ModelPackageArn"]},
        {"ModelPackageArn": summary(2)["ModelPackageArn"], "ModelApprovalStatus": "Approved"},
    )

    arn = SageMakerBackend().approve_model_package(endpoint=endpoint, version=version)
    assert arn == summary(2)["ModelPackageArn"]


def expect_decommission(stubs, endpoint: Endpoint) -> None:
    sm, scaling = stubs["sagemaker"], stubs["application-autoscaling"]
    scaling.add_response("describe_scalable_targets", {"ScalableTargets": []}, None)
    name = {"EndpointName": endpoint.target_name}
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "InService", endpoint.sagemaker_config_name),
        name,
    )
    sm.add_response("delete_endpoint", {}, name)

    def configs(*names):
        return [
            {"EndpointConfigName": n, "EndpointConfigArn": f"arn:{n}", "CreationTime": NOW}
            for n in names
        ]

    # Paginated; a look-alike of another endpoint (sm-staging-2's) is left alone.
    sm.add_response(
        "list_endpoint_configs",
        {
            "EndpointConfigs": configs("sm-staging-config", "sm-staging-2-config"),
            "NextToken": "t",
        },
        {"NameContains": "sm-staging"},
    )
    sm.add_response(
        "list_endpoint_configs",
        {"EndpointConfigs": configs("sm-staging-c-0a1b2c")},
        {"NameContains": "sm-staging", "NextToken": "t"},
    )
    for config in ("sm-staging-c-0a1b2c", "sm-staging-config"):
        sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": config})
    sm.add_response(
        "list_models",
        {
            "Models": [
                {"ModelName": n, "ModelArn": f"arn:{n}", "CreationTime": NOW}
                for n in ("sm-staging-model", "sm-staging-2-model")
            ]
        },
        {"NameContains": "sm-staging"},
    )
    sm.add_response("delete_model", {}, {"ModelName": "sm-staging-model"})


def test_decommissioning_deletes_what_bills_and_is_audited(stubs, scientist, platform_admin):
    endpoint = sagemaker_endpoint()
    expect_decommission(stubs, endpoint)
    services.endpoint_decommission(actor=platform_admin, endpoint=endpoint, reason="unused")
    event = AuditEvent.objects.get(action=AuditAction.ENDPOINT_DECOMMISSION)
    assert event.data["configs"] == ["sm-staging-c-0a1b2c", "sm-staging-config"]
    assert event.data["models"] == ["sm-staging-model"]
    assert event.reason == "unused"
    assert event.data["hourly_cost_stopped"] == "1 × ml.g4dn.xlarge × $0.736/h = $0.74/h"


def test_decommissioning_production_is_for_approvers(stubs, scientist, approver):
    endpoint = sagemaker_endpoint("sm-staging", "production")
    with pytest.raises(PermissionDenied, match="Only approvers"):
        services.endpoint_decommission(actor=scientist, endpoint=endpoint, reason="x")
    expect_decommission(stubs, endpoint)
    services.endpoint_decommission(actor=approver, endpoint=endpoint, reason="retired")


def caller(stub, arn: str) -> None:
    stub.add_response("get_caller_identity", {"UserId": "AIDA", "Account": ACCOUNT, "Arn": arn}, {})


def role(stub, name: str = "berth-sagemaker") -> None:
    stub.add_response(
        "get_role",
        {
            "Role": {
                "Path": "/",
                "RoleName": name,
                "RoleId": "AROAEXAMPLEEXAMPLE1",
                "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
                "CreateDate": "2026-01-01T00:00:00Z",
                "AssumeRolePolicyDocument": json.dumps(
                    {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": ["sagemaker.amazonaws.com"]},
                                "Action": ["sts:AssumeRole"],
                            }
                        ]
                    }
                ),
            }
        },
        {"RoleName": name},
    )


def may_pass(stub, endpoint: Endpoint, principal: str) -> None:
    stub.add_response(
        "simulate_principal_policy",
        {
            "EvaluationResults": [
                {
                    "EvalActionName": "iam:PassRole",
                    "EvalResourceName": endpoint.execution_role_arn,
                    "EvalDecision": "allowed",
                }
            ]
        },
        {
            "PolicySourceArn": principal,
            "ActionNames": ["iam:PassRole"],
            "ResourceArns": [endpoint.execution_role_arn],
            "ContextEntries": ANY,
        },
    )


def test_recovery_deletes_only_a_failed_endpoint(stubs, platform_admin):
    endpoint = sagemaker_endpoint()
    sm, scaling = stubs["sagemaker"], stubs["application-autoscaling"]
    name = {"EndpointName": "sm-staging"}
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "InService", endpoint.sagemaker_config_name),
        name,
    )
    with pytest.raises(Conflict, match="not Failed"):
        services.endpoint_recover(actor=platform_admin, endpoint=endpoint)
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "Failed", endpoint.sagemaker_config_name, "Bad image"),
        name,
    )
    # The preflight passes (role, PassRole; the SDK's image) before the endpoint is deleted.
    principal = f"arn:aws:iam::{ACCOUNT}:user/berth"
    caller(stubs["sts"], principal)
    role(stubs["iam"])
    may_pass(stubs["iam"], endpoint, principal)
    scaling.add_response("describe_scalable_targets", {"ScalableTargets": []}, None)
    sm.add_response("delete_endpoint", {}, name)
    services.endpoint_recover(actor=platform_admin, endpoint=endpoint)
    event = AuditEvent.objects.get(action=AuditAction.ENDPOINT_RECOVER)
    assert event.data["failure_reason"] == "Bad image"
    assert event.data["preflight_unchecked"] == []


def test_there_is_nothing_to_recover_where_sagemaker_has_no_endpoint(stubs, platform_admin):
    endpoint = sagemaker_endpoint()
    not_found(stubs["sagemaker"], "describe_endpoint", "endpoint", {"EndpointName": "sm-staging"})
    with pytest.raises(Conflict, match="the next deployment creates it"):
        services.endpoint_recover(actor=platform_admin, endpoint=endpoint)
    assert not AuditEvent.objects.filter(action=AuditAction.ENDPOINT_RECOVER).exists()
