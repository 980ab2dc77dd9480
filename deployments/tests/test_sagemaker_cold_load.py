"""Cold loads on a SageMaker multi-model endpoint: the runtime answers ModelNotReadyException
(429) while it downloads and loads a target model, for up to 360 s. The runtime here is a
real HTTP server on localhost speaking the sagemaker-runtime protocol (botocore parses its
answers exactly as it parses AWS's); the rest of AWS is moto."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from deployments import services
from deployments.backends.base import DeploymentStepError
from deployments.backends.sagemaker import (
    COLD_LOAD_MAX_WAIT_SECONDS,
    COLD_LOAD_SECONDS,
    invoke_when_loaded,
)
from deployments.choices import DeploymentState
from portal import aws

from .factories import packaged_version, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db


class ScriptedRuntime:
    """A sagemaker-runtime that answers InvokeEndpoint with `not_ready` ModelNotReadyException
    answers, then 200 with `body` (or 429 for ever when `body` is None)."""

    def __init__(self, *, not_ready: int, body: dict | None):
        self.not_ready = not_ready
        self.body = body
        self.requests: list[dict] = []
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                runtime.requests.append(
                    {
                        "path": self.path,
                        "target_model": self.headers.get("X-Amzn-SageMaker-Target-Model"),
                        "body": self.rfile.read(length),
                    }
                )
                if runtime.body is None or len(runtime.requests) <= runtime.not_ready:
                    payload = json.dumps({"message": "Model is still loading"}).encode()
                    self.send_response(429)
                    self.send_header("x-amzn-ErrorType", "ModelNotReadyException")
                else:
                    payload = json.dumps(runtime.body).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def answer_for(case: dict) -> dict:
    return {
        "outputs": [
            {
                "name": name,
                "datatype": "FP32",
                "shape": [len(spec["data"])],
                "data": np.asarray(spec["data"]).tolist(),
            }
            for name, spec in case["expected"].items()
        ]
    }


@pytest.fixture
def credentials(monkeypatch, settings):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.AWS_ENDPOINT_URL = ""


def test_the_runtime_client_waits_70_seconds_for_an_answer(settings):
    settings.AWS_ENDPOINT_URL = ""
    config = aws.sagemaker_runtime("us-east-1").meta.config
    assert config.read_timeout == 70
    assert config.retries["mode"] == "standard"


def test_model_not_ready_is_waited_out_then_answered(credentials, monkeypatch):
    with ScriptedRuntime(not_ready=2, body={"ok": True}) as runtime:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        waits = []
        answer = invoke_when_loaded(
            aws.sagemaker_runtime("us-east-1"),
            on_wait=lambda attempt, wait, waited, message: waits.append((attempt, wait, message)),
            EndpointName="sm-staging",
            TargetModel="demo_1.tar.gz",
            ContentType="application/json",
            Body=b"{}",
        )
    assert json.loads(answer["Body"].read()) == {"ok": True}
    # Two refusals, each waited out once (botocore's standard mode did not retry them).
    assert [(a, w) for a, w, _ in waits] == [(1, 1.0), (2, 2.0)]
    assert waits[0][2] == "Model is still loading"
    assert len(runtime.requests) == 3
    assert {r["target_model"] for r in runtime.requests} == {"demo_1.tar.gz"}
    assert runtime.requests[0]["path"] == "/endpoints/sm-staging/invocations"


def test_waiting_is_bounded_by_sagemakers_loading_time(credentials, monkeypatch):
    clock = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    with ScriptedRuntime(not_ready=0, body=None) as runtime:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        with pytest.raises(DeploymentStepError, match="still not loaded") as error:
            invoke_when_loaded(
                aws.sagemaker_runtime("us-east-1"),
                on_wait=lambda *args: None,
                sleep=sleep,
                clock=lambda: clock[0],
                EndpointName="sm-staging",
                TargetModel="demo_1.tar.gz",
                Body=b"{}",
            )
    assert sum(slept) <= COLD_LOAD_SECONDS
    assert sum(slept) > COLD_LOAD_SECONDS - COLD_LOAD_MAX_WAIT_SECONDS
    assert max(slept) == COLD_LOAD_MAX_WAIT_SECONDS
    assert len(runtime.requests) == len(slept) + 1
    assert "360 s" in str(error.value)


def test_a_cold_load_does_not_fail_the_deployment_and_the_log_shows_the_wait(
    aws, scientist, monkeypatch
):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    with ScriptedRuntime(not_ready=1, body=answer_for(version.test_cases[0])) as runtime:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        deployment = services.deployment_start(actor=scientist, endpoint=endpoint, version=version)
        result = run(deployment)

    assert result.state == DeploymentState.SUCCEEDED, result.error
    assert len(runtime.requests) == 2
    messages = [line.message for line in result.log_lines]
    waits = [m for m in messages if "ModelNotReadyException" in m]
    assert len(waits) == 1
    assert "demo_ensemble_1.tar.gz is still loading on sm-staging" in waits[0]
    assert "asking again in 1 s" in waits[0]
