"""The gateway's HTTP/1.1 server on the wire: bodies, framing errors and limits."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import threading
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


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    router = Router()
    router.add("POST", "/echo", echo)
    server = HttpServer(router, max_body=LIMIT, too_large=too_large, error_mapper=lambda e: None)
    loop = asyncio.new_event_loop()
    listener = loop.run_until_complete(loop.create_server(server.protocol, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield listener.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


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
