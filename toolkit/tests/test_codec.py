"""The KServe v2 codec: requests from test cases, answers back to numpy, stored results."""

import numpy as np
import pytest

from toolkit.codec import (
    TensorError,
    case_request,
    decode_response,
    describe,
    encode_request,
    tensor_from_spec,
)


def test_a_case_becomes_the_request_triton_expects():
    case = {
        "inputs": {"RAW": {"datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}},
        "expected": {"PROBABILITIES": {"data": [0.8, 0.1, 0.1]}},
    }
    request = case_request(case)
    (tensor,) = request["inputs"]
    assert tensor["name"] == "RAW" and tensor["shape"] == [1, 4] and tensor["datatype"] == "FP32"
    assert np.allclose(tensor["data"], [5.1, 3.5, 1.4, 0.2])
    assert request["outputs"] == [{"name": "PROBABILITIES"}]


def test_shape_comes_from_the_data_when_not_given():
    assert tensor_from_spec({"datatype": "INT64", "data": [[1, 2], [3, 4]]}).shape == (2, 2)
    assert tensor_from_spec({"datatype": "BYTES", "data": [["a"], ["b"]]}).shape == (2, 1)


def test_bytes_are_utf8_encoded_for_the_model_and_text_on_the_wire():
    array = tensor_from_spec({"datatype": "BYTES", "data": ["é", "b"]})
    assert array.tolist() == ["é".encode(), b"b"]
    assert encode_request({"T": array})["inputs"][0]["data"] == ["é", "b"]


def test_bad_specs_raise_a_tensor_error():
    with pytest.raises(TensorError, match="do not fill the shape"):
        tensor_from_spec({"datatype": "FP32", "shape": [3], "data": [1, 2]})
    with pytest.raises(TensorError, match="unknown data type"):
        tensor_from_spec({"datatype": "FLOAT", "data": [1]})
    with pytest.raises(TensorError, match="do not fit"):
        tensor_from_spec({"datatype": "INT32", "data": ["x"]})


def test_answers_decode_with_their_shape_and_type():
    answer = {
        "outputs": [
            {"name": "P", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]},
            {"name": "L", "datatype": "BYTES", "shape": [1], "data": ["setosa"]},
        ]
    }
    decoded = decode_response(answer)
    assert decoded["P"].dtype == np.float32 and decoded["P"].shape == (1, 3)
    assert decoded["L"].tolist() == ["setosa"]
    with pytest.raises(TensorError, match="output P"):
        decode_response({"outputs": [{"name": "P", "datatype": "FP32", "shape": [2], "data": [1]}]})


def test_describe_keeps_a_bounded_readable_copy():
    described = describe(np.arange(2000, dtype=np.int32), max_values=4)
    assert described == {
        "datatype": "INT32",
        "shape": [2000],
        "data": [0, 1, 2, 3],
        "truncated": True,
    }
    assert describe(np.array([b"x"], dtype=object))["data"] == ["x"]
