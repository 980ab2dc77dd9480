"""Browser pages: lists with filters and pinned query counts, the version page, the upload
form (same checks as the API) and the live status fragment."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.audit import audit_record
from registry.choices import VersionStatus
from registry.models import ModelVersion, RegisteredModel
from registry.plans import TestPlan
from runs.services import run_create, run_log

from .factories import ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, user):
    client.force_login(user)
    return client


def test_pages_need_login(client):
    response = client.get(reverse("registry:model-list"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_model_list_search_filters_and_query_count(browser, django_assert_max_num_queries):
    RegisteredModelFactory(name="iris-classifier", tags=["tabular"])
    for index in range(12):
        model = RegisteredModelFactory(name=f"resnet-{index}")
        ModelVersionFactory(model=model, version=1, status=VersionStatus.PACKAGED)
    url = reverse("registry:model-list")
    response = browser.get(url + "?q=iris")
    assert [m.name for m in response.context["page"]] == ["iris-classifier"]
    assert [m.name for m in browser.get(url + "?tag=tabular").context["page"]] == [
        "iris-classifier"
    ]
    assert len(browser.get(url + "?status=packaged").context["page"]) == 12
    # session, user, count, rows: the same for 1 or 12 rows.
    # 5 for the page, 1 for the navigation's pending-approvals count.
    with django_assert_max_num_queries(6) as few:
        browser.get(url + "?q=iris")
    with django_assert_max_num_queries(6) as many:
        browser.get(url)
    assert len(few.captured_queries) == len(many.captured_queries)


def test_create_model_from_the_list_page(browser):
    response = browser.post(
        reverse("registry:model-list"), {"name": "bert", "description": "", "tags": "nlp, base"}
    )
    assert response.status_code == 302
    assert RegisteredModel.objects.get(name="bert").tags == ["nlp", "base"]
    again = browser.post(reverse("registry:model-list"), {"name": "bert"})
    assert "already exists" in again.content.decode()


def test_model_page_lists_versions_with_filters(browser, model, django_assert_max_num_queries):
    for number in range(1, 8):
        ModelVersionFactory(
            model=model,
            version=number,
            status=VersionStatus.PACKAGED if number % 2 else VersionStatus.INVALID,
        )
    url = reverse("registry:model-detail", kwargs={"name": "iris"})
    response = browser.get(url)
    assert [v.version for v in response.context["page"]] == [7, 6, 5, 4, 3, 2, 1]
    assert [v.version for v in browser.get(url + "?status=invalid").context["page"]] == [6, 4, 2]
    # 6 for the page, 1 for the navigation's pending-approvals count.
    with django_assert_max_num_queries(7) as seven:
        browser.get(url)
    with django_assert_max_num_queries(7) as three:
        browser.get(url + "?status=invalid")
    assert len(seven.captured_queries) == len(three.captured_queries)


def test_version_page_shows_lineage_problems_results_package_and_history(browser, model, user):
    parent = ModelVersionFactory(model=model, version=1, status=VersionStatus.PACKAGED)
    version = ModelVersionFactory(
        model=model,
        version=2,
        parent=parent,
        status=VersionStatus.PACKAGED,
        dataset_uri="s3://datasets/iris/iris.csv",
        dataset_version="sha256:9b1e",
        source_commit="3f2c1a9e8b7d",
        metrics={"accuracy": 0.97},
        problems=[{"file": "m/config.pbtxt", "line": 3, "message": "Something to see."}],
        package_uri="/store/iris/2/iris_2.tar.gz",
        package_sha256="cd" * 32,
        package_size_bytes=2048,
    )
    version.test_results.create(
        name="setosa-like",
        outcome="passed",
        duration_ms=3.2,
        actual={"PROBABILITIES": {"shape": [1, 3], "data": [0.9, 0.05, 0.05]}},
    )
    audit_record(
        actor=None,
        action="version.transition",
        target=version,
        from_state="packaging",
        to_state="packaged",
        reason="Packaged as iris_2.tar.gz.",
        source="worker",
    )
    response = browser.get(version.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in html and "iris v1" in html and "trained on" in html and "built from" in html
    assert "m/config.pbtxt:3" in html and "Something to see." in html
    assert "setosa-like" in html and "1 / 1 passed" in html
    assert "iris_2.tar.gz" in html and "cd" * 32 in html
    assert "packaging → packaged" in html and "Packaged as iris_2.tar.gz." in html
    assert f"{reverse('deployments:wizard-start')}?model=iris&amp;version=2" in html
    assert 'hx-trigger="every 2s"' not in html  # nothing moves: no polling
    assert (
        browser.get(
            reverse("registry:version-detail", kwargs={"name": "iris", "version": 9})
        ).status_code
        == 404
    )


def test_status_fragment_polls_while_in_progress_and_refreshes_on_change(browser, model):
    version = ModelVersionFactory(model=model, version=1, status=VersionStatus.TESTING)
    run = run_create(subject=version, plan=TestPlan, enqueue=False)
    run_log(run, "Loaded demo_ensemble in 2.1 s.", step="test")
    page = browser.get(version.get_absolute_url()).content.decode()
    assert 'hx-trigger="every 2s"' in page and "Loaded demo_ensemble" in page
    url = reverse("registry:version-status", kwargs={"name": "iris", "version": 1})
    same = browser.get(url + "?shown=testing", HTTP_HX_REQUEST="true")
    assert "HX-Refresh" not in same and "Loaded demo_ensemble" in same.content.decode()
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.TESTED)
    moved = browser.get(url + "?shown=testing", HTTP_HX_REQUEST="true")
    assert moved["HX-Refresh"] == "true"


def test_upload_form_registers_a_version(
    browser, model, demo_tar, django_capture_on_commit_callbacks
):
    url = reverse("registry:version-upload", kwargs={"name": "iris"})
    assert browser.get(url).status_code == 200
    with django_capture_on_commit_callbacks() as callbacks:
        response = browser.post(
            url,
            {
                "archive": SimpleUploadedFile("demo.tar.gz", demo_tar.read_bytes()),
                "source_commit": "abc123",
                "dataset_uri": "s3://d/iris.csv",
                "metrics": "accuracy = 0.97\nf1=0.9",
                "tags": "demo, iris",
                "frameworks": "onnx",
            },
        )
    assert response.status_code == 302
    version = ModelVersion.objects.get()
    assert response["Location"] == version.get_absolute_url()
    assert version.metrics == {"accuracy": 0.97, "f1": 0.9} and version.tags == ["demo", "iris"]
    assert len(callbacks) == 1
    duplicate = browser.post(
        url, {"archive": SimpleUploadedFile("demo.tar.gz", demo_tar.read_bytes())}
    )
    assert duplicate.status_code == 400
    assert "already registered as iris v1" in duplicate.content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"metrics": "accuracy = high"}, "metrics", "is not a number"),
        ({"parent": "iris:5"}, "parent", "not a registered version"),
        ({"source_commit": "has space"}, "source_commit", "commit id"),
        ({"test_cases": "- name: x\n  inputs: {}"}, "test_cases", "inputs must map"),
    ],
)
def test_upload_form_shows_the_same_checks_as_the_api(
    browser, model, demo_tar, data, field, message
):
    payload = {"archive": SimpleUploadedFile("demo.tar.gz", demo_tar.read_bytes()), **data}
    response = browser.post(reverse("registry:version-upload", kwargs={"name": "iris"}), payload)
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field]), (
        response.context["form"].errors
    )
    assert not ModelVersion.objects.exists()


def test_upload_form_needs_an_archive_or_uri(browser, model):
    response = browser.post(reverse("registry:version-upload", kwargs={"name": "iris"}), {})
    assert "Upload an archive or give its URI." in response.context["form"].errors["archive"]


def test_retry_button(browser, model):
    version = ModelVersionFactory(model=model, version=1, status=VersionStatus.TEST_FAILED)
    response = browser.post(
        reverse("registry:version-retry", kwargs={"name": "iris", "version": 1})
    )
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == VersionStatus.TEST_FAILED  # the worker moves it; nothing runs here


def test_home_page_uses_the_status_badge(browser, model):
    ModelVersionFactory(model=model, version=1, status=VersionStatus.TEST_FAILED)
    html = browser.get(reverse("home")).content.decode()
    assert '<span class="badge bad">test failed</span>' in html


def test_the_version_page_shows_its_pipeline_through_the_shared_run_partial(browser, model):
    """Stages done show how long their run's step took; the stage under way is marked
    running; the log is the runs' lines."""
    from datetime import timedelta

    from django.utils import timezone

    from registry.plans import ValidatePlan

    version = ModelVersionFactory(model=model, version=1, status=VersionStatus.TESTING)
    validate = run_create(subject=version, plan=ValidatePlan, enqueue=False)
    started = timezone.now() - timedelta(seconds=3)
    validate.steps.update(
        state="done", started_at=started, finished_at=started + timedelta(seconds=1.5)
    )
    test = run_create(subject=version, plan=TestPlan, enqueue=False)
    run_log(test, "Loading the ensemble.", step="test")
    page = browser.get(version.get_absolute_url()).content.decode()
    assert 'data-step="validate" data-state="done"' in page
    assert 'data-duration="1.5"' in page
    assert 'data-step="test" data-state="running"' in page
    assert 'data-step="package" data-state="pending"' in page
    assert "[test] Loading the ensemble." in page
    assert 'id="run-cancel"' not in page  # the pipeline's runs are not cancelled by hand


