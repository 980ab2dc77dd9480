"""The one client of the local data plane, used by deployments (to serve endpoints, load and
alias models) and by monitoring (to read metrics and loaded models).

The admin API always wants its bearer token; the token, the timeouts and how a refusal or
silence becomes an error message live here once, so every caller fails the same way. The
invocation API is SageMaker's runtime API, reached with boto3's client from `portal.aws`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import urllib3
from django.conf import settings

from portal import aws

# Loading an ensemble into Triton takes seconds on a CPU; large GPU models take longer.
LOAD_TIMEOUT_SECONDS = 600
ADMIN_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5
# What is quoted from an answer that is not JSON.
QUOTED_BYTES = 500

# One pool per process: connections to the data plane are kept alive between calls.
_pool = urllib3.PoolManager(retries=False)


class DataPlaneError(Exception):
    """The data plane refused a request (`status` is its HTTP status) or did not answer
    (`status` is None)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DataPlaneClient:
    """The data plane's admin API (JSON over HTTP, bearer token)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = ADMIN_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = (base_url or settings.BERTH_DATAPLANE_URL).rstrip("/")
        token = settings.BERTH_DATAPLANE_ADMIN_TOKEN if token is None else token
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: dict | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request; its JSON answer, or DataPlaneError saying why there is none."""
        headers = {"Accept": "application/json", **self.auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = _pool.request(
                method,
                self.base_url + path,
                body=json.dumps(body, default=str).encode() if body is not None else None,
                headers=headers,
                timeout=urllib3.Timeout(
                    connect=CONNECT_TIMEOUT_SECONDS, read=timeout or self.timeout
                ),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise DataPlaneError(
                f"The data plane at {self.base_url} did not answer {method} {path}: {exc}"
            ) from exc
        try:
            data = json.loads(response.data) if response.data else {}
        except ValueError:
            data = None
        if response.status >= 400:
            code, reason = _refusal(data, response.data)
            raise DataPlaneError(
                f"{method} {path} answered {response.status}: {reason}",
                status=response.status,
                code=code,
            )
        if not isinstance(data, dict):
            raise DataPlaneError(
                f"{method} {path} answered something that is not a JSON object: "
                f"{response.data[:QUOTED_BYTES]!r}",
                status=response.status,
            )
        return data

    # Endpoints and models

    def ensure_endpoint(self, name: str, *, store: str, memory_budget_bytes: int | None) -> dict:
        body: dict[str, Any] = {"store": store}
        if memory_budget_bytes:
            body["memory_budget_bytes"] = memory_budget_bytes
        return self.request("PUT", f"/admin/endpoints/{quote(name, safe='')}", body)

    def load(self, endpoint: str, target_model: str) -> dict:
        return self.request(
            "POST",
            f"/admin/endpoints/{quote(endpoint, safe='')}/models/{quote(target_model, safe='')}"
            "/load",
            {},
            timeout=LOAD_TIMEOUT_SECONDS,
        )

    def loaded_models(self, endpoint: str) -> list[dict]:
        """Models loaded on the endpoint now: target model, size, last use, invocations."""
        answer = self.request("GET", f"/admin/endpoints/{quote(endpoint, safe='')}/models")
        return [item for item in answer.get("models", []) if isinstance(item, dict)]

    def set_alias(self, endpoint: str, model: str, target_model: str) -> dict:
        return self.request(
            "PUT",
            f"/admin/endpoints/{quote(endpoint, safe='')}/aliases/{quote(model, safe='')}",
            {"target_model": target_model},
        )

    def aliases(self, endpoint: str) -> dict:
        return self.request("GET", f"/admin/endpoints/{quote(endpoint, safe='')}/aliases")

    # Metrics

    def counters(self, endpoint: str) -> dict[str, Any]:
        """Cumulative counts of the endpoint since the gateway started: invocations,
        cache_lookups, cache_hits, model_loads, errors_4xx, errors_5xx."""
        return self.request("GET", f"/admin/endpoints/{quote(endpoint, safe='')}/counters")

    def metric_data(self, request: dict[str, Any]) -> dict[str, Any]:
        """GetMetricData's question (with a `TargetModel` dimension for per-model series),
        answered in GetMetricData's shape."""
        return self.request("POST", "/admin/metric-data", request)


def _refusal(data: Any, raw: bytes) -> tuple[str, str]:
    """The error code and reason of a refusal: the gateway answers SageMaker's
    `{"ErrorCode", "Message"}`; anything else is quoted."""
    if isinstance(data, dict):
        code = str(data.get("ErrorCode") or data.get("code") or "")
        message = (
            data.get("Message") or data.get("message") or data.get("detail") or data.get("error")
        )
        if message:
            return code, f"{code}: {message}" if code else str(message)
        return code, json.dumps(data)[:QUOTED_BYTES]
    return "", raw[:QUOTED_BYTES].decode(errors="replace")


def runtime_client(base_url: str | None = None):
    """boto3's sagemaker-runtime client for the data plane's invocation API, with a read
    timeout long enough for a cold model to load."""
    return aws.runtime_client(
        (base_url or settings.BERTH_DATAPLANE_URL).rstrip("/"),
        read_timeout=LOAD_TIMEOUT_SECONDS,
    )
