"""Hostile clients of the data plane's gateway, against a real gateway and a real Triton.

Each attack is answered (the status, the error, the input or limit named) and costs the data
plane nothing lasting: Triton's process tree does not grow, slow and idle clients are cut
within the gateway's timeouts, and names made up by clients leave no metric series behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import psutil
import pytest

from dataplane.tests.gateway_fixtures import (
    TARGET_HEADER,
    GatewayProcess,
    infer_body,
    python_package,
)

pytestmark = pytest.mark.triton

X = [1.0, 2.0, 3.0, 4.0]
ENDPOINT = "exposed"
# Short bounds, set the way a deployment sets them (the environment), so the test is quick.
TIMEOUT = 1.5
MAX_CONNECTIONS = 24
# Slack on top of a timeout: the sweeper's period (a quarter of it) and a loaded machine.
SLACK = TIMEOUT / 4 + 1.0
# How much Triton's process tree may grow while refusing an attack (its stubs' noise).
RSS_SLACK = 150 * 1024 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path_factory.mktemp("hostile"),
        [ENDPOINT],
        extra_args=["--max-request-bytes", "1MiB"],
        env={
            "BERTH_GATEWAY_HEADER_TIMEOUT": str(TIMEOUT),
            "BERTH_GATEWAY_BODY_TIMEOUT": str(TIMEOUT),
            "BERTH_GATEWAY_KEEP_ALIVE_TIMEOUT": str(TIMEOUT),
            "BERTH_GATEWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def package(gw: GatewayProcess) -> str:
    name = python_package(gw.store(ENDPOINT), "victim", 1, scale=2.0)
    status, _, data = gw.invoke(ENDPOINT, name, infer_body(X))
    assert status == 200, data
    return name


def tree_rss(gw: GatewayProcess) -> int:
    """Resident bytes of everything the gateway started: Triton and its model stubs."""
    assert gw.proc is not None
    total = 0
    for child in psutil.Process(gw.proc.pid).children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def peak_tree_rss(gw: GatewayProcess, attack: Callable[[], None]) -> tuple[int, int]:
    """Triton's tree before `attack`, and its peak while it runs (sampled every 10 ms, and
    for half a second after: Triton frees what it reserved once it refuses)."""
    before = tree_rss(gw)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], tree_rss(gw))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        attack()
        time.sleep(0.5)
    finally:
        done.set()
        sampler.join()
    return before, peak[0]


def gateway_rss(gw: GatewayProcess) -> int:
    assert gw.proc is not None
    return psutil.Process(gw.proc.pid).memory_info().rss


def raw_exchange(gw: GatewayProcess, wire: bytes) -> tuple[int, dict]:
    """Send `wire` as is; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(wire)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def assert_serving(gw: GatewayProcess, package: str) -> None:
    status, _, data = gw.invoke(ENDPOINT, package, infer_body(X))
    assert (status, data["outputs"][0]["data"]) == (200, [2.0, 4.0, 6.0, 8.0])


# -- shapes the body cannot fill ------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "values", "reason"),
    [
        # Triton reserved 4 GB for this one (150 MB to a 3.96 GB peak) before refusing it.
        ([1, 1000000000], [], "holds 1000000000 elements, 'data' has 0"),
        ([1000000000], [1.0], "holds 1000000000 elements, 'data' has 1"),
        ([1e9], [1.0], "non-negative integers"),
        ([-1, 4], [1.0] * 4, "non-negative integers"),
    ],
)
def test_a_huge_shape_in_a_tiny_json_body_is_refused_before_triton(
    gw, package, shape, values, reason
) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": shape, "data": values}]}
    ).encode()
    assert len(body) < 100
    answers = []
    before, peak = peak_tree_rss(gw, lambda: answers.append(gw.invoke(ENDPOINT, package, body)))
    [(status, headers, data)] = answers
    assert (status, data["ErrorCode"]) == (400, "MalformedRequest")
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert "input 'INPUT'" in data["Message"] and reason in data["Message"]
    assert peak - before < RSS_SLACK
    assert_serving(gw, package)


def test_a_huge_shape_over_binary_tensor_data_is_refused_before_triton(gw, package) -> None:
    data = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32).tobytes()
    # 16 bytes of tensor data behind a shape of 4 GB (the binary tensor extension's layout).
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT",
                    "datatype": "FP32",
                    "shape": [250_000_000, 4],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    body, json_size = header + data, len(header)
    answers = []
    before, peak = peak_tree_rss(
        gw,
        lambda: answers.append(
            gw.request(
                "POST",
                f"/endpoints/{ENDPOINT}/invocations",
                body,
                {
                    TARGET_HEADER: package,
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(json_size),
                },
            )
        ),
    )
    [(status, _, payload)] = answers
    data = json.loads(payload)
    assert (status, data["ErrorCode"]) == (400, "MalformedRequest")
    assert "byte size mismatch for input 'INPUT'" in data["Message"]
    assert peak - before < RSS_SLACK
    assert_serving(gw, package)


