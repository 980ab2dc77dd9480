"""AWS: region and optional endpoint override (used to point boto3 at a test double)."""

import os

from .env import env_list, env_str

AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")
# GPU instance types AWS added to its list for multi-model endpoints after this release
# (comma-separated, e.g. "ml.g6.xlarge"); deployments.choices holds the published list.
BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES = env_list("BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES")
# Hourly prices (USD) over the on-demand list in deployments.backends.sagemaker.pricing, for
# added types or another region (comma-separated type=price, e.g. "ml.g6.xlarge=1.0").
BERTH_SAGEMAKER_INSTANCE_PRICES = env_list("BERTH_SAGEMAKER_INSTANCE_PRICES")

# The SDK (used for the Triton serving image's URI per region) warns on import about its
# next major version; that is for its maintainers, not for Berth's users.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
