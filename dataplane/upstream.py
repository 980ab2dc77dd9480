"""A small keep-alive HTTP/1.1 client for the gateway's calls to its own Triton server.

Triton is on loopback and answers every request with a Content-Length (or chunked) body,
so a pool of raw asyncio connections that write one request and read one response does
the job at a fraction of a general client's cost per request; the invocation path spends
most of its time here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


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


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.callback: Callable[[UpstreamResponse | None, UpstreamError | None], None] | None = None
        self.closed = False
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length = -1
        self._chunked = False
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._pending():
            if self._headers is not None and self._length < 0 and not self._chunked:
                # A body delimited by the end of the connection.
                self._finish(bytes(self.buffer))
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

    def request_with_callback(
        self,
        data: bytes,
        callback: Callable[[UpstreamResponse | None, UpstreamError | None], None],
    ) -> None:
        """Send `data`; `callback(response, None)` or `callback(None, error)` runs once."""
        self.waiter = None
        self.callback = callback
        self._headers = None
        self.buffer.clear()
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
        self.buffer.clear()
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self._pending():
            return
        if self._headers is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
        if self._chunked:
            self._try_chunked()
        elif self._length >= 0 and len(self.buffer) >= self._length:
            self._finish(bytes(self.buffer[: self._length]))

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self._status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        self._headers = headers
        self._length = int(headers.get("content-length", "-1"))
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._keep_alive = headers.get("connection", "").lower() != "close"
        if self._length < 0 and not self._chunked and self._status in (204, 304):
            self._length = 0

    def _try_chunked(self) -> None:
        body = bytearray()
        pos = 0
        buf = self.buffer
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            start = eol + 2
            if size == 0:
                if buf.find(b"\r\n", start) < 0:
                    return
                self._finish(bytes(body))
                return
            if len(buf) < start + size + 2:
                return
            body += buf[start : start + size]
            pos = start + size + 2

    def _finish(self, body: bytes) -> None:
        assert self._headers is not None
        self.buffer.clear()
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        response = UpstreamResponse(self._status, self._headers, body)
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
    """Keep-alive connections to one host:port, reused last-in first-out."""

    def __init__(
        self, host: str, port: int, *, max_idle: int = 64, unix_path: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        # Set for a sandboxed Triton, which listens on a Unix socket (host names the Host header).
        self.unix_path = unix_path
        self.max_idle = max_idle
        self._idle: deque[_Connection] = deque()
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            if self.unix_path is not None:
                _, conn = await loop.create_unix_connection(_Connection, self.unix_path)
            else:
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
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

    def acquire_idle(self) -> _Connection | None:
        """A kept-alive connection ready for a request, or None (then connect asynchronously)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: _Connection) -> None:
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

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
