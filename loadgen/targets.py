"""Where the generator's requests go, each request's bytes ready to write.

Both targets use the project's one HTTP/1.1 client (`dataplane.upstream.UpstreamPool`, lean
keep-alive connections parsed by llhttp): the generator writes each request's bytes on an
idle connection and is called back with the answer, so a request costs a few microseconds of
Python, where a general client (aiohttp, aiobotocore) costs far more than the request does.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import quote, urlsplit

from dataplane.upstream import UpstreamPool
from loadgen.spec import HttpTarget, RequestSpec, SageMakerTarget, Spec

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


class TargetError(Exception):
    """The target cannot be used (no AWS credentials, for one)."""


def invocations_path(endpoint: str) -> str:
    return f"/endpoints/{quote(endpoint, safe='')}/invocations"


class HttpRequests:
    """The data plane gateway's SageMaker-runtime route: every request encoded once."""

    def __init__(
        self, target: HttpTarget, requests: tuple[RequestSpec, ...], max_connections: int
    ) -> None:
        parts = urlsplit(target.url)
        self.pool = UpstreamPool(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            unix_path=target.unix_path,
            max_idle=max_connections,
        )
        path = invocations_path(target.endpoint)
        self._data = [
            self.pool.encode(
                "POST",
                path,
                r.body,
                {
                    "Content-Type": r.content_type,
                    TARGET_MODEL_HEADER: r.target_model,
                    **target.headers,
                },
            )
            for r in requests
        ]

    def data(self, index: int) -> bytes:
        return self._data[index]


class SageMakerRequests:
    """SageMaker's `InvokeEndpoint`, each request signed with SigV4 by botocore's signer.

    Credentials come from botocore's default chain (environment, profile, instance role).
    A SigV4 signature covers the request and its second (`X-Amz-Date`), so a request's
    signed bytes are kept for the second they were signed in: the same bytes signing each
    request anew would give, at one signature per request kind per second.
    """

    def __init__(
        self, target: SageMakerTarget, requests: tuple[RequestSpec, ...], max_connections: int
    ) -> None:
        import botocore.session
        from botocore.auth import SigV4Auth

        url = target.endpoint_url or f"https://runtime.sagemaker.{target.region}.amazonaws.com"
        parts = urlsplit(url.rstrip("/"))
        tls = parts.scheme == "https"
        credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise TargetError("no AWS credentials found (botocore's default chain)")
        self._signer = SigV4Auth(credentials, "sagemaker", target.region)
        self._path = f"{parts.path}{invocations_path(target.endpoint)}"
        self._url = f"{parts.scheme}://{parts.netloc}{self._path}"
        self._netloc = parts.netloc
        self.pool = UpstreamPool(
            parts.hostname or "",
            parts.port or (443 if tls else 80),
            ssl=ssl.create_default_context() if tls else None,
            host_header=parts.netloc,
            max_idle=max_connections,
        )
        self._requests = requests
        self._signed: list[tuple[int, bytes] | None] = [None] * len(requests)

    def _sign(self, request: RequestSpec) -> bytes:
        from botocore.awsrequest import AWSRequest

        aws = AWSRequest(
            method="POST",
            url=self._url,
            data=request.body,
            headers={
                "Content-Type": request.content_type,
                TARGET_MODEL_HEADER: request.target_model,
                "Accept": "*/*",
            },
        )
        self._signer.add_auth(aws)
        lines = [f"POST {self._path} HTTP/1.1", f"Host: {self._netloc}"]
        for name, value in aws.headers.items():
            if name.lower() not in ("host", "content-length"):
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(request.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body

    def data(self, index: int) -> bytes:
        second = int(time.time())
        signed = self._signed[index]
        if signed is None or signed[0] != second:
            signed = self._signed[index] = (second, self._sign(self._requests[index]))
        return signed[1]


def build(spec: Spec) -> HttpRequests | SageMakerRequests:
    """The request source for `spec`: `.pool` (an `UpstreamPool`) and `.data(index)`."""
    if isinstance(spec.target, SageMakerTarget):
        return SageMakerRequests(spec.target, spec.requests, spec.max_connections)
    return HttpRequests(spec.target, spec.requests, spec.max_connections)
