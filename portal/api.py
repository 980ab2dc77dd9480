"""API plumbing shared by every app: the one error shape, the exception handler that gives
every error that shape, and the schema class that documents the errors every operation can
answer (the bounded JSON parser is in `portal.parsers`, which DRF imports while its own
views module loads).

CI users generate their clients from the OpenAPI schema, so the errors are described once,
here, and added to every operation the way the API really answers them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ServiceError


class StrictStringMixin:
    """Takes only strings: DRF's CharField turns a number into its digits, so a client
    sending the wrong type would never hear of it."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(StrictStringMixin, serializers.CharField):
    pass


class StrictRegexField(StrictStringMixin, serializers.RegexField):
    pass


class ErrorSerializer(serializers.Serializer):
    """The shape of every error the API answers (4xx)."""

    detail = serializers.CharField(help_text="What went wrong, in a sentence.")
    code = serializers.CharField(
        help_text="A stable reason to branch on: invalid, parse_error, not_found, "
        "permission_denied, not_authenticated, conflict, invalid_transition, too_large, ..."
    )
    field = serializers.CharField(required=False, help_text="The input at fault, if one is.")
    errors = serializers.DictField(
        required=False,
        help_text="Messages per input: `{field: [message, ...]}` (nested for nested inputs).",
    )


def error_response(description: str) -> OpenApiResponse:
    """An error answer for `extend_schema(responses=...)`, in the one error shape."""
    return OpenApiResponse(ErrorSerializer, description=description)


# Explicit, per-operation errors (the ones only some operations answer).
CONFLICT = error_response("The request conflicts with the current state (`code` says why).")
TOO_LARGE = error_response("The request body is over the size limit.")

# Added to operations by `BerthAutoSchema`, according to what the operation takes.
_ERROR_DESCRIPTIONS = {
    "400": "Invalid input: `errors` holds the messages per field.",
    "401": "No API token, or an invalid or revoked one.",
    "403": "The token's user may not do this.",
    "404": "No such object (or page).",
    "413": "The request body is over the size limit.",
    "415": "The request body's media type is not one this operation accepts.",
}


class BerthAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the errors each operation can answer: every
    operation requires a token (401) and a permission (403); one with query parameters or
    a body can be refused as invalid (400); one with path parameters, a page number or a
    body naming other objects can name something that does not exist (404); one with a body
    can send it too large (413) or in a media type it does not take (415)."""

    _direction = "response"

    def _map_basic_serializer(self, serializer, direction):
        outer, self._direction = self._direction, direction
        try:
            return super()._map_basic_serializer(serializer, direction)
        finally:
            self._direction = outer

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        # DRF trims a CharField's input and then refuses it blank: a value of spaces only is
        # not valid, and the schema says so (at least one non-space character).
        if (
            self._direction == "request"
            and isinstance(field, serializers.CharField)
            and field.trim_whitespace
            and not field.allow_blank
            and not field.read_only
            and schema.get("type") == "string"
            and "pattern" not in schema
            and "enum" not in schema
        ):
            schema["pattern"] = r"\S"

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        # django-filter reads an empty value of a single-choice filter as "no filter": say so
        # in its enum (a multiple-choice filter refuses an empty item).
        filters = {parameter["name"] for parameter in self._get_filter_parameters()}
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] in filters:
                schema = parameter.get("schema", {})
                if "enum" in schema and "" not in schema["enum"]:
                    schema["enum"] = [*schema["enum"], ""]
        locations = {parameter["in"] for parameter in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        codes = ["401", "403"]
        if has_body or "query" in locations:
            codes.append("400")
        if has_body or locations & {"query", "path"}:
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        responses = operation.setdefault("responses", {})
        for code in codes:
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code)
                response["description"] = _ERROR_DESCRIPTIONS[code]
                responses[code] = response
        operation["responses"] = dict(sorted(responses.items()))
        return operation


# Errors ---------------------------------------------------------------------------------


def _text(value) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_text(item) for item in value)
    if isinstance(value, dict):
        return " ".join(f"{key}: {_text(item)}" for key, item in value.items())
    return str(value)


def _code(exc: Exception) -> str:
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            return codes
        return exc.default_code
    return "error"


def exception_handler(exc, context):
    """Answer every error in ErrorSerializer's shape: service errors with their status,
    field and reason; validation errors keep DRF's per-field messages under `errors` and
    gain a `detail` summary; every other DRF error gains a `code`."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE (DRF reads JSON and
        # form bodies through `request.body`); left alone it answers an HTML 400 page.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is over {limit} bytes.", "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        if isinstance(data, dict) and "detail" in data:
            body = {"detail": _text(data["detail"]), "code": "invalid"}
            rest = {key: value for key, value in data.items() if key != "detail"}
            if rest:
                body["errors"] = rest
        else:
            errors = data if isinstance(data, dict) else {"non_field_errors": data}
            fields = ", ".join(str(key) for key in errors)
            body = {"detail": f"Invalid input: {fields}.", "code": "invalid", "errors": errors}
            if len(errors) == 1 and fields != "non_field_errors":
                body["field"] = fields
    elif isinstance(data, dict) and "detail" in data:
        body = {**data, "detail": _text(data["detail"]), "code": _code(exc)}
    else:
        body = {"detail": _text(data), "code": _code(exc)}
    response.data = body
    return response


@csrf_exempt
def api_not_found(request, *args, **kwargs):
    """No API operation at this address: a JSON 404 in the API's error shape, not the
    portal's HTML page."""
    return JsonResponse(
        {"detail": "No API operation at this address.", "code": "not_found"},
        status=status.HTTP_404_NOT_FOUND,
    )
