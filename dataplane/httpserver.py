"""The gateway's HTTP/1.1 server: asyncio protocols around llhttp (`httptools`).

The gateway sits in front of a Triton that answers in a few hundred microseconds, so every
microsecond it spends per request shows. The parsing is llhttp's, the C parser Node.js ships,
through httptools, as uvicorn's `protocols/http/httptools_impl.py` uses it; this module keeps
what the gateway needs around it: keep-alive connections, one request at a time per connection
(answers stay in order; pipelined requests wait in a queue), bodies with a Content-Length (what
boto3 sends) or chunked (what clients streaming a body of unknown length send), `Expect:
100-continue`, a body size limit checked before the body is read (as it arrives, for a chunked
body), flow control, and a small router. A handler may answer synchronously (the invocation
fast path answers from a callback) or be a coroutine run as a task.

Every client is bounded, since any of them may be hostile: a request head must arrive within
`header_timeout`, its body within `body_timeout`, an idle kept-alive connection is closed
after `keep_alive_timeout`, a client that stops reading its answers is cut after
`body_timeout`, and past `max_connections` a new connection is answered 503 and closed. One
sweeper enforces the deadlines of all connections (a timer per request would cost more than
the request's parsing). llhttp holds the head to RFC 9110/9112's grammar (no bare CR or LF,
no NUL or other control character in a field, tokens for names, no folded lines, one
Content-Length, not both it and Transfer-Encoding), so nothing the gateway forwards can carry
a line of its own. Where llhttp is lenient, this module checks on its own: the request line
(one space between its parts, HTTP/1.0 or 1.1 only), the size of a head (llhttp has no
limit), a Transfer-Encoding other than `chunked`, and the number of chunks of a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools

log = logging.getLogger(__name__)

# A head is refused once more than this has arrived after the read it began in (llhttp
# itself sets no limit; what a single read holds is bounded by the event loop's read size).
MAX_HEAD_BYTES = 64 * 1024
# Content-Length of a head whose body is chunked: the body's size is not known yet.
CHUNKED = -1
# Chunks per body: each costs a trip through a Python callback, so a body cut into millions
# of one-byte chunks would hold the event loop for seconds. Real clients send far fewer.
MAX_CHUNKS = 65_536
_REASONS = {status.value: status.phrase for status in HTTPStatus}

# RFC 9112 3: a request line is method SP request-target SP HTTP-version, one space each.
# llhttp also takes several spaces and HTTP/0.9's line without a version; checked here when a
# request starts a read (the usual case; llhttp's own checks hold for the rest).
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ HTTP/1\.[01]")
# RFC 9110 5.5, RFC 9112 2.2: a head holds no control character but HTAB, and CR only as the
# CR LF that ends a line (searched with every CR LF replaced by a HTAB).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Fields that must not repeat: two lengths are how requests are smuggled (RFC 9112 6.3).
_SINGLETONS = frozenset({"content-length", "transfer-encoding"})
_VERSIONS = frozenset({"1.1", "1.0"})
# llhttp's reasons, in the words this server's answers use (clients and tests match them).
_LLHTTP_REASONS = {
    "Invalid character in Content-Length": "bad Content-Length",
    "Empty Content-Length": "bad Content-Length",
    "Content-Length overflow": "bad Content-Length",
    "Duplicate Content-Length": "more than one content-length header",
    "Content-Length can't be present with Transfer-Encoding": (
        "both Transfer-Encoding and Content-Length"
    ),
    "Invalid `Transfer-Encoding` header value": (
        "this Transfer-Encoding is not supported; send the body with a Content-Length or chunked"
    ),
    "Invalid character in chunk size": "bad chunk size",
    "Invalid character in chunk extensions": "bad chunk size",
    "Chunk size overflow": "chunk-size line too long (its size does not fit in 64 bits)",
    "Expected LF after chunk data": "chunk data longer than its size",
    "Expected CRLF after chunk": "chunk data longer than its size",
    "Missing expected CR after header value": (
        "control character in the request head (a bare LF inside a line)"
    ),
    "Missing expected LF after header value": (
        "control character in the request head (a bare CR inside a line)"
    ),
    "Invalid header value char": "control character in a header value",
    "Unexpected whitespace after header value": "bad header line (a folded line)",
    "Invalid header field char": "bad header line",
}

# Field names as sent, lower-cased: the usual few are decoded once (bounded: clients name
# fields as they like).
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 256
_METHODS = {method.encode(): method for method in ("GET", "POST", "PUT", "DELETE", "HEAD")}

# What a connection is waiting for, and so which deadline applies to it.
IDLE = 0  # the next request on a kept-alive connection: keep_alive_timeout
HEAD = 1  # the rest of a request head: header_timeout
BODY = 2  # the rest of a request body: body_timeout
BUSY = 3  # its handler's answer: no client deadline
DISCARD = 4  # the rest of a refused body: body_timeout, then closed


class _Refused(Exception):
    """Raised from a parser callback: the request is answered `status` and the connection
    closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reason(exc: Exception, data: bytes) -> str:
    """What makes a request malformed, from llhttp's error and the read it failed in."""
    reason = str(exc)
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return f"bad request line (unknown method; {reason})"
    if isinstance(exc, httptools.HttpParserInvalidURLError):
        return f"bad request line (bad request target; {reason})"
    ours = _LLHTTP_REASONS.get(reason)
    if ours is None and reason == "Invalid header token":
        # A field name that is not a token: a control character in it, or a space or
        # separator (no whitespace before the colon, RFC 9112 5.1). The offending byte is in
        # this read, since llhttp stops at it.
        head = data.partition(b"\r\n\r\n")[0].replace(b"\r\n", b"\t")
        control = _CONTROL.search(head)
        ours = (
            f"control character {control.group()!r} in the request head (a bare CR or LF, "
            f"or NUL, inside a line)"
            if control is not None
            else "bad header line (a field name is a token, with no space before its colon)"
        )
    if ours is None and reason.startswith("Expected") and "version" in reason.lower():
        ours = "bad request line"
    return f"{ours} ({reason})" if ours is not None else reason


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


