"""Bringing a version's artifact in: an uploaded archive, an S3 object, a repository folder
under an S3 prefix or a local path the server may read, staged as one local archive file
with its sha256 and size.

Staging happens before any row is written, so a refused request leaves nothing behind but the
staged file, which the caller removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from portal.errors import ServiceError
from toolkit.files import link_or_copy

from .packaging import PackagingError, build_tar_gz
from .storage import s3_object_size, split_s3_uri

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK = 1024 * 1024
# Objects of a repository under an S3 prefix downloaded at once.
S3_DOWNLOAD_THREADS = 8


class PayloadTooLarge(ServiceError):
    status_code = 413
    default_code = "too_large"


@dataclass
class StagedArtifact:
    path: Path
    sha256: str
    size_bytes: int
    suffix: str
    source_uri: str = ""

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def upload_dir() -> Path:
    path = Path(settings.BERTH_UPLOAD_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_upload_bytes() -> int:
    return int(settings.BERTH_UPLOAD_MAX_BYTES)


def check_request_size(request, *, field: str = "archive") -> None:
    """Refuse an upload by its declared length, before Django reads the body to disk."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    # Multipart framing and the other fields come on top of the archive itself.
    limit = max_upload_bytes()
    if length > limit + 1024 * 1024:
        raise PayloadTooLarge(
            f"The archive is larger than the {limit} byte upload limit.", field=field
        )


def _sniff(path: Path) -> str | None:
    """The archive kind from its first bytes: '.tar.gz', '.zip', '.tar' or None."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"\x1f\x8b"):
        return ".tar.gz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ".zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ".tar"
    return None


def _suffix_of(name: str) -> str | None:
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return ".tar.gz" if suffix == ".tgz" else suffix
    return None


def _copy_limited(source: IO[bytes], dest: Path, *, field: str, limit: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The archive is larger than the {limit} byte upload limit.", field=field
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _hash_limited(path: Path, *, field: str, limit: int) -> tuple[str, int]:
    """The sha256 and size of the file at `path`, refused past `limit` bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The archive is larger than the {limit} byte upload limit.", field=field
                )
            digest.update(chunk)
    return digest.hexdigest(), size


def _staging_path() -> Path:
    return upload_dir() / f"staged-{uuid.uuid4().hex}"


def _finish(
    path: Path, *, name: str, field: str, sha256: str, size: int, source_uri: str
) -> StagedArtifact:
    if size == 0:
        raise ServiceError("The archive is empty.", field=field)
    by_name = _suffix_of(name)
    by_content = _sniff(path)
    if by_content is None:
        raise ServiceError(
            "Not a .tar.gz, .tgz, .tar or .zip archive (its first bytes say otherwise).",
            field=field,
        )
    if by_name is not None and by_name != by_content:
        raise ServiceError(
            f"The file is named like a {by_name} archive but holds a {by_content} archive.",
            field=field,
        )
    return StagedArtifact(path, sha256, size, by_content, source_uri)


def stage_upload(archive: UploadedFile | Path) -> StagedArtifact:
    """Copy an uploaded archive (or a local archive file given by the caller) to staging."""
    field = "archive"
    limit = max_upload_bytes()
    declared = getattr(archive, "size", None)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"The archive is larger than the {limit} byte upload limit.", field=field
        )
    path = _staging_path()
    try:
        if isinstance(archive, str | os.PathLike):
            name = os.fspath(archive)
            with open(archive, "rb") as source:
                sha256, size = _copy_limited(source, path, field=field, limit=limit)
        elif hasattr(archive, "temporary_file_path"):
            # Django already wrote the upload to a file of its own, which it removes after the
            # request: linked (not copied) to staging, and only read to hash it.
            name = archive.name or ""
            archive.file.flush()
            link_or_copy(Path(archive.temporary_file_path()), path)
            sha256, size = _hash_limited(path, field=field, limit=limit)
        else:
            name = archive.name or ""
            archive.seek(0)
            sha256, size = _copy_limited(archive, path, field=field, limit=limit)
        return _finish(path, name=name, field=field, sha256=sha256, size=size, source_uri="")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def allowed_source_dirs() -> list[Path]:
    return [Path(p).resolve() for p in settings.BERTH_ALLOWED_SOURCE_DIRS if p]


