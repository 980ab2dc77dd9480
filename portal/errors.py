"""Errors raised by services. Views, serializers and admin actions turn them into answers
with a status code, the field concerned and a plain reason."""

from collections.abc import Callable
from typing import TypeVar

from django.http import Http404

T = TypeVar("T")


class ServiceError(Exception):
    """A request the service refuses. `field` names the input at fault, when there is one."""

    status_code = 400
    default_code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code

    def as_dict(self) -> dict:
        body = {"detail": self.message, "code": self.code}
        if self.field:
            body["field"] = self.field
            body["errors"] = {self.field: [self.message]}
        return body


class PermissionDenied(ServiceError):
    status_code = 403
    default_code = "permission_denied"


class NotFound(ServiceError):
    status_code = 404
    default_code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    default_code = "conflict"


class InvalidTransition(Conflict):
    default_code = "invalid_transition"


def get_or_404(selector: Callable[..., T], **kwargs) -> T:
    """For a page: what a "get one" selector finds (selectors raise NotFound when there is
    none), or the 404 page with the selector's reason."""
    try:
        return selector(**kwargs)
    except NotFound as exc:
        raise Http404(exc.message) from exc
