"""Browser pages of the registry."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from portal.choices import Source
from portal.errors import ServiceError, get_or_404

from . import selectors, services
from .artifacts import PayloadTooLarge, check_request_size, max_upload_bytes
from .choices import VersionStatus
from .filtersets import ModelVersionFilterSet, RegisteredModelFilterSet
from .forms import ModelCreateForm, VersionUploadForm, add_service_error
from .uploads import UploadLimitHandler

PAGE_SIZE = 25


def _page(request, queryset, per_page: int = PAGE_SIZE):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def _querystring_without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@login_required
def model_list(request):
    form = ModelCreateForm(request.POST) if request.method == "POST" else ModelCreateForm()
    if request.method == "POST" and form.is_valid():
        try:
            model = services.model_create(
                actor=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                tags=form.cleaned_data["tags"],
                source=Source.BROWSER,
            )
        except ServiceError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Model {model.name} created. Upload its first version.")
            return redirect("registry:version-upload", name=model.name)
    filterset = RegisteredModelFilterSet(request.GET or None, queryset=selectors.model_list())
    return render(
        request,
        "registry/model_list.html",
        {
            "nav_section": "registry",
            "filterset": filterset,
            "page": _page(request, filterset.qs),
            "querystring": _querystring_without_page(request),
            "create_form": form,
            "statuses": VersionStatus.choices,
        },
    )


@login_required
def model_detail(request, name: str):
    model = get_or_404(selectors.model_get, name=name)
    filterset = ModelVersionFilterSet(
        request.GET or None, queryset=selectors.version_list(model=model)
    )
    return render(
        request,
        "registry/model_detail.html",
        {
            "nav_section": "registry",
            "model": model,
            "filterset": filterset,
            "page": _page(request, filterset.qs),
            "querystring": _querystring_without_page(request),
            "statuses": VersionStatus.choices,
        },
    )


@login_required
def version_detail(request, name: str, version: int):
    found = get_or_404(selectors.version_get, name=name, version=version)
    test_results = list(found.test_results.all())
    return render(
        request,
        "registry/version_detail.html",
        {
            "nav_section": "registry",
            "model": found.model,
            "version": found,
            **selectors.version_pipeline(version=found),
            "graph": selectors.lineage_graph(version=found),
            "history": selectors.version_history(version=found),
            "test_results": test_results,
            "passed_count": sum(1 for r in test_results if r.outcome == "passed"),
            "summary": found.repository_summary or {},
            "can_retry": found.status
            in {
                VersionStatus.REGISTERED,
                VersionStatus.VALIDATED,
                VersionStatus.TEST_FAILED,
                VersionStatus.TESTED,
            },
        },
    )


@login_required
def version_status(request, name: str, version: int):
    """The live part of the version page, polled by htmx while a step runs. When the status
    moved on from what the page shows, the whole page reloads to show the step's results."""
    found = get_or_404(selectors.version_status_get, name=name, version=version)
    shown = request.GET.get("shown")
    response = render(
        request,
        "registry/_version_status.html",
        {"version": found, **selectors.version_pipeline(version=found)},
    )
    if shown and shown != found.status and request.headers.get("HX-Request"):
        response["HX-Refresh"] = "true"
    return response


def _upload_refused(request, model, exc: ServiceError):
    messages.error(request, exc.message)
    return render(
        request,
        "registry/version_upload.html",
        {"nav_section": "registry", "model": model, "form": VersionUploadForm(model=model)},
        status=exc.status_code,
    )


# The CSRF check reads the POST data, and with it the whole upload to disk, before any view
# code runs; so the size is checked first, here, and the check runs after (Django's documented
# pattern for upload handlers set in a view). A refused request changes nothing, so answering
# it before the CSRF check gives a forger nothing.
@login_required
@csrf_exempt
def version_upload(request, name: str):
    model = get_or_404(selectors.model_get, name=name)
    if request.method == "POST":
        try:
            check_request_size(request)
        except ServiceError as exc:
            return _upload_refused(request, model, exc)
        limit = max_upload_bytes()
        handler = UploadLimitHandler(request, limit=limit, slack=1024 * 1024)
        request.upload_handlers.insert(0, handler)
        request.FILES  # noqa: B018 - reads the body now, through the handler above
        if handler.exceeded:
            return _upload_refused(
                request,
                model,
                PayloadTooLarge(
                    f"The archive is larger than the {limit} byte upload limit.", field="archive"
                ),
            )
    return _version_upload(request, model)


@csrf_protect
def _version_upload(request, model):
    posted = request.method == "POST"
    form = (
        VersionUploadForm(request.POST, request.FILES, model=model)
        if posted
        else VersionUploadForm(model=model)
    )
    if request.method == "POST" and form.is_valid():
        try:
            created = services.version_register(
                actor=request.user,
                model=model,
                archive=form.cleaned_data.get("archive"),
                uri=(form.cleaned_data.get("uri") or "").strip() or None,
                lineage=form.lineage(),
                test_cases=form.cleaned_data.get("test_cases"),
                description=form.cleaned_data.get("description", ""),
                source=Source.BROWSER,
            )
        except services.DuplicateContent as exc:
            add_service_error(form, exc)
            form.duplicate = exc.existing
        except ServiceError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Registered {created}. Validation has been queued.")
            return redirect(created.get_absolute_url())
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "registry/version_upload.html",
        {"nav_section": "registry", "model": model, "form": form},
        status=status,
    )


@login_required
@require_POST
def version_retry(request, name: str, version: int):
    found = get_or_404(selectors.version_get, name=name, version=version)
    try:
        services.version_retry(actor=request.user, version=found, source=Source.BROWSER)
        messages.success(request, f"{found} queued again.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect(found.get_absolute_url())
