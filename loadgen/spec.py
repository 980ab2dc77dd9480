"""The generator's spec: parsed, bounded and checked before any load is generated.

A spec is one JSON object (the first line on the generator's stdin). Every size and count
is bounded before it is used, and a bad spec raises `SpecError` naming the field and the
reason, so the generator can answer with one error line and exit code 2, having sent
nothing.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Bounds of one generator process (a load test past them fans out over more processes).
MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_RATE = 50_000.0
MIN_RATE = 0.01
MAX_STAGES = 1_000
MAX_DURATION_S = 24 * 3600.0
MAX_REQUESTS = 10_000
MAX_BODIES_BYTES = 8 * 1024 * 1024
MAX_HEADERS = 32
MAX_IN_FLIGHT = 20_000
MAX_CONNECTIONS = 10_000
MAX_TIMEOUT_S = 300.0
MAX_START_AHEAD_S = 300.0
MIN_REPORT_INTERVAL_S = 0.1
MAX_REPORT_INTERVAL_S = 60.0
ARRIVALS = ("uniform", "poisson")


class SpecError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """The data plane gateway's SageMaker-runtime route, over TCP or a Unix socket."""

    url: str
    endpoint: str
    unix_path: str | None
    headers: dict[str, str]
    kind: str = "http"


@dataclass(frozen=True, slots=True)
class SageMakerTarget:
    """SageMaker's runtime API (`InvokeEndpoint`), or a stand-in at `endpoint_url`."""

    region: str
    endpoint: str
    endpoint_url: str | None
    kind: str = "sagemaker"


@dataclass(frozen=True, slots=True)
class RequestSpec:
    target_model: str
    content_type: str
    body: bytes
    weight: float


@dataclass(frozen=True, slots=True)
class Stage:
    rate: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Spec:
    target: HttpTarget | SageMakerTarget
    requests: tuple[RequestSpec, ...]
    stages: tuple[Stage, ...]
    arrival: str
    seed: int
    start_at: float | None
    timeout_s: float
    max_in_flight: int
    max_connections: int
    report_interval_s: float
    max_duration_s: float
    stop_error_rate: float
    stop_min_requests: int


