"""The gateway's HTTP/1.1 server on the wire: bodies, framing errors, limits, and the bounds
on hostile clients (malformed heads, slow clients, idle connections, too many connections)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dataplane.httpserver import (
    MAX_CHUNKS,
    HttpRequest,
    HttpResponse,
    HttpServer,
    Router,
    json_response,
)

LIMIT = 256 * 1024


async def echo(request: HttpRequest) -> HttpResponse:
    return json_response(
        {"length": len(request.body), "sha256": hashlib.sha256(request.body).hexdigest()}
    )


def too_large(length: int | None) -> HttpResponse:
    return json_response({"ErrorCode": "PayloadTooLarge", "length": length}, 413)


async def big(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, b"z" * (1024 * 1024))


def serve(**bounds) -> Iterator[tuple[int, HttpServer]]:
    router = Router()
    router.add("POST", "/echo", echo)
    router.add("GET", "/big", big)
    server = HttpServer(
        router, max_body=LIMIT, too_large=too_large, error_mapper=lambda e: None, **bounds
    )
    loop = asyncio.new_event_loop()
    listener = loop.run_until_complete(loop.create_server(server.protocol, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield listener.sockets[0].getsockname()[1], server

    async def shutdown() -> None:
        server.close()
        await asyncio.sleep(0.01)  # The sweeper's task sees its cancellation.

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    for number, _ in serve():
        yield number


# Short bounds, so that slow clients are cut within a test's patience.
TIMEOUT = 0.6
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def bounded() -> Iterator[tuple[int, HttpServer]]:
    yield from serve(
        header_timeout=TIMEOUT,
        body_timeout=TIMEOUT,
        keep_alive_timeout=TIMEOUT,
        max_connections=MAX_CONNECTIONS,
    )


def exchange(port: int, *pieces: bytes) -> bytes:
    """Send `pieces` (each its own write) and read until the server closes or answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def answers(raw: bytes) -> list[tuple[int, dict]]:
    """(status, JSON body) of each response in `raw`, in order."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        body, raw = rest[:length], rest[length:]
        if status != 100:
            out.append((status, json.loads(body) if body else {}))
    return out


def post(body_part: bytes, headers: str) -> bytes:
    return f"POST /echo HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body_part


def chunked(body: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def expected(body: bytes) -> dict:
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_content_length_bodies_on_one_kept_alive_connection(port):
    bodies = [b"", b"a", b"x" * 5000]
    raw = b"".join(post(b, f"Content-Length: {len(b)}\r\n") for b in bodies)
    assert answers(exchange(port, raw)) == [(200, expected(b)) for b in bodies]


def test_chunked_body_is_decoded_whatever_the_write_boundaries(port):
    body = bytes(range(256)) * 40
    wire = post(chunked(body, 1000), "Transfer-Encoding: chunked\r\n")
    # One byte per write: every parse state sees a partial line, size or chunk.
    assert answers(exchange(port, *(wire[i : i + 1] for i in range(0, 400)), wire[400:])) == [
        (200, expected(body))
    ]


def test_chunk_extensions_trailers_and_a_following_request(port):
    body = b"hello, chunked world"
    wire = (
        post(b"5;name=value\r\nhello\r\n", "Transfer-Encoding: chunked\r\n")
        + b"f\r\n, chunked world\r\n0\r\nX-Checksum: abc\r\n\r\n"
        + post(b"ok", "Content-Length: 2\r\n")
    )
    assert answers(exchange(port, wire)) == [(200, expected(body)), (200, expected(b"ok"))]


def test_http_client_streaming_a_body_of_unknown_length(port):
    parts = [b"x" * 3000, b"y" * 7000, b"z"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/echo", body=iter(parts), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == expected(b"".join(parts))


def test_expect_continue_with_a_chunked_body(port):
    body = b"q" * 100
    head = post(b"", "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(chunked(body, 30))
        assert answers(sock.recv(65536)) == [(200, expected(body))]


def test_chunked_body_over_the_limit_is_answered_413_before_it_ends(port):
    wire = post(chunked(b"b" * (LIMIT + 1), 4096), "Transfer-Encoding: chunked\r\n")
    assert answers(exchange(port, wire)) == [
        (413, {"ErrorCode": "PayloadTooLarge", "length": None})
    ]


def test_content_length_over_the_limit_is_answered_413(port):
    wire = post(b"c" * (LIMIT + 1), f"Content-Length: {LIMIT + 1}\r\n")
    assert answers(exchange(port, wire)) == [
        (413, {"ErrorCode": "PayloadTooLarge", "length": LIMIT + 1})
    ]


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ("Transfer-Encoding: chunked\r\n", b"zz\r\nhi\r\n0\r\n\r\n", "bad chunk size"),
        ("Transfer-Encoding: chunked\r\n", b"2\r\nhello\r\n0\r\n\r\n", "longer than its size"),
        ("Transfer-Encoding: chunked\r\n", b"1" * 5000, "chunk-size line too long"),
        ("Transfer-Encoding: gzip, chunked\r\n", b"", "is not supported"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"", "both Transfer-Encoding"),
        ("Content-Length: -4\r\n", b"", "bad Content-Length"),
        ("Content-Length: 1e3\r\n", b"", "bad Content-Length"),
    ],
)
def test_malformed_framing_gets_400_and_the_connection_closes(port, headers, body, reason):
    wire = post(body, headers) + post(b"", "Content-Length: 0\r\n")
    [(status, answer)] = answers(exchange(port, wire))
    assert status == 400
    assert reason in answer["Message"]


def test_a_body_in_too_many_chunks_is_refused(port):
    # One more one-byte chunk than allowed, well under the size limit; no last chunk needed.
    wire = post(b"1\r\na\r\n" * (MAX_CHUNKS + 1), "Transfer-Encoding: chunked\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        [(status, answer)] = answers(sock.recv(65536))
    assert status == 400
    assert f"more than {MAX_CHUNKS} chunks" in answer["Message"]


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        # A bare LF would let a value carry a header line of its own past this server.
        ("X-Note: one\nInference-Header-Content-Length: 0\r\n", "control character"),
        ("X-Note: one\rX-Other: two\r\n", "control character"),
        ("X-Note: nul\x00byte\r\n", "control character"),
        ("X-No\x00te: value\r\n", "control character"),
        ("X-Note : value\r\n", "bad header line"),
        ("X-Note: value\r\n folded: continuation\r\n", "bad header line"),
        ("X(Note): value\r\n", "bad header line"),
        ("Content-Length: 2\r\nContent-Length: 2\r\n", "more than one content-length"),
    ],
)
def test_a_malformed_header_is_refused_with_400(port, head, reason):
    wire = f"POST /echo HTTP/1.1\r\nHost: x\r\n{head}\r\nok".encode("latin-1")
    [(status, answer)] = answers(exchange(port, wire))
    assert status == 400
    assert reason in answer["Message"]


@pytest.mark.parametrize(
    "request_line",
    ["POST /echo", "POST  /echo HTTP/1.1", "POST /echo HTTP/2.0", "PO\tST /echo HTTP/1.1", ""],
)
def test_a_malformed_request_line_is_refused_with_400(port, request_line):
    wire = f"{request_line}\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    [(status, answer)] = answers(exchange(port, wire))
    assert status == 400


def test_a_malformed_request_line_after_a_good_one_on_the_same_connection_is_refused(port):
    # A request line matched once is remembered per connection; a different one is checked.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(post(b"ok", "Content-Length: 2\r\n"))
            received = b""
            while not received.endswith(b"}"):
                received += sock.recv(65536)
            assert answers(received) == [(200, expected(b"ok"))]
        sock.sendall(b"POST  /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    [(status, answer)] = answers(received)
    assert status == 400 and "bad request line" in answer["Message"]


def test_a_repeated_field_is_one_list_and_tabs_around_a_value_are_trimmed(port):
    # RFC 9110 5.3 and 5.5: what a well-formed client may send is still served.
    wire = post(b"ok", "X-Note: a\r\nX-Note: b\r\nContent-Length:\t2\t\r\n")
    assert answers(exchange(port, wire)) == [(200, expected(b"ok"))]


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes; with when it closed (monotonic seconds)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic()


def test_a_head_trickled_a_byte_at_a_time_is_cut_with_408(bounded):
    port, _ = bounded
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        for byte in b"POST /echo HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        received, closed = read_all(sock)
    # Cut within the timeout plus one sweep, though the client kept sending.
    assert closed - started < TIMEOUT * 1.25 + 0.5
    [(status, answer)] = answers(received)
    assert status == 408
    assert "head" in answer["Message"]


def test_a_body_that_stops_arriving_is_cut_with_408(bounded):
    port, _ = bounded
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post(b"x" * 10, "Content-Length: 100\r\n"))
        started = time.monotonic()
        received, closed = read_all(sock)
    assert closed - started < TIMEOUT * 1.25 + 0.5
    [(status, answer)] = answers(received)
    assert status == 408
    assert "body" in answer["Message"]


def test_idle_connections_are_closed(bounded):
    port, _ = bounded
    with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
        started = time.monotonic()
        assert read_all(fresh)[0] == b""  # Connected, never sent a byte.
    assert time.monotonic() - started < TIMEOUT * 1.25 + 0.5
    with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        kept.sendall(post(b"ok", "Content-Length: 2\r\n"))
        received = b""
        while b"sha256" not in received:
            received += kept.recv(65536)
        answered = time.monotonic()
        rest, closed = read_all(kept)  # Kept alive, then idle: closed without a word.
    assert answers(received + rest) == [(200, expected(b"ok"))]
    assert TIMEOUT * 0.9 < closed - answered < TIMEOUT * 1.25 + 0.5


def test_connections_past_the_cap_are_answered_503_at_once(bounded):
    port, server = bounded
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        deadline = time.monotonic() + 2
        while len(server.connections) < MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            started = time.monotonic()
            received, closed = read_all(extra)
        assert closed - started < 0.3
        [(status, answer)] = answers(received)
        assert status == 503
    finally:
        for sock in held:
            sock.close()
    # The held ones are gone: a new client is served again.
    deadline = time.monotonic() + 2
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert answers(exchange(port, post(b"ok", "Content-Length: 2\r\n"))) == [(200, expected(b"ok"))]


def test_a_client_that_does_not_read_its_answers_is_cut(bounded):
    port, server = bounded
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # Pipelined requests for 1 MiB answers, none of them read.
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 64)
        time.sleep(TIMEOUT * 1.25 + 0.8)
        assert not server.connections  # Aborted, its queued answers dropped.
    finally:
        sock.close()


def test_pipelined_requests_are_answered_in_order_a_refusal_last(port):
    wire = (
        post(b"one", "Content-Length: 3\r\n")
        + post(b"two", "Content-Length: 3\r\n")
        + post(b"", "Content-Length: 1e3\r\n")
        + post(b"never", "Content-Length: 5\r\n")
    )
    [first, second, (status, answer)] = answers(exchange(port, wire))
    assert [first, second] == [(200, expected(b"one")), (200, expected(b"two"))]
    assert status == 400
    assert "bad Content-Length" in answer["Message"]


def test_an_upgrade_is_refused_not_served_without_its_body(port):
    wire = post(b"ok", "Content-Length: 2\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n")
    [(status, answer)] = answers(exchange(port, wire))
    assert status == 400
    assert "upgrade" in answer["Message"]


def test_a_head_that_keeps_growing_is_refused_with_431(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Big: ")
        received = b""
        try:
            for _ in range(10):
                time.sleep(0.05)  # Each piece its own read.
                sock.sendall(b"v" * 40_000)
        except OSError:
            pass  # Refused and closed while sending.
        received, _ = read_all(sock)
    [(status, answer)] = answers(received)
    assert status == 431
    assert "head too large" in answer["Message"]


def test_an_http_1_0_request_is_answered_and_closed(port):
    wire = b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nok"
    raw = exchange(port, wire)
    assert b"Connection: close" in raw
    assert answers(raw) == [(200, expected(b"ok"))]
