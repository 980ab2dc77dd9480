"""The one place AWS clients come from. Services call `client("s3")`; tests run the same code
under moto. The region and an optional endpoint (a local S3-compatible store, say) come from
settings, so nothing else in the code names them.

Thread safety, as boto3 documents it
(https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html#multithreading-or-multiprocessing-with-clients):
a built client may be shared between threads, a `Session` may not, and `boto3.client()`
builds on the one default session. So every client here is built on a session of its own;
only the data plane's runtime client, which moto never patches, is also kept and shared.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

_shared_lock = threading.Lock()
_shared: dict[tuple[str, float], Any] = {}


def client(service_name: str, **kwargs: Any):
    """A boto3 client for `service_name` in the configured region, built on a session of
    its own. A new one each call: that keeps moto's patching effective for clients made
    inside a test, and a client never outlives the settings it was built from."""
    options: dict[str, Any] = {
        "region_name": settings.AWS_REGION or "us-east-1",
        "config": Config(retries={"max_attempts": 5, "mode": "standard"}),
    }
    if settings.AWS_ENDPOINT_URL:
        options["endpoint_url"] = settings.AWS_ENDPOINT_URL
    options.update(kwargs)
    return boto3.session.Session().client(service_name, **options)


# SageMaker's advice for InvokeEndpoint: a read timeout above the runtime's own 60 s limit,
# so the runtime's answer (or its ModelNotReadyException) arrives instead of a client-side
# timeout. https://docs.aws.amazon.com/sagemaker/latest/dg/invoke-multi-model-endpoint.html
SAGEMAKER_RUNTIME_READ_TIMEOUT = 70.0
SAGEMAKER_RUNTIME_CONNECT_TIMEOUT = 10.0


def sagemaker_runtime(region_name: str):
    """The sagemaker-runtime client invocations on AWS use: 70 s read timeout, standard
    retries for throttling and transient errors. Standard mode does not retry the modelled
    `ModelNotReadyException` of a multi-model endpoint still loading its target model; the
    caller waits that out (deployments.backends.sagemaker.invoke_when_loaded)."""
    return client(
        "sagemaker-runtime",
        region_name=region_name,
        config=Config(
            read_timeout=SAGEMAKER_RUNTIME_READ_TIMEOUT,
            connect_timeout=SAGEMAKER_RUNTIME_CONNECT_TIMEOUT,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def runtime_client(endpoint_url: str, *, read_timeout: float):
    """boto3's sagemaker-runtime client pointed at something that speaks the SageMaker
    runtime's API without AWS behind it (the local data plane), so clients and smoke tests
    call it with the same code they use against AWS. It does not check signatures; botocore
    still wants credentials to sign with. Building one loads botocore's service model
    (~0.1 s), so one per address is kept and shared (built clients are thread-safe)."""
    key = (endpoint_url.rstrip("/"), float(read_timeout))
    with _shared_lock:
        built = _shared.get(key)
        if built is None:
            built = _shared[key] = client(
                "sagemaker-runtime",
                endpoint_url=key[0],
                aws_access_key_id="berth-local",
                aws_secret_access_key="berth-local",
                config=Config(retries={"max_attempts": 1}, read_timeout=read_timeout),
            )
    return built
