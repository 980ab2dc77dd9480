"""The browser's side of runs: the Cancel button of the run partial."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as Forbidden
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal.choices import Source
from portal.errors import NotFound, ServiceError, get_or_404
from runs import services
from runs.models import Run
from runs.plans import plan_for


def _run(*, pk: int) -> Run:
    run = Run.objects.filter(pk=pk).first()
    if run is None:
        raise NotFound("No such run.")
    return run


@login_required
@require_POST
def run_cancel(request, pk: int):
    """Cancel, then back to the page the button was on (the subject's page otherwise)."""
    run = get_or_404(_run, pk=pk)
    try:
        services.run_cancel_requested(
            actor=request.user,
            run=run,
            reason=request.POST.get("reason", "")[: services.MAX_CANCEL_REASON],
            source=Source.BROWSER,
        )
        messages.success(request, "Cancel requested: the run stops at its next checkpoint.")
    except ServiceError as exc:
        if exc.status_code == 403:
            raise Forbidden(exc.message) from exc
        messages.error(request, exc.message)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        subject = plan_for(run.plan).load_subject(run)
        target = getattr(subject, "get_absolute_url", lambda: "/")()
    return redirect(target)
