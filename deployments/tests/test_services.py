"""Deployment and promotion services: the state machine, the database constraint on
concurrent deployments, resuming after a dead worker, the four-eyes rule, rollback and the
live-version timeline. Deployments execute on a SageMaker endpoint under moto (AWS is the
one thing simulated); the local data plane path is tested against the real gateway in
test_local_backend.py."""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from deployments import selectors, services
from deployments.choices import DeploymentKind, DeploymentState, PromotionState, StepState
from deployments.models import Deployment, Endpoint, Environment, LiveVersion
from portal.errors import Conflict, InvalidTransition, PermissionDenied, ServiceError
from portal.models import AuditEvent
from registry.choices import VersionStatus
from runs.choices import RunState
from runs.models import Run, RunStep

from .factories import (
    RegisteredModelFactory,
    allow,
    packaged_version,
    queue_answer,
    run,
    sagemaker_endpoint,
    seed_reference_data,
    user_in,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging(aws):
    return sagemaker_endpoint("sm-staging", "staging")


@pytest.fixture
def production(aws):
    return sagemaker_endpoint("sm-production", "production")


def deploy(actor, endpoint, version):
    queue_answer(version.test_cases[0])
    deployment = services.deployment_start(actor=actor, endpoint=endpoint, version=version)
    return run(deployment)


# Starting deployments --------------------------------------------------------------------


def test_only_packaged_versions_deploy(scientist, staging):
    version = packaged_version(registered_by=scientist, status=VersionStatus.TESTED)
    with pytest.raises(ServiceError) as error:
        services.deployment_start(actor=scientist, endpoint=staging, version=version)
    assert error.value.code == "not_packaged"


def test_production_needs_an_approved_promotion(scientist, approver, production):
    version = packaged_version(registered_by=scientist)
    for actor in (scientist, approver):
        with pytest.raises(PermissionDenied) as error:
            services.deployment_start(actor=actor, endpoint=production, version=version)
        assert error.value.code == "approval_required"
    assert not Deployment.objects.exists()


def test_deploying_needs_the_permission(staging):
    outsider = user_in("approver", username="outsider")
    outsider.groups.clear()
    version = packaged_version()
    with pytest.raises(PermissionDenied):
        services.deployment_start(actor=outsider, endpoint=staging, version=version)


def test_start_records_who_when_where_and_the_plan(scientist, staging):
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(
        actor=scientist, endpoint=staging, version=version, source="api", reason="CI push"
    )
    assert (deployment.state, deployment.created_by, deployment.source) == (
        DeploymentState.PENDING,
        scientist,
        "api",
    )
    assert deployment.steps[0]["name"] == "upload_package"
    assert {s["state"] for s in deployment.steps} == {StepState.PENDING}
    event = AuditEvent.objects.get(action="deployment.deploy")
    assert (event.actor, event.source, event.reason) == (scientist, "api", "CI push")


# One running deployment per (endpoint, model), enforced by the database -----------------


def test_database_refuses_a_second_active_deployment(scientist, staging):
    model = RegisteredModelFactory(owner=scientist)
    v1, v2 = packaged_version(model=model), packaged_version(model=model)
    services.deployment_start(actor=scientist, endpoint=staging, version=v1)
    # Straight to the database, past the service: the constraint itself refuses it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Deployment.objects.create(endpoint=staging, model=model, version=v2)


def test_second_deployment_while_one_runs_is_a_conflict(scientist, staging):
    model = RegisteredModelFactory(owner=scientist)
    v1, v2 = packaged_version(model=model), packaged_version(model=model)
    first = services.deployment_start(actor=scientist, endpoint=staging, version=v1)
    with pytest.raises(Conflict) as error:
        services.deployment_start(actor=scientist, endpoint=staging, version=v2)
    assert error.value.code == "deployment_running"
    assert f"#{first.pk}" in error.value.message
    # Another endpoint, or once the first finished, is fine.
    other = sagemaker_endpoint("sm-staging-2", "staging")
    services.deployment_start(actor=scientist, endpoint=other, version=v2)
    queue_answer(v1.test_cases[0])
    assert run(first).state == DeploymentState.SUCCEEDED
    services.deployment_start(actor=scientist, endpoint=staging, version=v2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_leave_exactly_one_deployment(aws):
    from django.contrib.auth.models import Group

    seed_reference_data()
    scientist = user_in("data scientist", username="racer")
    assert Group.objects.filter(name="data scientist").exists()
    staging = sagemaker_endpoint("sm-race", "staging")
    model = RegisteredModelFactory(owner=scientist)
    versions = [packaged_version(model=model) for _ in range(4)]
    barrier = threading.Barrier(len(versions))
    outcomes: list[str] = []

    def start(version):
        try:
            barrier.wait()
            services.deployment_start(actor=scientist, endpoint=staging, version=version)
            outcomes.append("started")
        except Conflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "started"]
    assert Deployment.objects.filter(endpoint=staging).count() == 1


# Execution, resume, stuck deployments -----------------------------------------------------


def test_transitions_are_checked(scientist, staging):
    deployment = deploy(scientist, staging, packaged_version(registered_by=scientist))
    assert deployment.state == DeploymentState.SUCCEEDED
    with pytest.raises(InvalidTransition):
        services._set_state(deployment, DeploymentState.RUNNING)
    # A finished deployment is left alone when its message comes again.
    assert run(deployment, claim="redelivered") is None


def test_redelivered_message_resumes_and_other_messages_keep_off(scientist, staging):
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(actor=scientist, endpoint=staging, version=version)
    # A worker took it, finished the upload, and died.
    Deployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.RUNNING)
    Run.objects.filter(deployment=deployment).update(
        state=RunState.RUNNING, claimed_by="task-1", heartbeat_at=timezone.now(), attempts=1
    )
    deployment.refresh_from_db()
    assert run(deployment, claim="task-2") is None  # alive elsewhere: not taken over
    queue_answer(version.test_cases[0])
    resumed = run(deployment, claim="task-1")  # the same message, redelivered
    assert resumed.state == DeploymentState.SUCCEEDED
    assert resumed.attempts == 2


