"""Triton management: the `tritonserver` binary that nvidia-pytriton ships, run sandboxed.

- `install`: where the binary and the Python backend stub are, and the command line,
  environment and sandbox one run gets;
- `process`: `TritonProcess`, the process itself (launch, readiness, stop, its stubs);
- `client`: `TritonServer`, a `TritonProcess` with a synchronous KServe v2 client;
- `packages`: loading a package as SageMaker's Triton does, through its SageMaker frontend
  (reached through `relay` in the sandbox);
- `errors`, `stubs`, `serverlog`, `unixhttp`: what those share.

The names most callers need are importable from here.
"""

from toolkit.triton.client import DEFAULT_LOAD_TIMEOUT, TritonServer, triton_error_message
from toolkit.triton.errors import (
    TritonError,
    TritonInferError,
    TritonLoadError,
    TritonOutOfMemory,
    TritonStartError,
)
from toolkit.triton.install import (
    DEFAULT_PYTHON_BACKEND_THREADS,
    STUB_NAME,
    python_backend_threads,
    tritonserver_binary,
    tritonserver_dist,
)
from toolkit.triton.process import DEFAULT_START_TIMEOUT, TritonProcess
from toolkit.triton.stubs import StubProcess
from toolkit.triton.unixhttp import free_port, unix_request

__all__ = [
    "DEFAULT_LOAD_TIMEOUT",
    "DEFAULT_PYTHON_BACKEND_THREADS",
    "DEFAULT_START_TIMEOUT",
    "STUB_NAME",
    "StubProcess",
    "TritonError",
    "TritonInferError",
    "TritonLoadError",
    "TritonOutOfMemory",
    "TritonProcess",
    "TritonServer",
    "TritonStartError",
    "free_port",
    "python_backend_threads",
    "triton_error_message",
    "tritonserver_binary",
    "tritonserver_dist",
    "unix_request",
]
