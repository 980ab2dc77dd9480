"""The API's JSON parser: bodies bounded in size and nesting before anything walks them.

Kept apart from `portal.api`: DRF imports its parser classes while `rest_framework.views`
itself loads, so this module imports nothing that needs DRF's views.
"""

from __future__ import annotations

import orjson
from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

# Lineage, test cases and every other JSON body of this API is a few levels deep (a test
# case's tensor of rank 8 inside its case list is about 12). Anything deeper is refused
# before a serializer, a recursive encoder (the JSON column's) or a template walks it. The
# limit is the setting BERTH_API_JSON_MAX_DEPTH.


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class JSONInputError(ValueError):
    """JSON that is not parsed: malformed, not UTF-8, or nested too deeply."""


def json_max_depth() -> int:
    return int(settings.BERTH_API_JSON_MAX_DEPTH)


def json_loads_bounded(data: bytes | str, *, max_depth: int | None = None):
    """Decode JSON whose nesting is at most `max_depth` levels (a scalar is 0 levels, `[]`
    one). orjson refuses nesting past 1024 levels by itself, without recursing in Python,
    so a 50,000-deep body is refused in microseconds rather than overflowing the stack as
    `json.loads` does; the lower limit is then checked on the decoded value, iteratively.
    orjson also refuses what PostgreSQL could not store: invalid UTF-8 and lone surrogates.
    """
    max_depth = json_max_depth() if max_depth is None else max_depth
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise JSONInputError(
                f"JSON nested deeper than {max_depth} levels is not accepted."
            ) from exc
        raise JSONInputError(f"JSON parse error: {exc}") from exc
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
            for key in item:
                if "\x00" in key:
                    raise JSONInputError("JSON strings may not contain NUL (\\u0000).")
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str) and "\x00" in item:
                raise JSONInputError("JSON strings may not contain NUL (\\u0000).")
            continue
        if depth > max_depth:
            raise JSONInputError(f"JSON nested deeper than {max_depth} levels is not accepted.")
        pending.extend((child, depth + 1) for child in children)
    return value


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the body's size and nesting bounded before anything walks it.

    DRF's own parser decodes with `json.loads`, which raises RecursionError, answered 500,
    on deeply nested input. DRF 3.16+ hands JSON parsers `request.body`, which Django bounds
    by DATA_UPLOAD_MAX_MEMORY_SIZE (`portal.api.exception_handler` answers that 413); the
    size is checked here too, so a stream handed over directly is bounded as well.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        if limit is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0) if request else 0
            except ValueError:
                declared = 0
            if declared > limit:
                raise RequestTooLarge(
                    f"The JSON body is {declared} bytes; at most {limit} bytes are accepted."
                )
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise RequestTooLarge(f"The JSON body is over {limit} bytes.")
        else:
            data = stream.read()
        try:
            return json_loads_bounded(data)
        except JSONInputError as exc:
            raise exceptions.ParseError(str(exc)) from exc
