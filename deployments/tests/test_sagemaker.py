"""The SageMaker multi-model endpoint path, against moto (AWS is the one thing simulated)."""

import boto3
import pytest
from django.core import mail

from deployments import services
from deployments.backends.base import StepContext
from deployments.backends.sagemaker import (
    SageMakerBackend,
    UnknownImageRegion,
    model_package_group_name,
    triton_image_uri,
)
from deployments.choices import DeploymentState, StepState
from deployments.models import LiveVersion, LiveVersionHistory

from .factories import (
    AWS_REGION,
    RegisteredModelFactory,
    allow,
    packaged_version,
    queue_answer,
    run,
    sagemaker_endpoint,
)

pytestmark = pytest.mark.django_db


def test_first_deploy_creates_the_multi_model_endpoint_with_autoscaling(aws, scientist):
    endpoint = sagemaker_endpoint(autoscaling_min_instances=1, autoscaling_max_instances=4)
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])

    deployment = services.deployment_start(actor=scientist, endpoint=endpoint, version=version)
    result = run(deployment)

    assert result.state == DeploymentState.SUCCEEDED, result.error
    assert [s["state"] for s in result.steps] == [StepState.DONE] * len(result.steps)
    s3 = boto3.client("s3", region_name=AWS_REGION)
    head = s3.head_object(Bucket="berth-models", Key="sm-staging/demo_ensemble_1.tar.gz")
    assert head["Metadata"]["sha256"] == version.package_sha256

    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    container = sm.describe_model(ModelName="sm-staging-model")["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == "s3://berth-models/sm-staging/"
    assert "sagemaker-tritonserver" in container["Image"]
    variant = sm.describe_endpoint_config(EndpointConfigName="sm-staging-config")[
        "ProductionVariants"
    ][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g4dn.xlarge", 1)
    assert sm.describe_endpoint(EndpointName="sm-staging")["EndpointStatus"] == "InService"

    scaling = boto3.client("application-autoscaling", region_name=AWS_REGION)
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert target["ResourceId"] == "endpoint/sm-staging/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    policy = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert config["TargetValue"] == 100.0

    # Staging: mirrored as waiting for approval, in a group named by SageMaker's rules.
    packages = sm.list_model_packages(
        ModelPackageGroupName=model_package_group_name("demo_ensemble")
    )["ModelPackageSummaryList"]
    assert [p["ModelApprovalStatus"] for p in packages] == ["PendingManualApproval"]

    endpoint.refresh_from_db()
    assert endpoint.provisioned_at is not None
    live = LiveVersion.objects.get(endpoint=endpoint)
    assert live.version == version and live.deployment == result


def test_later_deploys_only_upload_and_supersede(aws, scientist):
    endpoint = sagemaker_endpoint()
    model = RegisteredModelFactory(owner=scientist)
    v1 = packaged_version(model=model)
    v2 = packaged_version(model=model)
    queue_answer(v1.test_cases[0])
    first = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=v1))
    queue_answer(v2.test_cases[0])
    second = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=v2))

    assert second.state == DeploymentState.SUCCEEDED, second.error
    states = {s["name"]: s["state"] for s in second.steps}
    assert states["upload_package"] == StepState.DONE
    for name in ("ensure_model", "ensure_endpoint_config", "ensure_endpoint"):
        assert states[name] == StepState.SKIPPED
    first.refresh_from_db()
    assert first.state == DeploymentState.SUPERSEDED
    assert second.previous_version == v1
    keys = [
        o["Key"]
        for o in boto3.client("s3", region_name=AWS_REGION).list_objects_v2(Bucket="berth-models")[
            "Contents"
        ]
    ]
    assert sorted(keys) == [
        "sm-staging/demo_ensemble_1.tar.gz",
        "sm-staging/demo_ensemble_2.tar.gz",
    ]
    periods = list(LiveVersionHistory.objects.filter(endpoint=endpoint).order_by("since"))
    assert [(p.version.version, p.until is None) for p in periods] == [(1, False), (2, True)]


def test_wrong_smoke_answer_fails_and_keeps_the_live_version(
    aws, scientist, django_capture_on_commit_callbacks
):
    endpoint = sagemaker_endpoint()
    model = RegisteredModelFactory(owner=scientist)
    v1 = packaged_version(model=model)
    v2 = packaged_version(model=model)
    queue_answer(v1.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=endpoint, version=v1))

    deployment = services.deployment_start(actor=scientist, endpoint=endpoint, version=v2)
    # v2's smoke invocation differs (different target model): give it a wrong answer.
    queue_answer(v2.test_cases[0], scale=0.5)
    with django_capture_on_commit_callbacks(execute=True):
        result = run(deployment)

    assert result.state == DeploymentState.FAILED
    assert "Smoke test" in result.error
    failed = [s for s in result.steps if s["state"] == StepState.FAILED]
    assert [s["name"] for s in failed] == ["smoke_test"]
    assert LiveVersion.objects.get(endpoint=endpoint).version == v1
    assert [m.to for m in mail.outbox] == [[scientist.email]]
    assert "failed" in mail.outbox[0].subject


