"""How Berth calls SageMaker: what an absent or already-existing resource answers, listing
page after page, and invoking a multi-model endpoint through a cold load."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from ..base import DeploymentStepError

# A multi-model endpoint keeps downloading and loading a target model for up to 360 s after
# the first invocation that named it, answering ModelNotReadyException (429) meanwhile.
# https://docs.aws.amazon.com/sagemaker/latest/dg/invoke-multi-model-endpoint.html
COLD_LOAD_SECONDS = 360.0
COLD_LOAD_FIRST_WAIT_SECONDS = 1.0
COLD_LOAD_MAX_WAIT_SECONDS = 30.0


def _missing(exc: ClientError) -> bool:
    """SageMaker answers Describe* of something absent with ValidationException."""
    error = exc.response.get("Error", {})
    message = error.get("Message", "").lower()
    return error.get("Code") in {"ValidationException", "ResourceNotFound", "404"} or (
        "not found" in message or "could not find" in message or "does not exist" in message
    )


def _already_exists(exc: ClientError) -> bool:
    message = exc.response.get("Error", {}).get("Message", "").lower()
    return "already exist" in message


def _describe(call: Callable[..., dict], **params: Any) -> dict | None:
    """What a Describe* call answers, or None when the thing does not exist."""
    try:
        return call(**params)
    except ClientError as exc:
        if _missing(exc):
            return None
        raise


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:6]


def _paginate(client, operation: str, key: str, **params: Any) -> Iterator[dict]:
    """Every item of a List* call, page after page (botocore's paginator)."""
    for page in client.get_paginator(operation).paginate(**params):
        yield from page.get(key, [])


def invoke_when_loaded(
    runtime,
    *,
    on_wait: Callable[[int, float, float, str], None],
    budget_seconds: float = COLD_LOAD_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **params: Any,
) -> dict[str, Any]:
    """InvokeEndpoint, waiting out a cold load: while the multi-model endpoint answers
    ModelNotReadyException it is still downloading or loading the target model, so wait
    (1, 2, 4 … at most 30 s) and ask again, for at most `budget_seconds` from the first
    refusal, as AWS documents. `on_wait(attempt, wait, waited, message)` hears of each wait
    before it happens (the deployment log shows it; a cancelled deployment stops there).

    By hand because neither botocore's retry modes (standard and adaptive retry throttling
    and transient errors, not this modelled error, and count attempts, not time) nor a
    library installed here bound retries by SageMaker's loading time."""
    started = None
    wait = COLD_LOAD_FIRST_WAIT_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            return runtime.invoke_endpoint(**params)
        except runtime.exceptions.ModelNotReadyException as exc:
            now = clock()
            started = now if started is None else started
            waited = now - started
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            if waited + wait > budget_seconds:
                raise DeploymentStepError(
                    f"{params.get('TargetModel')} was still not loaded after {waited:.0f} s "
                    f"of ModelNotReadyException ({attempt} attempts); SageMaker gives up "
                    f"loading after {budget_seconds:.0f} s. Last answer: {message}"
                ) from exc
            on_wait(attempt, wait, waited, message)
            sleep(wait)
            wait = min(wait * 2, COLD_LOAD_MAX_WAIT_SECONDS)
