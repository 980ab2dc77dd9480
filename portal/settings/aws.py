"""AWS: region and optional endpoint override (used to point boto3 at a test double)."""

import os

from .env import env_list, env_str

AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")
# GPU instance types AWS added to its list for multi-model endpoints after this release
# (comma-separated, e.g. "ml.g6.xlarge"); deployments.choices holds the published list.
BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES = env_list("BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES")

# The SDK (used for the Triton serving image's URI per region) warns on import about its
# next major version; that is for its maintainers, not for Berth's users.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
