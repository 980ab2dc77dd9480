"""The SageMaker target: InvokeEndpoint signed with SigV4, against moto's server."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from moto.moto_api import recorder
from moto.server import ThreadedMotoServer

from loadgen.launcher import GeneratorProcess
from loadgen.tests.util import of, request, run_to_end, stage_summary

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDLOADGENTEST",
    "AWS_SECRET_ACCESS_KEY": "loadgen-test-secret",
    "AWS_SESSION_TOKEN": "loadgen-test-token",
}


@pytest.fixture
def moto_server(tmp_path):
    recording = tmp_path / "recording.jsonl"
    previous = recorder._location
    recorder._location = str(recording)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(
        urllib.request.Request(f"{url}/moto-api/recorder/start-recording", method="POST")
    ).read()
    try:
        yield url, recording
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{url}/moto-api/recorder/stop-recording", method="POST")
        ).read()
        server.stop()
        recorder._location = previous


def test_invoke_endpoint_signed_with_sigv4(moto_server):
    url, recording = moto_server
    spec = {
        "target": {
            "kind": "sagemaker",
            "region": "eu-west-1",
            "endpoint": "berth-staging",
            "endpoint_url": url,
        },
        "requests": [request("demo_1.tar.gz", b'{"inputs": [1]}')],
        "stages": [{"rate": 20, "duration_s": 1}],
        "max_duration_s": 60,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENV)
    with GeneratorProcess(spec, env=env) as gen:
        events = run_to_end(gen)
    (stage,) = of(events, "stage")
    assert stage["ok"] == 20, stage["errors"]
    assert stage_summary(stage)["count"] == 20

    recorded = [json.loads(line) for line in recording.read_text().splitlines()]
    invocations = [r for r in recorded if r["url"].endswith("/endpoints/berth-staging/invocations")]
    assert len(invocations) == 20
    headers = {k.lower(): v for k, v in invocations[0]["headers"].items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDLOADGENTEST/")
    assert "/eu-west-1/sagemaker/aws4_request" in headers["authorization"]
    assert "x-amzn-sagemaker-target-model" in headers["authorization"]  # Signed header.
    assert headers["x-amzn-sagemaker-target-model"] == "demo_1.tar.gz"
    assert headers["x-amz-security-token"] == "loadgen-test-token"
    assert headers["x-amz-date"]


def test_no_credentials_is_a_spec_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    spec = {
        "target": {"kind": "sagemaker", "region": "eu-west-1", "endpoint": "e"},
        "requests": [request()],
        "stages": [{"rate": 1, "duration_s": 1}],
    }
    with GeneratorProcess(spec, env=env) as gen:
        events = run_to_end(gen, timeout=30)
        assert gen.wait(10) == 2
    assert events[0]["event"] == "error" and events[0]["field"] == "target"
