"""The errors of Triton management: a server that did not start, a model that did not load,
a request that failed; and the message of an error answer as Triton writes it."""

from __future__ import annotations

import json


class TritonError(RuntimeError):
    """Base of the errors `toolkit.triton` raises."""


class TritonStartError(TritonError):
    """tritonserver did not come up; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n{self.log_tail}" if self.log_tail else base


class TritonLoadError(TritonError):
    """Triton refused to load a model; `reason` is Triton's own message. `status` is the
    SageMaker frontend's HTTP status when a package load failed there (0 otherwise: 409
    when the name is taken)."""

    out_of_memory = False

    def __init__(self, model: str, reason: str, *, status: int = 0) -> None:
        super().__init__(f"failed to load model '{model}': {reason}")
        self.model = model
        self.reason = reason
        self.status = status


class TritonOutOfMemory(TritonLoadError):
    """A package load failed for want of memory: the SageMaker frontend answered 507, as it
    does when Triton's reason reads like an out-of-memory error (`SageMakerMMECheckOOMError`)."""

    out_of_memory = True


class TritonInferError(TritonError):
    """An inference request failed; `status` is the HTTP status Triton answered (0: no answer)."""

    def __init__(self, model: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.model = model
        self.message = message
        self.status = status


def triton_error_message(body: bytes) -> str:
    """The message of a Triton error answer ({"error": "..."}), or the raw text."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    return text.strip()
