"""A bad spec is refused with its field and reason: one error line, exit code 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from loadgen.launcher import GeneratorProcess
from loadgen.spec import MAX_BODIES_BYTES, MAX_RATE, SpecError, parse
from loadgen.tests.util import ROOT, http_spec, request, run_to_end

URL = "http://127.0.0.1:9"


def _with(**changes):
    spec = http_spec(URL, [(10, 1)])
    spec.update(changes)
    return spec


BAD = [
    ("stages[0].rate", _with(stages=[{"rate": 0, "duration_s": 1}])),
    ("stages[0].rate", _with(stages=[{"rate": MAX_RATE * 2, "duration_s": 1}])),
    ("stages[0].duration_s", _with(stages=[{"rate": 1, "duration_s": -1}])),
    ("stages", _with(stages=[])),
    ("stages", _with(stages=[{"rate": 1, "duration_s": 100}], max_duration_s=10)),
    ("requests", _with(requests=[])),
    ("requests", _with(requests=[request()] * 10_001)),
    ("requests", _with(requests=[request(body=b"x" * (MAX_BODIES_BYTES // 2 + 1))] * 2)),
    ("requests[0].body_b64", _with(requests=[{**request(), "body_b64": "***"}])),
    ("requests[0].target_model", _with(requests=[{**request(), "target_model": ""}])),
    ("requests", _with(requests=[request(weight=0)])),
    ("requests[0].target_model", _with(requests=[request(model="modèle.tar.gz")])),
    ("target.kind", _with(target={"kind": "ftp"})),
    ("target.url", _with(target={"kind": "http", "url": "https://x", "endpoint": "e"})),
    (
        "target.headers",
        _with(
            target={"kind": "http", "url": URL, "endpoint": "e", "headers": {"X-A": "1\r\nX-B: 2"}}
        ),
    ),
    ("arrival", _with(arrival="bursty")),
    ("max_in_flight", _with(max_in_flight=0)),
    ("timeout_s", _with(timeout_s="30")),
    ("stop.error_rate", _with(stop={"error_rate": 2})),
]


@pytest.mark.parametrize(("field", "spec"), BAD, ids=[f for f, _ in BAD])
def test_parse_names_the_field(field, spec):
    with pytest.raises(SpecError) as caught:
        parse(spec)
    assert caught.value.field == field


def test_a_good_spec_parses():
    spec = parse(
        _with(requests=[request("a", b"{}", 2.0), request("b", b"", 1.0)], arrival="poisson")
    )
    assert [r.target_model for r in spec.requests] == ["a", "b"]
    assert spec.requests[0].body == b"{}" and spec.arrival == "poisson"
    assert spec.stop_error_rate == 1.0 and spec.stop_min_requests == 20


@pytest.mark.parametrize(
    "spec",
    [_with(stages=[{"rate": 0, "duration_s": 1}]), _with(target={"kind": "ftp"})],
    ids=["bad-rate", "bad-target"],
)
def test_the_process_answers_a_bad_spec_with_one_error_line_and_exit_2(spec):
    with GeneratorProcess(spec) as gen:
        events = run_to_end(gen, timeout=30)
        assert gen.wait(10) == 2
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["field"] and events[0]["reason"]


@pytest.mark.parametrize(
    "line", [b"not json\n", b"[1, 2]\n", b"\n"], ids=["not-json", "not-object", "empty"]
)
def test_a_line_that_is_no_spec_exits_2(line):
    done = subprocess.run(
        [sys.executable, "-m", "loadgen"], input=line, capture_output=True, cwd=ROOT, timeout=30
    )
    assert done.returncode == 2
    (event,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert event["event"] == "error"


def test_bodies_are_decoded_from_base64():
    body = bytes(range(256))
    spec = parse(_with(requests=[{**request(), "body_b64": base64.b64encode(body).decode()}]))
    assert spec.requests[0].body == body


def test_a_spec_line_over_the_bound_is_refused_before_parsing():
    from loadgen.spec import MAX_SPEC_BYTES

    line = b'{"pad": "' + b"x" * (MAX_SPEC_BYTES + 1024) + b'"}\n'
    done = subprocess.run(
        [sys.executable, "-m", "loadgen"], input=line, capture_output=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 2
    (event,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert event["field"] == "spec" and "longer than" in event["reason"]
