"""The one place AWS clients come from. Services call `client("s3")`; tests run the same code
under moto. The region and an optional endpoint (a local S3-compatible store, say) come from
settings, so nothing else in the code names them."""

from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings


def client(service_name: str, **kwargs: Any):
    """A boto3 client for `service_name` in the configured region.

    Clients are cheap to build and not shared between threads, so each call makes a new one;
    that also keeps moto's patching in tests effective for clients made inside a test.
    """
    options: dict[str, Any] = {
        "region_name": getattr(settings, "AWS_REGION", None) or "us-east-1",
        "config": Config(retries={"max_attempts": 5, "mode": "standard"}),
    }
    endpoint_url = getattr(settings, "AWS_ENDPOINT_URL", "")
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    options.update(kwargs)
    return boto3.session.Session().client(service_name, **options)
