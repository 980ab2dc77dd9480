"""The artifact store: where registered archives and built packages live.

A local folder by default; S3 when `BERTH_ARTIFACT_STORE` is `s3://bucket/prefix`. Both answer
the same calls. A local URI is an absolute path; an S3 URI is `s3://bucket/key`. `fetch`
reads either kind whatever the configured store is, so versions registered before a change of
store stay readable.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from django.conf import settings

from portal import aws
from toolkit.files import link_or_copy

# Where registration keeps a version's source archive: `<model>/sources/<file>`.
SOURCE_KEY = re.compile(r"^[^/]+/sources/[^/]+$")


def source_key(model: str, sha256: str, suffix: str) -> str:
    """A key of its own for one registration's archive: two registrations of the same archive
    never share a file, so the one that loses deletes only its own."""
    return f"{model}/sources/{sha256[:16]}-{uuid.uuid4().hex[:12]}{suffix}"


# What a copy into a local store that never finished leaves: `<folder>/.put-<random>`.
UNFINISHED_PUT = ".put-"


@dataclass(frozen=True)
class StoredObject:
    uri: str
    modified: datetime


class ArtifactStore(Protocol):
    def put(self, local_path: Path, key: str) -> str: ...

    def sources(self) -> Iterator[StoredObject]:
        """Every source archive in the store (and, locally, unfinished copies)."""
        ...

    def fetch(self, uri: str, dest: Path) -> Path: ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uri: str) -> None: ...


def _check_key(key: str) -> str:
    parts = key.strip("/").split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"Invalid artifact key: {key!r}")
    return "/".join(parts)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"Not an S3 URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class LocalArtifactStore:
    """Artifacts in a folder on this machine (shared with workers on the same host or volume)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, local_path: Path, key: str) -> str:
        """Store `local_path` under `key`. The file is hard-linked in when it is on the same
        file system (no byte is copied), so the caller must not write to it afterwards;
        removing it is fine."""
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written (or linked) next to the target, then renamed: a reader never sees half a
        # file.
        fd, tmp = tempfile.mkstemp(prefix=UNFINISHED_PUT, dir=target.parent)
        try:
            os.close(fd)
            link_or_copy(Path(local_path), Path(tmp))
            os.chmod(tmp, 0o644)
            # Its age is the time it was stored (what the sweep of sources goes by), not the
            # time a linked file was written.
            os.utime(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def sources(self) -> Iterator[StoredObject]:
        if not self.root.is_dir():
            return
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if SOURCE_KEY.match(key) or name.startswith(UNFINISHED_PUT):
                    try:
                        mtime = path.stat().st_mtime
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    yield StoredObject(str(path), datetime.fromtimestamp(mtime, UTC))

    def fetch(self, uri: str, dest: Path) -> Path:
        return fetch_uri(uri, dest)

    def exists(self, uri: str) -> bool:
        if uri.startswith("s3://"):
            return S3ArtifactStore.from_uri(uri).exists(uri)
        return Path(uri).is_file()

    def delete(self, uri: str) -> None:
        if uri.startswith("s3://"):
            S3ArtifactStore.from_uri(uri).delete(uri)
            return
        path = Path(uri).resolve()
        # Only ever delete inside our own folder.
        if path.is_relative_to(self.root):
            path.unlink(missing_ok=True)


class S3ArtifactStore:
    """Artifacts under `s3://bucket/prefix/` (the layout SageMaker multi-model endpoints read)."""

    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def __repr__(self) -> str:
        return f"S3ArtifactStore('s3://{self.bucket}/{self.prefix}')"

    @classmethod
    def from_uri(cls, uri: str) -> S3ArtifactStore:
        bucket, prefix = split_s3_uri(uri)
        return cls(bucket, prefix)

    def uri_for(self, key: str) -> str:
        key = _check_key(key)
        full = f"{self.prefix}/{key}" if self.prefix else key
        return f"s3://{self.bucket}/{full}"

    def put(self, local_path: Path, key: str) -> str:
        uri = self.uri_for(key)
        bucket, object_key = split_s3_uri(uri)
        aws.client("s3").upload_file(str(local_path), bucket, object_key)
        return uri

    def sources(self) -> Iterator[StoredObject]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = (
            aws.client("s3")
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=base)
        )
        for page in pages:
            for item in page.get("Contents", []):
                if SOURCE_KEY.match(item["Key"][len(base) :]):
                    yield StoredObject(f"s3://{self.bucket}/{item['Key']}", item["LastModified"])

    def fetch(self, uri: str, dest: Path) -> Path:
        return fetch_uri(uri, dest)

    def exists(self, uri: str) -> bool:
        return s3_object_size(uri) is not None

    def delete(self, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        aws.client("s3").delete_object(Bucket=bucket, Key=key)


def s3_object_size(uri: str) -> int | None:
    """The size of an S3 object, or None when there is no such object."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(uri)
    try:
        head = aws.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "403"}:
            return None
        raise
    return int(head["ContentLength"])


def fetch_uri(uri: str, dest: Path) -> Path:
    """Copy the artifact at `uri` (an S3 URI or a local path) to the file `dest`. A local
    artifact is hard-linked when it can be: stored files are never written again (`put`
    replaces them whole), so the link reads the same bytes a copy would, and the caller must
    not write to `dest` either."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        aws.client("s3").download_file(bucket, key, str(dest))
    else:
        dest.unlink(missing_ok=True)
        link_or_copy(Path(uri), dest)
    return dest


def artifact_store() -> ArtifactStore:
    """The store configured by `BERTH_ARTIFACT_STORE`."""
    configured = str(settings.BERTH_ARTIFACT_STORE)
    if configured.startswith("s3://"):
        return S3ArtifactStore.from_uri(configured)
    return LocalArtifactStore(Path(configured))
