"""Monitoring: how far back each metrics pull reads, and how long stored samples are kept."""

from .env import env_int

# The pull runs every minute; reading a few more minutes covers a late or missed run.
BERTH_METRICS_PULL_LOOKBACK_MINUTES = env_int("BERTH_METRICS_PULL_LOOKBACK_MINUTES", 10)
BERTH_METRICS_RETENTION_DAYS = env_int("BERTH_METRICS_RETENTION_DAYS", 14)
