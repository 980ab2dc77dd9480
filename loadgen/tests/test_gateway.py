"""The generator against the real data plane: the gateway and its Triton, a Python model."""

from __future__ import annotations

import base64

import pytest

from dataplane.tests.gateway_fixtures import infer_body, python_package
from loadgen.launcher import GeneratorProcess
from loadgen.tests.util import http_spec, of, run_to_end, stage_summary

ENDPOINT = "loadgen"


@pytest.fixture(scope="module")
def served(gateway):
    """A Python model (OUTPUT = INPUT * 2) live and loaded on an endpoint of the gateway."""
    store = gateway.store(ENDPOINT)
    status, data = gateway.send_json("PUT", f"/admin/endpoints/{ENDPOINT}", {"store": str(store)})
    assert status in (200, 201), data
    package = python_package(store, "lgdouble", 1, scale=2.0)
    status, data = gateway.send_json(
        "POST", f"/admin/endpoints/{ENDPOINT}/models/{package}/load", {}
    )
    assert status == 200, data
    return gateway, package


def _spec(gateway, package: str, rate: float, duration: float):
    spec = http_spec(gateway.url, [(rate, duration)], endpoint=ENDPOINT)
    spec["target"]["endpoint"] = ENDPOINT
    spec["requests"] = [
        {
            "target_model": package,
            "content_type": "application/json",
            "body_b64": base64.b64encode(infer_body([1.0, 2.0, 3.0, 4.0])).decode(),
            "weight": 1.0,
        }
    ]
    return spec


def test_the_gateway_answers_every_request_at_the_offered_rate(served):
    gateway, package = served
    before = gateway.metric(ENDPOINT, "Invocations", "Sum", target_model=package) or 0
    with GeneratorProcess(_spec(gateway, package, 50, 2)) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["scheduled"] == stage["sent"] == 100
    assert stage["ok"] == 100, stage["errors"]
    assert stage["by_model"] == {package: {"ok": 100, "errors": 0}}
    assert stage_summary(stage)["p50_ms"] > 0
    after = gateway.metric(ENDPOINT, "Invocations", "Sum", target_model=package)
    assert after - before == 100


def test_an_unknown_model_counts_under_the_gateways_status(served):
    gateway, _ = served
    with GeneratorProcess(_spec(gateway, "nothing_9.tar.gz", 20, 1)) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["ok"] == 0 and stage["completed"] == 20
    (status,) = [k for k, v in stage["errors"].items() if v]
    assert status.isdigit() and 400 <= int(status) < 500
