"""Pages of load tests: the form that starts one (with a live preview of what it will
generate), the load test's page (live panel while it runs, stages, charts and the
autoscaling recommendation when it is done) and its buttons. Views parse input, call one
service or selector and render; the rules (bounds, who may, states) are loadtests.config's
and loadtests.services'."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as Forbidden
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from deployments import selectors as deployment_selectors
from deployments.models import Deployment, Endpoint
from portal.choices import Source
from portal.errors import ServiceError, get_or_404
from runs.selectors import run_log_since

from . import config as lt_config
from . import figures, recommend, selectors, services
from .choices import LoadTestState, Pattern, PayloadSource
from .forms import DecisionForm, LoadTestForm, RecommendationForm
from .models import LoadTest

#: Log lines the page shows (the run's API pages through all of them).
LOG_LINES = 500
#: What the preview passes parse_config for an upload it has not seen.
PREVIEW_UPLOAD = b'{"body": {}}\n'
#: Why generation ended (the generate step's `stopped_because`), in words.
STOPPED_WORDS = {
    "completed": "every stage ran",
    "slo_broken": "find-max stopped at the first stage that broke the SLO",
    "throughput_short": "find-max stopped: achieved fell below 95 % of offered",
    "throughput_flat": "find-max stopped: throughput stopped rising",
    "error_rate": "errors passed the stop threshold",
    "deadline": "the maximum duration was reached",
    "stopped": "stopped on request",
    "parent_gone": "the worker went away",
}


def _refuse(exc: ServiceError) -> None:
    """A service's permission refusal is the portal's 403 page, with the service's reason."""
    if exc.status_code == 403:
        raise Forbidden(exc.message) from exc


# Starting a load test --------------------------------------------------------------------


def _live_models(endpoint: Endpoint) -> list[tuple[str, str]]:
    """(target model, label) of each model live on the endpoint."""
    return [
        (lv.version.package_name, f"{lv.model.name} v{lv.version.version}")
        for lv in deployment_selectors.live_versions(endpoint=endpoint)
    ]


def _deployment_of(request: HttpRequest, endpoint: Endpoint) -> Deployment | None:
    """The deployment the form was opened from, when it is one of this endpoint's."""
    value = request.POST.get("deployment") or request.GET.get("deployment") or ""
    if not value.isdigit():
        return None
    return (
        Deployment.objects.select_related("version__model")
        .filter(pk=int(value), endpoint=endpoint)
        .first()
    )


def _initial(endpoint: Endpoint, live: list[tuple[str, str]], deployment) -> dict[str, Any]:
    environment = endpoint.environment
    initial: dict[str, Any] = {
        "ceiling_rps": min(50, environment.loadtest_max_rps),
        "stop_max_seconds": environment.loadtest_max_seconds,
    }
    if deployment is not None:
        initial.update(models=[deployment.version.package_name], mix="one")
        initial["deployment"] = deployment.pk
    else:
        initial["models"] = [name for name, _ in live]
        if len(live) == 1:
            initial["mix"] = "one"
    return initial


def _preview(form: LoadTestForm) -> dict[str, Any]:
    """What the configuration will generate (its stages, planned seconds and requests, the
    highest rate), or the first reason parse_config gives why it would not start. Uploaded
    bodies are not read for a preview."""
    if not form.is_valid():
        return {"error": "Fix the fields marked below to see the plan."}
    config = form.config()
    # The file is sent with the form, not with each preview: one placeholder request
    # stands in for it, so the plan shows whatever the bodies will be.
    upload = PREVIEW_UPLOAD if config["payloads"]["source"] == PayloadSource.UPLOAD else None
    try:
        parsed = lt_config.parse_config(config, endpoint=form.endpoint, upload=upload)
    except ServiceError as exc:
        field = form.field_for(exc.field)
        label = form.fields[field].label if field else ""
        return {"error": f"{label}: {exc.message}" if label else exc.message}
    return plan_summary(parsed)


