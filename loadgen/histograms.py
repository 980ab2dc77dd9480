"""The one codec for the load generator's latency histograms (HDR histograms, `hdrh`).

Latencies are recorded in microseconds from 1 us to 120 s with 3 significant digits, so any
two histograms, from any generator or interval, merge exactly; they travel as the base64
text `HdrHistogram.encode()` writes (compressed counts: a few hundred bytes).
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000
SIGNIFICANT_DIGITS = 3
#: Bound on an encoded histogram accepted by `decode` (a full one encodes to a few KiB).
MAX_ENCODED_CHARS = 1 << 20
#: At most this many points in a percentile curve.
CURVE_POINTS = 100


def new() -> HdrHistogram:
    """An empty histogram with the project's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_us(h: HdrHistogram, value_us: float) -> None:
    """Record one latency, clamped into the histogram's range (never silently dropped)."""
    v = int(value_us)
    h.record_value(LOWEST_US if v < LOWEST_US else HIGHEST_US if v > HIGHEST_US else v)


def encode(h: HdrHistogram) -> str:
    return h.encode().decode("ascii")


def decode(text: str | bytes) -> HdrHistogram:
    """Decode an encoded histogram; an empty text is an empty histogram.

    Raises ValueError for text that is too long or not an encoded histogram.
    """
    if not text:
        return new()
    if len(text) > MAX_ENCODED_CHARS:
        raise ValueError(f"encoded histogram longer than {MAX_ENCODED_CHARS} characters")
    raw = text.encode("ascii") if isinstance(text, str) else text
    try:
        decoded = HdrHistogram.decode(raw)
    except Exception as exc:  # hdrh raises several kinds for bad input.
        raise ValueError(f"not an encoded HDR histogram: {exc}") from exc
    # Re-home into the project's layout so every histogram merges with every other.
    h = new()
    h.add(decoded)
    return h


def merge(texts: Iterable[str]) -> HdrHistogram:
    """One histogram holding every value of the encoded histograms `texts`."""
    total = new()
    for text in texts:
        if text:
            total.add(decode(text))
    return total


def _ms(value_us: float) -> float:
    return round(value_us / 1000.0, 3)


def summary(h: HdrHistogram) -> dict[str, float | int | None]:
    """Count, p50/p90/p95/p99/max and mean in milliseconds (None when empty)."""
    count = h.get_total_count()
    if not count:
        return {
            "count": 0,
            "p50_ms": None,
            "p90_ms": None,
            "p95_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "mean_ms": None,
        }
    values = h.get_percentile_to_value_dict([50, 90, 95, 99])
    return {
        "count": count,
        "p50_ms": _ms(values[50]),
        "p90_ms": _ms(values[90]),
        "p95_ms": _ms(values[95]),
        "p99_ms": _ms(values[99]),
        "max_ms": _ms(h.get_max_value()),
        "mean_ms": _ms(h.get_mean_value()),
    }


def percentile_curve(h: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, ms) points for a percentile plot, at most `CURVE_POINTS` of them.

    HdrHistogram's percentile iteration (10 ticks per half distance) gives points that crowd
    towards the tail, where a latency plot needs them; thinned evenly when there are more.
    """
    if not h.get_total_count():
        return []
    points: list[tuple[float, float]] = []
    for item in h.get_percentile_iterator(10):
        points.append((round(item.percentile, 6), _ms(item.value_iterated_to)))
        if item.percentile >= 100.0 or len(points) > 10_000:
            break
    if len(points) > CURVE_POINTS:
        step = (len(points) - 1) / (CURVE_POINTS - 1)
        points = [points[round(i * step)] for i in range(CURVE_POINTS)]
    return points
