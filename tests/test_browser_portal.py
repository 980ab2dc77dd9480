"""The portal's layout in a real browser (Playwright driving Debian's Chromium against a live
portal): no page is wider than the screen at 390 px or 1,280 px, the navigation works on a
phone and reads at 4.5:1 contrast or better, a keyboard user can skip to the content and
sees where focus is, and the dashboards draw their charts with the basic plotly bundle.

Nothing here waits on a clock: each step waits for the condition it needs (an element, a
chart's SVG), so the tests pass or fail the same way on a loaded machine."""

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from deployments.choices import DeploymentState
from deployments.models import Deployment, Endpoint
from deployments.tests.factories import packaged_version, seed_reference_data
from monitoring.choices import PULLED_STATS
from monitoring.models import MetricSample
from monitoring.sources import align

CHROMIUM = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PASSWORD = "pw-berth-browser-2"
WIDTHS = (390, 1280)

if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)) and not os.environ.get("CI"):
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium); browser tests "
        "only skip outside CI.",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.browser]


@pytest.fixture(autouse=True)
def isolated_artifacts(settings, tmp_path):
    """Packages the factories write go to this test's own folder."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")


# Relative luminance and contrast ratio as WCAG 2.x defines them, computed in the page from
# the colours the browser actually painted (the nearest ancestor with a background).
CONTRAST_JS = """
(el) => {
  function rgb(text) { return text.match(/[\\d.]+/g).map(Number); }
  function lum(c) {
    var v = c.slice(0, 3).map(function (x) {
      x /= 255;
      return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
  }
  var fg = rgb(getComputedStyle(el).color), node = el, bg = null;
  while (node && node.nodeType === 1) {
    var c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length < 4 || c[3] > 0) { bg = c; break; }
    node = node.parentElement;
  }
  bg = bg || [255, 255, 255];
  var a = lum(fg), b = lum(bg);
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""


# One minute of the demo endpoint (latencies and loading times: 12,000 µs).
METRIC_VALUES = {
    "Invocations": 200.0,
    "Invocation4XXErrors": 2.0,
    "Invocation5XXErrors": 0.0,
    "ModelCacheHit": 0.9,
    "LoadedModelCount": 2.0,
    "CPUUtilization": 35.0,
    "MemoryUtilization": 40.0,
    "GPUUtilization": 20.0,
    "GPUMemoryUtilization": 25.0,
}


@pytest.fixture(scope="module")
def chromium():
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def portal(transactional_db, live_server, settings):
    seed_reference_data()
    # No data plane in these tests: the dashboards fall back to stored history at once.
    settings.BERTH_DATAPLANE_URL = "http://127.0.0.1:9"
    return live_server


@pytest.fixture
def scientist(portal):
    account = get_user_model().objects.create_user(
        "dana", email="dana@example.org", password=PASSWORD
    )
    account.groups.add(*Group.objects.filter(name="data scientist"))
    return account


@pytest.fixture
def demo(scientist):
    """A version with a full lineage, deployed to local-staging, and an hour of metrics."""
    version = packaged_version(
        registered_by=scientist,
        source_repository="https://github.com/berth-demo/iris-ensemble-with-a-long-name",
        source_commit="4f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a",
        dataset_uri="s3://berth-demo-datasets/iris/v3/a-rather-long-folder-name/iris.csv",
        dataset_version="sha256:" + "1d2e3f4a" * 8,
        training_job="arn:aws:sagemaker:us-east-1:123456789012:training-job/iris-2026-11-20",
        metrics={"accuracy": 0.953, "f1_macro": 0.951, "log_loss": 0.142},
        frameworks=["onnx", "python"],
        tags=["demo", "iris", "tabular"],
    )
    now = datetime.now(UTC)
    Deployment.objects.create(
        endpoint=Endpoint.objects.get(name="local-staging"),
        model=version.model,
        version=version,
        state=DeploymentState.SUCCEEDED,
        finished_at=now - timedelta(minutes=20),
    )
    minute = align(now, 60)
    MetricSample.objects.bulk_create(
        MetricSample(
            endpoint_name="local-staging",
            metric=metric,
            stat=stat,
            timestamp=minute - timedelta(minutes=n),
            value=METRIC_VALUES.get(metric, 12_000.0),
        )
        for n in range(30)
        for metric, stats in PULLED_STATS.items()
        for stat in stats
    )
    return version


def logged_in(chromium, portal, account, width: int):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{portal.url}/login/")
    page.fill("input[name=username]", account.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{portal.url}/")
    return context, page


def overflow(page) -> int:
    return page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_main_pages_fit_the_screen(chromium, portal, scientist, demo, width):
    paths = [
        "/",
        "/models/",
        demo.model.get_absolute_url(),
        demo.get_absolute_url(),
        "/endpoints/",
        "/endpoints/local-staging/",
        "/deployments/",
        "/deployments/new/",
        "/approvals/",
        "/dashboards/?endpoint=local-staging",
        "/account/tokens/",
        "/no-such-page/",
    ]
    context, page = logged_in(chromium, portal, scientist, width)
    try:
        wide = {}
        for path in paths:
            page.goto(portal.url + path)
            page.wait_for_load_state("load")
            if overflow(page) > 0:
                wide[path] = overflow(page)
        assert wide == {}, f"pages wider than {width} px (by px): {wide}"
    finally:
        context.close()


def test_navigation_works_on_a_phone_and_is_readable(chromium, portal, scientist):
    context, page = logged_in(chromium, portal, scientist, 390)
    try:
        toggle = page.locator(".navtoggle")
        assert toggle.is_visible()
        assert not page.locator(".mainnav a", has_text="Dashboards").is_visible()
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        links = page.locator(".mainnav a, .account a, .account button")
        assert links.count() >= 7
        for index in range(links.count()):
            link = links.nth(index)
            assert link.is_visible(), link.inner_text()
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, link.inner_text()
            ratio = link.evaluate(CONTRAST_JS)
            assert ratio >= 4.5, (link.inner_text(), ratio)
        page.locator(".mainnav a", has_text="Dashboards").click()
        page.wait_for_url("**/dashboards/**")
    finally:
        context.close()


def test_keyboard_user_can_skip_to_the_content_and_sees_focus(chromium, portal, scientist):
    context, page = logged_in(chromium, portal, scientist, 1280)
    try:
        page.goto(f"{portal.url}/models/")
        page.keyboard.press("Tab")
        skip = page.locator(".skip-link")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        box = skip.bounding_box()
        assert box["y"] >= 0  # moved on screen when focused
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        page.keyboard.press("Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")
    finally:
        context.close()


def test_dashboard_draws_its_charts_with_the_basic_bundle(chromium, portal, scientist, demo):
    context, page = logged_in(chromium, portal, scientist, 1280)
    try:
        page.goto(f"{portal.url}/dashboards/?endpoint=local-staging&window=1h")
        # Every chart drawn: one SVG per chart, each with its scatter traces.
        charts = page.locator("#charts .chart")
        assert charts.count() == 6
        page.wait_for_function(
            "document.querySelectorAll('#charts .chart .main-svg .scatterlayer .trace').length >= 6"
        )
        bundles = page.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('plotly'))"
            ".map(e => [e.name, e.decodedBodySize])"
        )
        assert len(bundles) == 1 and "plotly-basic" in bundles[0][0]
        assert bundles[0][1] < 1_500_000
        headline = page.inner_text("#headline")
        assert "6,000" in headline  # 30 minutes of 200 requests
        assert "1.00 %" in headline  # 2 4XX per 200 requests
        assert "12.0 / 12.0 ms" in headline and "90.0 %" in headline
        # The deployment 20 minutes ago is marked on the charts.
        assert "deployed" in page.inner_text("#change-events")
        assert page.locator("#chart-invocations .shapelayer path").count() >= 1
    finally:
        context.close()


def test_wizard_by_keyboard_without_reloads_and_its_review_fits_a_phone(
    chromium, portal, scientist, demo
):
    second = packaged_version(model=demo.model, registered_by=scientist, frameworks=["onnx"])
    other = packaged_version(
        model=type(demo.model).objects.create(name="zz_other", owner=scientist),
        registered_by=scientist,
    )
    context, page = logged_in(chromium, portal, scientist, 390)
    try:
        page.goto(f"{portal.url}/deployments/new/")
        start_url = page.url
        # The page marks itself; a reload would lose the mark.
        page.evaluate("window.__sameDocument = true")
        page.focus("#version-filter")
        page.keyboard.type(demo.model.name[:4])
        # The list narrows to the matching model; the other one's versions are out of the way.
        assert page.locator(f'tbody[data-model="{other.model.name}"]').is_hidden()
        assert page.locator(f'tbody[data-model="{demo.model.name}"]').is_visible()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "version"
        page.keyboard.press("Space")
        page.wait_for_selector("#selected-version")
        first_choice = page.evaluate("document.activeElement.value")
        page.keyboard.press("ArrowDown")
        other = str(second.pk if first_choice == str(demo.pk) else demo.pk)
        page.wait_for_function(
            f"document.querySelector('#version-{other}').checked"
            f" && document.querySelector('#selected-version h2').textContent.includes('v')"
        )
        chosen = second if other == str(second.pk) else demo
        page.wait_for_function(
            "document.querySelector('#selected-version h2').textContent"
            f".includes('v{chosen.version}')"
        )
        # No reload, no token in the address, focus still on the radios.
        assert page.evaluate("window.__sameDocument") is True
        assert page.url == start_url and "csrf" not in page.url
        assert page.evaluate("document.activeElement.id") == f"version-{other}"
        assert page.locator("#show").is_hidden()  # the [hidden] rule holds

        page.focus("button[name=next]")
        page.keyboard.press("Enter")
        page.wait_for_selector("#endpoint-local-staging")
        # The new-endpoint fields are the chosen backend's only (admins see them).
        page.focus("#endpoint-local-staging")
        page.keyboard.press("Space")
        page.focus("button[name=next]")
        page.keyboard.press("Enter")
        page.wait_for_selector("input[name=autoscaling_max_instances]")
        page.focus("button[name=next]")
        page.keyboard.press("Enter")
        page.wait_for_selector("#confirm")
        assert overflow(page) <= 0, f"review page wider than 390 px by {overflow(page)} px"
        assert "onnx" in page.inner_text("#lineage-diff")
        assert "['onnx'" not in page.inner_text("#lineage-diff")
    finally:
        context.close()
