"""A relay from a Unix socket to Triton's SageMaker frontend, run inside Triton's sandbox.

Triton's SageMaker frontend (`--allow-sagemaker`) listens on `0.0.0.0:<port>` and has no
address option. Inside the sandbox's own network namespace that port is reachable only from
inside the sandbox, which is what keeps the frontend's model API (register any folder, load,
unload) away from every host address. The launcher reaches it through this relay instead: it
listens on a Unix socket in the sandbox's socket folder (which the launcher reaches through
`/proc/<tritonserver pid>/root`, like Triton's own sockets) and copies each connection to and
from `127.0.0.1:<port>`.

Run as a script by the venv's interpreter inside the sandbox, where the project folder does
not exist: standard library only, no import of the rest of the toolkit. Load and unload
calls are rare, so a thread pair per connection is cheap enough.

    python -I relay.py <unix socket path> <port>
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 64 * 1024
# Seconds to connect to the frontend; it is on the loopback of the same namespace.
CONNECT_TIMEOUT = 5.0


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy `source` to `sink` until `source` ends, then pass the end on."""
    try:
        while True:
            data = source.recv(CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except OSError:
        # Not listening yet (Triton starts its frontends one after another): the caller sees
        # the connection close without an answer and may retry.
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(path: str, port: int) -> None:
    """Accept connections on the Unix socket `path` forever, one thread pair each."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Built, then renamed into place: a caller that sees the socket can connect to it.
    partial = f"{path}.partial"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    listener.bind(partial)
    listener.listen(16)
    os.rename(partial, path)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, port), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: relay.py <unix socket path> <port>", file=sys.stderr)
        return 2
    serve(argv[1], int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
