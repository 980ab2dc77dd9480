"""Load test services: who may start, approve, reject, cancel and apply; one active test
per endpoint; production waits for an approver; apply changes the endpoint's autoscaling
(SageMaker: application-autoscaling under moto), audited; promotion evidence and gate."""

import boto3
import pytest
from django.utils import timezone

from deployments import services as deployment_services
from deployments.models import Endpoint
from deployments.tests.factories import sagemaker_endpoint, user_in
from loadtests import services
from loadtests.choices import LoadTestState, Verdict
from loadtests.models import LoadTest, LoadTestStage
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from portal.models import AuditEvent
from runs.choices import RunState
from runs.models import Run

from .factories import config, live_version, stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging():
    return Endpoint.objects.select_related("environment").get(name="local-staging")


@pytest.fixture
def production():
    return Endpoint.objects.select_related("environment").get(name="local-production")


def start(actor, endpoint, **kwargs):
    return services.loadtest_start(
        actor=actor,
        endpoint=endpoint,
        config=kwargs.pop("data", config()),
        confirmed=True,
        source="api",
        **kwargs,
    )


def finish(load_test, stages, *, verdict=Verdict.PASSED, safety=0.5):
    """A test as the plan leaves it after analyse: stages measured, recommendation."""
    from loadtests import recommend

    for item in stages:
        LoadTestStage.objects.create(
            load_test=load_test,
            position=item["position"],
            offered_rps=item["offered_rps"],
            planned_seconds=1,
            finished=True,
            achieved_rps=item["achieved_rps"],
            completed=item["completed"],
            ok=item["ok"],
            errors=item["errors"],
            p50_ms=item["p50_ms"],
            p95_ms=item["p95_ms"],
            p99_ms=item["p99_ms"],
        )
    rec = recommend.recommend(stages, slo=load_test.config["slo"], safety_factor=safety)
    LoadTest.objects.filter(pk=load_test.pk).update(
        state=LoadTestState.SUCCEEDED,
        verdict=verdict,
        result={"recommendation": rec},
        finished_at=timezone.now(),
    )
    Run.objects.filter(load_test=load_test).update(state=RunState.SUCCEEDED)
    load_test.refresh_from_db()
    return load_test


def test_start_needs_confirmation_and_the_deploy_permission(staging, scientist):
    live_version(staging)
    with pytest.raises(ServiceError) as error:
        services.loadtest_start(
            actor=scientist, endpoint=staging, config=config(), confirmed=False, source="api"
        )
    assert error.value.field == "confirmed"
    viewer = user_in("approver", username="viewer-only")
    viewer.groups.clear()
    with pytest.raises(PermissionDenied):
        start(viewer, staging)
    assert not LoadTest.objects.exists()


def test_staging_test_is_pending_with_a_run_and_audited(staging, scientist):
    version = live_version(staging)
    load_test = start(scientist, staging)
    assert load_test.state == LoadTestState.PENDING
    assert load_test.version == version
    run = Run.objects.get(load_test=load_test)
    assert run.plan == "loadtests.plans.LoadTestPlan"
    assert [s.name for s in run.steps.all()] == ["prepare", "generate", "analyse"]
    event = AuditEvent.objects.get(action="loadtest.start")
    assert event.data["endpoint"] == "local-staging" and event.to_state == "pending"


def test_one_active_test_per_endpoint(staging, scientist):
    live_version(staging)
    first = start(scientist, staging)
    with pytest.raises(Conflict) as error:
        start(scientist, staging)
    assert f"#{first.pk}" in error.value.message
    services.loadtest_cancel(actor=scientist, load_test=first)
    assert start(scientist, staging).state == LoadTestState.PENDING


def test_production_waits_for_an_approver_other_than_the_requester(
    production, platform_admin, approver
):
    live_version(production)
    load_test = start(platform_admin, production)
    assert load_test.state == LoadTestState.AWAITING_APPROVAL
    assert not Run.objects.filter(load_test=load_test).exists()
    with pytest.raises(PermissionDenied) as error:
        services.loadtest_approve(actor=platform_admin, load_test=load_test)
    assert error.value.code == "own_request"
    services.loadtest_approve(actor=approver, load_test=load_test)
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.PENDING and load_test.approved_by == approver
    assert Run.objects.filter(load_test=load_test).count() == 1
    with pytest.raises(InvalidTransition):
        services.loadtest_approve(actor=approver, load_test=load_test)


def test_reject_needs_a_reason_and_an_approver(production, platform_admin, approver, scientist):
    live_version(production)
    load_test = start(platform_admin, production)
    with pytest.raises(ServiceError) as error:
        services.loadtest_reject(actor=approver, load_test=load_test, reason=" ")
    assert error.value.field == "reason"
    with pytest.raises(PermissionDenied):
        services.loadtest_reject(actor=scientist, load_test=load_test, reason="no")
    services.loadtest_reject(actor=approver, load_test=load_test, reason="not during the sale")
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.REJECTED
    assert AuditEvent.objects.filter(action="loadtest.rejected", reason="not during the sale")


