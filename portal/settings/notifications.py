"""Notifications: where signed webhooks go, the key that signs them, and how long to wait."""

from .env import env_int, env_list, env_str

# Comma-separated URLs; every notification event is POSTed to each, as JSON, with the header
# X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body under BERTH_WEBHOOK_SECRET>.
BERTH_WEBHOOK_URLS = env_list("BERTH_WEBHOOK_URLS", [])
BERTH_WEBHOOK_SECRET = env_str("BERTH_WEBHOOK_SECRET", "")
BERTH_WEBHOOK_TIMEOUT_SECONDS = env_int("BERTH_WEBHOOK_TIMEOUT_SECONDS", 10)
# Links in emails point here.
BERTH_PORTAL_URL = env_str("BERTH_PORTAL_URL", "http://127.0.0.1:8000")

# A running deployment that shows no life for this long is handed back to a worker (resumed
# from its recorded steps); after BERTH_DEPLOYMENT_MAX_ATTEMPTS, or once it has run for
# BERTH_DEPLOYMENT_TIMEOUT_SECONDS, it is failed cleanly instead.
BERTH_DEPLOYMENT_STALE_SECONDS = env_int("BERTH_DEPLOYMENT_STALE_SECONDS", 120)
BERTH_DEPLOYMENT_TIMEOUT_SECONDS = env_int("BERTH_DEPLOYMENT_TIMEOUT_SECONDS", 3600)
BERTH_DEPLOYMENT_MAX_ATTEMPTS = env_int("BERTH_DEPLOYMENT_MAX_ATTEMPTS", 3)
