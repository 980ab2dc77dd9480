"""Pages: the four-step wizard keeps what was entered across back/next, deploys to staging
or turns production into a promotion request; approval pages obey the four-eyes rule;
list pages make a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.choices import DeploymentState, PromotionState
from deployments.models import Deployment, Endpoint, PromotionRequest

from .factories import (
    RegisteredModelFactory,
    allow,
    environment,
    packaged_version,
    queue_answer,
    run,
    sagemaker_endpoint,
    user_in,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, scientist):
    client.force_login(scientist)
    return client


def test_wizard_walks_four_steps_keeping_data_and_deploys(browser, scientist):
    version = packaged_version(registered_by=scientist)
    start = browser.get("/deployments/new/")
    assert start.status_code == 302
    page = browser.get("/deployments/new/1/")
    assert b"demo_ensemble" in page.content and b"3/3 passed" in page.content
    assert browser.post("/deployments/new/1/", {"version": version.pk}).url == "/deployments/new/2/"

    step2 = browser.post("/deployments/new/2/", {"choice": "existing", "endpoint": "local-staging"})
    assert step2.url == "/deployments/new/3/"
    step3 = browser.get("/deployments/new/3/")
    assert step3.context["form"].initial["autoscaling_max_instances"] == 2  # prefilled
    autoscaling = {
        "autoscaling_min_instances": 1,
        "autoscaling_max_instances": 3,
        "target_invocations_per_instance": 250,
        "scale_in_cooldown_seconds": 600,
        "scale_out_cooldown_seconds": 30,
    }
    # Back keeps what was typed; next shows it again.
    assert (
        browser.post("/deployments/new/3/", {**autoscaling, "back": "1"}).url
        == "/deployments/new/2/"
    )
    again = browser.get("/deployments/new/2/")
    assert again.context["form"].initial["endpoint"] == "local-staging"
    assert (
        browser.get("/deployments/new/3/").context["form"].initial["autoscaling_max_instances"] == 3
    )
    assert browser.post("/deployments/new/3/", autoscaling).url == "/deployments/new/4/"

    review = browser.get("/deployments/new/4/")
    text = review.content.decode()
    assert "Place demo_ensemble_1.tar.gz" in text
    assert "first live version" in text
    assert "autoscaling max instances 2 → 3" in text
    done = browser.post("/deployments/new/4/", {"confirm": "1", "comment": "first"})
    deployment = Deployment.objects.get()
    assert done.url == f"/deployments/{deployment.pk}/"
    assert (deployment.endpoint.name, deployment.source, deployment.state) == (
        "local-staging",
        "browser",
        DeploymentState.PENDING,
    )
    assert Endpoint.objects.get(name="local-staging").autoscaling_max_instances == 3
    progress = browser.get(f"/deployments/{deployment.pk}/progress/")
    assert b'hx-trigger="every 1s"' in progress.content  # polls while it runs


def test_wizard_refuses_versions_that_are_not_packaged(browser, scientist):
    from registry.choices import VersionStatus

    version = packaged_version(registered_by=scientist, status=VersionStatus.TESTED)
    page = browser.post("/deployments/new/1/", {"version": version.pk})
    assert page.status_code == 200 and b"not packaged" in page.content


def test_wizard_new_sagemaker_endpoint(client, platform_admin, aws):
    browser = client
    browser.force_login(platform_admin)
    allow(
        environment("staging"),
        s3_prefix="s3://berth-models/",
        role="arn:aws:iam::123456789012:role/r",
    )
    version = packaged_version(registered_by=platform_admin)
    browser.post("/deployments/new/1/", {"version": version.pk})
    incomplete = browser.post(
        "/deployments/new/2/",
        {"choice": "new", "name": "sm-new", "environment": "staging", "backend": "sagemaker"},
    )
    assert incomplete.status_code == 200 and incomplete.context["form"].errors["s3_prefix"]
    browser.post(
        "/deployments/new/2/",
        {
            "choice": "new",
            "name": "sm-new",
            "environment": "staging",
            "backend": "sagemaker",
            "instance_type": "ml.g5.2xlarge",
            "initial_instance_count": 2,
            "execution_role_arn": "arn:aws:iam::123456789012:role/r",
            "s3_prefix": "s3://berth-models/new/",
        },
    )
    step3 = browser.get("/deployments/new/3/")
    browser.post("/deployments/new/3/", step3.context["form"].initial)
    review = browser.get("/deployments/new/4/").content.decode()
    assert "Create the staging endpoint sm-new" in review and "2 × ml.g5.2xlarge" in review
    browser.post("/deployments/new/4/", {"confirm": "1"})
    endpoint = Endpoint.objects.get(name="sm-new")
    assert (endpoint.instance_type, endpoint.initial_instance_count) == ("ml.g5.2xlarge", 2)
    assert Deployment.objects.get().endpoint == endpoint


def test_wizard_offers_new_endpoints_to_admins_only(browser, scientist):
    version = packaged_version(registered_by=scientist)
    browser.post("/deployments/new/1/", {"version": version.pk})
    assert b'value="new"' not in browser.get("/deployments/new/2/").content
    refused = browser.post(
        "/deployments/new/2/",
        {"choice": "new", "name": "mine", "environment": "staging", "backend": "local"},
    )
    assert refused.status_code == 403
    assert "Only admins create and change endpoints" in refused.content.decode()
    assert not Endpoint.objects.filter(name="mine").exists()


def test_production_in_the_wizard_becomes_a_promotion_request(browser, scientist, aws):
    staging = sagemaker_endpoint("sm-staging", "staging")
    version = packaged_version(registered_by=scientist)
    from deployments import services

    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=staging, version=version))

    browser.post("/deployments/new/1/", {"version": version.pk})
    browser.post("/deployments/new/2/", {"choice": "existing", "endpoint": "local-production"})
    browser.post("/deployments/new/3/", browser.get("/deployments/new/3/").context["form"].initial)
    review = browser.get("/deployments/new/4/").content.decode()
    assert "Request promotion" in review and "promotion request" in review
    answer = browser.post("/deployments/new/4/", {"confirm": "1", "comment": "please"})
    promotion = PromotionRequest.objects.get()
    assert answer.url == f"/approvals/{promotion.pk}/"
    assert promotion.comment == "please" and promotion.state == PromotionState.PENDING
    assert not Deployment.objects.filter(endpoint__name="local-production").exists()


def test_approval_page_four_eyes(client, scientist, approver, aws):
    from deployments import services

    staging = sagemaker_endpoint("sm-staging", "staging")
    production = sagemaker_endpoint("sm-production", "production")
    requester = user_in("approver", username="req")
    requester.groups.add(*scientist.groups.all())
    version = packaged_version(registered_by=requester)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=requester, endpoint=staging, version=version))
    promotion = services.promotion_request_create(
        actor=requester, version=version, target_endpoint=production
    )

    client.force_login(requester)
    page = client.get(f"/approvals/{promotion.pk}/").content.decode()
    assert "another approver has to approve it" in page
    refused = client.post(f"/approvals/{promotion.pk}/approve/", {"comment": "me"}, follow=True)
    assert "another approver has to approve it" in refused.content.decode()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.PENDING

    client.force_login(approver)
    approved = client.post(f"/approvals/{promotion.pk}/approve/", {"comment": "ok"})
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED
    assert approved.url == f"/deployments/{promotion.deployment_id}/"


def test_pages_render_and_list_queries_are_fixed(browser, scientist, aws):
    from deployments import services

    staging = sagemaker_endpoint("sm-staging", "staging")

    def counts():
        result = {}
        for url in ("/endpoints/", "/deployments/", "/approvals/?state="):
            with CaptureQueriesContext(connection) as queries:
                assert browser.get(url).status_code == 200
            result[url] = len(queries)
        return result

    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    before = counts()
    for number in range(3):
        sagemaker_endpoint(f"sm-more-{number}", "staging")
        other = packaged_version(registered_by=scientist)
        queue_answer(other.test_cases[0])
        run(
            services.deployment_start(
                actor=scientist,
                endpoint=Endpoint.objects.get(name=f"sm-more-{number}"),
                version=other,
            )
        )
    assert counts() == before
    assert browser.get("/endpoints/sm-staging/").status_code == 200
    refused = browser.get("/endpoints/new/")
    assert refused.status_code == 403 and b"Only admins create" in refused.content


def _served(endpoint, version, actor, *, kind="deploy", previous=None):
    """Record `version` as the live one on `endpoint`, as a finished deployment (or
    rollback) leaves the live pointer and its history; nothing is served (pages only)."""
    from django.utils import timezone

    from deployments.models import LiveVersion, LiveVersionHistory

    now = timezone.now()
    deployment = Deployment.objects.create(
        endpoint=endpoint,
        model=version.model,
        version=version,
        kind=kind,
        previous_version=previous,
        state=DeploymentState.SUCCEEDED,
        created_by=actor,
        finished_at=now,
    )
    LiveVersionHistory.objects.filter(
        endpoint=endpoint, model=version.model, until__isnull=True
    ).update(until=now)
    LiveVersionHistory.objects.create(
        endpoint=endpoint, model=version.model, version=version, deployment=deployment, since=now
    )
    LiveVersion.objects.update_or_create(
        endpoint=endpoint,
        model=version.model,
        defaults={"version": version, "deployment": deployment, "since": now},
    )
    return deployment


def test_rollback_states_its_consequence_and_the_reverse_restores(browser, scientist):
    staging = Endpoint.objects.get(name="local-staging")
    v1 = packaged_version(registered_by=scientist)
    v2 = packaged_version(model=v1.model)
    _served(staging, v1, scientist)
    _served(staging, v2, scientist, previous=v1)
    page = browser.get("/endpoints/local-staging/").content.decode()
    assert "Roll back to v1" in page
    assert 'data-confirm="Roll back demo_ensemble: v2 → v1 on local-staging.' in page
    assert "Restore" not in page

    _served(staging, v1, scientist, kind="rollback", previous=v2)  # the rollback ran
    page = browser.get("/endpoints/local-staging/").content.decode()
    assert "Restore v2" in page and "Roll back to v2" not in page
    assert 'data-confirm="Restore demo_ensemble: v1 → v2 on local-staging.' in page


def test_an_unset_memory_budget_reads_not_set(browser):
    staging = Endpoint.objects.get(name="local-staging")
    staging.memory_budget_bytes = None
    staging.save(update_fields=["memory_budget_bytes"])
    page = browser.get("/endpoints/local-staging/").content.decode()
    assert "not set" in page and "0 bytes" not in page
    staging.memory_budget_bytes = 3 * 1024**3
    staging.save(update_fields=["memory_budget_bytes"])
    assert "3.0\xa0GB" in browser.get("/endpoints/local-staging/").content.decode()


def test_approve_and_reject_state_their_consequence(client, scientist, approver, aws):
    requester = user_in("approver", username="req")
    version = packaged_version(registered_by=requester)
    staging = _served(Endpoint.objects.get(name="local-staging"), version, requester)
    promotion = PromotionRequest.objects.create(
        version=version,
        target_endpoint=Endpoint.objects.get(name="local-production"),
        staging_deployment=staging,
        requested_by=requester,
        evidence={"replaces": {"version": None}},
    )
    client.force_login(approver)
    page = client.get(f"/approvals/{promotion.pk}/").content.decode()
    assert (
        "Approve and deploy: local-production serves demo_ensemble v1; the production "
        "deployment starts now." in page
    )
    assert f"Reject promotion #{promotion.pk}: demo_ensemble v1 does not go to" in page
    assert page.count("window.confirm") == 2


def test_promotion_form_preselects_production_and_previews_the_evidence(
    browser, scientist, settings
):
    settings.BERTH_DATAPLANE_URL = "http://127.0.0.1:9"  # nothing answers: metrics say why
    version = packaged_version(registered_by=scientist)
    _served(Endpoint.objects.get(name="local-staging"), version, scientist)
    assert Endpoint.objects.filter(environment__requires_approval=True).count() == 1

    page = browser.get(f"/approvals/new/?version={version.pk}")
    assert page.context["form"]["target_endpoint"].value() == "local-production"
    text = page.content.decode()
    assert 'id="evidence-preview"' in text and "3/3 passed" in text
    assert "On local-staging since the staging deploy" in text
    assert "Metrics unavailable" in text

    fields = {"version": version.pk, "target_endpoint": "local-production", "comment": "ok"}
    preview = browser.post("/approvals/new/", {**fields, "preview": "1"})
    assert preview.status_code == 200 and 'id="evidence-preview"' in preview.content.decode()
    assert not PromotionRequest.objects.exists()  # a preview sends nothing

    sent = browser.post("/approvals/new/", fields)
    promotion = PromotionRequest.objects.get()
    assert sent.url == f"/approvals/{promotion.pk}/"
    metrics = promotion.evidence["staging_metrics"]
    assert (metrics["endpoint"], metrics["requests"], metrics["scope"]) == (
        "local-staging",
        0,
        "target model",
    )
    assert metrics["error"]  # why the figures are empty, kept with the evidence


def test_live_progress_is_announced(browser, scientist):
    version = packaged_version(registered_by=scientist)
    deployment = _served(Endpoint.objects.get(name="local-staging"), version, scientist)
    partial = browser.get(f"/deployments/{deployment.pk}/progress/").content.decode()
    assert partial.count('aria-live="polite"') >= 1
    assert '<div id="progress"' in partial and 'aria-live="polite">' in partial.split("\n")[1]


def test_wizard_lists_the_model_trained_last_first(browser, scientist):
    """Step 1 groups versions by model; the model with the newest registration comes
    first (what a person just trained), its versions newest first."""
    from datetime import timedelta

    from django.utils import timezone

    from registry.models import ModelVersion

    older = RegisteredModelFactory(name="aardvark")
    newer = RegisteredModelFactory(name="zebra")
    for model, number in [(older, 1), (older, 2), (newer, 1)]:
        packaged_version(model=model, version=number, registered_by=scientist)
    ModelVersion.objects.filter(model=older).update(
        registered_at=timezone.now() - timedelta(days=2)
    )
    page = browser.get("/deployments/new/1/").content.decode()
    assert page.index('data-model="zebra"') < page.index('data-model="aardvark"')
    versions = ModelVersion.objects.filter(model=older).order_by("version")
    first, second = (f'id="version-{v.pk}"' for v in versions)
    assert page.index(second) < page.index(first)
