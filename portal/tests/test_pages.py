"""The portal's frame around every page: error pages with the navigation and a way on, the
pending-approvals count, the token page's copy and usage, readable filter labels, lineage
values drawn as tables, tags and short hashes (never a Python repr)."""

import pytest
from django.test import Client
from django.urls import reverse

from deployments.choices import DeploymentState, PromotionState
from deployments.models import Deployment, Endpoint, PromotionRequest
from deployments.tests.factories import packaged_version, user_in
from portal.templatetags.berth_ui import short_hash, value_shape

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated_artifacts(settings, tmp_path):
    """Packages the factories write go to this test's own folder."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")


@pytest.fixture
def scientist():
    return user_in("data scientist", username="sam")


@pytest.fixture
def approver():
    return user_in("approver", username="ada")


def pending_promotion(requester) -> PromotionRequest:
    version = packaged_version(registered_by=requester)
    staging = Deployment.objects.create(
        endpoint=Endpoint.objects.get(name="local-staging"),
        model=version.model,
        version=version,
        state=DeploymentState.SUCCEEDED,
    )
    return PromotionRequest.objects.create(
        version=version,
        target_endpoint=Endpoint.objects.get(name="local-production"),
        staging_deployment=staging,
        requested_by=requester,
    )


def test_unknown_page_is_the_portals_404_with_navigation(client, scientist):
    client.force_login(scientist)
    response = client.get("/models/no-such-model/v9/nothing-here/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html
    assert 'class="mainnav"' in html and reverse("registry:model-list") in html
    assert 'href="/"' in html  # a way on


def test_404_for_someone_logged_out_offers_the_login(client):
    html = client.get("/nothing-here/").content.decode()
    assert "Page not found" in html and reverse("login") in html


def test_get_on_an_action_is_a_branded_405_that_keeps_allow(client, scientist):
    client.force_login(scientist)
    response = client.get(reverse("token-revoke", args=[1]), HTTP_ACCEPT="text/html")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    html = response.content.decode()
    assert "does not answer that request" in html and 'class="mainnav"' in html


def test_405_from_the_api_keeps_the_apis_answer(client, scientist):
    client.force_login(scientist)
    response = client.delete(reverse("registry-api:model-list"), HTTP_ACCEPT="application/json")
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


def test_csrf_failure_is_the_portals_page_not_djangos(scientist):
    client = Client(enforce_csrf_checks=True)
    client.force_login(scientist)
    response = client.post(reverse("token-list"), {"name": "ci"})
    assert response.status_code == 403
    html = response.content.decode()
    assert "This form has expired" in html and 'class="mainnav"' in html
    assert "DEBUG" not in html


def test_pages_link_a_favicon_and_a_skip_link(client, scientist):
    client.force_login(scientist)
    html = client.get(reverse("home")).content.decode()
    assert 'rel="icon"' in html and "favicon.svg" in html
    assert 'href="#main"' in html and 'id="main"' in html


def test_pending_approvals_are_counted_for_approvers_only(client, scientist, approver):
    pending_promotion(scientist)
    decided = pending_promotion(user_in("data scientist", username="sol"))
    decided.state = PromotionState.REJECTED
    decided.save(update_fields=["state"])

    client.force_login(approver)
    home = client.get(reverse("home")).content.decode()
    assert 'id="nav-pending-approvals"' in home and 'id="pending-approvals"' in home
    assert "<strong>1</strong> promotion request to production is waiting" in home

    client.force_login(scientist)
    home = client.get(reverse("home")).content.decode()
    assert "nav-pending-approvals" not in home and 'id="pending-approvals"' not in home


def test_an_approver_is_not_counted_for_their_own_request(client, approver):
    pending_promotion(approver)
    client.force_login(approver)
    assert "nav-pending-approvals" not in client.get(reverse("home")).content.decode()


def test_token_page_has_a_copy_button_and_a_usage_example(client, scientist):
    client.force_login(scientist)
    html = client.post(reverse("token-list"), {"name": "ci"}).content.decode()
    assert 'data-copy-from="new-token"' in html
    assert 'Authorization: Bearer ${BERTH_TOKEN}" http://testserver/api/v1/models/' in html


@pytest.mark.parametrize(
    "path,label",
    [("/deployments/", "Version"), ("/deployments/", "Environment"), ("/endpoints/", "Backend")],
)
def test_filter_labels_are_words(client, scientist, path, label):
    from deployments.filtersets import DeploymentFilterSet, EndpointFilterSet

    labels = {
        name: str(f.label)
        for filterset in (DeploymentFilterSet, EndpointFilterSet)
        for name, f in filterset.base_filters.items()
    }
    assert label in labels.values()
    assert not any(
        "version version" in value.lower() or "environment name" in value.lower()
        for value in labels.values()
    )


def test_lineage_values_are_shaped_not_reprs():
    assert value_shape("metrics", {"f1": 0.9, "accuracy": 0.95}) == {
        "kind": "metrics",
        "items": [("accuracy", 0.95), ("f1", 0.9)],
    }
    assert value_shape("frameworks", ["onnx", "python"])["kind"] == "tags"
    commit = value_shape("source_commit", "4f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a")
    assert commit["kind"] == "hash" and commit["short"] == "4f9c2a1d8e7b"
    assert short_hash("sha256:" + "ab" * 32) == "sha256:abababababab"
    assert value_shape("dataset_version", "v3") == {
        "kind": "hash",
        "text": "v3",
        "short": "v3",
        "shortened": False,
    }
    assert value_shape("source_repository", "https://git.example.org/ml")["kind"] == "url"
    job = value_shape(
        "training_job", "arn:aws:sagemaker:eu-west-1:123456789012:training-job/iris-7"
    )
    assert job["href"].startswith("https://eu-west-1.console.aws.amazon.com/sagemaker/")
    assert value_shape("parent", "")["kind"] == "empty"


def test_version_page_shows_lineage_as_table_tags_and_short_hashes(client, scientist):
    version = packaged_version(
        registered_by=scientist,
        metrics={"accuracy": 0.95},
        frameworks=["onnx", "python"],
        tags=["tabular"],
    )
    client.force_login(scientist)
    html = client.get(version.get_absolute_url()).content.decode()
    assert "['onnx', 'python']" not in html and "{'accuracy': 0.95}" not in html
    assert '<th scope="row">accuracy</th><td>0.95</td>' in html
    assert '<li class="tag">onnx</li>' in html
    assert f'data-copy="{version.package_sha256}"' in html
    assert 'href="https://git.example.org/ml/demo"' in html


def test_refused_upload_has_an_error_summary_and_a_parent_picker(client, scientist):
    version = packaged_version(registered_by=scientist)
    other = packaged_version(
        model=type(version.model).objects.create(name="other_model", owner=scientist)
    )
    client.force_login(scientist)
    url = reverse("registry:version-upload", args=[version.model.name])
    page = client.get(url).content.decode()
    assert 'class="required-mark"' in page and 'id="error-summary"' not in page
    # This model's versions are suggested first.
    picker = page[page.index('<datalist id="parent-versions">') :]
    assert picker.index(f"{version.model.name}:1") < picker.index(f"{other.model.name}:1")
    assert 'list="parent-versions"' in page

    refused = client.post(url, {"metrics": "accuracy = high"})
    assert refused.status_code == 400
    html = refused.content.decode()
    summary = html[
        html.index('id="error-summary"') : html.index("</div>", html.index("error-summary"))
    ]
    assert 'href="#id_archive"' in summary and "Upload an archive or give its URI." in summary
    assert 'href="#id_metrics"' in summary and "is not a number" in summary
    assert 'aria-invalid="true"' in html
    assert "summary.focus()" in html


def test_permission_denied_is_the_portals_403(rf, scientist):
    from django.core.exceptions import PermissionDenied
    from django.views.defaults import permission_denied

    request = rf.get("/admin-only/")
    request.user = scientist
    response = permission_denied(request, PermissionDenied())
    assert response.status_code == 403
    html = response.content.decode()
    assert "You are not allowed to do this" in html and 'class="mainnav"' in html
