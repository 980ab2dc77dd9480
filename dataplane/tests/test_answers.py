"""Answers as SageMaker's Triton gives them: errors that name what the client asked for and
nothing of the server's disk, and binary tensors both the KServe way and SageMaker's way,
against the real tritonserver binary through the gateway."""

from __future__ import annotations

import json
import re
import tempfile
import textwrap
from pathlib import Path

import boto3
import numpy as np
import pytest
import tritonclient.http as triton_http
from botocore.config import Config

from dataplane.payload import SAGEMAKER_BINARY_TYPE
from dataplane.tests.gateway_fixtures import (
    TARGET_HEADER,
    GatewayProcess,
    infer_body,
    publish,
    python_package,
    shared_gateway,
)
from toolkit.examples import write_demo_repository
from toolkit.triton import free_port

pytestmark = pytest.mark.triton

X = [1.0, 2.0, 3.0, 4.0]
# An absolute path: a `/` that starts a word (not a URL's, not `and/or`).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/\w")
# The endpoint-and-package digest in every name the gateway chooses for a package.
SERVED_DIGEST = re.compile(r"-[0-9a-f]{8}")

# execute() fails two frames deep: Triton passes the Python traceback back to the client.
RAISING_MODEL = """
def check(request):
    raise ValueError("the frame is not a screen")


class TritonPythonModel:
    def execute(self, requests):
        return [check(request) for request in requests]
"""


@pytest.fixture(scope="module")
def gw() -> GatewayProcess:
    return shared_gateway()


def runtime_client(url: str):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def python_model_package(store: Path, name: str, version: int, model_py: str) -> str:
    """Publish `<name>_<version>.tar.gz`: one Python model (FP32 INPUT/OUTPUT [4])."""
    with tempfile.TemporaryDirectory(prefix="berth-pkg-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(
            textwrap.dedent(
                f"""
                name: "{name}"
                backend: "python"
                max_batch_size: 8
                input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
                output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
                instance_group [ {{ kind: KIND_CPU count: 1 }} ]
                """
            )
        )
        (repo / name / "1" / "model.py").write_text(model_py)
        package = f"{name}_{version}.tar.gz"
        publish(store, package, repo)
    return package


def served_name(gw: GatewayProcess, endpoint: str, target: str) -> str:
    models = gw.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
    return next(m["served_model"] for m in models if m["target_model"] == target)


def assert_nothing_of_the_server(gw: GatewayProcess, text: str, *served: str) -> None:
    assert str(gw.root) not in text and "/tmp/" not in text
    assert not ABSOLUTE_PATH.search(text), text
    for name in served:
        assert name not in text
    assert not SERVED_DIGEST.search(text), text  # No served name, nor its prefix.


# -- errors ---------------------------------------------------------------------------------


def test_a_models_traceback_names_the_target_and_paths_inside_the_package(
    gw: GatewayProcess,
) -> None:
    package = python_model_package(gw.store("main"), "screen", 1, RAISING_MODEL)
    status, headers, data = gw.invoke("main", package, infer_body(X))
    assert (status, headers["x-amzn-ErrorType"], data["ErrorCode"]) == (
        424,
        "ModelError",
        "ModelError",
    )
    assert data["OriginalStatusCode"] == 400  # as SageMaker's Triton answers any failure
    served = served_name(gw, "main", package)
    for text in (data["Message"], data["OriginalMessage"]):
        assert "the frame is not a screen" in text
        assert "screen/1/model.py" in text  # The frames, as paths inside the package.
        assert_nothing_of_the_server(gw, text, served)
    assert data["Message"].startswith(f"Received client error (400) from model {package} ")
    # The instance, by the model's own name (Triton words it "model instance" or "model").
    assert "'screen_0_0'" in data["OriginalMessage"]


def test_an_ensemble_steps_error_names_the_target_and_the_step(gw: GatewayProcess) -> None:
    store = gw.store("main")
    with tempfile.TemporaryDirectory(prefix="berth-pkg-") as tmp:
        repo = write_demo_repository(Path(tmp) / "repo", name_prefix="acc")
        (repo / "acc_preprocess" / "1" / "model.py").write_text(RAISING_MODEL)
        publish(store, "acc_1.tar.gz", repo)
    raw = json.dumps(
        {"inputs": [{"name": "RAW", "datatype": "FP32", "shape": [1, 4], "data": X}]}
    ).encode()
    client = runtime_client(gw.url)
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="main", TargetModel="acc_1.tar.gz", Body=raw)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    message = error["OriginalMessage"]
    assert "in ensemble 'acc_1.tar.gz'" in message
    assert "'acc_preprocess_0_0'" in message
    assert "acc_preprocess/1/model.py" in message
    assert_nothing_of_the_server(gw, message, served_name(gw, "main", "acc_1.tar.gz"))

    # Triton's own 400 (an input the ensemble lacks) names the target too.
    status, _, data = gw.invoke("main", "acc_1.tar.gz", infer_body(X))
    assert (status, data["OriginalStatusCode"]) == (424, 400)
    assert data["OriginalMessage"] == "unexpected inference input 'INPUT' for model 'acc_1.tar.gz'"


