"""Artifact store: a local folder by default, S3 (boto3) with BERTH_ARTIFACT_STORE=s3://bucket/prefix.
Archive limits for uploaded model repositories (hostile until proven otherwise)."""

from .env import env_int, env_list, env_str, var_dir

MEDIA_ROOT = var_dir() / "media"
MEDIA_URL = "media/"

BERTH_ARTIFACT_STORE = env_str("BERTH_ARTIFACT_STORE", str(var_dir() / "artifacts"))
BERTH_SCRATCH_DIR = env_str("BERTH_SCRATCH_DIR", str(var_dir() / "scratch"))
BERTH_UPLOAD_DIR = env_str("BERTH_UPLOAD_DIR", str(var_dir() / "uploads"))
# Local paths a version may be registered from by URI (comma separated); none by default.
BERTH_ALLOWED_SOURCE_DIRS = [p for p in env_str("BERTH_ALLOWED_SOURCE_DIRS").split(",") if p]
# S3 buckets a version may be registered from by s3:// URI (comma separated); none by
# default: the portal reads them with its own AWS credentials, whoever names them.
BERTH_SOURCE_S3_BUCKETS = env_list("BERTH_SOURCE_S3_BUCKETS", [])

BERTH_ARCHIVE_LIMITS = {
    "max_total_bytes": env_int("BERTH_ARCHIVE_MAX_TOTAL_BYTES", 4 * 1024**3),
    "max_file_bytes": env_int("BERTH_ARCHIVE_MAX_FILE_BYTES", 2 * 1024**3),
    "max_files": env_int("BERTH_ARCHIVE_MAX_FILES", 10_000),
    "max_ratio": env_int("BERTH_ARCHIVE_MAX_RATIO", 200),
}
BERTH_UPLOAD_MAX_BYTES = env_int("BERTH_UPLOAD_MAX_BYTES", 2 * 1024**3)
# A source archive no version references is removed (hourly) once it is this old.
BERTH_ARTIFACT_SWEEP_AFTER_HOURS = env_int("BERTH_ARTIFACT_SWEEP_AFTER_HOURS", 24)