MODEL_ROW = {"platform": "", "backend": "python", "versions": [1], "inputs": [], "outputs": []}


def test_the_version_page_warns_when_sagemaker_would_serve_the_package_by_chance(browser, model):
    version = ModelVersionFactory(
        model=model,
        version=1,
        status=VersionStatus.PACKAGED,
        repository_summary={
            "entry_model": "scorer",
            "top_level_models": ["scorer", "ranker"],
            "models": [MODEL_ROW | {"name": "scorer"}, MODEL_ROW | {"name": "ranker"}],
        },
    )
    page = browser.get(version.get_absolute_url()).content.decode()
    assert 'id="sagemaker-ambiguous"' in page and "scorer, ranker" in page
    single = ModelVersionFactory(
        model=model,
        version=2,
        status=VersionStatus.PACKAGED,
        repository_summary={
            "entry_model": "e",
            "top_level_models": ["e"],
            "models": [MODEL_ROW | {"name": "e"}, MODEL_ROW | {"name": "a"}],
        },
    )
    assert 'id="sagemaker-ambiguous"' not in browser.get(single.get_absolute_url()).content.decode()


def test_the_version_page_says_why_a_version_failed(browser, model):
    reason = "1 of 3 test cases failed: `wrong`: PROBABILITIES[0]: got 0.999735, expected 0.1."
    failed = ModelVersionFactory(
        model=model, version=1, status=VersionStatus.TEST_FAILED, status_reason=reason
    )
    page = browser.get(failed.get_absolute_url()).content.decode()
    assert 'id="status-reason"' in page and "`wrong`: PROBABILITIES[0]: got 0.999735" in page
    passed = ModelVersionFactory(model=model, version=2, status=VersionStatus.TESTED)
    assert 'id="status-reason"' not in browser.get(passed.get_absolute_url()).content.decode()


def test_the_upload_page_explains_berth_yaml(browser, model):
    page = browser.get(reverse("registry:version-upload", kwargs={"name": "iris"}))
    html = page.content.decode()
    assert 'id="berth-yaml-help"' in html and "model: demo_ensemble" in html
    assert f'href="{reverse("registry-api:berth-schema")}"' in html
