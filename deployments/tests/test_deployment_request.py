"""`deployment_request`, the one service behind the deploy wizard and the deploy API: it
decides whether a version goes live through a deployment or a promotion request, and a
refusal anywhere leaves nothing half made (no endpoint without its deployment)."""

import pytest

from deployments import services
from deployments.backends import backend_for
from deployments.choices import DeploymentState, PromotionState, Source
from deployments.models import Deployment, Endpoint, PromotionRequest
from portal.errors import PermissionDenied, ServiceError
from portal.models import AuditEvent

from .factories import environment, packaged_version, queue_answer, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db

SIZES = {
    "autoscaling_min_instances": 1,
    "autoscaling_max_instances": 5,
    "target_invocations_per_instance": 300,
    "scale_in_cooldown_seconds": 600,
    "scale_out_cooldown_seconds": 30,
}


def test_staging_deploys_and_is_sized(scientist):
    version = packaged_version(registered_by=scientist)
    staging = Endpoint.objects.get(name="local-staging")
    outcome = services.deployment_request(
        actor=scientist, version=version, endpoint=staging, autoscaling=SIZES, reason="try it"
    )
    assert isinstance(outcome, Deployment)
    assert (outcome.state, outcome.reason, outcome.source) == (
        DeploymentState.PENDING,
        "try it",
        Source.BROWSER,
    )
    staging.refresh_from_db()
    assert staging.autoscaling_max_instances == 5
    assert AuditEvent.objects.filter(action="endpoint.autoscaling").count() == 1


def test_production_becomes_a_promotion_request_and_leaves_the_endpoint_alone(scientist, aws):
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    staging = sagemaker_endpoint("sm-staging", "staging")
    assert run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    production = Endpoint.objects.get(name="local-production")
    before = production.autoscaling_max_instances

    outcome = services.deployment_request(
        actor=scientist, version=version, endpoint=production, autoscaling=SIZES, reason="please"
    )

    assert isinstance(outcome, PromotionRequest)
    assert (outcome.state, outcome.comment) == (PromotionState.PENDING, "please")
    production.refresh_from_db()
    assert production.autoscaling_max_instances == before
    assert not Deployment.objects.filter(endpoint=production).exists()


def test_the_deploy_api_path_refuses_production_instead_of_requesting(scientist):
    version = packaged_version(registered_by=scientist)
    production = Endpoint.objects.get(name="local-production")
    with pytest.raises(PermissionDenied) as refused:
        services.deployment_request(
            actor=scientist,
            version=version,
            endpoint=production,
            source=Source.API,
            request_promotion=False,
        )
    assert refused.value.code == "approval_required"
    assert not PromotionRequest.objects.exists() and not Deployment.objects.exists()


def test_a_new_endpoint_is_not_left_behind_when_the_deployment_is_refused(platform_admin):
    from registry.choices import VersionStatus

    version = packaged_version(registered_by=platform_admin, status=VersionStatus.TESTED)
    with pytest.raises(ServiceError, match="only packaged versions deploy"):
        services.deployment_request(
            actor=platform_admin,
            version=version,
            new_endpoint={"name": "fresh", "environment": environment("staging")},
            autoscaling=SIZES,
        )
    assert not Endpoint.objects.filter(name="fresh").exists()
    assert not AuditEvent.objects.filter(action="endpoint.create").exists()


def test_a_new_endpoint_is_created_sized_and_deployed_to(platform_admin):
    version = packaged_version(registered_by=platform_admin)
    outcome = services.deployment_request(
        actor=platform_admin,
        version=version,
        new_endpoint={"name": "fresh", "environment": environment("staging"), "backend": "local"},
        autoscaling=SIZES,
    )
    endpoint = Endpoint.objects.get(name="fresh")
    assert outcome.endpoint == endpoint and endpoint.autoscaling_max_instances == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "endpoint"),
        ({"autoscaling": {"max_instances": 3}}, "autoscaling"),
    ],
)
def test_unclear_requests_are_refused_with_their_field(scientist, kwargs, field):
    version = packaged_version(registered_by=scientist)
    if "autoscaling" in kwargs:
        kwargs["endpoint"] = Endpoint.objects.get(name="local-staging")
    with pytest.raises(ServiceError) as refused:
        services.deployment_request(actor=scientist, version=version, **kwargs)
    assert refused.value.field == field
    assert not Deployment.objects.exists()


def test_the_review_page_shows_the_backends_plan(client, scientist, aws):
    client.force_login(scientist)
    version = packaged_version(registered_by=scientist)
    sagemaker_endpoint("sm-staging", "staging")
    client.post("/deployments/new/1/", {"version": version.pk})
    for name in ("local-staging", "sm-staging"):
        client.post("/deployments/new/2/", {"choice": "existing", "endpoint": name})
        client.post(
            "/deployments/new/3/", client.get("/deployments/new/3/").context["form"].initial
        )
        review = client.get("/deployments/new/4/")
        endpoint = Endpoint.objects.get(name=name)
        plan = backend_for(endpoint).plan(endpoint)
        assert [step.name for step in review.context["plan"]] == [step.name for step in plan]
        html = review.content.decode()
        for step in plan:
            assert f'data-plan-step="{step.name}">{step.label}</li>' in html.replace("&#x27;", "'")
