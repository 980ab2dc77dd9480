"""Long-running work (runs of plans of steps): when a run whose worker vanished is resumed
or given up, and how long a run waits before another attempt. Plans may set their own
(deployments read BERTH_DEPLOYMENT_*)."""

from .env import env_int

BERTH_RUN_STALE_SECONDS = env_int("BERTH_RUN_STALE_SECONDS", 120)
BERTH_RUN_TIMEOUT_SECONDS = env_int("BERTH_RUN_TIMEOUT_SECONDS", 3600)
BERTH_RUN_MAX_ATTEMPTS = env_int("BERTH_RUN_MAX_ATTEMPTS", 3)
# Another attempt after a passing failure waits BACKOFF × 2^(attempt-1) s, at most BACKOFF_MAX.
BERTH_RUN_BACKOFF_SECONDS = env_int("BERTH_RUN_BACKOFF_SECONDS", 5)
BERTH_RUN_BACKOFF_MAX_SECONDS = env_int("BERTH_RUN_BACKOFF_MAX_SECONDS", 300)