# Encoded status line and fields of the answers sent, by (status, close, fields...): the
# gateway sends a handful of distinct ones, so a request's head is one lookup and one format.
# Bounded, since a field's value may come from a client or a model.
_HEADS: dict[tuple[Any, ...], bytes] = {}
_MAX_HEADS = 1024


def encode_response(
    status: int, body: bytes, headers: dict[str, str] | None, *, close: bool = False
) -> bytes:
    key = (status, close, *headers.items()) if headers else (status, close)
    head = _HEADS.get(key)
    if head is None:
        parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        if headers:
            for name, value in headers.items():
                parts.append(f"{name}: {value}\r\n")
        if close:
            parts.append("Connection: close\r\n")
        head = "".join(parts).encode("latin-1")
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[key] = head
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# A direct handler answers through the connection itself (`HttpConnection.respond`).
DirectHandler = Callable[["HttpConnection", HttpRequest], None]
ErrorMapper = Callable[[Exception], HttpResponse | None]


class Router:
    """Routes `METHOD /path/{param}` to handlers (the path arrives URL-decoded)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], AsyncHandler]] = []
        # (method, prefix, suffix, len(prefix), len(suffix), handler)
        self.direct: list[tuple[str, str, str, int, int, DirectHandler]] = []

    def add(self, method: str, pattern: str, handler: AsyncHandler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))

    def add_direct(self, method: str, prefix: str, suffix: str, handler: DirectHandler) -> None:
        """A hot route `prefix{one segment}suffix` matched by string tests, not regexes."""
        self.direct.append((method, prefix, suffix, len(prefix), len(suffix), handler))

    def match(self, method: str, path: str) -> tuple[AsyncHandler | None, dict[str, str], int]:
        allowed = False
        for route_method, regex, handler in self._routes:
            found = regex.match(path)
            if found:
                if route_method == method:
                    return handler, found.groupdict(), 200
                allowed = True
        return None, {}, 405 if allowed else 404


class HttpConnection:
    """One client connection: llhttp's callbacks build requests, handled one at a time.

    An asyncio protocol by its methods, not by deriving from `asyncio.Protocol` (compiled:
    dataplane.native).
    """

    __slots__ = (
        "server",
        "transport",
        "parser",
        "busy",
        "closing",
        "pending",
        "phase",
        "deadline",
        "write_paused",
        "send_deadline",
        "_keep_alive",
        "_next_keep_alive",
        "_in_message",
        "_in_body",
        "_head_bytes",
        "_head_fresh",
        "_url",
        "_headers",
        "_body",
        "_size",
        "_chunk_count",
        "_continue_due",
        "_discard",
        "_draining",
        "_ignoring",
        "_read_paused",
        "_line_checked",
        "_last_line",
        "_eof",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.busy = False
        self.closing = False
        # Requests complete while an earlier one is being answered (pipelined), each with
        # whether its connection stays open; or a refusal due after them (then closed).
        self.pending: deque[tuple[HttpRequest, bool] | HttpResponse] = deque()
        self.phase = HEAD
        self.deadline = 0.0
        self.write_paused = False
        self.send_deadline = 0.0
        self._keep_alive = True
        self._next_keep_alive = True
        self._in_message = False
        self._in_body = False
        self._head_bytes = 0
        self._head_fresh = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._chunk_count = 0
        self._continue_due = False
        # Bytes of a refused body still read (so the client sees the answer), or -1.
        self._discard = -1
        self._draining = False
        # A refusal waits behind answers due first: nothing more from the client is read.
        self._ignoring = False
        # Reading paused while requests wait in `pending` (not by flow control: that is
        # `write_paused`).
        self._read_paused = False
        # The request line of the request being parsed matched _REQUEST_LINE (version too).
        self._line_checked = False
        # The last request line that matched _REQUEST_LINE: a kept-alive client repeats it,
        # and comparing bytes costs less than matching the expression again.
        self._last_line = b""
        self._eof = False

    # -- the transport ----------------------------------------------------------------------

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
        self.pending.clear()
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        """The client reads its answers slower than they come: take no further request until
        it catches up, and cut it if it does not within body_timeout."""
        self.write_paused = True
        self.send_deadline = time.monotonic() + self.server.body_timeout
        if self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        transport = self.transport
        if transport is None or self.closing or self.busy:
            return
        self._drain()
        if not self.busy and not self.pending and not self.closing:
            self._read_paused = False
            transport.resume_reading()

    def eof_received(self) -> bool:
        """The client has sent all it will (a half-close): answer what it sent, then close."""
        self._eof = True
        # True keeps the transport open for the answers under way; respond() closes it after.
        return self.busy

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
        if (phase == HEAD and self._in_message) or phase == BODY:
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
            self._write(408, body, {"Content-Type": "application/json"}, close=True)
        else:
            self.closing = True
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._ignoring or (self.closing and self._discard < 0):
            return
        if not self._in_message and self._discard < 0:
            # A request starts this read: its request line, where llhttp is lenient.
            end = data.find(b"\r\n")
            if end >= 0:
                line = data[:end]
                if line != self._last_line:
                    if _REQUEST_LINE.fullmatch(line) is None:
                        self._refuse(400, f"malformed request: bad request line {line[:60]!r}")
                        return
                    self._last_line = line
                self._line_checked = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, str(cause))
            elif isinstance(cause, ValueError):
                self._refuse(400, f"malformed request: {cause}")
            else:
                raise
            return
        except httptools.HttpParserUpgrade:
            # llhttp stops at an Upgrade or CONNECT, the body unread: none is served here.
            self._refuse(
                400,
                "malformed request: protocol upgrades (Upgrade, CONNECT) are not supported; "
                "send the request without them",
            )
            return
        except httptools.HttpParserError as exc:
            if self._discard >= 0:
                self._close()
            else:
                self._refuse(400, f"malformed request: {_reason(exc, data)}")
            return
        if self._in_message and not self._in_body:
            # A head still arriving: counted from the read after the one it began in.
            if self._head_fresh:
                self._head_fresh = False
            else:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse(431, "request head too large")

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_body = False
        self._head_bytes = 0
        self._head_fresh = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        if not self.busy:
            # The first bytes of a request: its head is due within header_timeout.
            self.phase = HEAD
            self.deadline = time.monotonic() + self.server.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = key
        # llhttp drops the whitespace before a value, not after it (RFC 9110 5.5: OWS).
        text = value.decode("latin-1").rstrip(" \t")
        headers = self._headers
        if key in headers:
            if key in _SINGLETONS:
                raise ValueError(f"more than one {key} header")
            # RFC 9110 5.3: repeated fields are one comma-separated list.
            text = f"{headers[key]}, {text}"
        headers[key] = text

    def on_headers_complete(self) -> None:
        parser = self.parser
        if self._line_checked:
            self._line_checked = False  # Its version too.
        else:
            version = parser.get_http_version()
            if version not in _VERSIONS:
                raise ValueError(f"bad request line (HTTP/{version} is not served)")
        headers = self._headers
        if "transfer-encoding" in headers:
            coding = headers["transfer-encoding"]
            if coding.lower() != "chunked":
                raise ValueError(
                    f"Transfer-Encoding {coding!r} is not supported; send the body with a "
                    f"Content-Length or chunked"
                )
            if "content-length" in headers:
                # RFC 9112 6.3: a message with both may be an attempt at request smuggling.
                raise ValueError("both Transfer-Encoding and Content-Length")
            length = CHUNKED
            self._chunk_count = 0
        else:
            length_text = headers.get("content-length")
            length = int(length_text) if length_text else 0  # Digits only: llhttp checked.
        self._in_body = True
        self._next_keep_alive = parser.should_keep_alive()
        if length > self.server.max_body:
            if self.busy:
                raise _Refused(413, "request payload too large")
            self._refuse_too_large(length)
            return
        if length and not self.busy:
            self.phase = BODY
            self.deadline = time.monotonic() + self.server.body_timeout
        if length and headers.get("expect", "").lower() == "100-continue":
            if self.busy:
                self._continue_due = True  # After the answers due first.
            elif self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        self._chunk_count += 1
        if self._chunk_count > MAX_CHUNKS:
            raise ValueError(f"more than {MAX_CHUNKS} chunks in the body")

    def on_body(self, body: bytes) -> None:
        if self._discard >= 0:
            self._discard -= len(body)
            if self._discard <= 0:
                self._close()
            return
        self._size += len(body)
        if self._size > self.server.max_body:
            # A chunked body past the limit: the rest is of unknown length.
            if self.busy:
                raise _Refused(413, "request payload too large")
            self._refuse_too_large(None)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = self._in_body = False
        if self._discard >= 0:
            self._close()  # The refused body is all in: the answer is out already.
            return
        if self.closing or self.parser.should_upgrade():
            return  # An upgrade: refused once llhttp stops (data_received).
        target = self._url.decode("latin-1")
        path, _, query = target.partition("?")
        if "%" in path:
            path = unquote(path)
        body = self._body
        method = self.parser.get_method()
        request = HttpRequest(
            _METHODS.get(method) or method.decode("latin-1"),
            path,
            query,
            self._headers,
            (body[0] if len(body) == 1 else b"".join(body)) if body else b"",
        )
        if self.busy or self.pending:
            self.pending.append((request, self._next_keep_alive))
            if self.transport is not None:
                self._read_paused = True
                self.transport.pause_reading()  # One queued request is enough.
            return
        self._start(request, self._next_keep_alive)

    def _start(self, request: HttpRequest, keep_alive: bool) -> None:
        """Hand `request` to its handler; a handler's failure is answered 500, not taken for
        the client's (it would otherwise surface as a parse error)."""
        self._keep_alive = keep_alive
        self.busy = True
        self.phase = BUSY
        try:
            self.server.dispatch(self, request)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            if self.busy:
                response = json_response(
                    {"ErrorCode": "InternalFailure", "Message": f"internal error: {exc}"}, 500
                )
                self.respond(response.status, response.body, response.headers)

    # -- answers ----------------------------------------------------------------------------

    def respond(self, status: int, body: bytes, headers: dict[str, str] | None) -> None:
        """Answer the current request; then take the next one."""
        transport = self.transport
        self.busy = False
        if transport is None:
            return
        if (
            self._keep_alive
            and not self.closing
            and not self.pending
            and not self._in_message
            and not self._eof
            and not self._read_paused
        ):
            # The usual case, a kept-alive client with nothing more sent yet. The write is the
            # last thing done: it wakes the client, and work left after it would compete with
            # the client (and Triton) for the cores, which costs more than the work itself.
            self.phase = IDLE
            self.deadline = time.monotonic() + self.server.keep_alive_timeout
            transport.write(encode_response(status, body, headers))
            return
        if self._keep_alive and not self.closing:
            transport.write(encode_response(status, body, headers))
        else:
            self._write(status, body, headers, close=True)
        if self.pending:
            self._drain()
            if self.busy or self.closing:
                return
        transport = self.transport
        if transport is None or self.closing:
            return
        if self._in_body:
            self.phase = BODY
            self.deadline = time.monotonic() + self.server.body_timeout
            if self._continue_due:
                self._continue_due = False
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif self._in_message:
            self.phase = HEAD
            self.deadline = time.monotonic() + self.server.header_timeout
        else:
            self.phase = IDLE
            self.deadline = time.monotonic() + self.server.keep_alive_timeout
        if self._eof:
            transport.close()
        elif self._read_paused and not self.write_paused and not self.pending:
            # resume_writing() reads on once a slow client has caught up.
            self._read_paused = False
            transport.resume_reading()

    def _drain(self) -> None:
        """Take the queued requests in order until one is under way (a loop, not recursion:
        a read may hold thousands of small pipelined requests, each answered at once)."""
        if self._draining:
            return
        self._draining = True
        try:
            pending = self.pending
            while pending and not self.busy and not self.closing and not self.write_paused:
                item = pending.popleft()
                if isinstance(item, HttpResponse):
                    self._write(item.status, item.body, item.headers, close=True)
                    return
                request, keep_alive = item
                self._start(request, keep_alive)
        finally:
            self._draining = False

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close: at once, or after the answers due first (then nothing
        more is read)."""
        if self.busy or self.pending:
            self.pending.append(
                self.server.too_large(None) if status == 413 else _bad_request(status, message)
            )
            self._ignoring = True
            self._in_message = self._in_body = False
            if self.transport is not None:
                self._read_paused = True
                self.transport.pause_reading()
            return
        self._fail(status, message)

    def _refuse_too_large(self, length: int | None) -> None:
        """Answer 413 now; read and drop the rest of the body (at most the limit again, for a
        chunked one), so that the client reads the answer rather than a reset; then close."""
        self._discard = length if length is not None else self.server.max_body
        self._body = []
        self.phase = DISCARD
        self.deadline = time.monotonic() + self.server.body_timeout
        response = self.server.too_large(length)
        if self.transport is not None:
            self.transport.write(
                encode_response(response.status, response.body, response.headers, close=True)
            )
        self.closing = True  # Nothing after this request is answered.
        if not self._in_message or self._discard == 0:
            self._close()

    def _close(self) -> None:
        self.closing = True
        self._discard = -1
        if self.transport is not None:
            self.transport.close()

    def _write(
        self, status: int, body: bytes, headers: dict[str, str] | None, *, close: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        close = close or self.closing
        transport.write(encode_response(status, body, headers, close=close))
        if close:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        response = _bad_request(status, message)
        self._write(response.status, response.body, response.headers, close=True)


def _bad_request(status: int, message: str) -> HttpResponse:
    return json_response({"ErrorCode": "BadRequest", "Message": message}, status)


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
        for method, prefix, suffix, start, tail, handler in self.router.direct:
            if request.method == method and path.startswith(prefix) and path.endswith(suffix):
                segment = path[start : len(path) - tail]
                if "/" not in segment:
                    request.params["segment"] = segment
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