def test_cancel_pending_at_once_only_by_requester_approver_or_admin(staging, scientist, approver):
    live_version(staging)
    load_test = start(scientist, staging)
    stranger = user_in("data scientist", username="stranger")
    with pytest.raises(PermissionDenied):
        services.loadtest_cancel(actor=stranger, load_test=load_test)
    services.loadtest_cancel(actor=approver, load_test=load_test, reason="wrong day")
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.CANCELLED
    assert Run.objects.get(load_test=load_test).state == RunState.CANCELLED
    with pytest.raises(InvalidTransition):
        services.loadtest_cancel(actor=approver, load_test=load_test)


def test_cancel_running_asks_the_run_to_stop(staging, scientist):
    live_version(staging)
    load_test = start(scientist, staging)
    LoadTest.objects.filter(pk=load_test.pk).update(state=LoadTestState.RUNNING)
    Run.objects.filter(load_test=load_test).update(state=RunState.RUNNING, claimed_by="w1")
    services.loadtest_cancel(actor=scientist, load_test=load_test)
    run = Run.objects.get(load_test=load_test)
    assert run.cancel_requested and run.state == RunState.RUNNING


def test_apply_sets_the_local_endpoints_autoscaling_audited(staging, scientist):
    live_version(staging)
    load_test = finish(start(scientist, staging), [stage(0, 10, 10, 20), stage(1, 20, 20, 40)])
    endpoint = services.loadtest_apply(
        actor=scientist, load_test=load_test, safety_factor=0.25, peak_rps=100
    )
    # 20 req/s × 0.25 × 60 = 300 per instance per minute; 100 req/s peak: 5 to 20.
    assert endpoint.target_invocations_per_instance == 300
    assert (endpoint.autoscaling_min_instances, endpoint.autoscaling_max_instances) == (5, 20)
    load_test.refresh_from_db()
    assert load_test.applied_by == scientist and load_test.applied_at
    event = AuditEvent.objects.get(action="loadtest.apply")
    assert event.data["after"]["target"] == 300 and event.data["before"]["target"] == 100


def test_apply_refuses_without_a_recommendation(staging, scientist):
    live_version(staging)
    load_test = start(scientist, staging)
    with pytest.raises(ServiceError) as error:
        services.loadtest_apply(actor=scientist, load_test=load_test)
    assert error.value.field == "load_test"


def test_apply_on_sagemaker_puts_the_target_tracking_policy(aws, scientist):
    endpoint = sagemaker_endpoint("sm-staging", "staging")
    live_version(endpoint)
    load_test = finish(start(scientist, endpoint), [stage(0, 10, 10, 20)])
    services.loadtest_apply(actor=scientist, load_test=load_test, safety_factor=0.5)
    scaling = boto3.client("application-autoscaling", region_name="us-east-1")
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 300.0  # 10 × 0.5 × 60


def test_promotion_evidence_carries_the_latest_staging_test_and_the_gate(
    staging, production, scientist
):
    version = live_version(staging)
    load_test = finish(start(scientist, staging), [stage(0, 10, 10, 20)])
    promotion = deployment_services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    (evidence,) = promotion.evidence["load_tests"]
    assert evidence["id"] == load_test.pk and evidence["passed"]
    assert evidence["max_sustainable_rps"] == 10 and evidence["p99_ms_at_max"] == 20
    assert evidence["url"] == load_test.get_absolute_url()


def test_environment_requiring_a_load_test_refuses_promotion_without_a_passing_one(
    staging, production, scientist
):
    production.environment.requires_load_test = True
    production.environment.save()
    version = live_version(staging)
    with pytest.raises(ServiceError) as error:
        deployment_services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production
        )
    assert error.value.field == "load_test" and "none was run" in error.value.message
    failed = finish(start(scientist, staging), [stage(0, 10, 10, 900)], verdict=Verdict.FAILED)
    with pytest.raises(ServiceError) as error:
        deployment_services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production
        )
    assert f"#{failed.pk}" in error.value.message
    finish(start(scientist, staging), [stage(0, 10, 10, 20)])
    promotion = deployment_services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    assert promotion.evidence["load_tests"][0]["passed"]


def test_a_later_cancelled_test_does_not_hide_the_measured_result(staging, production, scientist):
    """Evidence and the gate read the latest test that finished measuring: a run cancelled
    afterwards says nothing about the SLO."""
    production.environment.requires_load_test = True
    production.environment.save()
    version = live_version(staging)
    measured = finish(start(scientist, staging), [stage(0, 10, 10, 20)])
    cancelled = start(scientist, staging)
    services.loadtest_cancel(actor=scientist, load_test=cancelled)
    cancelled.refresh_from_db()
    assert cancelled.state == LoadTestState.CANCELLED
    promotion = deployment_services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    (evidence,) = promotion.evidence["load_tests"]
    assert evidence["id"] == measured.pk and evidence["passed"]
