"""Bounds on an invocation's body, checked before it is forwarded to Triton.

Triton sizes an input's buffer from the shape the request declares, so a 100-byte request
declaring `shape: [1000000000]` makes it reserve gigabytes before it finds that the data does
not fill them. Here every input's shape must be one the body can hold: as many JSON `data`
values as the shape has elements, or a `binary_data_size` (the binary tensor extension) that
is exactly the shape's bytes. A body that passes holds every tensor Triton will build from it.

The request format is KServe v2's with Triton's binary tensor extension
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md).
The JSON part is read as Triton's HTTP frontend reads it, with RapidJSON (orjson first, where
it agrees: see `_parse`); duplicate keys are refused because RapidJSON's member lookup
(Triton's) finds the first of them and Python dictionaries keep the last, so a checked shape
and a served one could differ.

The JSON part's length comes in the `Inference-Header-Content-Length` header (KServe), or,
SageMaker's way, in the Content-Type (`SAGEMAKER_BINARY_TYPE`), which is the only way through
boto3's `invoke_endpoint`; SageMaker's Triton reads it there (src/sagemaker_server.cc,
`GetInferenceHeaderLength`).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
import rapidjson

from dataplane.errors import GatewayError, validation_error
from toolkit.limits import DATATYPE_BYTES, MAX_TENSOR_DIMS

# Inputs per request: real models take a handful.
MAX_INPUTS = 256
# Bytes of each element of a fixed-size datatype on the wire (BYTES is variable: each element
# is a 4-byte length and its bytes).
_FIXED_BYTES = {name: size for name, size in DATATYPE_BYTES.items() if name != "BYTES"}
_BYTES_PREFIX = 4
# The Content-Type of a SageMaker request (and answer) with binary tensors, followed by the JSON
# part's length; Triton refuses it anywhere but at the start of the header.
SAGEMAKER_BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json;json-header-size="
# Digits of a size: 12 is a terabyte, far past any body the gateway takes.
_MAX_SIZE_DIGITS = 12
# Content-Encoding values Triton's HTTP frontend decodes.
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _malformed(reason: str, *, status: int = 400) -> GatewayError:
    return validation_error(
        f"The request body is not a valid KServe v2 inference request: {reason}",
        status=status,
        error_code="MalformedRequest",
    )


class _Decoder(rapidjson.Decoder):
    """RapidJSON, refusing an object that names a key twice."""

    def start_object(self) -> list[tuple[str, Any]]:
        return []

    def end_object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise ValueError(f"the key {key!r} appears twice in one object")
                seen.add(key)
        return obj


_decode = _Decoder()


def _parse(text: bytes) -> Any:
    """The JSON part, refused (ValueError) when an object names a key twice.

    `_Decoder` finds duplicates with two Python calls per object; here the body is parsed
    alone and the keys are counted instead. Every key is followed by its own colon, so the
    body's colons are at least its keys; when the objects the check reads (the request, its
    inputs, their parameters) hold as many distinct keys as there are colons, no object
    repeats a key and no other object has any. Otherwise (a colon in a string, a nested
    object elsewhere) `_Decoder` decides.

    orjson parses first: strict RFC 8259, in less than half the time of RapidJSON's Python
    binding for a small request, and what it takes RapidJSON takes alike (an integer past
    64 bits becomes a float, as in Triton's RapidJSON). What it refuses and RapidJSON may
    take (NaN, Infinity) goes to RapidJSON, as before.
    """
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        request = rapidjson.loads(text)
    if type(request) is dict:
        keys = len(request)
        inputs = request.get("inputs")
        if type(inputs) is list:
            for tensor in inputs:
                if type(tensor) is dict:
                    keys += len(tensor)
                    parameters = tensor.get("parameters")
                    if type(parameters) is dict:
                        keys += len(parameters)
        if keys == text.count(b":"):
            return request
    return _decode(text)


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, never longer than `limit` bytes.

    Decoded here, not by Triton, so that the shapes can be checked and a small compressed body
    cannot expand into gigabytes behind the request limit.
    """
    wbits = _DECODERS.get(encoding.strip().lower())
    if wbits is None:
        raise validation_error(
            f"Content-Encoding {encoding!r} is not supported; send the body as is, gzip or "
            f"deflate.",
            status=415,
            error_code="UnsupportedMediaType",
        )
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _malformed(f"the body is not valid {encoding}: {exc}") from exc
    if len(decoded) > limit:
        raise validation_error(
            f"Request payload too large: the decoded body exceeds the limit of {limit} bytes.",
            status=413,
            error_code="PayloadTooLarge",
        )
    if not decoder.eof:
        raise _malformed(f"the {encoding} body is truncated")
    return decoded


def _is_size(text: str) -> bool:
    # ASCII digits only: str.isdigit also takes "²", which int() refuses.
    return 0 < len(text) <= _MAX_SIZE_DIGITS and text.isascii() and text.isdigit()


def sagemaker_json_length(content_type: str, body_length: int, header: str | None) -> str:
    """The JSON part's length that SageMaker's binary Content-Type declares, as the value of
    KServe's Inference-Header-Content-Length, which Triton's KServe frontend reads.

    Refused as SageMaker's Triton refuses it: the type not at the start, a size that is not
    one, a size past the body's end. `header` is the request's own KServe header, if any: the
    two must agree.
    """
    if not content_type.startswith(SAGEMAKER_BINARY_TYPE):
        raise _malformed(
            f"expect MIME type for binary data starts with {SAGEMAKER_BINARY_TYPE!r}, got: "
            f"{content_type[:200]!r}"
        )
    # Parameters may follow the size (`;charset=...`); the size is the digits before them.
    text = content_type[len(SAGEMAKER_BINARY_TYPE) :].split(";", 1)[0].strip()
    if not _is_size(text):
        raise _malformed(f"json-header-size {text[:40]!r} in the Content-Type is not a size")
    size = int(text)
    if size > body_length:
        raise _malformed(
            f"json-header-size {size} in the Content-Type is more than the body's "
            f"{body_length} bytes"
        )
    if header is not None and header != text:
        raise _malformed(
            f"Inference-Header-Content-Length {header[:40]!r} and json-header-size {size} in "
            f"the Content-Type disagree"
        )
    return text


def _elements(name: str, shape: Any) -> int:
    if not isinstance(shape, list):
        raise _malformed(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_TENSOR_DIMS:
        raise _malformed(
            f"input {name!r}: shape has {len(shape)} dimensions; the limit is {MAX_TENSOR_DIMS}"
        )
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise _malformed(
                f"input {name!r}: shape {shape} must hold non-negative integers, not {dim!r}"
            )
        count *= dim
    return count


def _values(data: Any) -> int:
    """How many values `data` holds, nested lists flattened (as Triton reads them)."""
    if not isinstance(data, list):
        return 1
    if not data or (not isinstance(data[0], list) and not isinstance(data[-1], list)):
        return len(data)  # Flat, the usual case: no walk over the values.
    count = 0
    stack = [data]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            else:
                count += 1
    return count


def check_inference_request(body: bytes, json_length: str | None) -> None:
    """Refuse (400, the input named) a body whose tensors Triton could not fill from it.

    `json_length` is the Inference-Header-Content-Length header: the JSON part's length when
    binary tensors follow it; absent, the whole body is JSON.
    """
    if not body:
        raise _malformed("the body is empty; send a JSON inference request with 'inputs'")
    if json_length is None:
        header_end = len(body)
    else:
        if not _is_size(json_length):
            raise _malformed(f"Inference-Header-Content-Length {json_length[:40]!r} is not a size")
        header_end = int(json_length)
        if header_end == 0:
            # Triton's raw binary request: the whole body is the one input's data, and Triton
            # takes the input's size from the body's.
            return
        if header_end > len(body):
            raise _malformed(
                f"Inference-Header-Content-Length {header_end} is more than the body's "
                f"{len(body)} bytes"
            )
    try:
        request = _parse(body[:header_end] if header_end < len(body) else body)
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"the body is not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise _malformed("the body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _malformed("'inputs' must be a non-empty list")
    if len(inputs) > MAX_INPUTS:
        raise _malformed(f"{len(inputs)} inputs; the limit is {MAX_INPUTS}")
    binary_left = len(body) - header_end
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise _malformed("each input must be an object")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise _malformed("each input needs a 'name' (a string)")
        datatype = tensor.get("datatype")
        if datatype != "BYTES" and datatype not in _FIXED_BYTES:
            raise _malformed(f"input {name!r}: unknown datatype {datatype!r}")
        elements = _elements(name, tensor.get("shape"))
        parameters = tensor.get("parameters")
        binary_size = None
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise _malformed(f"input {name!r}: 'parameters' must be an object")
            if "shared_memory_region" in parameters:
                raise _malformed(
                    f"input {name!r}: shared-memory inputs are not served by a multi-model "
                    f"endpoint; send the data in the body"
                )
            binary_size = parameters.get("binary_data_size")
        if binary_size is not None:
            if type(binary_size) is not int or binary_size < 0:
                raise _malformed(f"input {name!r}: binary_data_size must be a non-negative integer")
            if json_length is None:
                raise _malformed(
                    f"input {name!r}: binary_data_size needs the Inference-Header-Content-Length "
                    f"header"
                )
            if binary_size > binary_left:
                raise _malformed(
                    f"input {name!r}: binary_data_size {binary_size} is more than the "
                    f"{binary_left} bytes of binary data left in the body"
                )
            binary_left -= binary_size
            if datatype == "BYTES":
                if elements * _BYTES_PREFIX > binary_size:
                    raise _malformed(
                        f"input {name!r}: shape {tensor['shape']} holds {elements} BYTES "
                        f"elements; binary_data_size {binary_size} cannot hold them"
                    )
            elif elements * _FIXED_BYTES[datatype] != binary_size:
                raise _malformed(
                    f"input byte size mismatch for input {name!r}: shape {tensor['shape']} of "
                    f"{datatype} takes {elements * _FIXED_BYTES[datatype]} bytes, "
                    f"binary_data_size is {binary_size}"
                )
            continue
        if "data" not in tensor:
            raise _malformed(f"input {name!r} has neither 'data' nor binary_data_size")
        values = _values(tensor["data"])
        if values != elements:
            raise _malformed(
                f"Unable to parse 'data' of input {name!r}: its shape {tensor['shape']} holds "
                f"{elements} elements, 'data' has {values}"
            )
