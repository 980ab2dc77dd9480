"""A load test's configuration: parsed and validated once, for the API's JSON and the
browser's form alike (`parse_config`), bounded by the settings and by the endpoint's
environment, and stored as `LoadTestConfig.as_dict()` on the load test.

The shape (every key optional except where said):

    {"models": ["demo_1.tar.gz"],                       # default: every live model
     "mix": {"kind": "uniform" | "one" | "top_n" | "zipf" | "replay",
             "top_n": 1, "top_share": 0.9, "zipf_s": 1.1, "replay_minutes": 60},
     "payloads": {"source": "test_cases" | "upload"},
     "pattern": {"kind": "stairs" | "constant" | "find_max",
                 "start_rps", "step_rps", "growth", "step_seconds", "ceiling_rps",  # stairs,
                 "rps", "seconds"},                                                 # constant
     "slo": {"percentile": "p95" | "p99", "latency_ms": 500, "max_error_rate": 0.01},
     "stop": {"error_rate": 0.5, "max_seconds": null},
     "arrival": "uniform" | "poisson", "generators": 1, "safety_factor": 0.5,
     "peak_rps": null}

`mix` may also be given as its kind alone ("uniform"). Errors name the field's path
(`pattern.ceiling_rps`) so the form and the API point at the input at fault.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

from portal.errors import ServiceError
from portal.parsers import JSONInputError, json_loads_bounded

from .choices import Mix, Pattern, PayloadSource, SloPercentile

# A request body of an upload is a KServe v2 request: a few levels deep.
UPLOAD_MAX_DEPTH = 12
# find_max with a growth factor: at least this much higher per stage.
MIN_GROWTH = 1.05
MAX_GROWTH = 10.0
MIN_STAGE_SECONDS = 1.0
ARRIVALS = ("uniform", "poisson")
TOP_LEVEL_KEYS = {
    "models",
    "mix",
    "payloads",
    "pattern",
    "slo",
    "stop",
    "arrival",
    "generators",
    "safety_factor",
    "peak_rps",
    "seed",
}


@dataclass
class LoadTestConfig:
    """A validated configuration. `stages` are the planned (rate, seconds) pairs; find-max
    stops early once the SLO breaks or throughput stops rising."""

    models: list[str]
    mix: dict[str, Any]
    payloads: dict[str, Any]
    pattern: dict[str, Any]
    slo: dict[str, Any]
    stop: dict[str, Any]
    arrival: str = "uniform"
    generators: int = 1
    safety_factor: float = 0.5
    peak_rps: float | None = None
    seed: int = 1
    stages: list[dict[str, float]] = field(default_factory=list)
    #: The upload's requests, as the generator takes them (not stored in as_dict()).
    uploaded: list[dict[str, Any]] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("uploaded")
        return data

    @property
    def planned_seconds(self) -> float:
        return sum(stage["duration_s"] for stage in self.stages)

    @property
    def max_rps(self) -> float:
        return max((stage["rate"] for stage in self.stages), default=0.0)


def _err(message: str, field_path: str) -> ServiceError:
    return ServiceError(message, field=field_path)


def _section(data: dict, key: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(f"{key} must be an object.", key)
    return value


def _number(
    section: dict,
    key: str,
    path: str,
    *,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
    required: bool = False,
    integer: bool = False,
) -> float | None:
    value = section.get(key, default)
    if value is None or value == "":
        if required:
            raise _err("This field is required.", path)
        return default
    if isinstance(value, bool):
        raise _err("A number is required.", path)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise _err("A number is required.", path) from exc
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise _err("A finite number is required.", path)
    if integer:
        if float(value) != int(value):
            raise _err("A whole number is required.", path)
        value = int(value)
    if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
        raise _err(f"Must be {'above' if exclusive_min else 'at least'} {minimum:g}.", path)
    if maximum is not None and value > maximum:
        raise _err(f"Must be at most {maximum:g}.", path)
    return value


def _choice(section: dict, key: str, path: str, choices, default: str) -> str:
    value = section.get(key, default)
    if value in (None, ""):
        value = default
    if value not in choices:
        raise _err(f"Choose one of: {', '.join(choices)}.", path)
    return str(value)


def live_target_models(endpoint) -> list[str]:
    """The package names live on `endpoint` (`<model>_<version>.tar.gz`), as deployments
    name target models, in a stable order (by model name)."""
    from deployments.models import LiveVersion

    live = LiveVersion.objects.filter(endpoint=endpoint).select_related("version__model")
    return [lv.version.package_name for lv in live.order_by("model__name")]


def _stages(pattern: dict, kind: str, max_rps: float) -> list[dict[str, float]]:
    limit = settings.BERTH_LOADTEST_MAX_STAGES
    if kind == Pattern.CONSTANT:
        rps = _number(pattern, "rps", "pattern.rps", required=True, minimum=0, exclusive_min=True)
        seconds = _number(
            pattern, "seconds", "pattern.seconds", required=True, minimum=MIN_STAGE_SECONDS
        )
        if rps > max_rps:
            raise _err(f"At most {max_rps:g} requests/s on this endpoint.", "pattern.rps")
        return [{"rate": float(rps), "duration_s": float(seconds)}]
    start = _number(
        pattern, "start_rps", "pattern.start_rps", required=True, minimum=0, exclusive_min=True
    )
    seconds = _number(
        pattern, "step_seconds", "pattern.step_seconds", required=True, minimum=MIN_STAGE_SECONDS
    )
    ceiling = _number(
        pattern, "ceiling_rps", "pattern.ceiling_rps", required=True, minimum=0, exclusive_min=True
    )
    if ceiling < start:
        raise _err("The ceiling must be at least the starting rate.", "pattern.ceiling_rps")
    if ceiling > max_rps:
        raise _err(
            f"At most {max_rps:g} requests/s on this endpoint (its environment's limit).",
            "pattern.ceiling_rps",
        )
    step = _number(pattern, "step_rps", "pattern.step_rps", minimum=0, exclusive_min=True)
    growth = None
    if kind == Pattern.FIND_MAX:
        growth = _number(
            pattern, "growth", "pattern.growth", minimum=MIN_GROWTH, maximum=MAX_GROWTH
        )
    if step is None and growth is None:
        if ceiling == start:
            step = start
        else:
            raise _err(
                "Give the step (requests/s)"
                + (" or a growth factor." if kind == Pattern.FIND_MAX else "."),
                "pattern.step_rps",
            )
    if step is not None and growth is not None:
        raise _err("Give a step or a growth factor, not both.", "pattern.growth")
    rates: list[float] = []
    rate = float(start)
    while rate <= ceiling * (1 + 1e-9):
        rates.append(round(rate, 6))
        if len(rates) > limit:
            raise _err(
                f"At most {limit} stages: raise the step or lower the ceiling.",
                "pattern.step_rps" if step is not None else "pattern.growth",
            )
        rate = rate + step if step is not None else rate * growth
    return [{"rate": r, "duration_s": float(seconds)} for r in rates]


def parse_config(data: dict, *, endpoint, upload: bytes | None) -> LoadTestConfig:
    """Validate a load test's configuration for `endpoint`, or raise ServiceError naming the
    field. `upload` is the JSON-lines file of request bodies when payloads come from one."""
    if not isinstance(data, dict):
        raise _err("The configuration must be an object.", "config")
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise _err(f"Unknown fields: {', '.join(sorted(unknown))}.", sorted(unknown)[0])
    environment = endpoint.environment

    # Models and mix.
    live = live_target_models(endpoint)
    models = data.get("models")
    if models in (None, [], ""):
        models = list(live)
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise _err("A list of target models (package names).", "models")
    if len(models) != len(set(models)):
        raise _err("Each target model once.", "models")
    not_live = [m for m in models if m not in live]
    if not_live:
        raise _err(
            f"Not live on {endpoint.name}: {', '.join(not_live[:5])}. Live: "
            + (", ".join(live) or "nothing (deploy a version first)."),
            "models",
        )
    if not models:
        raise _err(f"Nothing is live on {endpoint.name}: deploy a version first.", "models")
    raw_mix = data.get("mix")
    mix_section = {"kind": raw_mix} if isinstance(raw_mix, str) else _section(data, "mix")
    kind = _choice(mix_section, "kind", "mix.kind", Mix.values, Mix.UNIFORM)
    mix: dict[str, Any] = {"kind": kind}
    if kind == Mix.ONE and len(models) != 1:
        raise _err("The mix 'one model' needs exactly one target model.", "models")
    if kind == Mix.TOP_N:
        mix["top_n"] = _number(
            mix_section,
            "top_n",
            "mix.top_n",
            default=1,
            minimum=1,
            maximum=len(models),
            integer=True,
        )
        mix["top_share"] = _number(
            mix_section, "top_share", "mix.top_share", default=0.9, minimum=0, maximum=1
        )
    if kind == Mix.ZIPF:
        mix["zipf_s"] = _number(
            mix_section,
            "zipf_s",
            "mix.zipf_s",
            default=1.1,
            minimum=0,
            exclusive_min=True,
            maximum=10,
        )
    if kind == Mix.REPLAY:
        mix["replay_minutes"] = _number(
            mix_section,
            "replay_minutes",
            "mix.replay_minutes",
            default=60,
            minimum=1,
            maximum=7 * 24 * 60,
            integer=True,
        )

    # Pattern and bounds.
    pattern_section = _section(data, "pattern")
    pattern_kind = _choice(pattern_section, "kind", "pattern.kind", Pattern.values, Pattern.STAIRS)
    generators = int(
        _number(
            data,
            "generators",
            "generators",
            default=1,
            minimum=1,
            maximum=settings.BERTH_LOADTEST_MAX_GENERATORS,
            integer=True,
        )
    )
    max_rps = float(
        min(
            environment.loadtest_max_rps,
            settings.BERTH_LOADTEST_MAX_RPS_PER_GENERATOR * generators,
        )
    )
    stages = _stages(pattern_section, pattern_kind, max_rps)
    pattern = {"kind": pattern_kind}
    for key in ("start_rps", "step_rps", "growth", "step_seconds", "ceiling_rps", "rps", "seconds"):
        if pattern_section.get(key) not in (None, ""):
            pattern[key] = float(pattern_section[key])

    stop_section = _section(data, "stop")
    stop = {
        "error_rate": _number(
            stop_section,
            "error_rate",
            "stop.error_rate",
            default=0.5,
            minimum=0,
            exclusive_min=True,
            maximum=1,
        ),
        "max_seconds": _number(
            stop_section,
            "max_seconds",
            "stop.max_seconds",
            minimum=1,
            maximum=environment.loadtest_max_seconds,
        ),
    }
    planned = sum(stage["duration_s"] for stage in stages)
    limit_seconds = min(
        environment.loadtest_max_seconds, stop["max_seconds"] or environment.loadtest_max_seconds
    )
    if planned > limit_seconds:
        raise _err(
            f"The pattern plans {planned:g} s of load; at most {limit_seconds:g} s here "
            + ("(stop.max_seconds)." if stop["max_seconds"] else "(the environment's limit)."),
            "pattern.step_seconds" if pattern_kind != Pattern.CONSTANT else "pattern.seconds",
        )

    slo_section = _section(data, "slo")
    slo = {
        "percentile": _choice(
            slo_section, "percentile", "slo.percentile", SloPercentile.values, SloPercentile.P99
        ),
        "latency_ms": _number(
            slo_section,
            "latency_ms",
            "slo.latency_ms",
            required=True,
            minimum=0,
            exclusive_min=True,
            maximum=600_000,
        ),
        "max_error_rate": _number(
            slo_section, "max_error_rate", "slo.max_error_rate", default=0.01, minimum=0, maximum=1
        ),
    }

    payload_section = _section(data, "payloads")
    source = _choice(
        payload_section,
        "source",
        "payloads.source",
        PayloadSource.values,
        PayloadSource.UPLOAD if upload else PayloadSource.TEST_CASES,
    )
    uploaded = None
    if source == PayloadSource.UPLOAD:
        if not upload:
            raise _err("Upload the request bodies (JSON lines).", "upload")
        uploaded = parse_upload(upload, models=models)
    elif upload:
        raise _err("An upload was given but payloads.source is test_cases.", "payloads.source")
    else:
        missing = [m for m in models if not case_request_bodies(live_version_of(endpoint, m))]
        if missing:
            raise _err(
                f"No test cases to send to {', '.join(missing)}: upload request bodies instead.",
                "payloads.source",
            )

    return LoadTestConfig(
        models=models,
        mix=mix,
        payloads={"source": source, **({"lines": len(uploaded)} if uploaded else {})},
        pattern=pattern,
        slo=slo,
        stop=stop,
        arrival=_choice(data, "arrival", "arrival", ARRIVALS, "uniform"),
        generators=generators,
        safety_factor=float(
            _number(
                data,
                "safety_factor",
                "safety_factor",
                default=0.5,
                minimum=0,
                exclusive_min=True,
                maximum=1,
            )
        ),
        peak_rps=_number(data, "peak_rps", "peak_rps", minimum=0, exclusive_min=True),
        seed=int(_number(data, "seed", "seed", default=1, minimum=0, maximum=2**31, integer=True)),
        stages=stages,
        uploaded=uploaded,
    )


# Payloads -----------------------------------------------------------------------------


def live_version_of(endpoint, target_model: str):
    """The version live on `endpoint` whose package is `target_model`, or None."""
    from deployments.models import LiveVersion

    for live in LiveVersion.objects.filter(endpoint=endpoint).select_related("version__model"):
        if live.version.package_name == target_model:
            return live.version
    return None


def case_request_bodies(version) -> list[bytes]:
    """The request bodies of `version`'s test cases that call its entry model, encoded as
    the deployment's smoke test encodes them (toolkit.codec.case_request)."""
    from toolkit.codec import TensorError, case_request

    if version is None:
        return []
    summary = version.repository_summary or {}
    cases = summary.get("tests") or version.test_cases or []
    entry = summary.get("entry_model")
    bodies = []
    for case in cases:
        if not isinstance(case, dict) or not case.get("inputs"):
            continue
        if case.get("model") and entry and case.get("model") != entry:
            continue
        try:
            bodies.append(json.dumps(case_request(case)).encode())
        except (TensorError, TypeError, ValueError, KeyError):
            continue
    return bodies


