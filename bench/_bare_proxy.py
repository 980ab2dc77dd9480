"""A bare HTTP/1.1 reverse proxy: the floor the gateway's own CPU per request is held to.

    python bench/_bare_proxy.py PORT UPSTREAM_UNIX_SOCKET

uvloop and httptools (llhttp), as the gateway; one upstream keep-alive connection per client
connection, opened when the client connects; each request forwarded as it came (method,
target, Content-Type and the body), each answer returned with its status, Content-Type and
body. Nothing else: no routing, limits, timeouts, metrics, checks or error answers; a
client that breaks the protocol is simply disconnected. What the gateway spends above this
is what its features cost.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """The connection to Triton of one client connection: one request at a time."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = b"application/json"
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        self.client.answer(self.status, self.content_type, body)


class Client(asyncio.Protocol):
    """One client connection, proxied to its own upstream connection."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.content_type = b"application/json"
        self.body: list[bytes] = []
        self.waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_unix_connection(
            lambda: Upstream(self), self.socket_path
        )
        for request in self.waiting:
            self.upstream.transport.write(request)  # type: ignore[union-attr]
        self.waiting.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def lost(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.lost()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        request = (
            b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (
                self.parser.get_method(),
                self.url,
                self.content_type,
                len(body),
                body,
            )
        )
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.waiting.append(request)
        else:
            upstream.transport.write(request)

    def answer(self, status: int, content_type: bytes, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (status, content_type, len(body), body)
            )


async def main(port: int, socket_path: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(socket_path), "127.0.0.1", port, backlog=1024)
    print(f"bare proxy listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