def _number(
    raw: dict, field: str, default: Any, low: float, high: float, *, integer: bool = False
) -> Any:
    value = raw.get(field.rsplit(".", 1)[-1])
    if value is None:  # Absent or null: the default (None where the field is required).
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(field, "must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise SpecError(field, f"must be between {low:g} and {high:g}")
    if integer:
        if int(value) != value:
            raise SpecError(field, "must be a whole number")
        return int(value)
    return float(value)


def _text(
    raw: dict, field: str, *, max_len: int = 256, required: bool = True, ascii: bool = False
) -> str | None:
    value = raw.get(field.rsplit(".", 1)[-1])
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(field, "must be a non-empty string")
    if len(value) > max_len:
        raise SpecError(field, f"longer than {max_len} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise SpecError(field, "holds control characters")
    if ascii and not value.isascii():  # It travels in an HTTP header.
        raise SpecError(field, "must be ASCII")
    return value


def _target(raw: Any) -> HttpTarget | SageMakerTarget:
    if not isinstance(raw, dict):
        raise SpecError("target", "must be an object")
    kind = raw.get("kind")
    if kind == "http":
        url = _text(raw, "target.url", max_len=2048)
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SpecError("target.url", "must be an http:// URL with a host")
        if parts.path not in ("", "/") or parts.query:
            raise SpecError("target.url", "must have no path or query (the route is fixed)")
        unix_path = _text(raw, "target.unix_path", max_len=4096, required=False)
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
            raise SpecError("target.headers", f"must be an object of at most {MAX_HEADERS}")
        for name, value in headers.items():
            if not isinstance(name, str) or not name or not name.isascii():
                raise SpecError("target.headers", "names must be non-empty ASCII strings")
            if any(c in name for c in ":\r\n \t") or len(name) > 128:
                raise SpecError("target.headers", f"bad header name {name[:40]!r}")
            if (
                not isinstance(value, str)
                or len(value) > 4096
                or not value.isascii()
                or any(ord(c) < 0x20 and c != "\t" for c in value)
            ):
                raise SpecError("target.headers", f"bad value for {name[:40]!r}")
        return HttpTarget(
            url=url.rstrip("/"),
            endpoint=_text(raw, "target.endpoint"),
            unix_path=unix_path,
            headers=dict(headers),
        )
    if kind == "sagemaker":
        endpoint_url = _text(raw, "target.endpoint_url", max_len=2048, required=False)
        if endpoint_url is not None:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SpecError("target.endpoint_url", "must be an http(s):// URL with a host")
        region = _text(raw, "target.region", max_len=64)
        if not all(c.isalnum() or c == "-" for c in region):
            raise SpecError("target.region", "must be a region name such as eu-west-1")
        return SageMakerTarget(
            region=region, endpoint=_text(raw, "target.endpoint"), endpoint_url=endpoint_url
        )
    raise SpecError("target.kind", "must be 'http' or 'sagemaker'")


def _requests(raw: Any) -> tuple[RequestSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("requests", "must be a non-empty list")
    if len(raw) > MAX_REQUESTS:
        raise SpecError("requests", f"at most {MAX_REQUESTS} requests")
    total = 0
    out = []
    for i, item in enumerate(raw):
        field = f"requests[{i}]"
        if not isinstance(item, dict):
            raise SpecError(field, "must be an object")
        encoded = item.get("body_b64", "")
        if not isinstance(encoded, str):
            raise SpecError(f"{field}.body_b64", "must be a base64 string")
        if (len(encoded) * 3) // 4 + total > MAX_BODIES_BYTES + 3:
            raise SpecError("requests", f"bodies over {MAX_BODIES_BYTES} bytes in all")
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SpecError(f"{field}.body_b64", f"not base64: {exc}") from exc
        total += len(body)
        if total > MAX_BODIES_BYTES:
            raise SpecError("requests", f"bodies over {MAX_BODIES_BYTES} bytes in all")
        weight = _number(item, f"{field}.weight", 1.0, 0.0, 1e9)
        out.append(
            RequestSpec(
                target_model=_text(item, f"{field}.target_model", max_len=1024, ascii=True),
                content_type=_text(item, f"{field}.content_type", max_len=256, ascii=True),
                body=body,
                weight=weight,
            )
        )
    if not sum(r.weight for r in out) > 0:
        raise SpecError("requests", "the weights must not all be zero")
    return tuple(out)


def _stages(raw: Any) -> tuple[Stage, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("stages", "must be a non-empty list")
    if len(raw) > MAX_STAGES:
        raise SpecError("stages", f"at most {MAX_STAGES} stages")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SpecError(f"stages[{i}]", "must be an object")
        rate = _number(item, f"stages[{i}].rate", None, MIN_RATE, MAX_RATE)
        duration = _number(item, f"stages[{i}].duration_s", None, 0.01, MAX_DURATION_S)
        out.append(Stage(rate, duration))
    return tuple(out)


def parse(raw: Any, *, now: float | None = None) -> Spec:
    """A checked `Spec` from the decoded JSON object `raw`; raises `SpecError`."""
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a JSON object")
    now = time.time() if now is None else now
    target = _target(raw.get("target"))
    requests = _requests(raw.get("requests"))
    stages = _stages(raw.get("stages"))
    arrival = raw.get("arrival", "uniform")
    if arrival not in ARRIVALS:
        raise SpecError("arrival", f"must be one of {', '.join(ARRIVALS)}")
    seed = _number(raw, "seed", 1, -(2**63), 2**63 - 1, integer=True)
    start_at = raw.get("start_at")
    if start_at is not None:
        # In the past (a generator that started late): it starts at once, and says when.
        start_at = _number(raw, "start_at", None, 0.0, now + MAX_START_AHEAD_S)
    max_duration_s = _number(raw, "max_duration_s", 600.0, 0.01, MAX_DURATION_S)
    planned = sum(s.duration_s for s in stages)
    if planned > max_duration_s + 1e-9:
        raise SpecError(
            "stages", f"last {planned:g} s in all, over max_duration_s ({max_duration_s:g} s)"
        )
    stop = raw.get("stop") or {}
    if not isinstance(stop, dict):
        raise SpecError("stop", "must be an object")
    return Spec(
        target=target,
        requests=requests,
        stages=stages,
        arrival=arrival,
        seed=seed,
        start_at=start_at,
        timeout_s=_number(raw, "timeout_s", 30.0, 0.001, MAX_TIMEOUT_S),
        max_in_flight=_number(raw, "max_in_flight", 512, 1, MAX_IN_FLIGHT, integer=True),
        max_connections=_number(raw, "max_connections", 256, 1, MAX_CONNECTIONS, integer=True),
        report_interval_s=_number(
            raw, "report_interval_s", 1.0, MIN_REPORT_INTERVAL_S, MAX_REPORT_INTERVAL_S
        ),
        max_duration_s=max_duration_s,
        stop_error_rate=_number(stop, "stop.error_rate", 1.0, 0.0, 1.0),
        stop_min_requests=_number(stop, "stop.min_requests", 20, 1, 10**9, integer=True),
    )
