"""Load tests: how much a generator process may offer, how many generators one test may
fan out to, and what an upload of request bodies may hold. Each environment bounds its own
endpoints' rate and duration further (Environment.loadtest_max_rps / _seconds)."""

from .env import env_int

# A generator process's own ceiling (one process on uvloop); higher rates fan out.
BERTH_LOADTEST_MAX_RPS_PER_GENERATOR = env_int("BERTH_LOADTEST_MAX_RPS_PER_GENERATOR", 5000)
BERTH_LOADTEST_MAX_GENERATORS = env_int("BERTH_LOADTEST_MAX_GENERATORS", 8)
BERTH_LOADTEST_MAX_STAGES = env_int("BERTH_LOADTEST_MAX_STAGES", 50)
BERTH_LOADTEST_MAX_UPLOAD_BYTES = env_int("BERTH_LOADTEST_MAX_UPLOAD_BYTES", 8 * 1024 * 1024)
BERTH_LOADTEST_MAX_UPLOAD_LINES = env_int("BERTH_LOADTEST_MAX_UPLOAD_LINES", 10_000)
# No word from a load test's worker for this long: it is failed with what it measured.
BERTH_LOADTEST_STALE_SECONDS = env_int("BERTH_LOADTEST_STALE_SECONDS", 30)
