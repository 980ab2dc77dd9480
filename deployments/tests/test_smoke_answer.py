"""The smoke test judges an answer by the same comparison as the registry's test step."""

import json
import math

import pytest

from deployments.backends.base import DeploymentStepError, StepContext, check_smoke_answer


def context(lines):
    return StepContext(
        deployment=None, log=lambda line, **_: lines.append(line), heartbeat=lambda: None
    )


def answer(shape, data):
    return json.dumps(
        {"outputs": [{"name": "P", "datatype": "FP32", "shape": shape, "data": data}]}
    ).encode()


def test_an_expected_nan_passes_when_the_answer_has_nan():
    lines = []
    case = {"name": "nan", "expected": {"P": {"data": [math.nan, 1.0]}}}
    body = b'{"outputs": [{"name": "P", "datatype": "FP32", "shape": [2], "data": [NaN, 1.0]}]}'
    assert (
        check_smoke_answer(context(lines), case, body, target_model="m_1.tar.gz")["case"] == "nan"
    )
    assert lines == ["Smoke test 'nan' passed: the answer matches."]


def test_a_wrong_shape_fails_as_it_does_in_the_test_step():
    case = {"name": "shape", "expected": {"P": {"shape": [1, 2], "data": [0.5, 0.5]}}}
    with pytest.raises(DeploymentStepError, match=r"P: shape \[2, 1\], expected \[1, 2\]"):
        check_smoke_answer(context([]), case, answer([2, 1], [0.5, 0.5]), target_model="m")


def test_a_malformed_answer_tensor_fails_with_its_reason():
    case = {"name": "c", "expected": {"P": {"data": [0.5]}}}
    with pytest.raises(DeploymentStepError, match="malformed tensor"):
        check_smoke_answer(context([]), case, answer([3], [0.5]), target_model="m")
