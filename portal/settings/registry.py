"""The model registry's pipeline: when a step counts as stuck, how often it is tried, and how
the test step runs Triton."""

from .env import env_bool, env_int

# A step with no heartbeat for this long is resumed (or given up) by the engine's sweep,
# the beat task runs.tasks.runs_sweep.
BERTH_VERSION_STUCK_SECONDS = env_int("BERTH_VERSION_STUCK_SECONDS", 900)
# Attempts per step before the version is given up with a problem saying why.
BERTH_VERSION_MAX_ATTEMPTS = env_int("BERTH_VERSION_MAX_ATTEMPTS", 3)
BERTH_TRITON_START_TIMEOUT = env_int("BERTH_TRITON_START_TIMEOUT", 120)
BERTH_TRITON_LOAD_TIMEOUT = env_int("BERTH_TRITON_LOAD_TIMEOUT", 300)
# The test step keeps one tritonserver per worker process between runs; it stops after this
# many idle seconds, so an idle worker holds no Triton (0: stop it after every run).
BERTH_TRITON_IDLE_TIMEOUT = env_int("BERTH_TRITON_IDLE_TIMEOUT", 300)
# Run the test step's Python models as KIND_GPU (on a machine with a GPU).
BERTH_TRITON_GPU = env_bool("BERTH_TRITON_GPU", False)
