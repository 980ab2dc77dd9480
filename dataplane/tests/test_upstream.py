"""The gateway's client to Triton against a server that answers exactly what each test
writes: the framings an HTTP/1.1 server may use, and a server that breaks the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from dataplane.upstream import UpstreamError, UpstreamPool

Answer = Callable[[bytes], list[bytes]]


async def _serve(path: Path, answer: Answer) -> asyncio.AbstractServer:
    """A Unix-socket server that reads one request head (and its body) at a time and writes
    the pieces `answer(request)` gives, each its own write; an empty piece closes."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                for i, piece in enumerate(answer(request)):
                    if not piece:
                        writer.close()
                        return
                    if i:
                        await asyncio.sleep(0.001)  # Each piece its own read.
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    return await asyncio.start_unix_server(client, str(path))


def _run(tmp_path: Path, answer: Answer, requests: int = 1, timeout: float | None = None):
    async def main():
        path = tmp_path / "triton.sock"
        server = await _serve(path, answer)
        pool = UpstreamPool("localhost", 80, unix_path=str(path))
        results = []
        try:
            for _ in range(requests):
                try:
                    results.append(await pool.request("POST", "/v2/x", b"{}", None, timeout))
                except UpstreamError as exc:
                    results.append(exc)
            return results, pool.idle_connections
        finally:
            pool.close()
            server.close()

    return asyncio.run(main())


def test_content_length_answers_reuse_one_connection(tmp_path):
    seen = []

    def answer(request: bytes) -> list[bytes]:
        seen.append(request)
        return [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent",
            b"-Length: 4\r\n\r\nab",
            b"cd",
        ]

    results, idle = _run(tmp_path, answer, requests=3)
    assert [(r.status, r.headers["content-type"], r.body) for r in results] == [
        (200, "application/json", b"abcd")
    ] * 3
    assert idle == 1
    assert seen[0].startswith(b"POST /v2/x HTTP/1.1\r\nHost: localhost:80\r\n")
    assert seen[0].endswith(b"Content-Length: 2\r\n\r\n{}")


def test_chunked_answer(tmp_path):
    results, _ = _run(
        tmp_path,
        lambda _: [
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            b"2;x=y\r\nde\r\n0\r\n\r\n",
        ],
    )
    [response] = results
    assert (response.status, response.body) == (400, b"abcde")


def test_an_answer_delimited_by_the_end_of_the_connection(tmp_path):
    results, idle = _run(tmp_path, lambda _: [b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b""])
    [response] = results
    assert (response.status, response.body) == (200, b"until the end")
    assert idle == 0


def test_connection_close_is_not_reused(tmp_path):
    results, idle = _run(
        tmp_path,
        lambda _: [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
        requests=2,
    )
    assert [r.body for r in results] == [b"ok", b"ok"]
    assert idle == 0


@pytest.mark.parametrize(
    "pieces",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b""],
        [b"NOT HTTP AT ALL\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nX-Bad: a\nContent-Length: 0\r\n\r\n"],
    ],
)
def test_a_broken_answer_is_an_upstream_error(tmp_path, pieces):
    results, idle = _run(tmp_path, lambda _: pieces)
    [error] = results
    assert isinstance(error, UpstreamError) and error.sent
    assert idle == 0


def test_no_server_is_an_error_the_request_never_reached(tmp_path):
    async def main():
        pool = UpstreamPool("localhost", 80, unix_path=str(tmp_path / "absent.sock"))
        with pytest.raises(UpstreamError) as caught:
            await pool.request("GET", "/v2/health/ready")
        return caught.value

    assert asyncio.run(main()).sent is False


def test_a_request_that_takes_too_long_times_out_and_its_connection_is_dropped(tmp_path):
    async def main():
        path = tmp_path / "slow.sock"
        server = await _serve(path, lambda _: [])  # Reads requests, never answers.
        pool = UpstreamPool("localhost", 80, unix_path=str(path))
        try:
            with pytest.raises(TimeoutError):
                await pool.request("POST", "/v2/x", b"{}", None, 0.2)
            return pool.idle_connections
        finally:
            pool.close()
            server.close()

    assert asyncio.run(main()) == 0


def test_a_request_larger_than_the_socket_buffer_is_sent_whole(tmp_path):
    """The transport asks the connection to pause writing while Triton reads a large body."""
    body = bytes(range(256)) * (24 * 1024)  # 6 MiB, SageMaker's payload limit.

    problems: list[dict] = []

    async def main():
        # A protocol without the flow-control methods would be reported here.
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: problems.append(context)
        )
        path = tmp_path / "triton.sock"

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            received = b""
            while len(received) < length:
                received += await reader.read(65536)
                await asyncio.sleep(0)  # A slow reader: the sender's buffer fills.
            digest = str(received == body).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(digest), digest))
            await writer.drain()

        server = await asyncio.start_unix_server(client, str(path))
        pool = UpstreamPool("localhost", 80, unix_path=str(path))
        try:
            return await pool.request("POST", "/v2/x", body, None, 30.0)
        finally:
            pool.close()
            server.close()

    response = asyncio.run(main())
    assert (response.status, response.body) == (200, b"True")
    assert problems == []
