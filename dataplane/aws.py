"""The one place the data plane gets AWS clients from (S3 model stores).

boto3 reads credentials, region and `AWS_ENDPOINT_URL` from the environment, so the same
code talks to S3, to a compatible store, or to moto's server in tests.
"""

from __future__ import annotations

import functools
import os
from typing import Any


@functools.cache
def s3_client() -> Any:
    import boto3  # Imported here: an endpoint on local folders never pays for boto3.

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", region_name=region)
