"""API plumbing shared by every app: the exception handler and the v1 router root."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ServiceError


def exception_handler(exc, context):
    """Answer service errors with their status, field and reason; validation errors keep
    DRF's per-field shape and gain a `detail` summary."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_400_BAD_REQUEST:
        data = response.data
        if isinstance(data, dict) and "detail" not in data:
            fields = ", ".join(str(key) for key in data)
            response.data = {"detail": f"Invalid input: {fields}.", "errors": data}
    return response
