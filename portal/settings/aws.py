"""AWS: region and optional endpoint override (used to point boto3 at a test double)."""

from .env import env_str

AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")