def stage_uri(uri: str) -> StagedArtifact:
    """Fetch the archive or repository `uri` names to staging."""
    uri = (uri or "").strip()
    if not uri:
        raise ServiceError(
            "Give the URI of an archive or repository folder (s3://bucket/key, "
            "s3://bucket/prefix/ or a local path).",
            field="uri",
        )
    if uri.startswith("s3://"):
        return _stage_s3(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise ServiceError("Only s3:// URIs and local paths are supported.", field="uri")
    return _stage_local(uri.removeprefix("file://"))


def check_source_bucket(bucket: str, uri: str) -> None:
    """Refuse a bucket the administrator did not allow: the portal reads it with its own
    AWS credentials, which may reach buckets the person naming it may not read."""
    allowed = settings.BERTH_SOURCE_S3_BUCKETS
    if bucket in allowed:
        return
    raise ServiceError(
        f"The server may not read {uri}: the bucket {bucket} is not one versions may be "
        "registered from. "
        + (
            f"Allowed: {', '.join(allowed)}."
            if allowed
            else "None is allowed yet; the administrator lists them in BERTH_SOURCE_S3_BUCKETS "
            "(comma separated)."
        ),
        field="uri",
        code="bucket_not_allowed",
    )


def _stage_s3(uri: str) -> StagedArtifact:
    from botocore.exceptions import BotoCoreError, ClientError

    from portal import aws

    try:
        bucket, key = split_s3_uri(uri)
    except ValueError as exc:
        raise ServiceError(str(exc), field="uri") from exc
    check_source_bucket(bucket, uri)
    if not key or key.endswith("/"):
        return _stage_s3_folder(uri, bucket, key)
    limit = max_upload_bytes()
    try:
        size = s3_object_size(uri)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceError(f"Cannot read {uri}: {exc}", field="uri") from exc
    if size is None:
        # `s3://bucket/models/iris` may name a repository folder without its final slash.
        return _stage_s3_folder(uri, bucket, key + "/")
    if size > limit:
        raise PayloadTooLarge(f"{uri} is larger than the {limit} byte upload limit.", field="uri")
    path = _staging_path()
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        sha256, size = _copy_limited(body, path, field="uri", limit=limit)
        return _finish(path, name=key, field="uri", sha256=sha256, size=size, source_uri=uri)
    except (BotoCoreError, ClientError) as exc:
        path.unlink(missing_ok=True)
        raise ServiceError(f"Cannot read {uri}: {exc}", field="uri") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _stage_s3_folder(uri: str, bucket: str, prefix: str) -> StagedArtifact:
    """A repository kept as objects under an S3 prefix (the layout Triton itself reads from
    S3): listed and checked against the archive limits before anything is downloaded, then
    archived like a local folder, so the same files give the same sha256 either way."""
    from botocore.exceptions import BotoCoreError, ClientError

    from portal import aws

    limits = settings.BERTH_ARCHIVE_LIMITS
    budget = min(max_upload_bytes(), limits["max_total_bytes"])
    client = aws.client("s3")
    objects: list[tuple[Path, str, int]] = []
    total = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                rest = key[len(prefix) :]
                if not rest:
                    continue  # the prefix's own folder marker
                size = int(item["Size"])
                objects.append((_relative_key(rest.removesuffix("/"), uri), key, size))
                total += size
                if len(objects) > limits["max_files"]:
                    raise ServiceError(
                        f"{uri} holds more than {limits['max_files']} objects.", field="uri"
                    )
                if total > budget:
                    raise PayloadTooLarge(
                        f"The objects under {uri} add up to more than {budget} bytes.",
                        field="uri",
                    )
    except (BotoCoreError, ClientError) as exc:
        raise ServiceError(f"Cannot list {uri}: {exc}", field="uri") from exc
    if not objects:
        raise ServiceError(f"No such S3 object, and no objects under {uri}.", field="uri")
    folder = scratch_dir("s3-repository-")
    try:
        for relative, key, _ in objects:
            if key.endswith("/"):
                # A folder marker (the S3 console's "Create folder"): S3 has no folders, and
                # an ensemble needs its empty version folder.
                with _writing(f"s3://{bucket}/{key}", uri):
                    (folder / relative).mkdir(parents=True, exist_ok=True)
        # Several at once: on S3 each object costs a round trip, whatever its size.
        with ThreadPoolExecutor(S3_DOWNLOAD_THREADS, thread_name_prefix="s3-source") as pool:
            downloads = [
                pool.submit(_download, client, bucket, key, folder / relative, size, uri)
                for relative, key, size in objects
                if not key.endswith("/")
            ]
            try:
                for download in downloads:
                    download.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the first failure stops the rest
                raise
        return _archive_folder(folder, label=uri)
    finally:
        remove_tree(folder)


def _download(client, bucket: str, key: str, dest: Path, size: int, uri: str) -> None:
    """Download one object of a repository folder, refusing more bytes than were listed."""
    from botocore.exceptions import BotoCoreError, ClientError

    object_uri = f"s3://{bucket}/{key}"
    with _writing(object_uri, uri):
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            _copy_limited(body, dest, field="uri", limit=size)
        except PayloadTooLarge as exc:
            raise ServiceError(
                f"{object_uri} changed while it was read; register {uri} again.", field="uri"
            ) from exc
        except (BotoCoreError, ClientError) as exc:
            raise ServiceError(f"Cannot read {object_uri}: {exc}", field="uri") from exc


@contextmanager
def _writing(object_uri: str, uri: str) -> Iterator[None]:
    """File-system refusals while one object of `uri` is put on disk, as the client's error."""
    try:
        yield
    except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
        raise ServiceError(
            f"{object_uri} is both a file and a folder under {uri}.", field="uri"
        ) from exc
    except OSError as exc:  # a key too long for a file name, say
        raise ServiceError(
            f"{object_uri} cannot be kept as a file: {exc.strerror}.", field="uri"
        ) from exc


def _relative_key(rest: str, uri: str) -> Path:
    """The path of an object's key below its prefix; refused if it could leave the folder."""
    parts = rest.split("/")
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise ServiceError(
            f"{uri} holds an object whose key is not a plain relative path: {rest!r}.",
            field="uri",
        )
    return Path(*parts)


def _stage_local(raw_path: str) -> StagedArtifact:
    given = Path(raw_path)
    if not given.is_absolute():
        raise ServiceError("A local path must be absolute.", field="uri")
    allowed = allowed_source_dirs()
    # Resolve links first: a link inside an allowed folder must not lead out of it.
    resolved = given.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise ServiceError(
            "The server may not read this path: local paths must lie under "
            + (
                ", ".join(str(p) for p in allowed)
                if allowed
                else "a folder the administrator allows (BERTH_ALLOWED_SOURCE_DIRS; none is set)"
            )
            + ".",
            field="uri",
        )
    if not resolved.exists():
        raise ServiceError(f"No such file or folder: {given}", field="uri")
    limit = max_upload_bytes()
    if resolved.is_dir():
        return _archive_folder(resolved, label=str(given))
    if not resolved.is_file():
        raise ServiceError(f"{given} is neither a file nor a folder.", field="uri")
    if resolved.stat().st_size > limit:
        raise PayloadTooLarge(f"{given} is larger than the {limit} byte upload limit.", field="uri")
    path = _staging_path()
    try:
        with open(resolved, "rb") as source:
            sha256, size = _copy_limited(source, path, field="uri", limit=limit)
        return _finish(
            path, name=resolved.name, field="uri", sha256=sha256, size=size, source_uri=str(given)
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _archive_folder(folder: Path, *, label: str) -> StagedArtifact:
    """A repository folder archived deterministically, so registering the same files twice
    gives the same sha256."""
    limit = max_upload_bytes()
    limits = settings.BERTH_ARCHIVE_LIMITS
    path = _staging_path()
    try:
        built = build_tar_gz(
            folder,
            path,
            max_files=limits["max_files"],
            max_total_bytes=min(limits["max_total_bytes"], limit),
        )
    except PackagingError as exc:
        path.unlink(missing_ok=True)
        raise ServiceError(f"Cannot archive {label}: {exc.message}", field="uri") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if built.size_bytes > limit:
        path.unlink(missing_ok=True)
        raise PayloadTooLarge(f"{label} is larger than the {limit} byte upload limit.", field="uri")
    return StagedArtifact(path, built.sha256, built.size_bytes, ".tar.gz", label)


# A kept extraction older than this (untouched by any step) is an abandoned one.
KEPT_TREE_MAX_AGE = 24 * 3600


def kept_tree(version_id: int, sha256: str) -> Path:
    """Where this worker keeps a version's extracted archive between its pipeline steps
    (validate extracts it, test and package read it), instead of each step fetching,
    hashing and extracting the archive again: for a gigabyte of weights, 5 to 10 seconds a
    step. Named by the archive's sha256 as well, so a tree never stands for other bytes."""
    return Path(settings.BERTH_SCRATCH_DIR) / "trees" / f"{version_id}-{sha256[:32]}"


def keep_tree(extracted: Path, kept: Path) -> Path:
    """Move a complete extraction to `kept` (one rename: a step sees all of it or none);
    returns where it now is. Abandoned trees are removed on the way."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    _prune_kept_trees(kept.parent)
    try:
        os.rename(extracted, kept)
    except OSError:  # kept meanwhile by another step, or another file system: use our own
        return extracted
    return kept


def reuse_tree(kept: Path) -> bool:
    """Whether a kept tree is there to read (and, if so, marked as just used)."""
    try:
        os.utime(kept)
    except FileNotFoundError:
        return False
    return kept.is_dir()


def drop_tree(kept: Path) -> None:
    """Remove a kept tree, and the folder of kept trees when it was the last one."""
    remove_tree(kept)
    with contextlib.suppress(OSError):  # others are kept, or it is already gone
        kept.parent.rmdir()


def _prune_kept_trees(folder: Path) -> None:
    cutoff = time.time() - KEPT_TREE_MAX_AGE
    for tree in folder.iterdir():
        try:
            if tree.stat().st_mtime < cutoff:
                remove_tree(tree)
        except FileNotFoundError:
            continue


def scratch_dir(prefix: str) -> Path:
    """A fresh folder under BERTH_SCRATCH_DIR; the caller removes it with shutil.rmtree."""
    base = Path(settings.BERTH_SCRATCH_DIR)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
