"""Deterministic archives of a model repository.

A package is `<model>_<version>.tar.gz` with the model folders at its top level, the layout
SageMaker's Triton container expects for a multi-model endpoint
(https://docs.aws.amazon.com/sagemaker/latest/dg/triton.html, "multi-model endpoints": one
Triton model repository per target model archive). Entries are sorted and carry fixed
times, owners and modes, and the gzip header has no name or time, so the same repository
always gives the same bytes and the same sha256.

Most of a large package is model weights, which deflate barely shrinks (float32 weights by
7%, int8 by 12%, random bytes not at all) at 20 to 55 MB/s of one core, at any level: a 1 GB
package took over a minute to compress for almost nothing. So the tar stream is compressed
in segments of `SEGMENT` bytes, each judged by a trial on samples of it: a segment that
shrinks to at most `COMPRESS_BELOW` of its size is deflated at `LEVEL`, any other is stored
(deflate's stored blocks: copied, at memory speed). The segments form one ordinary deflate
stream in one gzip member (each ends on a sync flush, byte-aligned, as pigz does), so
`tar xzf`, Python's `tarfile` and SageMaker read it as any `.tar.gz`; the choice depends only
on the bytes, so the same repository still gives the same archive.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# 2000-01-01T00:00:00Z: a fixed time; zero confuses some extractors.
FIXED_MTIME = 946684800

# Bytes of the uncompressed tar stream judged, and then stored or deflated, together.
SEGMENT = 1024 * 1024
# The trial: SAMPLES pieces of SAMPLE_BYTES spread over the segment, deflated at level 1.
SAMPLES = 4
SAMPLE_BYTES = 4096
# Deflated only when the trial shrinks to at most this share (text: about 0.3; weights: 0.88
# to 0.93, where deflating costs a second per 20 to 50 MB to save a tenth).
COMPRESS_BELOW = 0.8
# Level 1 deflates text 2.3 times faster than level 6 for 26% more bytes (0.28 against 0.22).
LEVEL = 1
# Files are copied into the archive in reads of this size.
COPY_BYTES = 1024 * 1024
# The gzip header: deflate, no flags, no time, no extra flags, OS unknown (as gzip.GzipFile
# writes with filename="" and mtime=0).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# Deflate's window: a deflated segment may refer back this far into the one before.
WINDOW = 32 * 1024
# A stored block holds at most this many bytes.
STORED_MAX = 65535
# The last block of the stream: final, fixed Huffman codes, empty.
FINAL_BLOCK = b"\x03\x00"


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


class _HashingWriter:
    """Writes to `out` and hashes what it writes, so the archive is never read back."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self._out.write(data)
        self.size += len(data)
        return len(data)


class SegmentedGzipWriter:
    """A write-only file that gzips what it is given, segment by segment (module docstring).

    Holds at most two segments in memory, whatever the size of what passes through."""

    def __init__(self, out: _HashingWriter | BinaryIO):
        self._out = out
        self._pending = bytearray()
        self._crc = 0
        self._size = 0
        self._window = b""
        self.closed = False
        out.write(GZIP_HEADER)

    def write(self, data) -> int:
        self._pending += data
        if len(self._pending) >= SEGMENT:
            view = memoryview(self._pending)
            start = 0
            while len(self._pending) - start >= SEGMENT:
                self._segment(view[start : start + SEGMENT])
                start += SEGMENT
            view.release()
            del self._pending[:start]
        return len(data)

    def tell(self) -> int:
        """Bytes given so far (tarfile asks where it starts)."""
        return self._size + len(self._pending)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pending:
            self._segment(memoryview(self._pending))
        self._out.write(FINAL_BLOCK)
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def __enter__(self) -> SegmentedGzipWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()

    def _segment(self, data: memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        if _worth_deflating(data):
            # Raw deflate (no zlib wrapper), primed with the end of the segment before.
            window = {"zdict": self._window} if self._window else {}
            deflater = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, **window)
            self._out.write(deflater.compress(data))
            # A sync flush ends the segment byte-aligned and not final: the next one follows.
            self._out.write(deflater.flush(zlib.Z_SYNC_FLUSH))
        else:
            for start in range(0, len(data), STORED_MAX):
                block = data[start : start + STORED_MAX]
                # Not final, stored; the length and its complement, little-endian.
                self._out.write(struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF))
                self._out.write(block)
        self._window = bytes(data[-WINDOW:])


def _worth_deflating(data: memoryview) -> bool:
    if len(data) <= SAMPLES * SAMPLE_BYTES:
        sample = bytes(data)
    else:
        step = len(data) // SAMPLES
        sample = b"".join(data[i * step : i * step + SAMPLE_BYTES] for i in range(SAMPLES))
    return len(zlib.compress(sample, 1)) <= COMPRESS_BELOW * len(sample)


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
        with open(dest, "wb") as raw:
            hashed = _HashingWriter(raw)
            with (
                SegmentedGzipWriter(hashed) as gz,
                tarfile.open(
                    fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BYTES
                ) as tar,
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
    return BuiltArchive(dest, hashed.digest.hexdigest(), hashed.size, count)


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
