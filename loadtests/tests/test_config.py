"""A load test's configuration: bad input answers with the field at fault; bounds come
from the settings and the endpoint's environment; the mix's weights; uploads."""

import base64
import json

import pytest

from deployments.models import Endpoint
from loadtests.config import case_request_bodies, mix_weights, parse_config
from portal.errors import ServiceError

from .factories import config, live_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging():
    return Endpoint.objects.select_related("environment").get(name="local-staging")


@pytest.fixture
def version(staging):
    return live_version(staging)


def field_of(data, endpoint, upload=None) -> str:
    with pytest.raises(ServiceError) as error:
        parse_config(data, endpoint=endpoint, upload=upload)
    return error.value.field


def test_a_valid_stairs_plan(staging, version):
    parsed = parse_config(config(), endpoint=staging, upload=None)
    assert parsed.models == [version.package_name]
    assert parsed.stages == [{"rate": 5.0, "duration_s": 1.0}, {"rate": 10.0, "duration_s": 1.0}]
    assert parsed.payloads == {"source": "test_cases"}
    assert parsed.as_dict()["slo"]["percentile"] == "p99"
    json.dumps(parsed.as_dict())  # stored as JSON


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pattern": {"kind": "stairs", "start_rps": 5, "step_seconds": 1}}, "pattern.ceiling_rps"),
        (
            {
                "pattern": {
                    "kind": "stairs",
                    "start_rps": -1,
                    "step_rps": 1,
                    "step_seconds": 1,
                    "ceiling_rps": 5,
                }
            },
            "pattern.start_rps",
        ),
        (
            {
                "pattern": {
                    "kind": "stairs",
                    "start_rps": 5,
                    "step_rps": 1,
                    "step_seconds": 1,
                    "ceiling_rps": 1e6,
                }
            },
            "pattern.ceiling_rps",
        ),
        (
            {
                "pattern": {
                    "kind": "stairs",
                    "start_rps": 1,
                    "step_rps": 0.01,
                    "step_seconds": 1,
                    "ceiling_rps": 100,
                }
            },
            "pattern.step_rps",
        ),
        ({"pattern": {"kind": "constant", "rps": 5, "seconds": 10_000}}, "pattern.seconds"),
        (
            {
                "pattern": {
                    "kind": "find_max",
                    "start_rps": 1,
                    "growth": 1.0,
                    "step_seconds": 1,
                    "ceiling_rps": 8,
                }
            },
            "pattern.growth",
        ),
        ({"pattern": {"kind": "warp"}}, "pattern.kind"),
        ({"slo": {"percentile": "p50", "latency_ms": 5}}, "slo.percentile"),
        ({"slo": {"latency_ms": "fast"}}, "slo.latency_ms"),
        ({"slo": {"percentile": "p99"}}, "slo.latency_ms"),
        ({"stop": {"error_rate": 2}}, "stop.error_rate"),
        ({"generators": 99}, "generators"),
        ({"models": ["nope_1.tar.gz"]}, "models"),
        ({"mix": {"kind": "top_n", "top_n": 5}}, "mix.top_n"),
        ({"mix": "chaos"}, "mix.kind"),
        ({"payloads": {"source": "upload"}}, "upload"),
        ({"surprise": 1}, "surprise"),
        (
            {
                "pattern": {
                    "kind": "stairs",
                    "start_rps": True,
                    "step_rps": 1,
                    "step_seconds": 1,
                    "ceiling_rps": 5,
                }
            },
            "pattern.start_rps",
        ),
    ],
)
def test_bad_input_names_the_field(staging, version, overrides, field):
    assert field_of(config(**overrides), staging) == field


def test_rates_and_seconds_are_bounded_by_the_environment(staging, version):
    staging.environment.loadtest_max_rps = 8
    staging.environment.loadtest_max_seconds = 5
    assert field_of(config(), staging) == "pattern.ceiling_rps"
    data = config(pattern={"kind": "constant", "rps": 5, "seconds": 6})
    assert field_of(data, staging) == "pattern.seconds"
    data = config(pattern={"kind": "constant", "rps": 5, "seconds": 5})
    assert parse_config(data, endpoint=staging, upload=None).planned_seconds == 5


