"""An invocation's body against the shapes it declares, before Triton sees it."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as triton_http

from dataplane.errors import GatewayError
from dataplane.payload import (
    MAX_INPUTS,
    SAGEMAKER_BINARY_TYPE,
    check_inference_request,
    decode_body,
    sagemaker_json_length,
)


def tensor(shape, data, datatype="FP32", name="INPUT", **extra):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}


def body(*inputs) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def refusal(raw: bytes, json_length: str | None = None) -> str:
    with pytest.raises(GatewayError) as caught:
        check_inference_request(raw, json_length)
    assert caught.value.status == 400
    assert caught.value.error_code == "MalformedRequest"
    return caught.value.message


def binary_request(array: np.ndarray, datatype: str) -> tuple[bytes, int]:
    item = triton_http.InferInput("INPUT", list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=True)
    raw, json_size = triton_http.InferenceServerClient.generate_request_body([item])
    return raw, json_size


@pytest.mark.parametrize(
    "raw",
    [
        body(tensor([1, 4], [1.0, 2.0, 3.0, 4.0])),
        body(tensor([2, 2], [[1, 2], [3, 4]], "INT32")),
        body(tensor([2], ["a", "b"], "BYTES"), tensor([0], [], "INT64", name="EMPTY")),
        body(tensor([], 5, "INT8")),
    ],
)
def test_requests_whose_data_fill_their_shapes_pass(raw):
    check_inference_request(raw, None)


def test_a_huge_shape_over_a_tiny_body_is_refused_naming_the_input():
    message = refusal(body(tensor([1000000000], [1.0], name="pixels")))
    assert "'pixels'" in message and "1000000000" in message and "has 1" in message


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ([1e9], "non-negative integers"),
        ([-1, 4], "non-negative integers"),
        ([True, 4], "non-negative integers"),
        ("4", "must be a list"),
        ([1] * 17, "dimensions; the limit"),
    ],
)
def test_a_shape_must_be_a_short_list_of_non_negative_integers(shape, reason):
    assert reason in refusal(body(tensor(shape, [1.0])))


def test_nested_data_are_counted_flattened():
    refusal(body(tensor([2, 3], [[1, 2, 3], [4, 5]])))
    check_inference_request(body(tensor([2, 3], [[1, 2, 3], [4, 5, 6]])), None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b'{"inputs": [', "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
        (b'{"outputs": []}', "'inputs'"),
        (body(), "'inputs'"),
        (body(*[tensor([1], [1.0], name=f"i{i}") for i in range(MAX_INPUTS + 1)]), "limit"),
        (body({"name": "INPUT", "datatype": "FP32", "shape": [1]}), "neither 'data'"),
        (body(tensor([1], [1.0], "FP31")), "unknown datatype"),
        (
            body(tensor([4], [1.0], parameters={"shared_memory_region": "r"})),
            "shared-memory",
        ),
        (body(tensor([4], None, parameters={"binary_data_size": 16})), "needs the Inference"),
    ],
)
def test_bodies_that_are_no_inference_request_are_refused(raw, reason):
    assert reason in refusal(raw)


def test_a_key_given_twice_is_refused():
    # Triton reads the first "shape", Python the last: the checked one must be the served one.
    raw = (
        b'{"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1000000000], '
        b'"data": [1.0], "shape": [1]}]}'
    )
    assert "'shape' appears twice" in refusal(raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        # At the top, in a tensor's parameters, in an object the check does not read, with
        # whitespace before a colon, and beside a colon inside a string (more colons than
        # keys: the exact decoder decides).
        (b'{"inputs": [], "inputs": [{"name": "I"}]}', "inputs"),
        (
            b'{"inputs": [{"name": "I", "datatype": "INT8", "shape": [1], "parameters": '
            b'{"binary_data_size": 1, "binary_data_size": 9}}]}',
            "binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "I", "datatype": "INT8", "shape": [1], "data": [1]}], '
            b'"parameters": {"a": 1, "a": 2}}',
            "a",
        ),
        (b'{"inputs" : [{"name" : "I", "name" : "J"}]}', "name"),
        (b'{"inputs": [{"name": "a:b", "shape": [1], "shape": [2]}]}', "shape"),
        (b'{"inputs": [{"name": "I", "data": [{"x": 1, "x": 2}]}]}', "x"),
    ],
)
def test_a_key_given_twice_anywhere_is_refused(raw, key):
    assert f"{key!r} appears twice" in refusal(raw)


def test_colons_inside_strings_and_nested_objects_do_not_refuse_a_good_body():
    raw = body(
        tensor([2], ["a:b", '":'], "BYTES", parameters={"note": {"x": "y:z"}}),
        tensor([1], [1], "INT8", name="SECOND"),
    )
    check_inference_request(raw, None)


def test_binary_tensors_must_be_exactly_their_shapes_bytes():
    array = np.arange(8, dtype=np.float32).reshape(2, 4)
    raw, json_size = binary_request(array, "FP32")
    check_inference_request(raw, str(json_size))

    header = json.loads(raw[:json_size])
    header["inputs"][0]["shape"] = [1000000, 4]
    forged = json.dumps(header).encode()
    message = refusal(forged + raw[json_size:], str(len(forged)))
    assert "'INPUT'" in message and "byte size mismatch" in message

    header["inputs"][0]["shape"] = [2, 4]
    header["inputs"][0]["parameters"]["binary_data_size"] = 10**9
    forged = json.dumps(header).encode()
    assert "more than the 32 bytes" in refusal(forged + raw[json_size:], str(len(forged)))

    assert "more than the body" in refusal(raw, str(len(raw) + 1))
    assert "not a size" in refusal(raw, "12\r\nX: y")
    # Digits to str.isdigit, not to int(): refused as a size, not failed on.
    assert "not a size" in refusal(raw, "\xb2")


def test_binary_bytes_elements_need_their_length_prefixes():
    strings = np.array([b"ab", b"cde"], dtype=np.object_)
    raw, json_size = binary_request(strings, "BYTES")
    check_inference_request(raw, str(json_size))
    header = json.loads(raw[:json_size])
    header["inputs"][0]["shape"] = [1000]
    forged = json.dumps(header).encode()
    assert "BYTES elements" in refusal(forged + raw[json_size:], str(len(forged)))


def test_a_raw_binary_body_passes_and_an_empty_one_does_not():
    check_inference_request(struct.pack("<4f", 1, 2, 3, 4), "0")
    assert "empty" in refusal(b"", "0")


def test_compressed_bodies_are_decoded_within_the_limit():
    raw = body(tensor([1, 4], [1.0, 2.0, 3.0, 4.0]))
    assert decode_body(gzip.compress(raw), "gzip", 1024) == raw
    assert decode_body(zlib.compress(raw), "Deflate", 1024) == raw
    bomb = gzip.compress(b"0" * 10_000_000)
    with pytest.raises(GatewayError) as caught:
        decode_body(bomb, "gzip", 1024 * 1024)
    assert caught.value.status == 413
    with pytest.raises(GatewayError) as caught:
        decode_body(gzip.compress(raw)[:-8], "gzip", 1024)
    assert caught.value.status == 400
    with pytest.raises(GatewayError) as caught:
        decode_body(raw, "br", 1024)
    assert caught.value.status == 415


def sagemaker_refusal(content_type: str, body_length: int, header: str | None = None) -> str:
    with pytest.raises(GatewayError) as caught:
        sagemaker_json_length(content_type, body_length, header)
    assert (caught.value.status, caught.value.error_code) == (400, "MalformedRequest")
    return caught.value.message


def test_sagemakers_binary_content_type_gives_the_json_parts_length():
    array = np.arange(8, dtype=np.float32).reshape(2, 4)
    raw, json_size = binary_request(array, "FP32")
    length = sagemaker_json_length(f"{SAGEMAKER_BINARY_TYPE}{json_size}", len(raw), None)
    assert length == str(json_size)
    check_inference_request(raw, length)
    # Parameters after the size, and the KServe header saying the same, are fine.
    assert sagemaker_json_length(
        f"{SAGEMAKER_BINARY_TYPE}{json_size}; charset=binary", len(raw), str(json_size)
    ) == str(json_size)
    # Zero: the whole body is the one input's data, as Triton reads it.
    assert sagemaker_json_length(f"{SAGEMAKER_BINARY_TYPE}0", 16, None) == "0"


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        (f"text/plain, {SAGEMAKER_BINARY_TYPE}12", "starts with"),
        (SAGEMAKER_BINARY_TYPE, "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}-1", "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}12abc", "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}\xb2", "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}{'9' * 13}", "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}101", "more than the body's 100 bytes"),
    ],
)
def test_a_sagemaker_binary_content_type_without_a_usable_size_is_refused(content_type, reason):
    assert reason in sagemaker_refusal(content_type, 100)


def test_the_kserve_header_and_the_content_type_must_agree():
    assert "disagree" in sagemaker_refusal(f"{SAGEMAKER_BINARY_TYPE}10", 100, "12")


@pytest.mark.parametrize(
    "data",
    [
        # What orjson refuses and RapidJSON (Triton's parser) takes: read as Triton reads it.
        b"[NaN, Infinity, -Infinity, 1.0]",
        # Past 64 bits: a float for orjson, as for Triton's RapidJSON; counted all the same.
        b"[18446744073709551616, 1, 2, 3]",
    ],
)
def test_values_either_parser_takes_are_counted_alike(data):
    raw = b'{"inputs": [{"name": "I", "datatype": "FP32", "shape": [1, 4], "data": %s}]}' % data
    check_inference_request(raw, None)
    short = raw.replace(b"[1, 4]", b"[1, 5]")
    assert "holds 5 elements, 'data' has 4" in refusal(short)
