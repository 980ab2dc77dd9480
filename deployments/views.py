"""Pages of the deployments app: endpoints, deployments with live progress, the four-step
deploy wizard, promotion requests and their approval. Views parse input, call one service
or selector, and render; the rules are the services'."""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from loadtests.selectors import loadtest_list
from portal.errors import NotFound, ServiceError, get_or_404
from registry.choices import VersionStatus
from registry.models import ModelVersion

from . import selectors, services
from .backends import backend_for
from .choices import (
    ACTIVE_DEPLOYMENT_STATES,
    Backend,
    DeploymentKind,
    PromotionState,
    Source,
)
from .filtersets import DeploymentFilterSet, PromotionFilterSet
from .forms import (
    AutoscalingForm,
    DecisionForm,
    EndpointForm,
    EndpointStepForm,
    PromotionForm,
    ReviewForm,
)
from .models import Endpoint, Environment, PromotionRequest
from .services.endpoints import endpoint_change_preview

WIZARD_KEY = "deploy_wizard"
WIZARD_STEPS = ["Version", "Endpoint", "Autoscaling", "Review"]
AUTOSCALING_FIELDS = services.AUTOSCALING_FIELDS
SAGEMAKER_ONLY_FIELDS = (
    "instance_type",
    "initial_instance_count",
    "region",
    "execution_role_arn",
    "s3_prefix",
)


def _endpoint_or_404(name: str) -> Endpoint:
    return get_or_404(selectors.endpoint_get, name=name)


# Endpoints -------------------------------------------------------------------------------


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    environment = request.GET.get("environment") or None
    return render(
        request,
        "deployments/endpoint_list.html",
        {
            "endpoints": selectors.endpoint_list(environment=environment),
            "environments": selectors.environment_list(),
            "environment": environment,
            "can_configure": services.may_configure(request.user),
            "nav_section": "endpoints",
        },
    )


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = _endpoint_or_404(name)
    live = list(selectors.live_versions(endpoint=endpoint))
    for item in live:
        item.rollback_to = selectors.rollback_target(endpoint=endpoint, model=item.model)
        # Undoing a rollback puts back the version it replaced: that reads "Restore v2".
        item.rollback_restores = bool(
            item.rollback_to
            and item.deployment.kind == DeploymentKind.ROLLBACK
            and item.deployment.previous_version_id == item.rollback_to.pk
        )
        item.call = selectors.call_info(endpoint=endpoint, version=item.version)
    return render(
        request,
        "deployments/endpoint_detail.html",
        {
            "endpoint": endpoint,
            "live_versions": live,
            "timeline": selectors.live_timeline(endpoint=endpoint)[:50],
            "deployments": selectors.deployment_list(filters={"endpoint": endpoint})[:20],
            "load_tests": loadtest_list(endpoint=endpoint)[:20],
            "nav_section": "endpoints",
            **_sagemaker_context(endpoint),
        },
    )


def _sagemaker_context(endpoint: Endpoint) -> dict[str, Any]:
    """A SageMaker endpoint's hourly cost (configured count, and autoscaling's maximum) and
    how its changes roll out, in words."""
    if endpoint.backend != Backend.SAGEMAKER:
        return {}
    from .backends.sagemaker.guardrails import GUARDRAILS_DOC, NOT_OFFERED, describe_rollout
    from .backends.sagemaker.pricing import PRICE_NOTE, hourly_cost

    return {
        "hourly_cost": hourly_cost(endpoint),
        "hourly_cost_max": hourly_cost(endpoint, endpoint.autoscaling_max_instances),
        "price_note": PRICE_NOTE,
        "rollout_policy": describe_rollout(endpoint),
        "rollout_not_offered": NOT_OFFERED,
        "guardrails_doc": GUARDRAILS_DOC,
    }


@login_required
def endpoint_create(request: HttpRequest) -> HttpResponse:
    if not services.may_configure(request.user):
        # The service refuses too; answering before the form is read says so at once.
        return render(
            request,
            "deployments/endpoint_form.html",
            {"refusal": services.CONFIGURE_REFUSAL, "nav_section": "endpoints"},
            status=403,
        )
    form = EndpointForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            endpoint = services.endpoint_create(
                actor=request.user,
                name=data.pop("name"),
                environment=data.pop("environment"),
                backend=data.pop("backend"),
                source=Source.BROWSER,
                **data,
            )
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            status = exc.status_code
        else:
            messages.success(request, f"Endpoint {endpoint.name} created.")
            return redirect(endpoint)
    elif request.method == "POST":
        status = 400
    return render(
        request,
        "deployments/endpoint_form.html",
        {"form": form, "nav_section": "endpoints"},
        status=status,
    )