def test_find_max_with_a_growth_factor(staging, version):
    data = config(
        pattern={
            "kind": "find_max",
            "start_rps": 2,
            "growth": 2,
            "step_seconds": 1,
            "ceiling_rps": 16,
        }
    )
    parsed = parse_config(data, endpoint=staging, upload=None)
    assert [s["rate"] for s in parsed.stages] == [2, 4, 8, 16]


def test_one_model_mix_needs_exactly_one(staging, version):
    live_version(staging, name="other_model")
    assert field_of(config(mix="one"), staging) == "models"
    parsed = parse_config(
        config(mix="one", models=[version.package_name]), endpoint=staging, upload=None
    )
    assert parsed.models == [version.package_name]


def test_nothing_live_is_refused(staging):
    assert field_of(config(), staging) == "models"


def test_mix_weights():
    models = ["a", "b", "c", "d"]
    assert mix_weights({"kind": "uniform"}, models) == {m: 0.25 for m in models}
    top = mix_weights({"kind": "top_n", "top_n": 1, "top_share": 0.9}, models)
    assert top["a"] == pytest.approx(0.9) and top["d"] == pytest.approx(0.1 / 3)
    zipf = mix_weights({"kind": "zipf", "zipf_s": 1.0}, models)
    assert zipf["a"] / zipf["b"] == pytest.approx(2) and sum(zipf.values()) == pytest.approx(1)
    replay = mix_weights({"kind": "replay"}, models, {"a": 30, "b": 10})
    assert replay == {"a": 0.75, "b": 0.25, "c": 0.0, "d": 0.0}
    assert mix_weights({"kind": "replay"}, models, None) == {m: 0.25 for m in models}


def test_test_cases_are_encoded_as_the_smoke_test_does(version):
    bodies = case_request_bodies(version)
    assert bodies
    request = json.loads(bodies[0])
    assert request["inputs"][0]["datatype"] and request["inputs"][0]["shape"]


def test_upload_lines(staging, version):
    target = version.package_name
    raw = base64.b64encode(b'{"inputs": []}').decode()
    upload = (
        json.dumps({"target_model": target, "body": {"inputs": []}})
        + "\n"
        + json.dumps({"body_b64": raw, "content_type": "application/octet-stream"})
        + "\n"
    ).encode()
    parsed = parse_config(config(payloads={"source": "upload"}), endpoint=staging, upload=upload)
    assert len(parsed.uploaded) == 2
    assert parsed.uploaded[1] == {
        "target_model": target,
        "content_type": "application/octet-stream",
        "body_b64": raw,
    }


@pytest.mark.parametrize(
    "upload",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"body": {"inputs": []}, "body_b64": "AA=="}\n',
        b'{"body_b64": "***"}\n',
        b'{"target_model": "elsewhere_1.tar.gz", "body": {}}\n',
        b'{"body": ' + b"[" * 50 + b"]" * 50 + b"}\n",
        b"\n\n",
    ],
)
def test_bad_uploads_are_refused_with_the_line(staging, version, upload):
    assert field_of(config(payloads={"source": "upload"}), staging, upload) == "upload"


def test_uploads_are_bounded_before_parsing(staging, version, settings):
    settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES = 100
    upload = (json.dumps({"body": {"x": "y" * 200}}) + "\n").encode()
    with pytest.raises(ServiceError, match="at most 100"):
        parse_config(config(payloads={"source": "upload"}), endpoint=staging, upload=upload)
    settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES = 10_000
    settings.BERTH_LOADTEST_MAX_UPLOAD_LINES = 2
    upload = b'{"body": {}}\n' * 3
    with pytest.raises(ServiceError, match="at most 2"):
        parse_config(config(payloads={"source": "upload"}), endpoint=staging, upload=upload)