def test_a_model_that_fails_to_load_names_the_target_not_the_server(gw: GatewayProcess) -> None:
    store = gw.store("main")
    missing_import = python_model_package(store, "unloadable", 1, "import no_such_module_here\n")
    status, headers, data = gw.invoke("main", missing_import, infer_body(X))
    assert (status, headers["x-amzn-ErrorType"], data["OriginalStatusCode"]) == (
        424,
        "ModelError",
        500,
    )
    for text in (data["Message"], data["OriginalMessage"]):
        assert f"Failed to load model {missing_import}" in text
        assert "No module named 'no_such_module_here'" in text
        assert "unloadable/1/model.py" in text
        assert_nothing_of_the_server(gw, text)
    assert missing_import not in gw.loaded("main")

    # Loaded through the admin API (the portal shows the reason to the package's owner).
    status, data = gw.send_json("POST", f"/admin/endpoints/main/models/{missing_import}/load", {})
    assert (status, data["ErrorCode"], data["OriginalStatusCode"]) == (424, "ModelError", 500)
    assert "unloadable/1/model.py" in data["OriginalMessage"]
    assert_nothing_of_the_server(gw, data["Message"])


def test_a_package_missing_from_a_local_store_is_named_not_the_store(gw: GatewayProcess) -> None:
    status, headers, data = gw.invoke("main", "nowhere_1.tar.gz", infer_body(X))
    assert (status, headers["x-amzn-ErrorType"], data["ErrorCode"]) == (
        400,
        "ValidationError",
        "ModelNotFound",
    )
    assert "Could not find model data for nowhere_1.tar.gz" in data["Message"]
    assert str(gw.store("main")) not in data["Message"]
    assert_nothing_of_the_server(gw, data["Message"])


def test_a_package_missing_from_an_s3_store_is_named_not_the_bucket(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    aws_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=aws_env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="secret-models")
        with GatewayProcess(tmp_path / "gw", [], env=aws_env) as cloud:
            status, _ = cloud.send_json(
                "PUT",
                "/admin/endpoints/cloud",
                {"store": "s3://secret-models/prod", "memory_budget_bytes": 10**9},
            )
            assert status == 201
            client = runtime_client(cloud.url)
            with pytest.raises(client.exceptions.ValidationError) as caught:
                client.invoke_endpoint(
                    EndpointName="cloud", TargetModel="gone_1.tar.gz", Body=infer_body(X)
                )
            error = caught.value.response
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert error["Error"]["Code"] == "ValidationError"
            message = error["Error"]["Message"]
            assert "Could not find model data for gone_1.tar.gz" in message
            assert "secret-models" not in message and "s3://" not in message
    finally:
        server.stop()


# -- binary tensors -------------------------------------------------------------------------