def test_worker_killed_mid_deployment_resumes_from_recorded_steps(
    scientist, staging, settings, django_capture_on_commit_callbacks
):
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(actor=scientist, endpoint=staging, version=version)
    queue_answer(version.test_cases[0])
    done = run(deployment)
    assert done.state == DeploymentState.SUCCEEDED
    # Replay history: the same deployment stopped after its first three steps, its worker
    # gone for longer than the stale threshold, and the live pointer never moved.
    LiveVersion.objects.all().delete()
    first_started = done.steps[0]["started_at"]
    RunStep.objects.filter(run__deployment=done, position__gte=3).update(
        state=StepState.PENDING, result={}
    )
    Deployment.objects.filter(pk=done.pk).update(state=DeploymentState.RUNNING, finished_at=None)
    Run.objects.filter(deployment=done).update(
        state=RunState.RUNNING,
        claimed_by="dead-worker",
        attempts=1,
        heartbeat_at=timezone.now()
        - timedelta(seconds=settings.BERTH_DEPLOYMENT_STALE_SECONDS + 5),
        finished_at=None,
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = services.deployments_resume_stuck()
    assert outcome == {"resumed": [done.pk], "failed": []}
    assert Deployment.objects.get(pk=done.pk).state == DeploymentState.PENDING
    assert len(callbacks) == 1  # the execution task is queued again

    queue_answer(version.test_cases[0])
    resumed = run(done, claim="new-worker")
    assert resumed.state == DeploymentState.SUCCEEDED
    assert resumed.attempts == 2
    assert resumed.steps[0]["started_at"] == first_started  # not redone
    assert LiveVersion.objects.get(endpoint=staging).version == version
    messages = list(resumed.log_lines.values_list("message", flat=True))
    assert any(
        "resuming after upload_package, ensure_model, ensure_endpoint_config" in m for m in messages
    )


def test_stuck_deployment_out_of_attempts_fails_cleanly(
    scientist, staging, settings, django_capture_on_commit_callbacks
):
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(actor=scientist, endpoint=staging, version=version)
    Deployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.RUNNING)
    Run.objects.filter(deployment=deployment).update(
        state=RunState.RUNNING,
        claimed_by="dead",
        attempts=settings.BERTH_DEPLOYMENT_MAX_ATTEMPTS,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.deployments_resume_stuck()
    assert outcome["failed"] == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.FAILED
    assert "live version was not changed" in deployment.error
    assert not LiveVersion.objects.exists()
    assert mail.outbox and mail.outbox[0].to == [scientist.email]


def test_a_backend_that_cannot_be_set_up_fails_the_deployment_with_its_reason(
    scientist, staging, monkeypatch
):
    from deployments.backends.sagemaker import SageMakerBackend

    def no_plan(self, endpoint):
        raise RuntimeError("the endpoint's region has no Triton image")

    version = packaged_version(registered_by=scientist)
    started = services.deployment_start(actor=scientist, endpoint=staging, version=version)
    monkeypatch.setattr(SageMakerBackend, "plan", no_plan)  # broken by the time a worker runs
    deployment = run(started)
    assert deployment.state == DeploymentState.FAILED
    assert "the endpoint's region has no Triton image" in deployment.error
    assert not LiveVersion.objects.exists()


def test_fresh_deployments_are_left_alone_by_the_beat_task(scientist, staging):
    version = packaged_version(registered_by=scientist)
    services.deployment_start(actor=scientist, endpoint=staging, version=version)
    assert services.deployments_resume_stuck() == {"resumed": [], "failed": []}


# Promotion and the four-eyes rule ----------------------------------------------------------


def promoted_candidate(scientist, staging):
    version = packaged_version(registered_by=scientist)
    assert deploy(scientist, staging, version).state == DeploymentState.SUCCEEDED
    return version


def test_promotion_needs_a_staging_success(scientist, production):
    version = packaged_version(registered_by=scientist)
    with pytest.raises(ServiceError) as error:
        services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production
        )
    assert error.value.code == "not_on_staging"


