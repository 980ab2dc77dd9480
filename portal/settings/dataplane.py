"""The local data plane the portal's local endpoints talk to."""

from .env import env_str, var_dir

BERTH_DATAPLANE_URL = env_str("BERTH_DATAPLANE_URL", "http://127.0.0.1:8081")
BERTH_DATAPLANE_STORE = env_str("BERTH_DATAPLANE_STORE", str(var_dir() / "dataplane" / "stores"))
# The gateway's admin token (its --admin-token); empty for a gateway on loopback without one.
BERTH_DATAPLANE_ADMIN_TOKEN = env_str("BERTH_DATAPLANE_ADMIN_TOKEN", "")
