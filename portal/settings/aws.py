"""AWS: region and optional endpoint override (used to point boto3 at a test double)."""

import os

from .env import env_str

AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")

# The SDK (used for the Triton serving image's URI per region) warns on import about its
# next major version; that is for its maintainers, not for Berth's users.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
