"""Errors the gateway answers with, in the shape the SageMaker runtime uses.

The runtime answers `{"ErrorCode": ..., "Message": ...}` with the error type in the
`x-amzn-ErrorType` header, which is what botocore reads to raise `ValidationError`,
`ModelError` (with `OriginalStatusCode` and `OriginalMessage` when the container itself
answered with an error), `ServiceUnavailable` and so on
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html#API_runtime_InvokeEndpoint_Errors).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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


# -- what an error may show a client ----------------------------------------------------------

# Longest message text an answer carries: model code can raise with any message, and the
# rewriting below is bounded by it.
MAX_MESSAGE_CHARS = 8192
# An absolute path on the server's disk: a `/` that does not continue a word, a URL or another
# path, then two or more segments. Each segment ends at a character that in Triton's and
# Python's messages follows a path (quote, bracket, colon, comma, space), so a traceback line
# `.../model.py(4): helper` yields `.../model.py`.
_ABSOLUTE_PATH = re.compile(r"""(?<![\w.:/~\\-])(?:/[^\s'"`:;,()<>\[\]{}|/]+){2,}/?""")
# Triton names a model instance `<model>_<group>_<index>`.
_INSTANCE_SUFFIX = r"(_\d+_\d+)?"
_INSTANCE = re.compile(r"_\d+_\d+")


@dataclass(frozen=True)
class ServedModel:
    """How the gateway serves one package: the names Triton knows its models by.

    `entry` is the served name of the model clients invoke, `names` maps every served name
    (the entry's included) to the model's own name in the package, and `prefix` starts every
    name the gateway chose for the package (its folder's, its models').
    """

    entry: str | None
    names: dict[str, str]
    prefix: str


@dataclass(frozen=True)
class ScrubContext:
    """What an error about one request may not show, and what each thing is called instead.

    The client asked for `target` on an endpoint whose packages come from `store`; the gateway
    stages packages under `work_dir` and serves them from `serving_root`.
    """

    target: str | None
    served: ServedModel | None
    serving_root: str
    work_dir: str
    store: str | None


def scrub_message(message: str, context: ScrubContext) -> str:
    """`message` (Triton's, a store's, the staging step's) as a client may read it.

    A client of a SageMaker endpoint knows the package it invoked and the models in it, not
    how this gateway serves them: served names become the target model (the invoked model) or
    the step's own name (a model instance, an ensemble step); paths in the serving repository
    or the work dir become paths inside the package (`preprocess/1/model.py`), the store's
    location and its files the package name; any other absolute path is cut to its file name.
    """
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + " [truncated]"
    store = context.store.rstrip("/") if context.store else None
    if store and store in message:
        # A store's files are packages (or their sidecars), reached by their name; the store
        # itself is where the invoked package was looked for.
        instead = context.target or "the model store"
        message = re.sub(
            re.escape(store) + r"(/|(?![\w-]|\.\w))",
            lambda match: "" if match.group(1) else instead,
            message,
        )
    served = context.served
    message = _ABSOLUTE_PATH.sub(lambda match: _client_path(match.group(0), context), message)
    if served is not None:
        if served.names:
            names = sorted(served.names, key=len, reverse=True)
            pattern = "(" + "|".join(re.escape(name) for name in names) + ")" + _INSTANCE_SUFFIX
            message = re.sub(pattern, lambda match: _client_name(match, served, context), message)
        if served.prefix and served.prefix in message:
            # A name of the package not known yet (a load that failed before the gateway
            # learnt them): the prefix alone is the package's served name, and a model's own
            # name follows it in any other.
            message = re.sub(
                re.escape(served.prefix) + r"([\w.-]*)",
                lambda match: _unknown_name(match.group(1), context),
                message,
            )
    return message


def _unknown_name(rest: str, context: ScrubContext) -> str:
    if not rest or _INSTANCE.fullmatch(rest):
        return (context.target or "the model") + rest
    return rest


def _client_name(match: re.Match[str], served: ServedModel, context: ScrubContext) -> str:
    name, instance = match.group(1), match.group(2)
    if instance:
        return served.names[name] + instance
    if name == served.entry and context.target:
        return context.target
    return served.names[name]


def _client_path(path: str, context: ScrubContext) -> str:
    # A sentence may end right after a path: its full stops are not the path's.
    stripped = path.rstrip(".")
    tail = path[len(stripped) :]
    parts = _relative_parts(stripped.rstrip("/"), context.serving_root)
    if parts is not None:
        return _package_path(parts, context.served) + tail
    parts = _relative_parts(stripped.rstrip("/"), context.work_dir)
    if parts is not None and len(parts) > 2:
        # <work dir>/<load>/repository/<model>/... or <work dir>/<load>/package/<package>
        return "/".join(parts[2:]) + tail
    return stripped.rstrip("/").rsplit("/", 1)[-1] + tail


def _relative_parts(path: str, folder: str) -> list[str] | None:
    folder = folder.rstrip("/")
    if not folder or not path.startswith(folder + "/"):
        return None
    return path[len(folder) + 1 :].split("/")


def _package_path(parts: list[str], served: ServedModel | None) -> str:
    """A path under the serving root as a path inside the package.

    The root holds, per package, either its model folders (`<prefix><model>/1/model.py`) or
    one folder with the package's models inside (`<served>/<model>/1/model.py`).
    """
    first = parts[0]
    ours = served is not None and (
        first in served.names or (served.prefix and first.startswith(served.prefix))
    )
    if served is None or not ours:
        return parts[-1]
    if len(parts) > 2 and not parts[1].isdigit():
        return "/".join(parts[1:])  # The package's own folder: what follows is the package.
    own = served.names.get(first) or first[len(served.prefix) :] or first
    return "/".join([own, *parts[1:]])


def scrub_error(error: GatewayError, context: ScrubContext) -> GatewayError:
    """`error` with its message (and the model's own, for a ModelError) scrubbed."""
    extra = dict(error.extra)
    if isinstance(extra.get("OriginalMessage"), str):
        extra["OriginalMessage"] = scrub_message(extra["OriginalMessage"], context)
    return GatewayError(
        error.status,
        error.error_type,
        scrub_message(error.message, context),
        error_code=error.error_code,
        extra=extra,
    )
