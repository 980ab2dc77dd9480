"""A small keep-alive HTTP/1.1 client for the gateway's calls to its own Triton server.

Triton is on a local socket and answers every request with a Content-Length (or chunked)
body, so a pool of raw asyncio connections that write one request and read one response
does the job at a fraction of a general client's cost per request (aiohttp's session,
request and response objects cost more than the whole round trip here); the invocation path
spends most of its time here. Responses are parsed by llhttp (`httptools`), as requests are
by the gateway's server.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools


class UpstreamError(Exception):
    """Triton could not be reached, or the connection broke before a full response.

    `sent` tells whether the request may have reached Triton: when it is False the request
    can be retried safely (the connection was refused).
    """

    def __init__(self, message: str, *, sent: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.timed_out = timed_out


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


# Field names as Triton sends them, lower-cased once (bounded all the same).
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 64

Answered = Callable[[UpstreamResponse | None, UpstreamError | None], None]


class UpstreamConnection:
    """One keep-alive connection: at most one request at a time.

    Taken from the pool with `UpstreamPool.acquire_idle()` (or by `UpstreamPool.request`),
    given back with `UpstreamPool.release()` once its answer is in. An asyncio protocol by its
    methods, not by deriving from `asyncio.Protocol` (compiled: dataplane.native).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.callback: Answered | None = None
        self.closed = False
        self._headers: dict[str, str] | None = None
        self._body: list[bytes] = []
        self._status = 0
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        """A large request waits in the transport's buffer: it is sent as Triton reads it."""

    def resume_writing(self) -> None:
        pass

    def eof_received(self) -> None:
        """Triton closed its end: the transport closes, and `connection_lost` says so."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._pending():
            headers = self._headers
            if (
                headers is not None
                and "content-length" not in headers
                and "transfer-encoding" not in headers
            ):
                # A body delimited by the end of the connection (llhttp waits for more).
                self._finish()
            else:
                self._fail(
                    UpstreamError(f"Triton closed the connection: {exc or 'EOF'}", sent=True)
                )

    def _pending(self) -> bool:
        return self.callback is not None or (self.waiter is not None and not self.waiter.done())

    def _fail(self, error: UpstreamError) -> None:
        callback = self.callback
        if callback is not None:
            self.callback = None
            callback(None, error)
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def request_with_callback(self, data: bytes, callback: Answered) -> None:
        """Send `data`; `callback(response, None)` or `callback(None, error)` runs once."""
        self.waiter = None
        self.callback = callback
        self._headers = None
        self._body = []
        assert self.transport is not None
        self.transport.write(data)

    def timeout(self) -> None:
        """Give up on the request under way: the connection is closed and not reused."""
        if self._pending():
            self.close()
            self._fail(UpstreamError("Triton did not answer in time", sent=True, timed_out=True))

    def request(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.callback = None
        self.waiter = loop.create_future()
        self._headers = None
        self._body = []
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # Not HTTP, or more than was asked for: the connection cannot be trusted again.
            self.close()
            self._fail(UpstreamError(f"malformed response from Triton: {exc}", sent=True))

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = key
        headers[key] = value.decode("latin-1").rstrip(" \t")

    def on_headers_complete(self) -> None:
        if self._headers is None:
            self._headers = {}
        parser = self.parser
        self._status = parser.get_status_code()
        self._keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.callback is None and (self.waiter is None or self.waiter.done()):
            # An answer to no request: the connection is out of step.
            self.close()
            return
        self._finish()

    def _finish(self) -> None:
        headers = self._headers
        assert headers is not None
        body = self._body
        self._body = []
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        response = UpstreamResponse(
            self._status,
            headers,
            (body[0] if len(body) == 1 else b"".join(body)) if body else b"",
        )
        callback = self.callback
        if callback is not None:
            self.callback = None
            callback(response, None)
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one host:port, reused last-in first-out.

    `ssl` (an `ssl.SSLContext`) makes the connections TLS, verified against `host`, and
    `host_header` replaces the `host:port` Host header (the load generator's SageMaker
    target signs its requests for the bare host name).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 64,
        unix_path: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        host_header: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # Set for a sandboxed Triton, which listens on a Unix socket (host names the Host header).
        self.unix_path = unix_path
        self.ssl = ssl
        self.max_idle = max_idle
        self._idle: deque[UpstreamConnection] = deque()
        self.host_header = host_header or f"{host}:{port}"
        self._host_header = f"Host: {self.host_header}\r\n".encode()
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}

    async def connect(self) -> UpstreamConnection:
        """A new connection, not yet in the pool (`release` it once its answer is in)."""
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        # A connection has asyncio's protocol methods without deriving from asyncio.Protocol
        # (a compiled class cannot derive from an interpreted one: dataplane.native).
        protocol: Any = UpstreamConnection
        try:
            if self.unix_path is not None:
                _, conn = await loop.create_unix_connection(protocol, self.unix_path)
            elif self.ssl is not None:
                _, conn = await loop.create_connection(
                    protocol, self.host, self.port, ssl=self.ssl, server_hostname=self.host
                )
            else:
                _, conn = await loop.create_connection(protocol, self.host, self.port)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to Triton: {exc}", sent=False) from exc
        return conn

    def encode(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> bytes:
        key = (method, path, tuple(headers.items()) if headers else ())
        head = self._heads.get(key)
        if head is None:
            parts = [f"{method} {path} HTTP/1.1\r\n".encode(), self._host_header]
            for name, value in key[2]:
                parts.append(f"{name}: {value}\r\n".encode("latin-1"))
            head = b"".join(parts)
            if len(self._heads) > 4096:  # Bounded: header values come from clients.
                self._heads.clear()
            self._heads[key] = head
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)

    def acquire_idle(self) -> UpstreamConnection | None:
        """A kept-alive connection ready for a request, or None (then connect asynchronously)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        if not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; raise `UpstreamError` when Triton cannot answer it."""
        data = self.encode(method, path, body, headers)
        loop = asyncio.get_running_loop()
        conn = self.acquire_idle()
        if conn is None:
            conn = await self._connect()
        waiter = conn.request(data, loop)
        try:
            if timeout is None:
                response = await waiter
            else:
                response = await asyncio.wait_for(waiter, timeout)
        except BaseException:
            conn.close()
            raise
        self.release(conn)
        return response

    @property
    def idle_connections(self) -> int:
        """Kept-alive connections ready for a request."""
        return sum(1 for conn in self._idle if not conn.closed)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
