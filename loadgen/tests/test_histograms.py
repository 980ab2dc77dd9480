"""The histogram codec the generator and the portal share."""

from __future__ import annotations

import pytest

from loadgen import histograms


def _of(values_us):
    h = histograms.new()
    for v in values_us:
        histograms.record_us(h, v)
    return h


def test_encoded_histograms_merge_exactly():
    a = _of(range(1_000, 2_000))  # 1..2 ms
    b = _of(range(100_000, 101_000))  # 100..101 ms
    merged = histograms.merge([histograms.encode(a), histograms.encode(b), ""])
    summary = histograms.summary(merged)
    assert summary["count"] == 2_000
    assert summary["p50_ms"] == pytest.approx(2.0, rel=0.01)
    assert summary["p99_ms"] == pytest.approx(101.0, rel=0.01)
    assert summary["max_ms"] == pytest.approx(101.0, rel=0.01)


def test_summary_of_an_empty_histogram_has_no_values():
    summary = histograms.summary(histograms.merge([]))
    assert summary["count"] == 0
    assert all(summary[k] is None for k in ("p50_ms", "p99_ms", "max_ms", "mean_ms"))
    assert histograms.percentile_curve(histograms.new()) == []


def test_values_out_of_range_are_clamped_not_dropped():
    h = _of([0, 500e6])
    assert h.get_total_count() == 2
    assert histograms.summary(h)["max_ms"] == pytest.approx(120_000, rel=0.01)


def test_percentile_curve_is_bounded_and_rising():
    curve = histograms.percentile_curve(_of(range(1, 1_000_000, 7)))
    assert 10 <= len(curve) <= histograms.CURVE_POINTS
    assert curve[-1][0] == 100.0
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(curve, curve[1:], strict=False))


@pytest.mark.parametrize("text", ["garbage", "x" * (histograms.MAX_ENCODED_CHARS + 1)])
def test_decode_refuses_what_is_no_histogram(text):
    with pytest.raises(ValueError):
        histograms.decode(text)
