"""A load test from the browser, for real: Playwright drives Debian's Chromium against a
live portal, a REAL Celery worker (which starts a REAL generator process) and the REAL data
plane gateway with Triton serving the demo ensemble.

A data scientist opens the staging endpoint's page, starts a short load test (two stages
of one second at low rates) with the keyboard, watches its page until it is finished,
sees the latency curve (drawn by plotly.js), the stages and the recommendation, and applies
it to the endpoint's autoscaling. The pages keep within a 390 px wide screen."""

from __future__ import annotations

import pytest
from test_browser_deploy import chromium, finished, login, portal, user  # noqa: F401

from deployments import services as deployment_services
from deployments.choices import DeploymentState
from deployments.models import Endpoint
from deployments.tests.factories import RegisteredModelFactory, packaged_version
from loadtests.choices import LoadTestState
from loadtests.models import LoadTest

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.triton]

#: What of the load-test page reaches past the window's right edge ("" when nothing does),
#: leaving out what scrolls inside a box of its own (wide tables, the log).
OVERFLOW_JS = """() => {
  const scrolls = (el) => ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX);
  let worst = 0;
  let culprit = null;
  document.querySelectorAll('.lt-page *').forEach((el) => {
    let up = el.parentElement;
    for (; up && !up.classList.contains('lt-page'); up = up.parentElement) {
      if (scrolls(up)) return;
    }
    const box = el.getBoundingClientRect();
    if (box.width && box.right > worst) { worst = box.right; culprit = el; }
  });
  return worst > window.innerWidth + 1
    ? `${culprit.tagName}#${culprit.id}.${culprit.className} ends at ${Math.round(worst)} px`
    : "";
}"""


def test_load_test_from_the_endpoint_page_to_applied_autoscaling(chromium, portal):  # noqa: F811
    scientist = user("dana", "data scientist")
    version = packaged_version(model=RegisteredModelFactory(owner=scientist))
    staging = Endpoint.objects.get(name="local-staging")
    deployment = deployment_services.deployment_start(
        actor=scientist, endpoint=staging, version=version
    )
    assert finished(deployment).state == DeploymentState.SUCCEEDED

    page = login(chromium, portal, scientist)
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.on("pageerror", lambda e: console.append(str(e)))
    page.goto(f"{portal.url}/endpoints/local-staging/")
    page.click("#load-test")
    page.wait_for_selector("#loadtest-form")
    assert page.is_checked("input[name=models][value='demo_ensemble_1.tar.gz']")
    assert "200 req/s" in page.inner_text("#limits")

    # Two stages of one second at 4 and 8 req/s; a generous SLO for two shared cores.
    page.fill("#id_start_rps", "4")
    page.fill("#id_step_rps", "4")
    page.fill("#id_step_seconds", "1")
    page.fill("#id_ceiling_rps", "8")
    page.fill("#id_slo_latency_ms", "2000")
    page.fill("#id_peak_rps", "20")
    # The plan follows the form (htmx), and so does the confirmation.
    # (Each change replaces the preview request in flight: the last answer wins.)
    page.wait_for_function(
        "!document.querySelector('#loadtest-form').classList.contains('htmx-request') && "
        "document.querySelector('#preview-summary') && "
        "document.querySelector('#preview-summary').textContent.includes('2 stages')"
    )
    assert page.inner_text("#confirm-rate") == "8" and page.inner_text("#confirm-seconds") == "2"
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate(OVERFLOW_JS) == ""
    # Keyboard only: tick the confirmation and start.
    page.focus("#id_confirmed")
    page.keyboard.press("Space")
    page.focus("#start")
    page.keyboard.press("Enter")

    page.wait_for_selector("#loadtest-live")
    load_test = LoadTest.objects.get()
    page.wait_for_selector("#loadtest-live[data-state=succeeded]", timeout=180_000)
    load_test.refresh_from_db()
    assert load_test.state == LoadTestState.SUCCEEDED, load_test.error
    assert page.locator("#stages tr[data-stage]").count() == 2
    # plotly.js drew both charts in the page (an SVG each).
    page.wait_for_selector("#chart-curve .main-svg")
    page.wait_for_selector("#chart-percentiles .main-svg")
    assert page.evaluate(OVERFLOW_JS) == ""
    page.set_viewport_size({"width": 1280, "height": 900})

    recommendation = load_test.result["recommendation"]
    assert recommendation, load_test.result
    target = recommendation["target_invocations_per_instance"]
    assert page.inner_text("#rec-target") == str(target)

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#apply")
    page.wait_for_selector("#applied")
    assert asked and f"target 100 → {target}" in asked[0]
    staging.refresh_from_db()
    load_test.refresh_from_db()
    assert staging.target_invocations_per_instance == target
    assert load_test.applied_by == scientist
    assert "by dana" in page.inner_text("#applied")

    # The endpoint's page lists it with its verdict and target.
    page.goto(f"{portal.url}/endpoints/local-staging/")
    row = page.inner_text(f"[data-load-test='{load_test.pk}']")
    assert "applied" in row and f"{target}/min" in row
    page.close()