def binary_request(x: np.ndarray, *, binary_output: bool = True) -> tuple[bytes, int]:
    tensor = triton_http.InferInput("INPUT", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    wanted = triton_http.InferRequestedOutput("OUTPUT", binary_data=binary_output)
    return triton_http.InferenceServerClient.generate_request_body([tensor], outputs=[wanted])


def test_boto3_sends_and_reads_binary_tensors_in_sagemakers_content_type(
    gw: GatewayProcess,
) -> None:
    package = python_package(gw.store("main"), "sagebinary", 1, scale=3.0)
    x = np.array([[1.5, 2.5, 3.5, 4.5], [0.5, 0.25, 8.0, -1.0]], dtype=np.float32)
    body, json_size = binary_request(x)
    client = runtime_client(gw.url)
    response = client.invoke_endpoint(
        EndpointName="main",
        TargetModel=package,
        Body=body,
        ContentType=f"{SAGEMAKER_BINARY_TYPE}{json_size}",
    )
    content_type = response["ContentType"]
    assert content_type.startswith(SAGEMAKER_BINARY_TYPE)
    header_length = int(content_type[len(SAGEMAKER_BINARY_TYPE) :])
    payload = response["Body"].read()
    result = triton_http.InferenceServerClient.parse_response_body(
        payload, header_length=header_length
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), x * 3)
    assert result.get_response()["model_name"] == "sagebinary"
    # SageMaker's Triton says the length in the Content-Type only.
    headers = {k.lower() for k in response["ResponseMetadata"]["HTTPHeaders"]}
    assert "inference-header-content-length" not in headers

    # Binary inputs, JSON outputs: the answer is plain JSON, as SageMaker's Triton sends it.
    body, json_size = binary_request(x, binary_output=False)
    response = client.invoke_endpoint(
        EndpointName="main",
        TargetModel=package,
        Body=body,
        ContentType=f"{SAGEMAKER_BINARY_TYPE}{json_size}",
    )
    assert response["ContentType"] == "application/json"
    answer = json.loads(response["Body"].read())
    assert answer["outputs"][0]["data"] == (x * 3).ravel().tolist()


def test_a_json_request_for_binary_outputs_is_answered_in_sagemakers_content_type(
    gw: GatewayProcess,
) -> None:
    package = python_package(gw.store("main"), "jsonbinary", 1, scale=2.0)
    body = json.dumps(
        {
            "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": X}],
            "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, payload = gw.request(
        "POST",
        "/endpoints/main/invocations",
        body,
        {TARGET_HEADER: package, "Content-Type": "application/json"},
    )
    assert status == 200, payload
    assert headers["Content-Type"].startswith(SAGEMAKER_BINARY_TYPE)
    result = triton_http.InferenceServerClient.parse_response_body(
        payload, header_length=int(headers["Content-Type"][len(SAGEMAKER_BINARY_TYPE) :])
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), np.array([X], np.float32) * 2)


def test_the_kserve_header_way_is_answered_the_kserve_way(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "kservebinary", 1, scale=2.0)
    x = np.array([[1.0, -2.0, 3.0, -4.0]], dtype=np.float32)
    body, json_size = binary_request(x)
    status, headers, payload = gw.request(
        "POST",
        "/endpoints/main/invocations",
        body,
        {
            TARGET_HEADER: package,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(json_size),
        },
    )
    assert status == 200, payload
    assert not headers["Content-Type"].startswith(SAGEMAKER_BINARY_TYPE)
    result = triton_http.InferenceServerClient.parse_response_body(
        payload, header_length=int(headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), x * 2)
    assert result.get_response()["model_name"] == "kservebinary"


def test_a_sagemaker_binary_request_with_a_wrong_size_is_refused_before_any_load(
    gw: GatewayProcess,
) -> None:
    package = python_package(gw.store("main"), "sagewrong", 1, scale=2.0)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    body, json_size = binary_request(x)
    client = runtime_client(gw.url)
    for content_type, reason in (
        (f"{SAGEMAKER_BINARY_TYPE}{len(body) + 1}", "more than the body"),
        (f"{SAGEMAKER_BINARY_TYPE}abc", "not a size"),
        (f"{SAGEMAKER_BINARY_TYPE}{json_size - 3}", "not JSON"),
    ):
        with pytest.raises(client.exceptions.ValidationError) as caught:
            client.invoke_endpoint(
                EndpointName="main", TargetModel=package, Body=body, ContentType=content_type
            )
        error = caught.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Error"]["Code"] == "ValidationError"
        assert reason in error["Error"]["Message"]
    assert package not in gw.loaded("main")


def test_a_compressed_sagemaker_binary_body_is_sized_after_decoding(gw: GatewayProcess) -> None:
    import gzip

    package = python_package(gw.store("main"), "sagezipped", 1, scale=2.0)
    x = np.array([[4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    body, json_size = binary_request(x)
    status, headers, payload = gw.request(
        "POST",
        "/endpoints/main/invocations",
        gzip.compress(body),
        {
            TARGET_HEADER: package,
            # As SageMaker's Triton reads it: the size is of the decoded body's JSON part.
            "Content-Type": f"{SAGEMAKER_BINARY_TYPE}{json_size}",
            "Content-Encoding": "gzip",
        },
    )
    assert status == 200, payload
    result = triton_http.InferenceServerClient.parse_response_body(
        payload, header_length=int(headers["Content-Type"][len(SAGEMAKER_BINARY_TYPE) :])
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), x * 2)
