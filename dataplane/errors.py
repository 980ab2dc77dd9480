"""Errors the gateway answers with, in the shape the SageMaker runtime uses.

The runtime answers `{"ErrorCode": ..., "Message": ...}` with the error type in the
`x-amzn-ErrorType` header, which is what botocore reads to raise `ValidationError`,
`ModelError` (with `OriginalStatusCode` and `OriginalMessage` when the container itself
answered with an error), `ServiceUnavailable` and so on
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html#API_runtime_InvokeEndpoint_Errors).
"""

from __future__ import annotations

import json
from typing import Any

# Substrings of a Triton error that SageMaker's Triton frontend treats as "out of memory" and
# answers with 507 (triton-inference-server/server src/sagemaker_server.cc).
OUT_OF_MEMORY_MARKERS = (
    "CUDA out of memory",
    "CUDA_OUT_OF_MEMORY",
    "Out of memory",
    "Out Of Memory",
    "out of memory",
    "MemoryError",
    "OutOfMemory",
    "OOM",
    "Dst tensor is not initialized",
    "Src tensor is not initialized",
    "CNMEM_STATUS_OUT_OF_MEMORY",
    "CUDNN_STATUS_NOT_INITIALIZED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_NOT_INITIALIZED",
    "Failed to allocate memory",
    "failed to allocate memory",
    "No space left on device",
)


def is_out_of_memory(message: str) -> bool:
    return any(marker in message for marker in OUT_OF_MEMORY_MARKERS)


class GatewayError(Exception):
    """An error answered to the client: HTTP status, SageMaker error type and message."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        error_code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.error_code = error_code or error_type
        self.extra = extra or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in staging processes (dataplane.staging) and rebuilt in the gateway.
        return (
            _rebuild_gateway_error,
            (self.status, self.error_type, self.message, self.error_code, self.extra),
        )

    def body(self) -> bytes:
        payload: dict[str, Any] = {"ErrorCode": self.error_code, "Message": self.message}
        payload.update(self.extra)
        return json.dumps(payload).encode()

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "x-amzn-ErrorType": self.error_type}


def _rebuild_gateway_error(
    status: int, error_type: str, message: str, error_code: str, extra: dict[str, Any]
) -> GatewayError:
    return GatewayError(status, error_type, message, error_code=error_code, extra=extra)


def validation_error(
    message: str, *, status: int = 400, error_code: str | None = None
) -> GatewayError:
    """The client's request cannot be served as sent (400 unless `status` says otherwise)."""
    return GatewayError(status, "ValidationError", message, error_code=error_code)


def model_error(original_status: int, original_message: str, *, model_name: str) -> GatewayError:
    """The model (Triton) answered with an error: SageMaker's ModelError, status 424.

    Invocation4XXErrors / Invocation5XXErrors count it by `original_status`, as CloudWatch
    counts the container's own answer.
    """
    kind = "client" if 400 <= original_status < 500 else "server"
    message = (
        f"Received {kind} error ({original_status}) from model {model_name} with message "
        f'"{original_message}".'
    )
    return GatewayError(
        424,
        "ModelError",
        message,
        extra={"OriginalStatusCode": original_status, "OriginalMessage": original_message},
    )


def service_unavailable(message: str) -> GatewayError:
    return GatewayError(503, "ServiceUnavailable", message)


def insufficient_memory(message: str) -> GatewayError:
    # 507 is what SageMaker's Triton frontend answers when a model cannot fit.
    return GatewayError(507, "InsufficientMemory", message, error_code="InsufficientMemory")


def error_class(status: int, error: GatewayError | None = None) -> int:
    """4 or 5: which of Invocation4XXErrors / Invocation5XXErrors a response counts in."""
    if error is not None and "OriginalStatusCode" in error.extra:
        status = int(error.extra["OriginalStatusCode"])
    return status // 100