def test_triton_image_comes_from_the_sdk_offline():
    assert triton_image_uri("eu-west-1") == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
    )
    assert triton_image_uri("af-south-1").startswith("626614931356.dkr.ecr.af-south-1")


def test_a_region_the_sdk_does_not_know_has_no_invented_image():
    with pytest.raises(UnknownImageRegion, match="give the endpoint's image URI explicitly"):
        triton_image_uri("xx-nowhere-1")


def test_an_edit_makes_a_new_model_and_configuration_to_roll_out(aws, scientist, platform_admin):
    """moto has no UpdateEndpoint: the rollout itself is a Stubber contract test
    (test_sagemaker_contract.py); here the steps before it, against moto."""
    endpoint = sagemaker_endpoint()
    model = RegisteredModelFactory(owner=scientist)
    v1, v2 = packaged_version(model=model), packaged_version(model=model)
    other = packaged_version(model=RegisteredModelFactory(name="other_model", owner=scientist))
    for version in (v1, other):
        queue_answer(version.test_cases[0])
        run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))

    allow(endpoint.environment, s3_prefix="s3://berth-models/moved/")
    endpoint = services.endpoint_update(
        actor=platform_admin,
        endpoint=endpoint,
        instance_type="ml.g4dn.2xlarge",
        initial_instance_count=2,
        s3_prefix="s3://berth-models/moved/",
    )
    deployment = services.deployment_start(actor=scientist, endpoint=endpoint, version=v2)
    ctx = StepContext(deployment=deployment, log=lambda *a, **k: None, heartbeat=lambda: None)
    backend = SageMakerBackend()
    backend.step_upload_package(ctx)
    created_model = backend.step_ensure_model(ctx)
    created_config = backend.step_ensure_endpoint_config(ctx)

    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    assert created_model["model"].startswith("sm-staging-m-")
    container = sm.describe_model(ModelName=created_model["model"])["PrimaryContainer"]
    assert container["ModelDataUrl"] == "s3://berth-models/moved/"
    assert created_config["config"].startswith("sm-staging-c-")
    variant = sm.describe_endpoint_config(EndpointConfigName=created_config["config"])[
        "ProductionVariants"
    ][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        created_model["model"],
        "ml.g4dn.2xlarge",
        2,
    )
    # What serves stays as it was until UpdateEndpoint.
    assert sm.describe_endpoint(EndpointName="sm-staging")["EndpointConfigName"] == (
        "sm-staging-config"
    )
    # The new prefix holds all that will serve: the new version and the other model's.
    s3 = boto3.client("s3", region_name=AWS_REGION)
    moved = s3.list_objects_v2(Bucket="berth-models", Prefix="moved/")["Contents"]
    assert sorted(o["Key"] for o in moved) == [
        "moved/demo_ensemble_2.tar.gz",
        "moved/other_model_1.tar.gz",
    ]
    # Asked again with the same settings, nothing more is created.
    assert backend.step_ensure_model(ctx)["skipped"] is True
    assert backend.step_ensure_endpoint_config(ctx)["skipped"] is True
    assert len(sm.list_models()["Models"]) == 2


def test_decommissioning_leaves_nothing_that_bills(aws, scientist, platform_admin):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))

    ended = services.endpoint_decommission(
        actor=platform_admin, endpoint=endpoint, reason="replaced by sm-next"
    )

    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    scaling = boto3.client("application-autoscaling", region_name=AWS_REGION)
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert ended["live_versions_ended"] == ["demo_ensemble_1"]
    assert not LiveVersion.objects.filter(endpoint=endpoint).exists()
    assert LiveVersionHistory.objects.get(endpoint=endpoint).until is not None
    endpoint.refresh_from_db()
    assert endpoint.provisioned_at is None


def test_a_package_sagemaker_would_serve_by_chance_is_refused_before_upload(aws, scientist):
    """Two top-level models and no ensemble: SageMaker's Triton would load one of them in no
    defined order, so the deployment fails before anything reaches S3 or SageMaker."""
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    version.repository_summary = {"entry_model": "scorer", "top_level_models": ["scorer", "ranker"]}
    version.save(update_fields=["repository_summary"])

    result = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))

    assert result.state == DeploymentState.FAILED
    assert "one of scorer, ranker in no defined order" in result.error
    assert "Add an ensemble" in result.error
    listed = boto3.client("s3", region_name=AWS_REGION).list_objects_v2(Bucket="berth-models")
    assert listed.get("KeyCount", 0) == 0
    assert boto3.client("sagemaker", region_name=AWS_REGION).list_models()["Models"] == []
