"""The errors of Triton management: a server that did not start, a model that did not load,
a request that failed."""

from __future__ import annotations


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
    """Triton refused to load a model; `reason` is Triton's own message."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"failed to load model '{model}': {reason}")
        self.model = model
        self.reason = reason


class TritonInferError(TritonError):
    """An inference request failed; `status` is the HTTP status Triton answered (0: no answer)."""

    def __init__(self, model: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.model = model
        self.message = message
        self.status = status
