"""Database: SQLite when nothing is set, PostgreSQL (psycopg 3) with DATABASE_URL."""

import dj_database_url

from .env import env_str, var_dir

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{var_dir() / 'berth.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: wait on the lock rather than fail at once.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so a Celery worker process started by the tests sees the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(var_dir() / "test-berth.sqlite3")}
