"""Deterministic archives of a model repository.

A package is `<model>_<version>.tar.gz` with the model folders at its top level, the layout
SageMaker's Triton container expects for a multi-model endpoint
(https://docs.aws.amazon.com/sagemaker/latest/dg/triton.html, "multi-model endpoints": one
Triton model repository per target model archive). Entries are sorted and carry fixed
times, owners and modes, and the gzip header has no name or time, so the same repository
always gives the same bytes and the same sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

# 2000-01-01T00:00:00Z: a fixed time; zero confuses some extractors.
FIXED_MTIME = 946684800


class PackagingError(Exception):
    def __init__(self, message: str, *, member: str = ""):
        super().__init__(message)
        self.message = message
        self.member = member


@dataclass(frozen=True)
class BuiltArchive:
    path: Path
    sha256: str
    size_bytes: int
    file_count: int


def _tarinfo(path: Path, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    else:
        raise PackagingError(f"{arcname} is not a file, folder or link.", member=arcname)
    return info


def _entries(root: Path, *, max_files: int | None, max_total_bytes: int | None):
    """(path, arcname) for everything under root, sorted, checking that links stay inside."""
    root = root.resolve()
    count = total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        names = sorted(dirnames + filenames)
        for name in names:
            path = base / name
            arcname = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = (path.parent / os.readlink(path)).resolve()
                if not target.is_relative_to(root):
                    raise PackagingError(f"{arcname} links outside the repository.", member=arcname)
                if name in dirnames:
                    # os.walk does not descend into links; the link itself is archived.
                    dirnames.remove(name)
            count += 1
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
            if max_files is not None and count > max_files:
                raise PackagingError(f"More than {max_files} files.", member=arcname)
            if max_total_bytes is not None and total > max_total_bytes:
                raise PackagingError(f"More than {max_total_bytes} bytes in total.", member=arcname)
            yield path, arcname


def build_tar_gz(
    root: Path,
    dest: Path,
    *,
    include: list[str] | None = None,
    max_files: int | None = None,
    max_total_bytes: int | None = None,
) -> BuiltArchive:
    """Write the contents of `root` (its children at the archive's top level) to `dest`.
    `include` limits the top-level entries archived."""
    root = Path(root)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    wanted = set(include) if include is not None else None
    count = 0
    try:
        # filename="" and mtime=0 keep the gzip header free of anything that varies.
        with (
            open(dest, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path, arcname in _entries(
                root, max_files=max_files, max_total_bytes=max_total_bytes
            ):
                if wanted is not None and arcname.split("/", 1)[0] not in wanted:
                    continue
                info = _tarinfo(path, arcname)
                count += 1
                if info.isreg():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return BuiltArchive(dest, sha256_path(dest), dest.stat().st_size, count)


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_repository(root: Path, dest: Path) -> BuiltArchive:
    """The package of a validated repository: every top-level entry of the repository (model
    folders, berth.yaml, shared files an EXECUTION_ENV_PATH may point at)."""
    return build_tar_gz(root, dest)
