"""The gateway against the real tritonserver binary, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import time
from pathlib import Path

import aiohttp
import boto3
import pytest
from botocore.config import Config

from dataplane.tests.gateway_fixtures import (
    TARGET_HEADER,
    GatewayProcess,
    bls_sibling_package,
    failing_package,
    infer_body,
    python_package,
    shared_gateway,
)

pytestmark = pytest.mark.triton

X = [1.0, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def gw() -> GatewayProcess:
    return shared_gateway()


def runtime_client(gw: GatewayProcess):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=gw.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
    )


def output(data: dict) -> list[float]:
    return data["outputs"][0]["data"]


def served_name(gw: GatewayProcess, endpoint: str, target: str) -> str:
    models = gw.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
    return next(m["served_model"] for m in models if m["target_model"] == target)


def test_ping_and_status(gw: GatewayProcess) -> None:
    assert gw.get("/ping")[0] == 200
    status = gw.status()
    assert status["triton"]["ready"] is True
    assert status["gpu"] is False
    assert {"main", "small", "aliased"} <= set(status["endpoints"])
    # What the gateway made while starting is exempt from collector pauses.
    assert status["python_gc"]["frozen_objects"] > 10_000


def test_boto3_invoke_endpoint_works_unchanged(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "boto", 1, scale=3.0)
    response = runtime_client(gw).invoke_endpoint(
        EndpointName="main",
        TargetModel=package,
        Body=infer_body(X),
        ContentType="application/json",
    )
    answer = json.loads(response["Body"].read())
    assert output(answer) == [3.0, 6.0, 9.0, 12.0]
    # The package's own model name, not the one it has in the gateway's repository.
    assert answer["model_name"] == "boto"
    assert response["ContentType"].startswith("application/json")
    assert response["InvokedProductionVariant"] == "AllTraffic"


def test_boto3_unknown_target_model_is_a_validation_error(gw: GatewayProcess) -> None:
    client = runtime_client(gw)
    with pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint(
            EndpointName="main", TargetModel="absent_1.tar.gz", Body=infer_body(X)
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Could not find model data for absent_1.tar.gz" in error["Error"]["Message"]


def test_boto3_model_error_carries_tritons_reason(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "boto", 2, scale=3.0)
    client = runtime_client(gw)
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(
            EndpointName="main", TargetModel=package, Body=infer_body(X, name="WRONG")
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    assert "WRONG" in error["OriginalMessage"]


def test_boto3_unknown_endpoint(gw: GatewayProcess) -> None:
    client = runtime_client(gw)
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint nowhere not found"):
        client.invoke_endpoint(EndpointName="nowhere", TargetModel="a_1.tar.gz", Body=b"{}")


async def _burst(gw: GatewayProcess, endpoint: str, target: str, n: int) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, dict]:
            async with session.post(
                f"{gw.url}/endpoints/{endpoint}/invocations",
                data=infer_body(X),
                headers={TARGET_HEADER: target, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=300),
            ) as response:
                return response.status, json.loads(await response.read())

        return await asyncio.gather(*(one() for _ in range(n)))


def test_simultaneous_cold_requests_cause_exactly_one_load(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "burst", 1, scale=5.0)
    results = asyncio.run(_burst(gw, "main", package, 32))
    assert [status for status, _ in results] == [200] * 32
    assert all(output(data) == [5.0, 10.0, 15.0, 20.0] for _, data in results)
    assert gw.triton_loads(served_name(gw, "main", package)) == 1
    assert gw.metric("main", "ModelLoadingTime", "SampleCount", package) == 1
    assert gw.metric("main", "ModelCacheHit", "SampleCount", package) == 32
    assert gw.metric("main", "ModelCacheHit", "Sum", package) == 0
    assert gw.metric("main", "ModelLoadingWaitTime", "SampleCount", package) == 32
    # The request that started the load waited for all of it; the others, which arrived
    # while it ran, waited for what was left of it (how much depends on when each arrived).
    loading = gw.metric("main", "ModelLoadingTime", "Maximum", package)
    assert gw.metric("main", "ModelLoadingWaitTime", "Maximum", package) >= loading
    assert gw.metric("main", "ModelLoadingWaitTime", "Minimum", package) > 0

    status, _, data = gw.invoke("main", package, infer_body(X))
    assert status == 200
    assert gw.metric("main", "ModelCacheHit", "Sum", package) == 1


def test_aliases_resolve_a_model_name_to_its_live_version(gw: GatewayProcess) -> None:
    store = gw.store("aliased")
    v1 = python_package(store, "flip", 1, scale=2.0)
    v2 = python_package(store, "flip", 2, scale=10.0)

    status, _, data = gw.invoke("aliased", "flip", infer_body(X))
    assert status == 400
    assert data["ErrorCode"] == "ModelNotFound"

    assert (
        gw.send_json("PUT", "/admin/endpoints/aliased/aliases/flip", {"target_model": v1})[0] == 200
    )
    status, _, data = gw.invoke("aliased", "flip", infer_body(X))
    assert (status, output(data)) == (200, [2.0, 4.0, 6.0, 8.0])
    assert json.loads((store / "aliases.json").read_text()) == {"flip": v1}

    # Deploy: flip the live pointer; the next request runs the new version.
    assert (
        gw.send_json("PUT", "/admin/endpoints/aliased/aliases/flip", {"target_model": v2})[0] == 200
    )
    status, _, data = gw.invoke("aliased", "flip", infer_body(X))
    assert (status, output(data)) == (200, [10.0, 20.0, 30.0, 40.0])
    assert gw.get("/admin/endpoints/aliased/aliases")[1]["aliases"] == {"flip": v2}

    # Rollback by writing aliases.json the way another process would: it is re-read.
    (store / "aliases.json").write_text(json.dumps({"flip": v1}))
    status, _, data = gw.invoke("aliased", "flip", infer_body(X))
    assert output(data) == [2.0, 4.0, 6.0, 8.0]

    status, data = gw.send_json(
        "PUT", "/admin/endpoints/aliased/aliases/flip", {"target_model": "flip_9.tar.gz"}
    )
    assert status == 404
    assert gw.get("/admin/endpoints/aliased/aliases")[1]["aliases"] == {"flip": v1}


def test_least_recently_used_idle_model_is_evicted_under_the_budget(gw: GatewayProcess) -> None:
    store = gw.store("small")
    ballast = 64 * 1024 * 1024
    a, b, c = (python_package(store, name, 1, ballast_bytes=ballast) for name in "abc")

    status, first = gw.send_json("POST", f"/admin/endpoints/small/models/{a}/load", {})
    assert status == 200, first
    size = first["size_bytes"]
    # The footprint is measured, not guessed: the stub process holds the ballast.
    assert size >= ballast
    budget = int(size * 2.5)
    assert gw.send_json("PUT", "/admin/endpoints/small", {"memory_budget_bytes": budget})[0] == 200

    assert gw.send_json("POST", f"/admin/endpoints/small/models/{b}/load", {})[0] == 200
    assert gw.invoke("small", a, infer_body(X))[0] == 200  # a is now more recent than b
    assert gw.invoke("small", c, infer_body(X))[0] == 200

    assert sorted(gw.loaded("small")) == sorted([a, c])
    listing = gw.get("/admin/endpoints/small/models")[1]
    assert listing["memory_used_bytes"] <= budget
    assert gw.metric("small", "ModelUnloadingTime", "SampleCount", b) == 1
    assert gw.metric("small", "LoadedModelCount", "Maximum") == 2

    # An evicted model comes back on demand.
    status, _, data = gw.invoke("small", b, infer_body(X))
    assert (status, output(data)) == (200, [2.0, 4.0, 6.0, 8.0])
    assert len(gw.loaded("small")) == 2


def test_bad_requests_get_clear_errors_and_the_gateway_keeps_serving(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "sturdy", 1, scale=2.0)
    assert gw.invoke("main", package, infer_body(X))[0] == 200

    status, headers, data = gw.invoke("main", package, b'{"inputs": [')
    assert (status, data["ErrorCode"]) == (400, "MalformedRequest")
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert "JSON" in data["Message"]
    status, _, data = gw.invoke("main", package, b'{"outputs": []}')
    assert (status, data["ErrorCode"]) == (400, "MalformedRequest")

    status, _, data = gw.invoke("main", package, infer_body(X, name="NOPE"))
    assert (status, data["OriginalStatusCode"]) == (424, 400)
    assert "NOPE" in data["OriginalMessage"]

    status, _, data = gw.invoke("main", package, infer_body([1.0, 2.0, 3.0]))
    assert (status, data["OriginalStatusCode"]) == (424, 400)
    assert "shape" in data["OriginalMessage"]

    wrong_dtype = json.dumps(
        {"inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    ).encode()
    status, _, data = gw.invoke("main", package, wrong_dtype)
    assert (status, data["OriginalStatusCode"]) == (424, 400)
    assert "INT32" in data["OriginalMessage"] or "data-type" in data["OriginalMessage"]

    status, headers, data = gw.invoke("main", package, b"x" * (1024 * 1024 + 1))
    assert (status, data["ErrorCode"]) == (413, "PayloadTooLarge")
    assert headers["x-amzn-ErrorType"] == "ValidationError"

    status, _, data = gw.invoke("main", None, infer_body(X))
    assert (status, data["ErrorCode"]) == (400, "MissingTargetModel")

    status, _, data = gw.invoke("main", "../escape.tar.gz", infer_body(X))
    assert status == 400

    status, _, data = gw.invoke("main", package, infer_body(X))
    assert (status, output(data)) == (200, [2.0, 4.0, 6.0, 8.0])
    errors_4xx = gw.metric("main", "Invocation4XXErrors", "Sum", package)
    assert errors_4xx is not None and errors_4xx >= 5


def _tar_with(members: dict[str, bytes], path: Path) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_archive_escaping_its_folder_is_refused(gw: GatewayProcess) -> None:
    store = gw.store("main")
    _tar_with(
        {"evil/config.pbtxt": b'name: "evil"', "../../../escaped.txt": b"gotcha"},
        store / "evil_1.tar.gz",
    )
    status, _, data = gw.invoke("main", "evil_1.tar.gz", infer_body(X))
    assert (status, data["ErrorCode"]) == (400, "InvalidModelData")
    assert not list(gw.root.rglob("escaped.txt"))
    assert not list(Path(gw.state_dir, "work").iterdir())


def test_package_not_matching_its_sha256_is_refused(gw: GatewayProcess) -> None:
    store = gw.store("main")
    package = python_package(store, "tampered", 1)
    (store / f"{package}.sha256").write_text("0" * 64 + "\n")
    status, _, data = gw.invoke("main", package, infer_body(X))
    assert (status, data["ErrorCode"]) == (400, "ChecksumMismatch")


def test_model_whose_initialize_raises_gets_a_model_error_with_the_reason(
    gw: GatewayProcess,
) -> None:
    store = gw.store("main")
    broken = failing_package(store, "broken", 1, "weights file is corrupt")
    good = python_package(store, "healthy", 1, scale=2.0)
    for _ in range(2):  # A failed load is not remembered as loaded: the next request retries.
        status, headers, data = gw.invoke("main", broken, infer_body(X))
        assert (status, data["ErrorCode"], data["OriginalStatusCode"]) == (424, "ModelError", 500)
        assert "weights file is corrupt" in data["Message"]
    assert broken not in gw.loaded("main")
    status, _, data = gw.invoke("main", good, infer_body(X))
    assert (status, output(data)) == (200, [2.0, 4.0, 6.0, 8.0])
    assert gw.metric("main", "Invocation5XXErrors", "Sum", broken) == 2


def test_out_of_memory_while_loading_evicts_idle_models_then_answers_507(
    gw: GatewayProcess,
) -> None:
    store = gw.store("aliased")
    idle = python_package(store, "idle", 1)
    assert gw.invoke("aliased", idle, infer_body(X))[0] == 200
    hungry = failing_package(store, "hungry", 1, "CUDA out of memory. Tried to allocate 2.00 GiB")
    status, headers, data = gw.invoke("aliased", hungry, infer_body(X))
    assert status == 507
    assert headers["x-amzn-ErrorType"] == "InsufficientMemory"
    assert "out of memory" in data["Message"]
    assert idle not in gw.loaded("aliased")
    # One retry after evicting: two loads of the package in Triton.
    prefix = "hungry_1-"
    assert gw.triton_loads(prefix) == 2


def test_two_versions_answer_side_by_side_and_one_version_on_two_endpoints(
    gw: GatewayProcess,
) -> None:
    # Both versions hold a model named "twin": each package loads into a folder of its own.
    first = python_package(gw.store("main"), "twin", 1, scale=2.0)
    second = python_package(gw.store("main"), "twin", 2, scale=3.0)
    again = python_package(gw.store("small"), "twin", 1, scale=2.0)
    for _ in range(2):
        for endpoint, package, expected in (
            ("main", first, [2.0, 4.0, 6.0, 8.0]),
            ("main", second, [3.0, 6.0, 9.0, 12.0]),
            ("small", again, [2.0, 4.0, 6.0, 8.0]),
        ):
            status, _, data = gw.invoke(endpoint, package, infer_body(X))
            assert (status, output(data), data["model_name"]) == (200, expected, "twin")
    assert {first, second} <= set(gw.loaded("main"))
    assert again in gw.loaded("small")
    served = {served_name(gw, "main", first), served_name(gw, "main", second)}
    served.add(served_name(gw, "small", again))
    assert len(served) == 3
    # Each is its own folder under the serving repository, registered with Triton as such.
    repository = gw.state_dir / "repository"
    assert all((repository / name / "twin" / "config.pbtxt").is_file() for name in served)
    assert all(gw.triton_loads(name) == 1 for name in served)


def test_a_bls_call_to_a_sibling_by_plain_name_fails_as_on_sagemaker(gw: GatewayProcess) -> None:
    package = bls_sibling_package(gw.store("main"), "sibling", 1)
    status, _, data = gw.invoke("main", package, infer_body(X))
    # The ensemble loaded (its step with it); the sibling is no step, so it never loaded.
    assert (status, data["ErrorCode"], data["OriginalStatusCode"]) == (424, "ModelError", 400)
    assert "Model 'adder' is not ready" in data["OriginalMessage"], data
    assert package in gw.loaded("main")
    log = gw.triton_log()
    served = served_name(gw, "main", package)
    assert f"::{served}:1" in log and "::caller:1" in log
    assert "::adder:" not in log


def test_admin_api_creates_lists_and_unloads(gw: GatewayProcess, tmp_path: Path) -> None:
    store = tmp_path / "store"
    status, data = gw.send_json(
        "PUT", "/admin/endpoints/extra", {"store": str(store), "memory_budget_bytes": 10**9}
    )
    assert (status, data["store"], data["memory_budget_bytes"]) == (201, str(store), 10**9)
    saved = json.loads((gw.state_dir / "endpoints.json").read_text())
    assert saved["extra"] == {"store": str(store), "memory_budget_bytes": 10**9}
    status, data = gw.send_json("PUT", "/admin/endpoints/extra", {"memory_budget_bytes": 2 * 10**9})
    assert (status, data["memory_budget_bytes"]) == (200, 2 * 10**9)
    listed = {ep["name"]: ep for ep in gw.get("/admin/endpoints")[1]["endpoints"]}
    assert listed["extra"]["memory_budget_bytes"] == 2 * 10**9

    package = python_package(store, "warm", 1)
    status, data = gw.send_json("POST", f"/admin/endpoints/extra/models/{package}/load", {})
    assert status == 200 and data["cache_hit"] is False and data["loading_time_us"] > 0
    status, data = gw.send_json("POST", f"/admin/endpoints/extra/models/{package}/load", {})
    assert status == 200 and data["cache_hit"] is True
    (model,) = gw.get("/admin/endpoints/extra/models")[1]["models"]
    assert model["target_model"] == package and model["size_bytes"] > 0
    status, data = gw.send_json("POST", f"/admin/endpoints/extra/models/{package}/unload", {})
    assert status == 200 and data["unloaded"] is True
    assert gw.loaded("extra") == []
    status, data = gw.send_json("POST", f"/admin/endpoints/extra/models/{package}/unload", {})
    assert status == 404

    status, data = gw.send_json("PUT", "/admin/endpoints/extra", {"memory_budget_bytes": "lots"})
    assert status == 400


def _slow_repository(dest: Path, name: str, seconds: float) -> Path:
    """A Python model that holds 64 MiB and takes `seconds` to answer."""
    (dest / name / "1").mkdir(parents=True)
    (dest / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    (dest / name / "1" / "model.py").write_text(
        "import time\n"
        "import numpy as np\n"
        "import triton_python_backend_utils as pb_utils\n\n\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        self.ballast = np.ones(64 * 1024 * 1024, dtype=np.uint8)\n\n"
        "    def execute(self, requests):\n"
        f"        time.sleep({seconds})\n"
        "        out = []\n"
        "        for request in requests:\n"
        '            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()\n'
        '            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x)]))\n'
        "        return out\n"
    )
    return dest


def test_a_model_serving_a_request_is_not_evicted(gw: GatewayProcess, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dataplane.tests.gateway_fixtures import publish

    store = tmp_path / "store"
    gw.send_json("PUT", "/admin/endpoints/guard", {"store": str(store)})
    slow = "slow_1.tar.gz"
    publish(store, slow, _slow_repository(tmp_path / "slow", "slow", 3.0))
    fast1, fast2 = (python_package(store, n, 1, ballast_bytes=64 * 1024**2) for n in ("f", "g"))
    sizes = [
        gw.send_json("POST", f"/admin/endpoints/guard/models/{p}/load", {})[1]["size_bytes"]
        for p in (slow, fast1)
    ]
    budget = int(sizes[0] + 1.5 * sizes[1])  # Room for two of them, not three.
    gw.send_json("PUT", "/admin/endpoints/guard", {"memory_budget_bytes": budget})

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(gw.invoke, "guard", slow, infer_body(X))
        time.sleep(0.5)
        assert gw.invoke("guard", fast1, infer_body(X))[0] == 200  # slow is now the LRU one
        assert gw.invoke("guard", fast2, infer_body(X))[0] == 200
        assert in_flight.result()[0] == 200
    # The least recently used model was serving a request: the idle one went instead.
    assert sorted(gw.loaded("guard")) == sorted([slow, fast2])


def test_binary_tensor_extension_passes_through(gw: GatewayProcess) -> None:
    import numpy as np
    import tritonclient.http as triton_http

    package = python_package(gw.store("main"), "binary", 1, scale=2.0)
    x = np.array([[1.5, 2.5, 3.5, 4.5]], dtype=np.float32)
    tensor = triton_http.InferInput("INPUT", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    wanted = triton_http.InferRequestedOutput("OUTPUT", binary_data=True)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[wanted]
    )
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
    result = triton_http.InferenceServerClient.parse_response_body(
        payload, header_length=int(headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), x * 2)
    assert result.get_response()["model_name"] == "binary"


def test_a_body_streamed_in_chunks_is_invoked_like_any_other(gw: GatewayProcess) -> None:
    import http.client

    package = python_package(gw.store("main"), "streamed", 1, scale=2.0)
    body = infer_body(X)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=300)
    headers = {TARGET_HEADER: package, "Content-Type": "application/json"}
    pieces = [body[:10], body[10:25], body[25:]]
    conn.request("POST", "/endpoints/main/invocations", iter(pieces), headers, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200
    assert output(json.loads(response.read())) == [2.0, 4.0, 6.0, 8.0]

    # Past the request limit (1 MiB here) the answer comes before the body ends; the gateway
    # reads on (a bounded amount) so the client gets the answer, and serves the others.
    huge = (b"x" * 65536 for _ in range(32))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    conn.request("POST", "/endpoints/main/invocations", huge, headers, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["ErrorCode"] == "PayloadTooLarge"
    assert gw.invoke("main", package, body)[0] == 200


def test_a_body_whose_shapes_it_cannot_fill_is_refused_before_any_load(gw: GatewayProcess) -> None:
    package = python_package(gw.store("main"), "untouched", 1, scale=2.0)
    huge = json.dumps(
        {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [10**9], "data": [1.0]}]}
    ).encode()
    for body in (huge, b""):
        status, headers, data = gw.invoke("main", package, body)
        assert (status, data["ErrorCode"]) == (400, "MalformedRequest")
        assert headers["x-amzn-ErrorType"] == "ValidationError"
    # Refused from the body alone: the cold model was not loaded for it.
    assert package not in gw.loaded("main")
    assert gw.triton_loads("untouched_1-") == 0
    assert gw.metric("main", "Invocation4XXErrors", "Sum", package) is None

    status, _, data = gw.invoke("main", package, infer_body(X))
    assert (status, output(data)) == (200, [2.0, 4.0, 6.0, 8.0])
    assert gw.triton_loads("untouched_1-") == 1


def test_counters_count_invocations_cache_hits_and_loads_since_start(gw: GatewayProcess) -> None:
    """What a load test reads before and after each stage: cumulative, behind the token."""
    package = python_package(gw.store("main"), "counted", 1, scale=2.0)
    before = gw.get("/admin/endpoints/main/counters")[1]
    for _ in range(3):
        runtime_client(gw).invoke_endpoint(
            EndpointName="main",
            TargetModel=package,
            Body=infer_body(X),
            ContentType="application/json",
        )
    after = gw.get("/admin/endpoints/main/counters")[1]
    assert after["invocations"] - before["invocations"] == 3
    assert after["cache_lookups"] - before["cache_lookups"] == 3
    # The first request loaded the model (a miss), the next two found it loaded.
    assert after["cache_hits"] - before["cache_hits"] == 2
    assert after["model_loads"] - before["model_loads"] == 1
    assert gw.request("GET", "/admin/endpoints/main/counters", authorize=False)[0] == 401
