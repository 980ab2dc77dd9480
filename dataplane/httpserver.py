"""A lean HTTP/1.1 server on asyncio protocols for the gateway.

The gateway sits in front of a Triton that answers in a few hundred microseconds, so every
microsecond it spends per request shows. This server does only what the gateway needs:
keep-alive connections, one request at a time per connection (answers stay in order),
bodies with a Content-Length (what boto3 sends) or chunked (what clients streaming a body
of unknown length send), `Expect: 100-continue`, a body size limit checked before the body
is read (as it arrives, for a chunked body), and a small router.
A handler may answer synchronously (the invocation fast path answers from a callback) or
be a coroutine run as a task.

Every client is bounded, since any of them may be hostile: a request head must arrive within
`header_timeout`, its body within `body_timeout`, an idle kept-alive connection is closed
after `keep_alive_timeout`, a client that stops reading its answers is cut after
`body_timeout`, and past `max_connections` a new connection is answered 503 and closed. One
sweeper enforces the deadlines of all connections (a timer per request would cost more than
the request's parsing); the head is held to RFC 9110/9112's grammar (no CR, LF or NUL inside
a field, tokens for names), so nothing the gateway forwards can carry a line of its own.

Why not a library: the parsers asyncio servers use (httptools, h11) are not installed here,
and the invocation path's budget is a few microseconds per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
# A chunk-size line (hex size and extensions) or a trailer section longer than this is refused.
MAX_CHUNK_LINE_BYTES = 4 * 1024
# Content-Length of a head whose body is chunked: the body's size is not known yet.
CHUNKED = -1
# Chunks per body: each costs a trip through a Python loop, so a body cut into millions of
# one-byte chunks would hold the event loop for seconds. Real clients send far fewer.
MAX_CHUNKS = 65_536
_REASONS = {status.value: status.phrase for status in HTTPStatus}

# RFC 9110 5.6.2: a method and a field name are tokens.
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_CHARS)
# A well-formed request line and field section, each matched in one call (the usual case);
# what fails is looked at line by line for the reason.
_REQUEST_LINE = re.compile(rf"({_TOKEN_CHARS}) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])")
_FIELDS = re.compile(rf"(?:{_TOKEN_CHARS}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
# RFC 9110 5.5, RFC 9112 2.2: a head holds no control character but HTAB, and CR only as the
# CR LF that ends a line (searched with every CR LF replaced by a HTAB).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Fields that must not repeat: two lengths are how requests are smuggled (RFC 9112 6.3).
_SINGLETONS = frozenset({"content-length", "transfer-encoding"})
_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})

# What a connection is waiting for, and so which deadline applies to it.
IDLE = 0  # the next request on a kept-alive connection: keep_alive_timeout
HEAD = 1  # the rest of a request head: header_timeout
BODY = 2  # the rest of a request body: body_timeout
BUSY = 3  # its handler's answer: no client deadline
DISCARD = 4  # the rest of a refused body: body_timeout, then closed


class HttpRequest:
    """One parsed request: method, path (decoded), raw query, lower-cased headers, body."""

    __slots__ = ("method", "path", "query", "headers", "body", "params")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {}

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class HttpResponse:
    __slots__ = ("status", "body", "headers")

    def __init__(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


def encode_response(
    status: int, body: bytes, headers: dict[str, str] | None, *, close: bool = False
) -> bytes:
    parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    if headers:
        for key, value in headers.items():
            parts.append(f"{key}: {value}\r\n")
    if close:
        parts.append("Connection: close\r\n")
    parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(parts).encode("latin-1") + body


AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# A direct handler answers through the connection itself (`HttpConnection.respond`).
DirectHandler = Callable[["HttpConnection", HttpRequest], None]
ErrorMapper = Callable[[Exception], HttpResponse | None]


class Router:
    """Routes `METHOD /path/{param}` to handlers (the path arrives URL-decoded)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], AsyncHandler]] = []
        self.direct: list[tuple[str, str, str, DirectHandler]] = []

    def add(self, method: str, pattern: str, handler: AsyncHandler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))

    def add_direct(self, method: str, prefix: str, suffix: str, handler: DirectHandler) -> None:
        """A hot route `prefix{one segment}suffix` matched by string tests, not regexes."""
        self.direct.append((method, prefix, suffix, handler))

    def match(self, method: str, path: str) -> tuple[AsyncHandler | None, dict[str, str], int]:
        allowed = False
        for route_method, regex, handler in self._routes:
            found = regex.match(path)
            if found:
                if route_method == method:
                    return handler, found.groupdict(), 200
                allowed = True
        return None, {}, 405 if allowed else 404


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "server",
        "transport",
        "buffer",
        "busy",
        "closing",
        "_head",
        "_keep_alive",
        "_discard",
        "_chunks",
        "_chunk_count",
        "_eof",
        "phase",
        "deadline",
        "write_paused",
        "send_deadline",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self._head: tuple[str, str, str, dict[str, str], int] | None = None
        self._keep_alive = True
        self._discard = 0
        # The decoded part of a chunked body still arriving.
        self._chunks: bytearray | None = None
        self._chunk_count = 0
        self._eof = False
        self.phase = HEAD
        self.deadline = 0.0
        self.write_paused = False
        self.send_deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if len(server.connections) >= server.max_connections:
            # Over the cap: answer at once, so the client learns to retry, and hold nothing.
            self.closing = True
            response = server.overloaded()
            self._write(response.status, response.body, response.headers, close=True)
            return
        server.connections.add(self)
        # The first request's head is due within header_timeout of connecting.
        self.deadline = time.monotonic() + server.header_timeout
        server.start_sweeper()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        """The client reads its answers slower than they come: take no further request until
        it catches up, and cut it if it does not within body_timeout."""
        self.write_paused = True
        self.send_deadline = time.monotonic() + self.server.body_timeout
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        transport = self.transport
        if transport is None or self.closing or self.busy:
            return
        transport.resume_reading()
        if self.buffer:
            self._next()

    def expire(self, now: float) -> None:
        """Past a deadline (the sweeper calls): cut the connection, answering 408 when the
        client had started a request."""
        transport = self.transport
        if transport is None or self.closing:
            return
        if self.write_paused and self.send_deadline < now:
            transport.abort()  # It reads nothing: an answer would only queue.
            return
        phase = self.phase
        if phase == BUSY or self.deadline >= now:
            return
        if (phase == HEAD and self.buffer) or phase == BODY:
            part, limit = (
                ("head", self.server.header_timeout)
                if phase == HEAD
                else ("body", self.server.body_timeout)
            )
            body = json.dumps(
                {
                    "ErrorCode": "RequestTimeout",
                    "Message": f"the request {part} did not arrive within {limit:g}s",
                }
            ).encode()
            self._head = self._chunks = None
            self.buffer.clear()
            self._write(408, body, {"Content-Type": "application/json"}, close=True)
        else:
            self.closing = True
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._discard:
            # The body of a refused request: read it so the client sees the answer, then close.
            self._discard -= min(self._discard, len(data))
            if not self._discard and self.transport is not None:
                self.transport.close()
            return
        self.buffer += data
        if not self.busy:
            self._next()
        elif len(self.buffer) > self.server.max_body + MAX_HEAD_BYTES and self.transport:
            # A client far ahead of its answers: stop reading until it catches up.
            self.transport.pause_reading()

    def _next(self) -> None:
        buffer = self.buffer
        if self._head is None:
            if self.phase != HEAD:
                # The first bytes of a request: its head is due within header_timeout.
                self.phase = HEAD
                self.deadline = time.monotonic() + self.server.header_timeout
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._fail(431, "request head too large")
                return
            try:
                self._head = self._parse_head(bytes(buffer[:end]))
            except ValueError as exc:
                self._fail(400, f"malformed request: {exc}")
                return
            del buffer[: end + 4]
            method, path, query, headers, length = self._head
            if length > self.server.max_body:
                self._refuse_too_large(length, max(length - len(buffer), 0))
                return
            if length == CHUNKED:
                self._chunks = bytearray()
                self._chunk_count = 0
            if length == CHUNKED or length > len(buffer):
                self.phase = BODY
                self.deadline = time.monotonic() + self.server.body_timeout
                if (
                    headers.get("expect", "").lower() == "100-continue"
                    and self.transport is not None
                ):
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        method, path, query, headers, length = self._head
        if length == CHUNKED:
            try:
                body = self._read_chunks()
            except ValueError as exc:
                self._fail(400, f"malformed chunked body: {exc}")
                return
            if body is None:
                return
        else:
            if len(buffer) < length:
                return
            body = bytes(buffer[:length])
            del buffer[:length]
        self._head = None
        self.busy = True
        self.phase = BUSY
        self.server.dispatch(self, HttpRequest(method, path, query, headers, body))

    def _refuse_too_large(self, length: int | None, discard: int) -> None:
        """Answer 413 now; read and drop the next `discard` bytes the client is still sending,
        so that it reads the answer rather than a reset connection; then close."""
        self._head = self._chunks = None
        self.buffer.clear()
        self._discard = discard
        self.phase = DISCARD
        self.deadline = time.monotonic() + self.server.body_timeout
        self.closing = True
        response = self.server.too_large(length)
        self._write(response.status, response.body, response.headers, close=not discard)

    def _read_chunks(self) -> bytes | None:
        """Decode the chunks in the buffer; the whole body once its last chunk is in.

        Answers 413 as soon as the decoded body passes the limit; raises ValueError for a body
        that is not valid chunked coding or comes in more than `MAX_CHUNKS` pieces.
        """
        buffer = self.buffer
        chunks = self._chunks
        assert chunks is not None
        pos = 0  # Consumed bytes are deleted once, on the way out: never per chunk.
        try:
            while True:
                eol = buffer.find(b"\r\n", pos)
                if eol < 0:
                    if len(buffer) - pos > MAX_CHUNK_LINE_BYTES:
                        raise ValueError("chunk-size line too long")
                    return None
                if eol - pos > MAX_CHUNK_LINE_BYTES:
                    raise ValueError("chunk-size line too long")
                size_text = bytes(buffer[pos:eol]).split(b";", 1)[0].strip()
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise ValueError(f"bad chunk size {bytes(buffer[pos:eol])[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    # The last chunk, then trailer fields (ignored) up to an empty line.
                    if buffer[eol + 2 : eol + 4] == b"\r\n":
                        pos = eol + 4
                    else:
                        end = buffer.find(b"\r\n\r\n", eol + 2)
                        if end < 0:
                            if len(buffer) - eol > MAX_CHUNK_LINE_BYTES:
                                raise ValueError("trailer section too long")
                            return None
                        pos = end + 4
                    self._chunks = None
                    return bytes(chunks)
                if len(chunks) + size > self.server.max_body:
                    # The rest is of unknown length: swallow at most as much again.
                    pos = 0
                    self._refuse_too_large(None, self.server.max_body)
                    return None
                start = eol + 2
                if len(buffer) < start + size + 2:
                    return None
                if buffer[start + size : start + size + 2] != b"\r\n":
                    raise ValueError("chunk data longer than its size")
                self._chunk_count += 1
                if self._chunk_count > MAX_CHUNKS:
                    raise ValueError(f"more than {MAX_CHUNKS} chunks")
                chunks += buffer[start : start + size]
                pos = start + size + 2
        finally:
            del buffer[:pos]

    @staticmethod
    def _refuse_head(head: bytes) -> None:
        """Raise ValueError saying what makes `head` malformed."""
        control = _CONTROL.search(head.replace(b"\r\n", b"\t"))
        if control is not None:
            raise ValueError(
                f"control character {control.group()!r} in the request head (a bare CR or LF, "
                f"or NUL, inside a line)"
            )
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if (
            len(request_line) != 3
            or request_line[2] not in _VERSIONS
            or not request_line[1]
            or not _TOKEN.fullmatch(request_line[0])
        ):
            raise ValueError(f"bad request line {lines[0][:60]!r}")
        for line in lines[1:]:
            key, sep, _ = line.partition(":")
            # A field name is a token: no whitespace before its colon, no folded lines.
            if not sep or not _TOKEN.fullmatch(key):
                raise ValueError(f"bad header line {line[:40]!r}")
        raise ValueError("malformed request head")

    def _parse_head(self, head: bytes) -> tuple[str, str, str, dict[str, str], int]:
        text = head.decode("latin-1")
        line_end = text.find("\r\n")
        if line_end < 0:
            line_end = len(text)
        request_line = _REQUEST_LINE.fullmatch(text, 0, line_end)
        if request_line is None or not _FIELDS.fullmatch(text[line_end + 2 :] + "\r\n"):
            self._refuse_head(head)
        assert request_line is not None
        method, target, version = request_line.groups()
        headers: dict[str, str] = {}
        for line in text[line_end + 2 :].split("\r\n") if line_end < len(text) else ():
            key, _, value = line.partition(":")
            key = key.lower()
            value = value.strip(" \t")
            if key in headers:
                if key in _SINGLETONS:
                    raise ValueError(f"more than one {key} header")
                # RFC 9110 5.3: repeated fields are one comma-separated list.
                value = f"{headers[key]}, {value}"
            headers[key] = value
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":
                raise ValueError(
                    f"Transfer-Encoding {coding!r} is not supported; send the body with a "
                    f"Content-Length or chunked"
                )
            if "content-length" in headers:
                # RFC 9112 6.3: a message with both may be an attempt at request smuggling.
                raise ValueError("both Transfer-Encoding and Content-Length")
            length = CHUNKED
        else:
            length_text = headers.get("content-length", "0") or "0"
            if not length_text.isdigit():
                raise ValueError(f"bad Content-Length {length_text[:40]!r}")
            length = int(length_text)
        connection = headers.get("connection", "").lower()
        self._keep_alive = (
            connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        )
        path, _, query = target.partition("?")
        if "%" in path:
            path = unquote(path)
        return method, path, query, headers, length

    def respond(self, status: int, body: bytes, headers: dict[str, str] | None) -> None:
        """Answer the current request; then read the next one from the buffer."""
        self._write(status, body, headers, close=not self._keep_alive)
        self.busy = False
        self.phase = IDLE
        self.deadline = time.monotonic() + self.server.keep_alive_timeout
        transport = self.transport
        if self.write_paused:
            pass  # resume_writing() reads on once the client has caught up.
        elif transport is not None and not self.closing and not transport.is_reading():
            transport.resume_reading()
        if self.buffer and not self.closing and not self.write_paused:
            self._next()
        if self._eof and not self.busy and transport is not None:
            transport.close()

    def eof_received(self) -> bool:
        """The client has sent all it will (a half-close): answer what it sent, then close."""
        self._eof = True
        # True keeps the transport open for the answer under way; respond() closes it after.
        return self.busy

    def _write(
        self, status: int, body: bytes, headers: dict[str, str] | None, *, close: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(encode_response(status, body, headers, close=close or self.closing))
        if close:
            self.closing = True
            transport.close()

    def _fail(self, status: int, message: str) -> None:
        body = json.dumps({"ErrorCode": "BadRequest", "Message": message}).encode()
        self._write(status, body, {"Content-Type": "application/json"}, close=True)


def _overloaded() -> HttpResponse:
    return json_response(
        {"ErrorCode": "ServiceUnavailable", "Message": "too many connections; retry later"}, 503
    )


class HttpServer:
    """Dispatches parsed requests to direct handlers or to coroutine handlers."""

    def __init__(
        self,
        router: Router,
        *,
        max_body: int,
        too_large: Callable[[int | None], HttpResponse],
        error_mapper: ErrorMapper,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        keep_alive_timeout: float = 15.0,
        max_connections: int = 512,
        overloaded: Callable[[], HttpResponse] = _overloaded,
    ) -> None:
        self.router = router
        self.max_body = max_body
        self.too_large = too_large
        self.error_mapper = error_mapper
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.max_connections = max_connections
        self.overloaded = overloaded
        self.connections: set[HttpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Future[None] | None = None
        # Deadlines hold to within a quarter of the shortest timeout (a second at most).
        self._sweep_interval = min(
            1.0, max(0.05, min(header_timeout, body_timeout, keep_alive_timeout) / 4)
        )

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    def start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.deadline < now or connection.write_paused:
                    connection.expire(now)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def dispatch(self, connection: HttpConnection, request: HttpRequest) -> None:
        path = request.path
        for method, prefix, suffix, handler in self.router.direct:
            if (
                request.method == method
                and path.startswith(prefix)
                and path.endswith(suffix)
                and "/" not in path[len(prefix) : len(path) - len(suffix)]
            ):
                request.params["segment"] = path[len(prefix) : len(path) - len(suffix)]
                handler(connection, request)
                return
        handler_fn, params, status = self.router.match(request.method, path)
        if handler_fn is None:
            message = "no such route" if status == 404 else "method not allowed"
            body = json.dumps({"ErrorCode": "NotFound", "Message": message}).encode()
            connection.respond(status, body, {"Content-Type": "application/json"})
            return
        request.params = params
        self.spawn(self._run(connection, request, handler_fn))

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, connection: HttpConnection, request: HttpRequest, handler: AsyncHandler
    ) -> None:
        try:
            response = await handler(request)
        except Exception as exc:
            mapped = self.error_mapper(exc)
            if mapped is None:
                log.exception("%s %s failed", request.method, request.path)
                mapped = json_response(
                    {"ErrorCode": "InternalFailure", "Message": f"internal error: {exc}"}, 500
                )
            response = mapped
        connection.respond(response.status, response.body, response.headers)
