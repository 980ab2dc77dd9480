"""How load-test figures read on the pages: latencies in ms, ratios in percent, the
generator's CPU as a share of one core."""

from __future__ import annotations

from django import template

register = template.Library()
DASH = "—"


@register.filter
def ms(value) -> str:
    """A latency in milliseconds: 3 significant figures below 100 ms, whole above."""
    if value is None:
        return DASH
    value = float(value)
    return f"{value:.0f} ms" if value >= 100 else f"{value:.3g} ms"


@register.filter
def percent(value, digits: int = 1) -> str:
    """A ratio (0.25) as a percentage (25.0 %)."""
    if value is None:
        return DASH
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def cpu_share(stage) -> str:
    """The generator's CPU over a stage as a percentage of one core (CPU s / wall s)."""
    if stage is None or not stage.duration_seconds:
        return DASH
    return f"{stage.generator_cpu_seconds / stage.duration_seconds * 100:.0f} % of a core"


@register.filter
def cpu_per_request(stage) -> str:
    """The generator's CPU per request it sent, in microseconds."""
    if stage is None or not stage.sent:
        return DASH
    return f"{stage.generator_cpu_seconds / stage.sent * 1e6:.0f} µs"


@register.filter
def errors_by_kind(errors) -> str:
    """{"503": 2, "timeout": 1} as "503: 2, timeout: 1"."""
    if not errors:
        return "0"
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items()))


@register.filter
def words(value) -> str:
    """A code ("find_max") as words ("find max")."""
    return str(value or "").replace("_", " ")


@register.filter
def isotime(value) -> str:
    """An ISO 8601 timestamp as evidence stores it, to the second ("2026-12-02 03:58:23")."""
    return str(value or "")[:19].replace("T", " ")


@register.filter
def share(value) -> str:
    """A utilization already in percent (83.7 -> "84 %"); a dash when not measured."""
    return DASH if value is None else f"{float(value):.0f} %"
