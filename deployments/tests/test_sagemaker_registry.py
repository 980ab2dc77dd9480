"""SageMaker's model registry mirrors Berth's verdict: a version on staging waits for
approval there, and is approved when its promotion is. Group names obey SageMaker's rules."""

from __future__ import annotations

import re

import boto3
import pytest

from deployments import services
from deployments.backends.sagemaker import model_package_group_name
from deployments.choices import DeploymentState

from .factories import AWS_REGION, packaged_version, queue_answer, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db

# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackageGroup.html
GROUP_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@pytest.mark.parametrize(
    "name",
    ["demo", "demo_ensemble", "a.b", "trailing_", "trailing-", "x" * 80, "_", "a__b.c-"],
)
def test_group_names_obey_sagemakers_rules(name):
    group = model_package_group_name(name)
    assert GROUP_PATTERN.match(group), group
    assert len(group) <= 63


def test_names_that_clean_alike_do_not_share_a_group():
    groups = {model_package_group_name(n) for n in ["a_b", "a-b", "a.b", "a__b"]}
    assert len(groups) == 4
    assert model_package_group_name("a-b") == "a-b"  # a valid name stays as it is
    assert model_package_group_name("a_b").startswith("a-b-")


def packages(model_name: str) -> list[dict]:
    sm = boto3.client("sagemaker", region_name=AWS_REGION)
    return sm.list_model_packages(ModelPackageGroupName=model_package_group_name(model_name))[
        "ModelPackageSummaryList"
    ]


def test_staging_waits_for_approval_and_the_promotion_approves(
    aws, scientist, approver, django_capture_on_commit_callbacks
):
    staging = sagemaker_endpoint("sm-staging", "staging")
    production = sagemaker_endpoint("sm-production", "production")
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    staged = run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    assert staged.state == DeploymentState.SUCCEEDED, staged.error
    assert [p["ModelApprovalStatus"] for p in packages("demo_ensemble")] == [
        "PendingManualApproval"
    ]

    promotion = services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    # Committing the approval mirrors it and runs the production deployment (eagerly here).
    queue_answer(version.test_cases[0])
    with django_capture_on_commit_callbacks(execute=True):
        promotion = services.promotion_approve(actor=approver, promotion=promotion)
    promotion.deployment.refresh_from_db()
    assert promotion.deployment.state == DeploymentState.SUCCEEDED, promotion.deployment.error
    # Approved once, where the staging deployment mirrored it: still one package.
    assert [p["ModelApprovalStatus"] for p in packages("demo_ensemble")] == ["Approved"]


def test_a_failed_staging_deployment_is_never_approved(aws, scientist):
    staging = sagemaker_endpoint("sm-staging", "staging")
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0], scale=0.5)  # a wrong answer: the smoke test fails
    result = run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    assert result.state == DeploymentState.FAILED
    assert [p["ModelApprovalStatus"] for p in packages("demo_ensemble")] == [
        "PendingManualApproval"
    ]


def test_the_approval_itself_approves_the_package(
    aws, scientist, approver, django_capture_on_commit_callbacks
):
    """Production here is the local data plane: only the approval hook touches SageMaker."""
    from deployments.models import Endpoint

    staging = sagemaker_endpoint("sm-staging", "staging")
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    promotion = services.promotion_request_create(
        actor=scientist,
        version=version,
        target_endpoint=Endpoint.objects.get(name="local-production"),
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.promotion_approve(actor=approver, promotion=promotion)
    assert [p["ModelApprovalStatus"] for p in packages("demo_ensemble")] == [
        "PendingManualApproval"
    ]  # nothing in AWS before the approval commits
    hooks = [c for c in callbacks if c.__qualname__.endswith("promotion_approved.<locals>.approve")]
    assert len(hooks) == 1
    hooks[0]()
    assert [p["ModelApprovalStatus"] for p in packages("demo_ensemble")] == ["Approved"]