def parse_upload(upload: bytes, *, models: list[str]) -> list[dict[str, Any]]:
    """The uploaded JSON lines as requests: `{"target_model", "content_type", "body_b64"}`.
    A line without a target model is sent to each model of the test. Bounded in bytes and
    lines before anything is parsed; each line's depth is checked before it is walked."""
    max_bytes = settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES
    max_lines = settings.BERTH_LOADTEST_MAX_UPLOAD_LINES
    if len(upload) > max_bytes:
        raise _err(
            f"The upload is {len(upload)} bytes; at most {max_bytes} are accepted.", "upload"
        )
    lines = [line for line in upload.split(b"\n") if line.strip()]
    if not lines:
        raise _err("The upload holds no request.", "upload")
    if len(lines) > max_lines:
        raise _err(f"The upload holds {len(lines)} lines; at most {max_lines}.", "upload")
    requests = []
    for number, line in enumerate(lines, start=1):
        where = f"Line {number}: "
        try:
            item = json_loads_bounded(line, max_depth=UPLOAD_MAX_DEPTH)
        except JSONInputError as exc:
            raise _err(where + str(exc), "upload") from exc
        if not isinstance(item, dict):
            raise _err(where + "each line is a JSON object.", "upload")
        extra = set(item) - {"target_model", "body", "body_b64", "content_type"}
        if extra:
            raise _err(where + f"unknown keys {', '.join(sorted(extra))}.", "upload")
        target = item.get("target_model")
        if target is not None and target not in models:
            raise _err(where + f"{target!r} is not a target model of this test.", "upload")
        content_type = item.get("content_type") or "application/json"
        if not isinstance(content_type, str) or len(content_type) > 200:
            raise _err(where + "content_type must be a short text.", "upload")
        if ("body" in item) == ("body_b64" in item):
            raise _err(where + "give body (JSON) or body_b64, one of them.", "upload")
        if "body" in item:
            if not isinstance(item["body"], dict):
                raise _err(where + "body must be a JSON object.", "upload")
            body_b64 = base64.b64encode(json.dumps(item["body"]).encode()).decode()
        else:
            if not isinstance(item["body_b64"], str):
                raise _err(where + "body_b64 must be base64 text.", "upload")
            try:
                base64.b64decode(item["body_b64"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _err(where + "body_b64 is not valid base64.", "upload") from exc
            body_b64 = item["body_b64"]
        for model in [target] if target else models:
            requests.append(
                {"target_model": model, "content_type": content_type, "body_b64": body_b64}
            )
    covered = {r["target_model"] for r in requests}
    missing = [m for m in models if m not in covered]
    if missing:
        raise _err(f"No uploaded request for {', '.join(missing)}.", "upload")
    return requests


# The mix --------------------------------------------------------------------------------


def mix_weights(
    mix: dict[str, Any], models: list[str], shares: dict[str, float] | None = None
) -> dict[str, float]:
    """Each target model's share of the traffic (summing to 1). Models are ranked in the
    order given: the first is the most popular for top-N and Zipf. `shares` are the replayed
    per-model invocation counts (replay); models without traffic get none, and with no
    traffic at all the mix falls back to uniform."""
    n = len(models)
    kind = mix.get("kind", Mix.UNIFORM)
    if kind == Mix.TOP_N and int(mix.get("top_n", 1)) < n:
        top = int(mix.get("top_n", 1))
        share = float(mix.get("top_share", 0.9))
        raw = [share / top if i < top else (1 - share) / (n - top) for i in range(n)]
    elif kind == Mix.ZIPF:
        s = float(mix.get("zipf_s", 1.1))
        raw = [1 / (rank**s) for rank in range(1, n + 1)]
    elif kind == Mix.REPLAY and shares and sum(shares.get(m, 0) for m in models) > 0:
        raw = [max(0.0, float(shares.get(m, 0))) for m in models]
    else:
        raw = [1.0] * n
    total = sum(raw)
    return {model: value / total for model, value in zip(models, raw, strict=True)}
