"""Model stores: where an endpoint's packages (`<model>_<version>.tar.gz`) are read from.

A store is a local folder or an S3 prefix, as with a SageMaker multi-model endpoint's
`ModelDataUrl`, laid out as `toolkit.store_layout` says (the portal writes it the same way):
next to a package may sit its sha256 sidecar; the store also holds the endpoint's aliases
(model name -> live package).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from dataplane.aws import s3_client
from toolkit.files import link_or_copy
from toolkit.store_layout import ALIASES_FILE, parse_sidecar, sidecar_name, write_atomically

PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class PackageNotFound(Exception):
    """The store holds no package under that name."""


class StoreError(Exception):
    """The store could not be read or written."""


def is_package_name(name: str) -> bool:
    return name.lower().endswith(PACKAGE_SUFFIXES)


def package_stem(name: str) -> str:
    lower = name.lower()
    for suffix in PACKAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_name(name: str) -> str | None:
    """Why `name` cannot be a package or alias name in a store, or None when it can."""
    if not name or len(name) > 1024:
        return "must be 1 to 1024 characters"
    if "/" in name or "\\" in name or "\x00" in name:
        return "must not contain path separators"
    if name.startswith("."):
        return "must not start with a dot"
    return None


class ModelStore(Protocol):
    uri: str

    def fetch(self, package: str, dest: Path) -> Path: ...

    def expected_sha256(self, package: str) -> str | None: ...

    def exists(self, package: str) -> bool: ...

    def read_aliases(self) -> dict[str, str]: ...

    def write_aliases(self, aliases: dict[str, str]) -> None: ...

    def aliases_version(self) -> object: ...


class LocalStore:
    """A folder on this machine; the portal places packages there with write-then-rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.uri = str(self.folder)

    def fetch(self, package: str, dest: Path) -> Path:
        source = self.folder / package
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Packages are only ever replaced by rename: a link is a stable copy.
            link_or_copy(source, dest)
        except FileNotFoundError as exc:
            raise PackageNotFound(package) from exc
        except IsADirectoryError as exc:
            raise PackageNotFound(package) from exc
        return dest

    def expected_sha256(self, package: str) -> str | None:
        try:
            text = (self.folder / sidecar_name(package)).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return parse_sidecar(text)

    def exists(self, package: str) -> bool:
        return (self.folder / package).is_file()

    def read_aliases(self) -> dict[str, str]:
        try:
            data = json.loads((self.folder / ALIASES_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {ALIASES_FILE}: {exc}") from exc
        if not isinstance(data, dict):
            raise StoreError(f"{ALIASES_FILE} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def write_aliases(self, aliases: dict[str, str]) -> None:
        write_atomically(self.folder / ALIASES_FILE, json.dumps(aliases, indent=2, sort_keys=True))

    def aliases_version(self) -> object:
        # Cheap change detection: the gateway re-reads aliases.json only when it changed.
        try:
            st = os.stat(self.folder / ALIASES_FILE)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


class S3Store:
    """An S3 prefix (`s3://bucket/prefix`), read with boto3."""

    def __init__(self, uri: str) -> None:
        rest = uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"not an S3 URI: {uri}")
        self.uri = uri
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def fetch(self, package: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            s3_client().download_file(self.bucket, self._key(package), str(dest))
        except Exception as exc:
            if self._missing(exc):
                raise PackageNotFound(package) from exc
            raise StoreError(
                f"cannot download s3://{self.bucket}/{self._key(package)}: {exc}"
            ) from exc
        return dest

    def _get_text(self, name: str) -> str | None:
        try:
            response = s3_client().get_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            if self._missing(exc):
                return None
            raise StoreError(f"cannot read s3://{self.bucket}/{self._key(name)}: {exc}") from exc
        return response["Body"].read().decode("utf-8")

    def expected_sha256(self, package: str) -> str | None:
        text = self._get_text(sidecar_name(package))
        return parse_sidecar(text) if text else None

    def exists(self, package: str) -> bool:
        try:
            s3_client().head_object(Bucket=self.bucket, Key=self._key(package))
        except Exception as exc:
            if self._missing(exc):
                return False
            raise StoreError(str(exc)) from exc
        return True

    def read_aliases(self) -> dict[str, str]:
        text = self._get_text(ALIASES_FILE)
        if not text:
            return {}
        data = json.loads(text)
        return {str(k): str(v) for k, v in data.items()}

    def write_aliases(self, aliases: dict[str, str]) -> None:
        body = json.dumps(aliases, indent=2, sort_keys=True).encode()
        s3_client().put_object(Bucket=self.bucket, Key=self._key(ALIASES_FILE), Body=body)

    def aliases_version(self) -> object:
        # Aliases in S3 change through this gateway's admin API, which refreshes its copy.
        return "s3"


def open_store(location: str) -> ModelStore:
    if location.startswith("s3://"):
        return S3Store(location)
    return LocalStore(Path(location))
