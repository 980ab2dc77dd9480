"""How to call an endpoint, from its page: the invocation URL, the inputs, the snippets and
the test-request button. The curl snippet copied from the page runs against the REAL data
plane (gateway + Triton) and answers what the version's test case expects."""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from deployments import services
from deployments.choices import DeploymentState
from deployments.models import Endpoint

from .factories import RegisteredModelFactory, packaged_version, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db


def snippet(page: str, kind: str, version_pk: int) -> str:
    """The text of one snippet as the copy button copies it (the element's textContent)."""
    match = re.search(rf'<pre class="snippet" id="{kind}-{version_pk}">(.*?)</pre>', page, re.S)
    assert match, f"no {kind} snippet for version {version_pk}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def probabilities(answer: dict) -> list[float]:
    return next(o for o in answer["outputs"] if o["name"] == "PROBABILITIES")["data"]


@pytest.fixture
def local(gateway, settings):
    settings.BERTH_DATAPLANE_URL = gateway.url
    settings.BERTH_DATAPLANE_STORE = str(gateway.store_root)
    return gateway


@pytest.mark.triton
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_snippet_from_the_endpoint_page_calls_the_data_plane(local, scientist, client):
    endpoint = Endpoint.objects.get(name="local-staging")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    deployment = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert deployment.state == DeploymentState.SUCCEEDED, deployment.error

    client.force_login(scientist)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert f"{local.url}/endpoints/local-staging/invocations" in page
    curl = snippet(page, "curl", version.pk)
    assert "X-Amzn-SageMaker-Target-Model: demo_ensemble_1.tar.gz" in curl
    assert f'data-copy-from="curl-{version.pk}"' in page  # the copy button copies it

    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    case = version.test_cases[0]
    assert np.allclose(
        probabilities(json.loads(done.stdout)),
        np.ravel(case["expected"]["PROBABILITIES"]["data"]),
        atol=1e-4,
    )

    # The same call through the portal's button: status, latency and the outputs.
    answer = client.post(
        f"/endpoints/{endpoint.name}/test-request/", {"version": version.pk}, HTTP_HX_REQUEST="true"
    )
    body = answer.content.decode()
    assert answer.status_code == 200, body
    assert 'data-ok="true"' in body and ">200<" in body and " ms<" in body
    assert "PROBABILITIES" in body

    # The deployment page carries the same snippets.
    page = client.get(deployment.get_absolute_url()).content.decode()
    assert snippet(page, "curl", version.pk) == curl
    assert 'TargetModel="demo_ensemble_1.tar.gz"' in snippet(page, "boto3", version.pk)
    assert 'target_model="demo_ensemble_1.tar.gz"' in snippet(page, "sdk", version.pk)


def test_the_page_names_the_public_url_inputs_and_snippets(scientist, client, settings):
    settings.BERTH_DATAPLANE_PUBLIC_URL = "https://serve.example.org"
    endpoint = Endpoint.objects.get(name="local-staging")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    services_live(endpoint, version, scientist)
    client.force_login(scientist)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert "https://serve.example.org/endpoints/local-staging/invocations" in page
    case = version.test_cases[0]
    for name, spec in case["inputs"].items():
        assert f"<code>{name}</code>" in page and spec["datatype"] in page
    boto3_snippet = snippet(page, "boto3", version.pk)
    assert 'endpoint_url="https://serve.example.org"' in boto3_snippet
    compile(boto3_snippet, "boto3-snippet", "exec")  # valid Python as copied
    compile(snippet(page, "sdk", version.pk), "sdk-snippet", "exec")
    assert "Send a test request" in page


def test_sagemaker_endpoints_show_the_runtime_url_and_sign_curl(scientist, client):
    endpoint = sagemaker_endpoint(region="eu-west-1")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    services_live(endpoint, version, scientist)
    client.force_login(scientist)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    url = f"https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/{endpoint.target_name}"
    assert url + "/invocations" in page
    assert "--aws-sigv4 'aws:amz:eu-west-1:sagemaker'" in snippet(page, "curl", version.pk)
    assert 'region_name="eu-west-1"' in snippet(page, "boto3", version.pk)


def test_a_test_request_for_a_version_not_deployed_there_is_refused(scientist, client):
    endpoint = Endpoint.objects.get(name="local-staging")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    client.force_login(scientist)
    for value in (version.pk, "x", "9" * 30):
        answer = client.post(f"/endpoints/{endpoint.name}/test-request/", {"version": value})
        assert answer.status_code == 400
        assert "not a version deployed to local-staging" in answer.content.decode()


def services_live(endpoint, version, actor):
    """Record `version` as live on `endpoint` as a finished deployment leaves it, without
    serving it (pages only)."""
    from django.utils import timezone

    from deployments.models import Deployment, LiveVersion

    deployment = Deployment.objects.create(
        endpoint=endpoint,
        model=version.model,
        version=version,
        state=DeploymentState.SUCCEEDED,
        created_by=actor,
        finished_at=timezone.now(),
    )
    LiveVersion.objects.update_or_create(
        endpoint=endpoint,
        model=version.model,
        defaults={"version": version, "deployment": deployment, "since": timezone.now()},
    )
    return deployment


@pytest.mark.triton
def test_staging_metrics_join_the_promotion_evidence(local, scientist, client):
    """Requests, error rate and p99 since the staging deploy, from the data plane's own
    metrics, as the promotion request freezes them."""
    from deployments import selectors

    endpoint = Endpoint.objects.get(name="local-staging")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    deployment = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert deployment.state == DeploymentState.SUCCEEDED, deployment.error
    for _ in range(3):
        assert selectors.send_test_request(endpoint=endpoint, version=version)["ok"]

    evidence = selectors.promotion_evidence(
        version=version,
        staging_deployment=deployment,
        target_endpoint=Endpoint.objects.get(name="local-production"),
    )
    metrics = evidence["staging_metrics"]
    assert metrics["error"] == ""
    assert metrics["scope"] == "target model"
    assert metrics["requests"] >= 3  # the three test requests (and the smoke test's)
    assert metrics["errors"] == 0 and metrics["error_rate"] == 0
    assert metrics["p99_ms"] is not None and metrics["p99_ms"] > 0
