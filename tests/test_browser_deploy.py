"""The browser, for real: Playwright drives Debian's Chromium against a live portal, a REAL
Celery worker and the REAL data plane gateway with Triton.

A data scientist walks the four-step deploy wizard (back keeps what was entered) and watches
the deployment finish on the live progress page (htmx polling). Then the production path:
the wizard turns production into a promotion request, the requester's own approval is
refused, an approver approves, and production answers."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from deployments import services
from deployments.choices import DeploymentState, PromotionState
from deployments.models import Deployment, Endpoint, LiveVersion, PromotionRequest
from deployments.tests.factories import (
    RegisteredModelFactory,
    packaged_version,
    seed_reference_data,
)
from portal.dataplane import DataPlaneClient, runtime_client

CHROMIUM = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "pw-berth-browser-1"

if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)) and not os.environ.get("CI"):
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium); browser tests "
        "only skip outside CI.",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.triton]


@pytest.fixture(scope="module")
def chromium():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between page actions are still synchronous.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def portal(celery_worker_factory, gateway, settings, live_server):
    seed_reference_data()
    settings.BERTH_DATAPLANE_URL = gateway.url
    settings.BERTH_DATAPLANE_STORE = str(gateway.store_root)
    celery_worker_factory(
        BERTH_DATAPLANE_URL=gateway.url, BERTH_DATAPLANE_STORE=str(gateway.store_root)
    )
    return live_server


def finished(deployment: Deployment, timeout: float = 120) -> Deployment:
    """The deployment once the real worker (which took it on commit) has finished it. Running
    it in this process too would only race that worker for the claim, which one of the two
    is designed to lose."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if not deployment.is_active:
            return deployment
        time.sleep(0.2)
    raise AssertionError(f"Deployment #{deployment.pk} still {deployment.state}")


def user(name: str, *groups: str):
    account = get_user_model().objects.create_user(
        name, email=f"{name}@example.org", password=PASSWORD
    )
    account.groups.add(*Group.objects.filter(name__in=groups))
    return account