def test_promotion_attaches_evidence_and_notifies_approvers(
    scientist, approver, second_approver, staging, production, django_capture_on_commit_callbacks
):
    version = promoted_candidate(scientist, staging)
    with django_capture_on_commit_callbacks(execute=True):
        promotion = services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production, comment="Ready."
        )
    evidence = promotion.evidence
    assert evidence["tests"]["passed"] == evidence["tests"]["total"] == 3
    assert evidence["staging_deployment"]["endpoint"] == "sm-staging"
    assert evidence["staging_deployment"]["smoke_test"]["case"] == "setosa-like"
    assert evidence["load_tests"] == []
    assert evidence["replaces"] == {"version": None}
    assert {row["field"] for row in evidence["lineage_diff"]} >= {"source_commit", "dataset_uri"}
    assert sorted(mail.outbox[0].to) == sorted([approver.email, second_approver.email])
    with pytest.raises(Conflict):
        services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production
        )


def test_requester_never_approves_their_own_request(scientist, staging, production):
    # Even a requester who is an approver (and a superuser) cannot approve their own request.
    boss = user_in("approver", username="boss", is_superuser=True)
    boss.groups.add(*scientist.groups.all())
    version = promoted_candidate(boss, staging)
    promotion = services.promotion_request_create(
        actor=boss, version=version, target_endpoint=production
    )
    with pytest.raises(PermissionDenied) as error:
        services.promotion_approve(actor=boss, promotion=promotion)
    assert error.value.code == "own_request"
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.PENDING
    assert not Deployment.objects.filter(endpoint=production).exists()


def test_only_approvers_decide(scientist, staging, production):
    other_scientist = user_in("data scientist", username="kim")
    version = promoted_candidate(scientist, staging)
    promotion = services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    with pytest.raises(PermissionDenied):
        services.promotion_approve(actor=other_scientist, promotion=promotion)
    with pytest.raises(PermissionDenied):
        services.promotion_reject(actor=other_scientist, promotion=promotion, comment="no")


def test_approval_starts_the_production_deployment(scientist, approver, staging, production):
    version = promoted_candidate(scientist, staging)
    promotion = services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    promotion = services.promotion_approve(actor=approver, promotion=promotion, comment="LGTM")
    assert (promotion.state, promotion.decided_by, promotion.decision_comment) == (
        PromotionState.APPROVED,
        approver,
        "LGTM",
    )
    deployment = promotion.deployment
    assert (deployment.endpoint, deployment.version, deployment.promotion) == (
        production,
        version,
        promotion,
    )
    queue_answer(version.test_cases[0])
    assert run(deployment).state == DeploymentState.SUCCEEDED
    assert LiveVersion.objects.get(endpoint=production).version == version
    with pytest.raises(InvalidTransition):
        services.promotion_approve(actor=approver, promotion=promotion)


def test_reject_needs_a_reason_and_starts_nothing(scientist, approver, staging, production):
    version = promoted_candidate(scientist, staging)
    promotion = services.promotion_request_create(
        actor=scientist, version=version, target_endpoint=production
    )
    with pytest.raises(ServiceError):
        services.promotion_reject(actor=approver, promotion=promotion, comment=" ")
    promotion = services.promotion_reject(
        actor=approver, promotion=promotion, comment="p99 too high"
    )
    assert promotion.state == PromotionState.REJECTED
    assert not Deployment.objects.filter(endpoint=production).exists()
    assert AuditEvent.objects.filter(action="promotion.rejected", reason="p99 too high").exists()


# Rollback and the live-version timeline -----------------------------------------------------


