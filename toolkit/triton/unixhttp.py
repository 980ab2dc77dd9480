"""HTTP over a Unix socket: how this process talks to a sandboxed Triton, whose frontends
listen on Unix sockets because the sandbox has no network."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: how this process talks to a sandboxed Triton."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


# Where an HTTP server listens: a Unix socket's path, or (host, port).
Address = str | Path | tuple[str, int]


def unix_request(
    path: Address,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One HTTP request to `path` (a Unix socket; or (host, port), as the unsandboxed
    SageMaker frontend listens): (status, body). Raises OSError."""
    if isinstance(path, tuple):
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            path[0], path[1], timeout=timeout
        )
    else:
        conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        # One request per connection, and Triton told so: a connection it keeps open (through
        # the SageMaker relay, which holds its side until Triton closes) makes every stop
        # wait for it ("Found 1 HTTP service connections").
        conn.request(method, target, body=body, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad answer from Triton: {exc!r}") from exc
    finally:
        conn.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