def login(chromium, portal, account):
    page = chromium.new_page()
    page.set_default_timeout(30_000)
    # Risky actions ask once (window.confirm): accept, and keep what was asked.
    page.dialogs = []

    def accept(dialog):
        page.dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.goto(f"{portal.url}/login/")
    page.fill("input[name=username]", account.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{portal.url}/")
    return page


def invoke(gateway, endpoint: str, target: str, case: dict) -> list[float]:
    inputs = [
        {
            "name": n,
            "datatype": s["datatype"],
            "shape": s["shape"],
            "data": np.ravel(s["data"]).tolist(),
        }
        for n, s in case["inputs"].items()
    ]
    answer = runtime_client(gateway.url).invoke_endpoint(
        EndpointName=endpoint,
        TargetModel=target,
        ContentType="application/json",
        Body=json.dumps({"inputs": inputs}),
    )
    return next(
        o for o in json.loads(answer["Body"].read())["outputs"] if o["name"] == "PROBABILITIES"
    )["data"]


def test_wizard_deploys_to_staging_with_live_progress(chromium, portal, gateway):
    scientist = user("dana", "data scientist")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    page = login(chromium, portal, scientist)

    page.click("nav >> text=Deployments")
    page.click("text=Deploy a version")
    # From here on, the keyboard alone: focus moves as Tab would move it, keys choose.

    def press(selector: str, key: str = "Enter") -> None:
        page.focus(selector)
        page.keyboard.press(key)

    press(f"#version-{version.pk}", "Space")
    page.wait_for_selector("#selected-version")  # lineage and test results of the choice
    assert page.is_checked(f"#version-{version.pk}")
    assert "3" in page.inner_text("#selected-version")
    press("button[name=next]")

    page.wait_for_selector("#endpoint-local-staging")
    press("#endpoint-local-staging", "Space")
    press("button[name=next]")
    page.wait_for_selector("input[name=autoscaling_max_instances]")
    assert page.input_value("input[name=autoscaling_max_instances]") == "2"  # prefilled
    page.focus("input[name=autoscaling_max_instances]")
    page.keyboard.press("Control+A")
    page.keyboard.type("4")
    press("button[name=back]")
    page.wait_for_selector("#endpoint-local-staging")
    assert page.is_checked("#endpoint-local-staging")  # back keeps the choice
    press("button[name=next]")
    page.wait_for_selector("input[name=autoscaling_max_instances]")
    assert page.input_value("input[name=autoscaling_max_instances]") == "4"  # and the typing
    press("button[name=next]")

    page.wait_for_selector("#changes")
    changes = page.inner_text("#changes")
    assert "Place demo_ensemble_1.tar.gz" in changes and "first live version" in changes
    press("#confirm")

    page.wait_for_selector("#progress[data-state=succeeded]", timeout=120_000)
    assert page.locator("[data-step][data-state=done]").count() == 5
    assert "is live on local-staging" in page.inner_text("#log")
    deployment = Deployment.objects.get()
    assert (deployment.state, deployment.source) == (DeploymentState.SUCCEEDED, "browser")
    assert Endpoint.objects.get(name="local-staging").autoscaling_max_instances == 4
    case = version.test_cases[0]
    assert np.allclose(
        invoke(gateway, "local-staging", "demo_ensemble", case),
        np.ravel(case["expected"]["PROBABILITIES"]["data"]),
        atol=1e-4,
    )

    # How to call it: the curl copied with the page's button answers from the data plane.
    page.goto(f"{portal.url}/endpoints/local-staging/")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
    page.click(f"[data-copy-from=curl-{version.pk}]")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f"curl -sS -X POST '{gateway.url}/endpoints/local-staging/")
    done = subprocess.run(["bash", "-c", copied], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert np.allclose(
        next(o for o in answer["outputs"] if o["name"] == "PROBABILITIES")["data"],
        np.ravel(case["expected"]["PROBABILITIES"]["data"]),
        atol=1e-4,
    )
    # And the page's own test request: status, latency, outputs, announced in place.
    page.click(f"#send-test-{version.pk}")
    result = page.wait_for_selector(f"#test-result-{version.pk} [data-ok=true]")
    assert "200" in result.inner_text() and "PROBABILITIES" in result.inner_text()
    for width in (390, 1280):  # the snippets scroll inside their box, not the page
        page.set_viewport_size({"width": width, "height": 900})
        wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wider <= 0, f"endpoint page wider than {width} px by {wider} px"
    page.close()


def test_promotion_is_refused_to_its_requester_and_approved_by_an_approver(
    chromium, portal, gateway
):
    requester = user("rita", "data scientist", "approver")  # an approver too: still refused
    approver = user("alex", "approver")
    version = packaged_version(model=RegisteredModelFactory(owner=requester))
    staging = services.deployment_start(
        actor=requester, endpoint=Endpoint.objects.get(name="local-staging"), version=version
    )
    assert finished(staging).state == DeploymentState.SUCCEEDED

    page = login(chromium, portal, requester)
    page.goto(f"{portal.url}/deployments/new/")
    page.check(f"#version-{version.pk}")
    page.click("button[name=next]")
    page.check("#endpoint-local-production")
    page.click("button[name=next]")
    page.click("button[name=next]")
    assert "promotion request" in page.inner_text("#promotion-note")
    page.fill("textarea[name=comment]", "Green on staging.")
    page.click("#confirm")
    page.wait_for_selector("#decision")
    promotion = PromotionRequest.objects.get()
    assert "another approver has to approve it" in page.inner_text("#decision")
    page.click("#approve")
    page.wait_for_selector(".msg-error")
    assert "another approver has to approve it" in page.inner_text(".messages")
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.PENDING
    page.close()

    page = login(chromium, portal, approver)
    page.click("nav >> text=Approvals")
    page.click(f"#promotions >> text=#{promotion.pk}")
    assert "3/3 passed" in page.inner_text("body")
    page.fill("textarea[name=comment]", "Looks good.")
    page.click("#approve")
    page.wait_for_selector("#progress[data-state=succeeded]", timeout=120_000)
    promotion.refresh_from_db()
    assert (promotion.state, promotion.decided_by, promotion.decision_comment) == (
        PromotionState.APPROVED,
        approver,
        "Looks good.",
    )
    assert LiveVersion.objects.get(endpoint__name="local-production").version == version
    case = version.test_cases[0]
    assert np.allclose(
        invoke(gateway, "local-production", "demo_ensemble", case),
        np.ravel(case["expected"]["PROBABILITIES"]["data"]),
        atol=1e-4,
    )

    # One click rolls staging back... once there is something to roll back to.
    page.goto(f"{portal.url}/endpoints/local-production/")
    assert page.locator("[data-rollback]").count() == 0
    page.close()


def test_one_click_rollback_with_live_progress(chromium, portal, gateway):
    scientist = user("dana", "data scientist")
    model = RegisteredModelFactory(owner=scientist)
    staging = Endpoint.objects.get(name="local-staging")
    for _ in range(2):
        version = packaged_version(model=model)
        deployment = services.deployment_start(actor=scientist, endpoint=staging, version=version)
        assert finished(deployment).state == DeploymentState.SUCCEEDED

    page = login(chromium, portal, scientist)
    page.click("nav >> text=Endpoints")
    page.click("#endpoints >> text=local-staging")
    assert "v2" in page.inner_text("#live")
    page.click("[data-rollback=demo_ensemble]")
    page.wait_for_selector("#progress[data-state=succeeded]", timeout=120_000)
    assert page.dialogs == [
        "Roll back demo_ensemble: v2 → v1 on local-staging. Clients asking local-staging for "
        "demo_ensemble get v1 once the deployment finishes."
    ]
    assert "is live on local-staging (was v2)" in page.inner_text("#log")
    page.click(".props >> a[href='/endpoints/local-staging/']")
    assert "v1" in page.inner_text("#live")
    assert page.inner_text("[data-rollback=demo_ensemble]") == "Restore v2"
    assert "rollback" in page.inner_text("#timeline")
    aliases = json.dumps(DataPlaneClient(gateway.url).aliases("local-staging"))
    assert "demo_ensemble_1.tar.gz" in aliases
    page.close()
