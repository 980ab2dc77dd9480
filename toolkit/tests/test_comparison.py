"""The one test-case comparison: the rules its docstring decides, case by case."""

import math

import numpy as np
import pytest

from toolkit.comparison import DEFAULT_ATOL, compare_outputs, compare_tensor


def f32(*values):
    return np.array(values, dtype=np.float32)


def test_within_default_tolerance_passes_and_outside_fails():
    assert compare_tensor("P", {"data": [0.5, 0.25]}, f32(0.5 + DEFAULT_ATOL / 2, 0.25)) is None
    why = compare_tensor("P", {"data": [0.5, 0.25]}, f32(0.5, 0.26))
    assert why.startswith("P[1]: got 0.26, expected 0.25")
    assert "atol=1e-05 + rtol=0.0001" in why


def test_case_tolerances_override_the_defaults():
    assert compare_tensor("P", {"data": [1.0], "atol": 0.1}, f32(1.05)) is None
    assert compare_tensor("P", {"data": [100.0], "atol": 0, "rtol": 0.01}, f32(100.5)) is None
    assert compare_tensor("P", {"data": [100.0], "atol": 0, "rtol": 0.001}, f32(100.5))


def test_nan_matches_only_nan():
    assert compare_tensor("P", {"data": [math.nan, 1.0]}, f32(np.nan, 1.0)) is None
    assert "got 0.5, expected nan" in compare_tensor("P", {"data": [math.nan]}, f32(0.5))
    assert "got nan, expected 0.5" in compare_tensor("P", {"data": [0.5]}, f32(np.nan))


def test_infinities_match_only_the_same_sign():
    assert compare_tensor("P", {"data": [math.inf, -math.inf]}, f32(np.inf, -np.inf)) is None
    assert compare_tensor("P", {"data": [math.inf]}, f32(-np.inf))
    assert compare_tensor("P", {"data": [math.inf]}, f32(3.4e38))


def test_shape_is_exact_when_given_and_count_only_otherwise():
    answer = np.zeros((2, 3), dtype=np.float32)
    assert compare_tensor("P", {"shape": [2, 3], "data": [0] * 6}, answer) is None
    assert compare_tensor("P", {"shape": [3, 2], "data": [0] * 6}, answer) == (
        "P: shape [2, 3], expected [3, 2]."
    )
    assert compare_tensor("P", {"data": [[0, 0], [0, 0], [0, 0]]}, answer) is None
    assert compare_tensor("P", {"data": [0] * 5}, answer) == "P: 6 values, expected 5."


def test_datatype_is_checked_when_named():
    assert compare_tensor("P", {"datatype": "FP32", "data": [1]}, f32(1)) is None
    assert compare_tensor("P", {"datatype": "FP64", "data": [1]}, f32(1)) == (
        "P: data type FP32, expected FP64."
    )


def test_integers_and_booleans_compare_exactly_unless_a_tolerance_is_set():
    assert compare_tensor("C", {"data": [3, 4]}, np.array([3, 4], dtype=np.int64)) is None
    assert compare_tensor("C", {"data": [3]}, np.array([4], dtype=np.int64)) == (
        "C[0]: got 4, expected 3."
    )
    assert compare_tensor("C", {"data": [3], "atol": 1}, np.array([4], dtype=np.int32)) is None
    big = 2**62 + 1
    assert compare_tensor("C", {"data": [big - 1]}, np.array([big], dtype=np.int64))
    assert compare_tensor("B", {"data": [True, False]}, np.array([True, False])) is None
    assert compare_tensor("B", {"data": [True]}, np.array([False]))


def test_bytes_compare_as_text():
    answer = np.array([b"setosa", b"virginica"], dtype=object)
    assert compare_tensor("L", {"data": ["setosa", "virginica"]}, answer) is None
    assert compare_tensor("L", {"data": ["setosa", "versicolor"]}, answer) == (
        "L[1]: got 'virginica', expected 'versicolor'."
    )
    assert compare_tensor("L", {"data": ["1.0"]}, f32(1.0)) == "L[0]: got 1.0, expected '1.0'."


def test_a_bare_list_is_the_expected_data():
    assert compare_tensor("P", [0.5], f32(0.5)) is None


@pytest.mark.parametrize(
    ("actual", "problems"),
    [
        ({"P": f32(1.0)}, []),
        ({}, ["P: not in the answer."]),
        ({"P": f32(2.0)}, ["P[0]: got 2, expected 1"]),
    ],
)
def test_compare_outputs_lists_each_problem(actual, problems):
    found = compare_outputs({"P": {"data": [1.0]}}, actual)
    assert len(found) == len(problems)
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want)