@login_required
@require_POST
def endpoint_test_request(request: HttpRequest, name: str) -> HttpResponse:
    """Send a version's first test case to the endpoint and show the answer: status,
    latency, outputs. Only a version deployed there may be probed."""
    endpoint = _endpoint_or_404(name)
    version_id = request.POST.get("version", "")
    version = (
        selectors.deployed_version(endpoint=endpoint, pk=int(version_id))
        if version_id.isdigit() and len(version_id) < 12
        else None
    )
    if version is None:
        result = {
            "ok": False,
            "status": None,
            "latency_ms": None,
            "error": f"version: not a version deployed to {endpoint.name}.",
        }
        status = 400
    else:
        result = selectors.send_test_request(endpoint=endpoint, version=version)
        status = 200
    # htmx swaps the result into the page; without it the result gets a page of its own.
    template = (
        "deployments/_test_request_result.html"
        if request.headers.get("HX-Request")
        else "deployments/test_request.html"
    )
    return render(
        request,
        template,
        {"result": result, "endpoint": endpoint, "nav_section": "endpoints"},
        status=status,
    )


@login_required
@require_POST
def endpoint_rollback(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = _endpoint_or_404(name)
    model = get_or_404(selectors.model_get, name=request.POST.get("model", ""))
    try:
        deployment = services.deployment_rollback(
            actor=request.user,
            endpoint=endpoint,
            model=model,
            source=Source.BROWSER,
            reason=request.POST.get("reason", ""),
        )
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(endpoint)
    messages.success(request, f"Rolling {model.name} back to v{deployment.version.version}.")
    return redirect(deployment)


# Deployments -----------------------------------------------------------------------------


@login_required
def deployment_list(request: HttpRequest) -> HttpResponse:
    filterset = DeploymentFilterSet(request.GET or None, queryset=selectors.deployment_list())
    page = Paginator(filterset.qs, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "deployments/deployment_list.html",
        {"filter": filterset, "page": page, "nav_section": "deployments"},
    )


def _deployment_context(pk: int) -> dict[str, Any]:
    deployment = get_or_404(selectors.deployment_get, pk=pk)
    return {
        "deployment": deployment,
        "log_lines": selectors.deployment_log_since(deployment=deployment, since=0, limit=2000),
        "active": deployment.state in ACTIVE_DEPLOYMENT_STATES,
    }


@login_required
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    context = _deployment_context(pk)
    deployment = context["deployment"]
    if deployment.state in selectors.SUCCEEDED_ONCE:
        context["call"] = selectors.call_info(
            endpoint=deployment.endpoint, version=deployment.version
        )
    context["load_tests"] = loadtest_list(endpoint=deployment.endpoint, version=deployment.version)[
        :20
    ]
    context["nav_section"] = "deployments"
    return render(request, "deployments/deployment_detail.html", context)


@login_required
def deployment_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The steps and log, polled by htmx while the deployment runs."""
    return render(request, "deployments/_progress.html", _deployment_context(pk))


# The deploy wizard -----------------------------------------------------------------------


def _wizard(request: HttpRequest) -> dict[str, Any]:
    return request.session.setdefault(WIZARD_KEY, {})


def _save_wizard(request: HttpRequest, data: dict[str, Any]) -> None:
    request.session[WIZARD_KEY] = data
    request.session.modified = True


def _wizard_version(data: dict[str, Any]) -> ModelVersion | None:
    if not data.get("version"):
        return None
    return (
        ModelVersion.objects.select_related("model", "parent__model", "registered_by")
        .filter(pk=data["version"])
        .first()
    )


def _wizard_endpoint(data: dict[str, Any]) -> tuple[Endpoint | None, dict[str, Any] | None]:
    """The chosen endpoint, or the description of the new one."""
    choice = data.get("endpoint") or {}
    if choice.get("choice") == "new":
        return None, choice
    if choice.get("endpoint"):
        with contextlib.suppress(NotFound):  # deleted meanwhile: choose again
            return selectors.endpoint_get(name=choice["endpoint"]), None
    return None, None


def _wizard_render(
    request, step: int, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    context.update(
        {
            "step": step,
            "steps": [
                {"number": i + 1, "label": label, "done": i + 1 < step, "current": i + 1 == step}
                for i, label in enumerate(WIZARD_STEPS)
            ],
            "nav_section": "deployments",
        }
    )
    return render(request, template, context, status=status)


@login_required
def wizard_start(request: HttpRequest) -> HttpResponse:
    """A fresh wizard; ?model=&version= preselects a version (from a version's page)."""
    data: dict[str, Any] = {}
    model, number = request.GET.get("model"), request.GET.get("version")
    if model and number and number.isdigit():
        with contextlib.suppress(NotFound):  # a stale link preselects nothing
            data["version"] = selectors.version_get(model_name=model, version=int(number)).pk
    if request.GET.get("endpoint"):
        data["endpoint"] = {"choice": "existing", "endpoint": request.GET["endpoint"]}
    _save_wizard(request, data)
    return redirect("deployments:wizard", step=1)


@login_required
def wizard(request: HttpRequest, step: int) -> HttpResponse:
    data = _wizard(request)
    if step > 1 and not data.get("version"):
        return redirect("deployments:wizard", step=1)
    if step > 2 and not data.get("endpoint"):
        return redirect("deployments:wizard", step=2)
    handler = {
        1: _wizard_version_step,
        2: _wizard_endpoint_step,
        3: _wizard_autoscaling_step,
        4: _wizard_review_step,
    }.get(step)
    if handler is None:
        raise Http404("No such step.")
    return handler(request, data)


def _wizard_version_step(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    versions = selectors.deployable_versions()
    error = ""
    if request.method == "POST":
        version = versions.filter(pk=request.POST.get("version") or 0).first()
        if version is None:
            error = "Choose a version."
        elif version.status != VersionStatus.PACKAGED:
            error = f"{version} is not packaged yet; only packaged versions deploy."
        else:
            data["version"] = version.pk
            _save_wizard(request, data)
            return redirect("deployments:wizard", step=2)
    preview = request.GET.get("version")
    selected = (
        versions.filter(pk=preview).first() if preview and preview.isdigit() else None
    ) or _wizard_version(data)
    return _wizard_render(
        request,
        1,
        "deployments/wizard_version.html",
        {
            "versions": versions,
            "selected": selected,
            "lineage": selectors.lineage_diff(None, selected) if selected else [],
            "test_results": selectors.test_results(version=selected) if selected else [],
            "error": error,
        },
    )


def _wizard_endpoint_step(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    version = _wizard_version(data)
    saved = data.get("endpoint") or {"choice": "existing"}
    status = 200
    if request.method == "POST":
        if request.POST.get("back"):
            return redirect("deployments:wizard", step=1)
        form = EndpointStepForm(request.POST)
        if (
            form.is_valid()
            and form.cleaned_data["choice"] == "new"
            and not services.may_configure(request.user)
        ):
            form.add_error("choice", services.CONFIGURE_REFUSAL)
            status = 403
        if form.is_valid():
            cleaned = form.cleaned_data
            if cleaned["choice"] == "existing":
                choice = {"choice": "existing", "endpoint": cleaned["endpoint"].name}
            else:
                choice = {
                    "choice": "new",
                    "name": cleaned["name"],
                    "environment": cleaned["environment"].name,
                    "backend": cleaned["backend"] or Backend.LOCAL,
                    "instance_type": cleaned["instance_type"],
                    "initial_instance_count": cleaned["initial_instance_count"] or 1,
                    "region": cleaned["region"],
                    "execution_role_arn": cleaned["execution_role_arn"],
                    "s3_prefix": cleaned["s3_prefix"],
                    "memory_budget_bytes": cleaned["memory_budget_bytes"],
                }
            if choice != data.get("endpoint"):
                # Another endpoint: its autoscaling policy is prefilled afresh.
                data.pop("autoscaling", None)
            data["endpoint"] = choice
            _save_wizard(request, data)
            return redirect("deployments:wizard", step=3)
    else:
        form = EndpointStepForm(initial=saved)
    endpoints = list(selectors.endpoint_list())
    for endpoint in endpoints:
        endpoint.live_here = next(
            (
                lv
                for lv in endpoint.live_versions.all()
                if version and lv.model_id == version.model_id
            ),
            None,
        )
    return _wizard_render(
        request,
        2,
        "deployments/wizard_endpoint.html",
        {
            "form": form,
            "version": version,
            "endpoints": endpoints,
            "saved": saved,
            "environments": Environment.objects.all(),
            "can_configure": services.may_configure(request.user),
        },
        status=status,
    )


def _autoscaling_initial(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("autoscaling"):
        return data["autoscaling"]
    endpoint, _new = _wizard_endpoint(data)
    source = endpoint or Endpoint()
    return {field: getattr(source, field) for field in AUTOSCALING_FIELDS}


def _wizard_autoscaling_step(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    endpoint, new = _wizard_endpoint(data)
    if request.method == "POST":
        if request.POST.get("back"):
            form = AutoscalingForm(request.POST)
            if form.is_valid():
                data["autoscaling"] = form.cleaned_data
                _save_wizard(request, data)
            return redirect("deployments:wizard", step=2)
        form = AutoscalingForm(request.POST)
        if form.is_valid():
            data["autoscaling"] = form.cleaned_data
            _save_wizard(request, data)
            return redirect("deployments:wizard", step=4)
    else:
        form = AutoscalingForm(initial=_autoscaling_initial(data))
    backend = endpoint.backend if endpoint else (new or {}).get("backend", Backend.LOCAL)
    return _wizard_render(
        request,
        3,
        "deployments/wizard_autoscaling.html",
        {"form": form, "endpoint": endpoint, "new_endpoint": new, "backend": backend},
    )


def _wizard_target(endpoint, new, environment) -> Endpoint:
    """The endpoint the wizard deploys to; a new one as it will be created (unsaved)."""
    if endpoint is not None:
        return endpoint
    return Endpoint(
        name=new["name"], backend=new.get("backend") or Backend.LOCAL, environment=environment
    )


def _wizard_review_step(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    version = _wizard_version(data)
    endpoint, new = _wizard_endpoint(data)
    if version is None or (endpoint is None and new is None):
        return redirect("deployments:wizard", step=1)
    environment = (
        endpoint.environment
        if endpoint
        else Environment.objects.filter(name=(new or {}).get("environment")).first()
    )
    needs_approval = bool(
        environment and services.deployment_needs_approval(environment=environment)
    )
    live = selectors.live_version(endpoint=endpoint, model=version.model) if endpoint else None
    autoscaling = data.get("autoscaling") or _autoscaling_initial(data)
    staging = selectors.staging_success(version=version) if needs_approval else None
    form = ReviewForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if request.POST.get("back"):
            return redirect("deployments:wizard", step=3)
        if form.is_valid():
            try:
                result = services.deployment_request(
                    actor=request.user,
                    version=version,
                    endpoint=endpoint,
                    new_endpoint=_new_endpoint_fields(new, environment) if new else None,
                    autoscaling=autoscaling,
                    reason=form.cleaned_data["comment"],
                    source=Source.BROWSER,
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
                status = exc.status_code
            else:
                request.session.pop(WIZARD_KEY, None)
                if isinstance(result, PromotionRequest):
                    messages.success(request, "Promotion requested; approvers have been notified.")
                else:
                    messages.success(request, f"Deploying {version} to {result.endpoint.name}.")
                return redirect(result)
    target = _wizard_target(endpoint, new, environment)
    return _wizard_render(
        request,
        4,
        "deployments/wizard_review.html",
        {
            "form": form,
            "version": version,
            "endpoint": endpoint,
            "new_endpoint": new,
            "environment": environment,
            "needs_approval": needs_approval,
            "staging": staging,
            "live": live,
            "autoscaling": autoscaling,
            "changes": _wizard_changes(version, target, new, live, autoscaling, needs_approval),
            # What the deployment rolls out on the SageMaker endpoint itself, if anything.
            "endpoint_change": endpoint_change_preview(endpoint=endpoint) if endpoint else None,
            # What the deployment will run: the backend's own plan, step by step.
            "plan": backend_for(target).plan(target),
            "lineage_diff": selectors.lineage_diff(live.version if live else None, version),
        },
        status=status,
    )


def _wizard_changes(version, target, new, live, autoscaling, needs_approval) -> list[str]:
    """What the world looks like afterwards, in words; how it gets there is the plan."""
    changes = []
    if needs_approval:
        changes.append("Nothing yet: an approver decides; approval starts the deployment")
    if new:
        changes.append(
            f"Create the {new['environment']} endpoint {target.name} "
            f"({target.get_backend_display()}"
            + (
                f", {new.get('initial_instance_count') or 1} × {new.get('instance_type')})"
                if target.backend == Backend.SAGEMAKER
                else ")"
            )
        )
    changes.append(f"Place {version.package_name} where {target.name} reads its packages")
    if live:
        changes.append(
            f"Replace live v{live.version.version} of {version.model.name} by v{version.version}"
        )
    else:
        changes.append(
            f"Make v{version.version} the first live version of {version.model.name} on "
            f"{target.name}"
        )
    if not needs_approval and not new:
        before = {field: getattr(target, field) for field in AUTOSCALING_FIELDS}
        changed = [f for f in AUTOSCALING_FIELDS if before[f] != autoscaling.get(f)]
        if changed:
            changes.append(
                "Change autoscaling: "
                + ", ".join(
                    f"{f.replace('_', ' ')} {before[f]} → {autoscaling[f]}" for f in changed
                )
            )
    return changes


def _new_endpoint_fields(new: dict[str, Any], environment) -> dict[str, Any]:
    """The wizard's description of a new endpoint as `deployment_request` takes it: only
    the fields its backend uses, and only those given."""
    fields = {
        k: v for k, v in new.items() if k not in {"choice", "environment"} and v not in (None, "")
    }
    if fields.get("backend") != Backend.SAGEMAKER:
        for key in SAGEMAKER_ONLY_FIELDS:
            fields.pop(key, None)
    fields["environment"] = environment
    return fields


# Promotion requests ----------------------------------------------------------------------


@login_required
def promotion_list(request: HttpRequest) -> HttpResponse:
    params = request.GET.copy()
    if "state" not in params:
        params["state"] = PromotionState.PENDING
    filterset = PromotionFilterSet(params, queryset=selectors.promotion_list())
    page = Paginator(filterset.qs, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "deployments/promotion_list.html",
        {
            "filter": filterset,
            "page": page,
            "state": params.get("state"),
            "nav_section": "approvals",
            "states": PromotionState.choices,
        },
    )


@login_required
def promotion_detail(request: HttpRequest, pk: int) -> HttpResponse:
    promotion = get_or_404(selectors.promotion_get, pk=pk)
    evidence = promotion.evidence or {}
    return render(
        request,
        "deployments/promotion_detail.html",
        {
            "promotion": promotion,
            # The version's latest load test on staging, as frozen in the evidence.
            "load_test_evidence": (evidence.get("load_tests") or [None])[0],
            "form": DecisionForm(),
            "can_decide": request.user.has_perm(services.APPROVE_PERMISSION),
            "is_requester": promotion.requested_by_id == request.user.pk,
            "nav_section": "approvals",
        },
    )


@login_required
def promotion_create(request: HttpRequest) -> HttpResponse:
    """Request promotion of a version (outside the wizard, e.g. from a deployment page)."""
    form = PromotionForm(request.POST or None, initial=request.GET.dict())
    version = None
    version_id = request.POST.get("version") or request.GET.get("version")
    if version_id and str(version_id).isdigit():
        version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    preview = None
    if request.method == "POST" and form.is_valid() and version is not None:
        if request.POST.get("preview"):
            preview = _evidence_preview(version, form.cleaned_data["target_endpoint"])
            return render(
                request,
                "deployments/promotion_form.html",
                {"form": form, "version": version, "preview": preview, "nav_section": "approvals"},
            )
        try:
            promotion = services.promotion_request_create(
                actor=request.user,
                version=version,
                target_endpoint=form.cleaned_data["target_endpoint"],
                comment=form.cleaned_data["comment"],
                source=Source.BROWSER,
            )
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Promotion requested; approvers have been notified.")
            return redirect(promotion)
    if request.method == "GET" and version is not None:
        target = form.initial.get("target_endpoint")
        endpoint = (
            form.fields["target_endpoint"].queryset.filter(name=target).first() if target else None
        )
        if endpoint is not None:
            preview = _evidence_preview(version, endpoint)
    return render(
        request,
        "deployments/promotion_form.html",
        {"form": form, "version": version, "preview": preview, "nav_section": "approvals"},
    )


def _evidence_preview(version: ModelVersion, endpoint: Endpoint) -> dict[str, Any]:
    """The evidence a request would freeze now (the service computes it again on send)."""
    staging = selectors.staging_success(version=version)
    if staging is None:
        return {"error": f"{version} has not been deployed successfully to staging yet."}
    return selectors.promotion_evidence(
        version=version, staging_deployment=staging, target_endpoint=endpoint
    )


def _decide(request: HttpRequest, pk: int, service, verb: str) -> HttpResponse:
    promotion = get_or_404(selectors.promotion_get, pk=pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    try:
        promotion = service(
            actor=request.user,
            promotion=promotion,
            comment=form.cleaned_data.get("comment", ""),
            source=Source.BROWSER,
        )
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(reverse("deployments:promotion-detail", kwargs={"pk": pk}))
    messages.success(request, f"Promotion {verb}.")
    if promotion.deployment_id:
        return redirect("deployments:deployment-detail", pk=promotion.deployment_id)
    return redirect(promotion)


@login_required
@require_POST
def promotion_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(
        request, pk, services.promotion_approve, "approved; the production deployment started"
    )


@login_required
@require_POST
def promotion_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, services.promotion_reject, "rejected")
