"""A small, fast HTTP/1.1 server that answers invocations the way the tests ask.

    python -m loadgen.tests.server [--unix PATH | --tls CERT KEY] [--delay-ms D]
        [--stall-after S --stall-s T] [--status N]

prints its port on stdout, then answers every POST after D ms (at once when 0) with the
status N, keep-alive. With `--stall-after`, it answers nothing from S seconds after its
first request for T seconds (answers due then go out when the stall ends): one stall. `GET
/stats` answers the requests counted per `X-Amzn-SageMaker-Target-Model` and the stall's
window (its own monotonic clock). uvloop and llhttp keep its cost per request small, so it
can stand in for a fast endpoint in `bench/loadgen.py` too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
import time

import httptools
import uvloop


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.delay = args.delay_ms / 1000.0
        self.status = args.status
        self.stall_after = args.stall_after
        self.stall_s = args.stall_s
        self.first: float | None = None
        self.per_model: dict[str, int] = {}
        self.requests = 0


class _Handler(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.model = ""
        self.url = b""
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-amzn-sagemaker-target-model":
            self.model = value.decode("latin-1")

    def on_message_complete(self) -> None:
        state = self.state
        if self.parser.get_method() == b"GET" and self.url == b"/stats":
            stall = None
            if state.first is not None and state.stall_after is not None:
                begin = state.first + state.stall_after
                stall = [begin, begin + state.stall_s]
            body = json.dumps(
                {"requests": state.requests, "per_model": state.per_model, "stall": stall}
            ).encode()
            self._write(200, body)
            return
        now = time.monotonic()
        if state.first is None:
            state.first = now
        state.requests += 1
        state.per_model[self.model] = state.per_model.get(self.model, 0) + 1
        due = now + state.delay
        if state.stall_after is not None:
            begin = state.first + state.stall_after
            end = begin + state.stall_s
            if begin <= due < end:
                due = end
        if due <= now:
            self._write(state.status, b'{"ok":true}')
        else:
            self.loop.call_later(due - now, self._write, state.status, b'{"ok":true}')

    def _write(self, status: int, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )


async def _serve(args: argparse.Namespace) -> None:
    state = _State(args)
    loop = asyncio.get_running_loop()
    if args.unix:
        server = await loop.create_unix_server(lambda: _Handler(state), args.unix, backlog=1024)
        print(0, flush=True)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        tls = None
        if args.tls:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(*args.tls)
        server = await loop.create_server(lambda: _Handler(state), sock=sock, backlog=1024, ssl=tls)
        print(sock.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", default=None, help="listen on this Unix socket path instead")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--stall-after", type=float, default=None)
    parser.add_argument("--stall-s", type=float, default=1.0)
    args = parser.parse_args()
    try:
        uvloop.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