def test_rollback_switches_back_and_the_timeline_answers_for_any_instant(scientist, staging):
    model = RegisteredModelFactory(owner=scientist)
    v1, v2 = packaged_version(model=model), packaged_version(model=model)
    first = deploy(scientist, staging, v1)
    between = timezone.now()
    second = deploy(scientist, staging, v2)
    with pytest.raises(Conflict):  # already live
        services.deployment_start(actor=scientist, endpoint=staging, version=v2)

    rollback = services.deployment_rollback(actor=scientist, endpoint=staging, model=model)
    assert (rollback.kind, rollback.version, rollback.previous_version) == (
        DeploymentKind.ROLLBACK,
        v1,
        v2,
    )
    queue_answer(v1.test_cases[0])
    rollback = run(rollback)
    assert rollback.state == DeploymentState.SUCCEEDED
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.state == DeploymentState.ROLLED_BACK
    assert first.state == DeploymentState.SUPERSEDED
    assert LiveVersion.objects.get(endpoint=staging, model=model).version == v1

    at = lambda moment: [  # noqa: E731
        p.version.version
        for p in selectors.live_version_at(endpoint=staging, at=moment, model=model)
    ]
    assert at(between) == [1]
    assert at(second.finished_at + timedelta(microseconds=1)) == [2]
    assert at(timezone.now()) == [1]
    assert at(first.created_at - timedelta(seconds=1)) == []
    # Rolling back again returns to v2 (the version before the live one).
    assert selectors.rollback_target(endpoint=staging, model=model) == v2


def test_nothing_to_roll_back_to(scientist, staging):
    version = packaged_version(registered_by=scientist)
    deploy(scientist, staging, version)
    with pytest.raises(ServiceError) as error:
        services.deployment_rollback(actor=scientist, endpoint=staging, model=version.model)
    assert error.value.code == "nothing_to_roll_back"


def test_production_rollback_is_for_approvers(scientist, approver, staging, production):
    model = RegisteredModelFactory(owner=scientist)
    with pytest.raises(PermissionDenied):
        services.deployment_rollback(actor=scientist, endpoint=production, model=model)


# Endpoints -------------------------------------------------------------------------------


def test_sagemaker_endpoint_defaults_to_the_region_triton_image(platform_admin, settings):
    settings.AWS_REGION = "eu-west-1"
    staging = allow(
        Environment.objects.get(name="staging"),
        s3_prefix="s3://bucket/",
        role="arn:aws:iam::123456789012:role/x",
    )
    endpoint = services.endpoint_create(
        actor=platform_admin,
        name="sm-eu",
        environment=staging,
        backend="sagemaker",
        execution_role_arn="arn:aws:iam::123456789012:role/x",
        s3_prefix="s3://bucket/models",
        instance_type="ml.g5.2xlarge",
    )
    assert endpoint.region == "eu-west-1"
    assert endpoint.s3_prefix == "s3://bucket/models/"
    assert endpoint.image_uri.startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tritonserver"
    )
    assert endpoint.target_name == "sm-eu"
    with pytest.raises(ServiceError) as error:
        services.endpoint_create(
            actor=platform_admin,
            name="sm-bad",
            environment=endpoint.environment,
            backend="sagemaker",
            s3_prefix="s3://bucket/x/",
        )
    assert error.value.field == "execution_role_arn"


def test_data_migration_created_environments_endpoints_and_groups():
    from django.contrib.auth.models import Group

    local = {e.name: (e.environment.name, e.backend) for e in Endpoint.objects.all()}
    assert local == {
        "local-staging": ("staging", "local"),
        "local-production": ("production", "local"),
    }
    approver = Group.objects.get(name="approver")
    assert approver.permissions.filter(codename="approve_promotionrequest").exists()
    assert (
        not Group.objects.get(name="data scientist")
        .permissions.filter(codename="approve_promotionrequest")
        .exists()
    )
    assert Group.objects.get(name="admin").permissions.count() > 20


def test_cancelling_a_pending_deployment_fails_it_with_its_run(scientist, staging):
    version = packaged_version(registered_by=scientist)
    deployment = services.deployment_start(actor=scientist, endpoint=staging, version=version)
    cancelled = services.deployment_cancel(
        actor=scientist, deployment=deployment, reason="Wrong version."
    )
    assert cancelled.state == DeploymentState.FAILED and cancelled.error == "Wrong version."
    assert cancelled.run.state == RunState.CANCELLED
    assert run(deployment, claim="late-message") is None  # a queued message finds nothing to do
    assert not LiveVersion.objects.exists()
    assert AuditEvent.objects.filter(action="deployment.failed", reason="Wrong version.").exists()
    with pytest.raises(InvalidTransition):
        services.deployment_cancel(actor=scientist, deployment=cancelled)
