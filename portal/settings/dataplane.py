"""The local data plane the portal's local endpoints talk to."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import DEBUG
from .env import env_str, var_dir

BERTH_DATAPLANE_URL = env_str("BERTH_DATAPLANE_URL", "http://127.0.0.1:8081")
# The address clients invoke local endpoints at, shown on endpoint pages; empty when clients
# reach the data plane where the portal does (BERTH_DATAPLANE_URL).
BERTH_DATAPLANE_PUBLIC_URL = env_str("BERTH_DATAPLANE_PUBLIC_URL", "")
BERTH_DATAPLANE_STORE = env_str("BERTH_DATAPLANE_STORE", str(var_dir() / "dataplane" / "stores"))
# The gateway's admin token (its --admin-token / --admin-token-file): the admin API always asks
# for it. BERTH_DATAPLANE_ADMIN_TOKEN_FILE (a 0600 file; ./scripts/run writes var/) keeps it out
# of the environment.
BERTH_DATAPLANE_ADMIN_TOKEN_FILE = env_str("BERTH_DATAPLANE_ADMIN_TOKEN_FILE", "")
BERTH_DATAPLANE_ADMIN_TOKEN = env_str("BERTH_DATAPLANE_ADMIN_TOKEN", "") or (
    Path(BERTH_DATAPLANE_ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
    if BERTH_DATAPLANE_ADMIN_TOKEN_FILE
    else ""
)
if not BERTH_DATAPLANE_ADMIN_TOKEN and not DEBUG:
    raise ImproperlyConfigured(
        "BERTH_DATAPLANE_ADMIN_TOKEN_FILE (or BERTH_DATAPLANE_ADMIN_TOKEN) is not set and "
        "DJANGO_DEBUG is off: the portal needs the data plane's admin token"
    )