def plan_summary(parsed: lt_config.LoadTestConfig) -> dict[str, Any]:
    """The figures the confirmation names: stages, seconds, requests and the highest rate
    the test will offer (find-max may stop earlier, so these are its most)."""
    return {
        "stages": parsed.stages,
        "stage_count": len(parsed.stages),
        "planned_seconds": parsed.planned_seconds,
        "requests": round(sum(s["rate"] * s["duration_s"] for s in parsed.stages)),
        "max_rps": parsed.max_rps,
        "find_max": parsed.pattern["kind"] == Pattern.FIND_MAX,
        "generators": parsed.generators,
    }


@login_required
def loadtest_new(request: HttpRequest) -> HttpResponse:
    """GET /loadtests/new/?endpoint=<name>[&deployment=<id>]: the form; POST starts it."""
    endpoint = get_or_404(
        deployment_selectors.endpoint_get,
        name=request.POST.get("endpoint") or request.GET.get("endpoint", ""),
    )
    live = _live_models(endpoint)
    deployment = _deployment_of(request, endpoint)
    if deployment is not None and deployment.version.package_name not in dict(live):
        # A deployment whose version no longer serves here: its version cannot be tested.
        messages.warning(request, f"{deployment.version} is no longer live on {endpoint.name}.")
        deployment = None
    form = LoadTestForm(
        request.POST or None,
        request.FILES or None,
        endpoint=endpoint,
        live_models=live,
        initial=_initial(endpoint, live, deployment),
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            load_test = _start(request, form, endpoint, deployment)
            if load_test is not None:
                return redirect(load_test)
        status = 400
    preview = _preview(_bound_copy(form)) if live else {}
    return render(
        request,
        "loadtests/loadtest_form.html",
        {
            "form": form,
            "endpoint": endpoint,
            "environment": endpoint.environment,
            "deployment": deployment,
            "live_models": live,
            "preview": preview,
            "max_generators": settings.BERTH_LOADTEST_MAX_GENERATORS,
            "max_upload_bytes": settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES,
            "nav_section": "endpoints",
        },
        status=status,
    )


def _bound_copy(form: LoadTestForm) -> LoadTestForm:
    """The form as typed (or its initial values), bound, for the preview."""
    if form.is_bound:
        return form
    data = {}
    for name, field in form.fields.items():
        value = form.get_initial_for_field(field, name)
        if value is not None:
            data[name] = value
    return LoadTestForm(data, endpoint=form.endpoint, live_models=form.fields["models"].choices)


def _start(request, form: LoadTestForm, endpoint: Endpoint, deployment) -> LoadTest | None:
    """parse_config first (its error names the field), then the service (which parses
    again inside its transaction and checks who may, the confirmation and the one active
    test per endpoint). Errors go on the form; None when it did not start."""
    config = form.config()
    upload = form.upload_bytes(settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES)
    try:
        lt_config.parse_config(config, endpoint=endpoint, upload=upload)
    except ServiceError as exc:
        form.add_config_error(exc.field, exc.message)
        return None
    if not form.cleaned_data.get("confirmed"):
        form.add_error("confirmed", "Confirm the load you are about to generate.")
        return None
    try:
        load_test = services.loadtest_start(
            actor=request.user,
            endpoint=endpoint,
            config=config,
            upload=upload,
            deployment=deployment,
            confirmed=True,
            source=Source.BROWSER,
        )
    except ServiceError as exc:
        _refuse(exc)
        form.add_config_error(exc.field, exc.message)
        return None
    if load_test.state == LoadTestState.AWAITING_APPROVAL:
        messages.success(request, "Load test requested: an approver must approve it first.")
    else:
        messages.success(request, f"Load test of {endpoint.name} queued.")
    return load_test


@login_required
@require_GET
def loadtest_preview(request: HttpRequest) -> HttpResponse:
    """The plan of the form as typed (htmx, on every change)."""
    endpoint = get_or_404(deployment_selectors.endpoint_get, name=request.GET.get("endpoint", ""))
    form = LoadTestForm(request.GET, endpoint=endpoint, live_models=_live_models(endpoint))
    return render(
        request,
        "loadtests/_preview.html",
        {"preview": _preview(form), "endpoint": endpoint, "oob": True},
    )


# The load test's page --------------------------------------------------------------------


def _best_stage(load_test: LoadTest, stages: list) -> Any:
    """The stage the recommendation rests on (the result names its position)."""
    position = ((load_test.result or {}).get("recommendation") or {}).get("stage")
    return next((s for s in stages if s.position == position), None)


def _slo(load_test: LoadTest) -> dict[str, Any]:
    return (load_test.config or {}).get("slo") or {}


def _charts(load_test: LoadTest, stages: list) -> list[dict[str, Any]]:
    """The latency-vs-throughput curve and the percentile plot of the stage that held
    the highest rate and of the last stage."""
    from loadgen import histograms

    # A stage find-max had begun when it stopped never finished: its figures are partial.
    stages = [s for s in stages if s.finished]
    slo = _slo(load_test)
    slo_ms, percentile = slo.get("latency_ms"), slo.get("percentile", "p99")
    best = _best_stage(load_test, stages)
    charts = [
        {
            "key": "curve",
            "dom_id": "figure-curve",
            "title": "Latency vs throughput",
            "figure": figures.latency_throughput_figure(
                stages, slo_latency_ms=slo_ms, slo_percentile=percentile, best=best
            ),
        }
    ]
    measured = [s for s in stages if s.histogram]
    picks = []
    if best is not None and best.histogram:
        picks.append((f"stage {best.position + 1}, max held ({best.offered_rps:g} req/s)", best))
    if measured and measured[-1] is not best:
        last = measured[-1]
        picks.append((f"stage {last.position + 1}, last ({last.offered_rps:g} req/s)", last))
    curves = []
    for label, stage in picks:
        try:
            curves.append((label, histograms.percentile_curve(histograms.decode(stage.histogram))))
        except ValueError:
            continue
    if curves:
        charts.append(
            {
                "key": "percentiles",
                "dom_id": "figure-percentiles",
                "title": "Latency by percentile",
                "figure": figures.percentile_figure(
                    curves, slo_latency_ms=slo_ms, slo_percentile=percentile
                ),
            }
        )
    return charts


def _recommendation(load_test: LoadTest, data=None) -> dict[str, Any]:
    """The recommendation card: as the analysis stored it, or with the safety factor and
    peak rate the user typed, through recommend.py's own formulas (the ones loadtest_apply
    uses), from the measured rate per instance."""
    stored = (load_test.result or {}).get("recommendation") or {}
    if not stored:
        return {}
    form = RecommendationForm(
        data,
        initial={"safety_factor": stored.get("safety_factor"), "peak_rps": stored.get("peak_rps")},
    )
    rec = dict(stored)
    if data is not None and form.is_valid():
        rate = float(stored["max_sustainable_rps_per_instance"])
        safety = form.cleaned_data["safety_factor"]
        # As loadtest_apply does: no peak typed is the test's own peak rate, if any.
        peak = form.cleaned_data.get("peak_rps") or (load_test.config or {}).get("peak_rps")
        rec.update(
            safety_factor=safety,
            peak_rps=peak,
            target_invocations_per_instance=recommend.target_invocations_per_instance(rate, safety),
            min_instances=None,
            max_instances=None,
        )
        if peak:
            rec["min_instances"], rec["max_instances"] = recommend.instances_for_peak(
                peak, rate, safety
            )
    endpoint = load_test.endpoint
    current = {
        "min": endpoint.autoscaling_min_instances,
        "max": endpoint.autoscaling_max_instances,
        "target": endpoint.target_invocations_per_instance,
    }
    after = {
        "min": rec["min_instances"] or current["min"],
        "max": max(rec["max_instances"] or current["max"], rec["min_instances"] or current["min"]),
        "target": rec["target_invocations_per_instance"],
    }
    return {"form": form, "rec": rec, "current": current, "after": after}


def _may(user, load_test: LoadTest) -> dict[str, bool]:
    """Which buttons to show: the services' own predicates (they decide again when a
    button is pressed, and answer 403 to anyone else)."""
    from deployments.services import DEPLOY_PERMISSION, may_configure

    from .plans import may_cancel

    sizes = (
        may_configure(user)
        if load_test.endpoint.environment.requires_approval
        else user.has_perm(DEPLOY_PERMISSION)
    )
    return {
        "cancel": load_test.is_active and may_cancel(user, load_test),
        "approve": load_test.state == LoadTestState.AWAITING_APPROVAL
        and services.may_approve(user)
        and user.pk != load_test.created_by_id,
        "apply": load_test.state == LoadTestState.SUCCEEDED and sizes,
    }


def _n(value: Any) -> str:
    return f"{float(value):g}" if value is not None else "?"


def config_in_words(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The stored configuration (LoadTestConfig.as_dict()) as the page says it."""
    if not config:
        return []
    models = config.get("models") or []
    mix = config.get("mix") or {}
    kind = mix.get("kind")
    mix_words = {
        "one": "one model",
        "uniform": f"uniform over {len(models)} model{'s' if len(models) != 1 else ''}",
        "top_n": f"{_n((mix.get('top_share') or 0) * 100)} % to the top {mix.get('top_n')}, "
        "the rest uniform",
        "zipf": f"Zipf (s = {_n(mix.get('zipf_s'))}) by the order listed",
        "replay": f"the endpoint's traffic shares over the last {mix.get('replay_minutes')} min",
    }.get(kind, kind or "")
    pattern = config.get("pattern") or {}
    stages = config.get("stages") or []
    planned = sum(stage["duration_s"] for stage in stages)
    if pattern.get("kind") == Pattern.CONSTANT:
        pattern_words = (
            f"constant {_n(pattern.get('rps'))} req/s for {_n(pattern.get('seconds'))} s"
        )
    else:
        step = (
            f"× {_n(pattern['growth'])}"
            if pattern.get("growth")
            else f"+{_n(pattern.get('step_rps'))} req/s"
        )
        pattern_words = (
            ("find the maximum: " if pattern.get("kind") == Pattern.FIND_MAX else "stairs: ")
            + f"from {_n(pattern.get('start_rps'))} req/s, {step} every "
            + f"{_n(pattern.get('step_seconds'))} s, up to {_n(pattern.get('ceiling_rps'))} req/s"
        )
    pattern_words += (
        f" ({len(stages)} stage{'s' if len(stages) != 1 else ''}, {_n(planned)} s planned)"
    )
    payloads = config.get("payloads") or {}
    slo = config.get("slo") or {}
    stop = config.get("stop") or {}
    generators = config.get("generators") or 1
    words = [
        ("Target models", f"{', '.join(models)} — {mix_words}"),
        (
            "Request bodies",
            f"uploaded ({payloads.get('lines', '?')} requests)"
            if payloads.get("source") == PayloadSource.UPLOAD
            else "the versions' test cases",
        ),
        (
            "Pattern",
            pattern_words + (", Poisson arrivals" if config.get("arrival") == "poisson" else ""),
        ),
        (
            "SLO",
            f"{slo.get('percentile', 'p99')} ≤ {_n(slo.get('latency_ms'))} ms and errors ≤ "
            f"{_n((slo.get('max_error_rate') or 0) * 100)} %",
        ),
        (
            "Stops",
            f"when errors pass {_n((stop.get('error_rate') or 0) * 100)} %"
            + (f" or after {_n(stop['max_seconds'])} s" if stop.get("max_seconds") else ""),
        ),
        (
            "Generators",
            f"{generators} process{'es' if generators != 1 else ''}; safety factor "
            f"{_n(config.get('safety_factor'))}"
            + (f", peak {_n(config['peak_rps'])} req/s" if config.get("peak_rps") else ""),
        ),
    ]
    return words


def _detail_context(request: HttpRequest, load_test: LoadTest) -> dict[str, Any]:
    run = load_test.run
    stages = list(load_test.stages.all())
    context: dict[str, Any] = {
        "load_test": load_test,
        "endpoint": load_test.endpoint,
        "run": run,
        "log_lines": run_log_since(run=run, limit=LOG_LINES),
        "stages": stages,
        "slo": _slo(load_test),
        "active": load_test.is_active,
        "may": _may(request.user, load_test),
        "decision_form": DecisionForm(),
        "config_words": config_in_words(load_test.config),
    }
    if load_test.state == LoadTestState.RUNNING:
        live = selectors.loadtest_live(load_test)
        position = (live.get("current") or {}).get("position")
        live["row"] = next((s for s in stages if s.position == position), None)
        context["live"] = live
    if not load_test.is_active and any(s.finished for s in stages):
        context["charts"] = _charts(load_test, stages)
        stopped = (load_test.result or {}).get("stopped_because") or ""
        context["stopped"] = STOPPED_WORDS.get(stopped, stopped.replace("_", " "))
        typed = request.GET if "safety_factor" in request.GET else None
        context["recommendation"] = _recommendation(load_test, typed)
    return context


@login_required
def loadtest_detail(request: HttpRequest, pk: int) -> HttpResponse:
    load_test = get_or_404(selectors.loadtest_get, pk=pk)
    context = _detail_context(request, load_test)
    context["nav_section"] = "endpoints"
    return render(request, "loadtests/loadtest_detail.html", context)


@login_required
def loadtest_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The page's changing part (state, live panel, progress; the result once finished),
    polled by htmx every second while the test is active."""
    load_test = get_or_404(selectors.loadtest_get, pk=pk)
    return render(request, "loadtests/_live.html", _detail_context(request, load_test))


@login_required
def loadtest_recommendation(request: HttpRequest, pk: int) -> HttpResponse:
    """The recommendation card recomputed for the typed safety factor and peak rate."""
    load_test = get_or_404(selectors.loadtest_get, pk=pk)
    return render(
        request,
        "loadtests/_recommendation.html",
        {
            "load_test": load_test,
            "recommendation": _recommendation(load_test, request.GET),
            "may": _may(request.user, load_test),
        },
    )


# Buttons ---------------------------------------------------------------------------------


def _act(request: HttpRequest, pk: int, action, success: str, **kwargs) -> HttpResponse:
    load_test = get_or_404(selectors.loadtest_get, pk=pk)
    try:
        action(actor=request.user, load_test=load_test, source=Source.BROWSER, **kwargs)
    except ServiceError as exc:
        _refuse(exc)
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect(reverse("loadtests:detail", kwargs={"pk": pk}))


def _reason(request: HttpRequest) -> str:
    form = DecisionForm(request.POST)
    return form.cleaned_data.get("reason", "") if form.is_valid() else ""


@login_required
@require_POST
def loadtest_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request, pk, services.loadtest_cancel, "Load test cancelled.", reason=_reason(request)
    )


@login_required
@require_POST
def loadtest_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.loadtest_approve, "Load test approved and queued.")


@login_required
@require_POST
def loadtest_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request, pk, services.loadtest_reject, "Load test rejected.", reason=_reason(request)
    )


@login_required
@require_POST
def loadtest_apply(request: HttpRequest, pk: int) -> HttpResponse:
    form = RecommendationForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "; ".join(f"{form.fields[f].label}: {' '.join(e)}" for f, e in form.errors.items()),
        )
        return redirect(reverse("loadtests:detail", kwargs={"pk": pk}))
    return _act(
        request,
        pk,
        services.loadtest_apply,
        "Autoscaling applied.",
        safety_factor=form.cleaned_data["safety_factor"],
        peak_rps=form.cleaned_data.get("peak_rps"),
    )
