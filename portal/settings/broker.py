"""Celery: Redis with REDIS_URL; otherwise kombu's filesystem transport, an embedded broker
that needs no server, so a fresh machine still runs a real worker process.

The embedded broker is polled (`portal.broker_transport`: how often, and why its transport
is kombu's with one change).
"""

from .env import env_bool, env_str, var_dir

REDIS_URL = env_str("REDIS_URL")

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    from portal.broker_transport import filesystem_options

    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "portal.broker_transport:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_options(var_dir() / "broker")

# State lives in the database rows the UI shows; task results are not needed.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
# A worker killed mid-task leaves the message unacknowledged, so another worker redoes it.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE", "berth")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