def test_a_compressed_bomb_is_refused_before_triton(gw, package) -> None:
    bomb = gzip.compress(b" " * (512 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024  # Under the request limit as sent.
    answers = []
    before, peak = peak_tree_rss(
        gw,
        lambda: answers.append(gw.invoke(ENDPOINT, package, bomb, **{"Content-Encoding": "gzip"})),
    )
    [(status, _, data)] = answers
    assert (status, data["ErrorCode"]) == (413, "PayloadTooLarge")
    assert peak - before < RSS_SLACK
    # An honest compressed body is served.
    status, _, data = gw.invoke(
        ENDPOINT, package, gzip.compress(infer_body(X)), **{"Content-Encoding": "gzip"}
    )
    assert (status, data["outputs"][0]["data"]) == (200, [2.0, 4.0, 6.0, 8.0])


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
def test_an_empty_body_is_refused_not_run_as_raw_binary(gw, package, content_type) -> None:
    status, headers, data = gw.invoke(ENDPOINT, package, b"", **{"Content-Type": content_type})
    assert (status, data["ErrorCode"]) == (400, "MalformedRequest")
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert "empty" in data["Message"]


# -- heads that would carry a line of their own -------------------------------------------


@pytest.mark.parametrize(
    "smuggled",
    [
        "X-Note: a\nInference-Header-Content-Length: 0",
        "X-Note: a\rInference-Header-Content-Length: 0",
        "X-Note: a\x00b",
        "X-No\nte: a",
    ],
)
def test_control_characters_in_a_header_are_refused(gw, package, smuggled) -> None:
    body = infer_body(X)
    wire = (
        f"POST /endpoints/{ENDPOINT}/invocations HTTP/1.1\r\nHost: x\r\n"
        f"{TARGET_HEADER}: {package}\r\nContent-Type: application/json\r\n{smuggled}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body
    status, data = raw_exchange(gw, wire)
    assert status == 400
    assert "control character" in data["Message"]
    assert_serving(gw, package)


# -- slow, idle and too many clients --------------------------------------------------------


def _cut_after(sock: socket.socket) -> tuple[float, bytes]:
    """Seconds until the gateway closes `sock`, and what it answered first."""
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return time.monotonic() - started, received


def test_slow_and_idle_clients_are_cut_within_the_timeouts(gw, package) -> None:
    sockets = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(7)]
    try:
        slow_heads, slow_body = sockets[:5], sockets[5]
        for sock in slow_heads:
            sock.sendall(b"POST /endpoints/exposed/invocations HTTP/1.1\r\nHost: x\r\n")
        slow_body.sendall(
            f"POST /endpoints/{ENDPOINT}/invocations HTTP/1.1\r\nHost: x\r\n"
            f"{TARGET_HEADER}: {package}\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        started = time.monotonic()
        # The slow clients trickle on; they are cut anyway, and others are served meanwhile.
        for sock in slow_heads:
            with contextlib.suppress(OSError):
                sock.sendall(b"X")
        assert_serving(gw, package)
        results = [_cut_after(sock) for sock in sockets]
        elapsed = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
    assert elapsed < TIMEOUT + SLACK
    for seconds, answer in results[:6]:
        assert seconds < TIMEOUT + SLACK
        assert answer.startswith(b"HTTP/1.1 408 ")
    assert results[6][1] == b""  # The idle one is closed without a word.


def test_an_idle_kept_alive_connection_is_closed(gw, package) -> None:
    body = infer_body(X)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /endpoints/{ENDPOINT}/invocations HTTP/1.1\r\nHost: x\r\n"
                f"{TARGET_HEADER}: {package}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        answered = sock.recv(65536)
        assert answered.startswith(b"HTTP/1.1 200 ")
        seconds, rest = _cut_after(sock)
    assert rest == b""
    assert seconds < TIMEOUT + SLACK


def test_connections_past_the_cap_are_answered_at_once(gw, package) -> None:
    held = [
        socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        for _ in range(MAX_CONNECTIONS + 5)
    ]
    try:
        started = time.monotonic()
        extra = held[-1]
        with contextlib.suppress(OSError):  # It may be answered and closed already.
            extra.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, answer = _cut_after(extra)
        # Refused at once (503, or closed), not held until a timeout.
        assert seconds < 0.5 * TIMEOUT
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < TIMEOUT
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # The held ones are gone: clients are served again.
        try:
            assert_serving(gw, package)
            break
        except (AssertionError, OSError):
            time.sleep(0.2)
    assert_serving(gw, package)


# -- names made up by clients ---------------------------------------------------------------


async def _invoke_many(gw: GatewayProcess, targets: list[str]) -> list[int]:
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:

        async def one(target: str) -> int:
            async with (
                limit,
                session.post(
                    f"{gw.url}/endpoints/{ENDPOINT}/invocations",
                    data=infer_body(X),
                    headers={TARGET_HEADER: target, "Content-Type": "application/json"},
                ) as response,
            ):
                await response.read()
                return response.status

        return await asyncio.gather(*(one(t) for t in targets))


def test_missing_model_names_leave_no_series_behind(gw, package) -> None:
    def metrics_size() -> int:
        status, _, text = gw.request("GET", "/metrics")
        assert status == 200
        return len(text)

    asyncio.run(_invoke_many(gw, ["warmup_1.tar.gz"] * 50))
    text_before, rss_before = metrics_size(), gateway_rss(gw)
    statuses = asyncio.run(_invoke_many(gw, [f"absent{i}_1.tar.gz" for i in range(2000)]))
    assert set(statuses) == {400}
    assert metrics_size() - text_before < 2048
    assert gateway_rss(gw) - rss_before < 30 * 1024 * 1024
    status, _, text = gw.request("GET", "/metrics")
    assert b"absent" not in text
    # They are counted, at the endpoint.
    assert gw.metric(ENDPOINT, "Invocation4XXErrors", "Sum") >= 2000
    assert gw.metric(ENDPOINT, "Invocations", "Sum", "absent7_1.tar.gz") is None
    assert_serving(gw, package)


def test_the_state_folder_holds_nothing_from_the_attacks(gw, package) -> None:
    work = Path(gw.state_dir, "work")
    assert not work.exists() or not list(work.iterdir())
