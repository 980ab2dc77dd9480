"""The JSON Schema (draft 2020-12) of `berth.yaml`, kept as the data file next to this module.

It is what editors and CI check a `berth.yaml` with, served at /api/v1/schemas/berth.yaml.json
and translated into the OpenAPI description of the API's `test_cases`. The server keeps its own
checks (`testcases.py`, `repository.py`): they give each problem its line in the file and check
what a schema cannot say (unique names, shape against data, the repository's models); a test
holds schema and checks in agreement on a corpus of good and bad documents.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("berth.schema.json")
DEFS_PREFIX = "#/$defs/"


@cache
def berth_schema_bytes() -> bytes:
    """The schema file as served."""
    return SCHEMA_PATH.read_bytes()


@cache
def berth_schema_etag() -> str:
    return hashlib.sha256(berth_schema_bytes()).hexdigest()[:32]


def berth_schema() -> dict[str, Any]:
    """The schema as a mapping (a fresh copy)."""
    return json.loads(berth_schema_bytes())


def openapi_schema(definition: str) -> dict[str, Any]:
    """`$defs/<definition>` as an OpenAPI 3.0 schema object, for drf-spectacular.

    OpenAPI 3.0 knows no `$defs`, type lists, `const` or `if`/`then`: references are inlined
    (a reference back into itself, the nested lists of tensor data, becomes "any value"),
    a type list with "null" becomes `nullable`, `const` an enum of one, and conditionals
    are left out (the JSON Schema at its URL has them)."""
    defs = berth_schema()["$defs"]
    return _to_openapi(defs[definition], defs, (definition,))


def _to_openapi(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item, defs, stack) for item in node]
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    ref = node.get("$ref")
    if ref is not None:
        name = ref.removeprefix(DEFS_PREFIX)
        if name in stack:
            return {"description": "Nested lists of values."}
        return _to_openapi(defs[name], defs, (*stack, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$schema", "$id", "$defs", "if", "then", "else"):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if "null" in value:
                out["nullable"] = True
            if len(types) == 1:
                out["type"] = types[0]
            else:
                out.setdefault("anyOf", []).extend({"type": t} for t in types)
        elif key == "properties":
            out[key] = {name: _to_openapi(spec, defs, stack) for name, spec in value.items()}
        elif key == "allOf":
            kept = [part for part in _to_openapi(value, defs, stack) if set(part) - {"description"}]
            if kept:
                out["allOf"] = kept
        else:
            out[key] = _to_openapi(value, defs, stack)
    return out
