from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import REASON_NO_CSRF_COOKIE
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import services
from .errors import ServiceError
from .models import ApiToken


@login_required
def home(request):
    from registry.selectors import home_summary

    return render(request, "portal/home.html", home_summary(user=request.user))


@login_required
def token_list(request):
    new_token = None
    if request.method == "POST":
        try:
            _, new_token = services.token_create(
                actor=request.user, name=request.POST.get("name", "")
            )
        except ServiceError as exc:
            messages.error(request, exc.message)
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "portal/tokens.html", {"tokens": tokens, "new_token": new_token})


@login_required
@require_POST
def token_revoke(request, pk: int):
    try:
        token = services.token_revoke(actor=request.user, token_id=pk)
        messages.success(request, f"Token {token.name} revoked.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("token-list")


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the portal's own page, with the navigation and a way on, instead of
    Django's debugging page (which talks about DEBUG to whoever sees it)."""
    return render(
        request,
        "403_csrf.html",
        {"reason": reason, "cookies_enabled": reason != REASON_NO_CSRF_COOKIE},
        status=403,
    )
