"""Safe extraction of uploaded model packages (.tar.gz, .tgz, .tar, .tar.bz2, .tar.xz, .zip).

Uploads are hostile until proven otherwise. Nothing here trusts a header: sizes are counted
while bytes are written, the compression ratio is measured against the compressed bytes
actually read from disk, and extraction stops at the first chunk that breaks a limit, so a
decompression bomb costs at most a few megabytes of writing.

Links are never created on disk: a symlink or hardlink whose target stays inside the tree
is materialized as a copy of that file, so nothing that reads the extracted tree later can
be led outside it. Those copies cost nothing in the archive, so their bytes are counted
against the limits before the first one is written.

Tar extension headers (GNU long names and links, PAX records) are read whole into memory by
`tarfile` before it hands out the member they describe; `_BoundedTarInfo` checks their declared
size first, so a 1 GB "long name" costs nothing. Member names must be UTF-8: a name `tarfile`
could only decode with surrogate escapes would break every page and API answer that shows it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

CHUNK_SIZE = 64 * 1024
MAX_PATH_DEPTH = 32
MAX_NAME_BYTES = 1024
# A PAX header holds a few records (path, linkpath, mtime, uid...); real ones are a few
# hundred bytes.
MAX_PAX_HEADER_BYTES = 64 * 1024
# Extension headers in a row before one member (a PAX global, a PAX local, a GNU long name
# and a GNU long link is four); `tarfile` reads a chain of them recursively.
MAX_EXTENSION_HEADERS = 8

# Control characters shown escaped in error messages (PostgreSQL's JSON refuses NUL).
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def printable(text: str) -> str:
    """`text` safe to store and show: undecodable bytes and control characters escaped."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROL_ESCAPES)
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL_ESCAPES)


class UnsafeArchive(Exception):
    """An archive refused by `safe_extract`; `member` names the offending entry when one does."""

    def __init__(self, message: str, member: str | None = None) -> None:
        message = printable(message)
        member = printable(member) if member is not None else None
        super().__init__(message)
        self.message = message
        self.member = member

    def __str__(self) -> str:
        if self.member is None:
            return self.message
        return f"{self.member}: {self.message}"


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may unpack to.

    `max_ratio` is uncompressed bytes written over compressed bytes read; it is enforced once
    `ratio_grace_bytes` have been written, so tiny, very compressible text files pass.
    """

    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 2 * 1024**3
    max_files: int = 10_000
    max_ratio: float = 200.0
    ratio_grace_bytes: int = 1024 * 1024


class _CountingReader:
    """File wrapper counting the bytes read from disk (the compressed side)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)
        self.bytes_read += n or 0
        return n or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed


class _Budget:
    """Running totals checked after every chunk written."""

    def __init__(self, limits: ArchiveLimits, source: _CountingReader) -> None:
        self.limits = limits
        self.source = source
        self.total_bytes = 0
        self.members = 0

    def count_member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_files:
            raise UnsafeArchive(f"more than {self.limits.max_files} entries in the archive", name)

    def add_bytes(self, name: str, n: int, file_bytes: int) -> None:
        self.total_bytes += n
        if file_bytes > self.limits.max_file_bytes:
            raise UnsafeArchive(
                f"file is larger than the {self.limits.max_file_bytes} byte limit per file", name
            )
        self.check_total(name, self.total_bytes)

    def check_total(self, name: str, total: int, *, links: str = "") -> None:
        """Refuse `total` unpacked bytes (written, or about to be) over the limits."""
        if total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"archive unpacks to more than the {self.limits.max_total_bytes} byte limit"
                + (f" ({total} bytes{links})" if links else ""),
                name,
            )
        if total > self.limits.ratio_grace_bytes:
            ratio = total / max(self.source.bytes_read, 1)
            if ratio > self.limits.max_ratio:
                raise UnsafeArchive(
                    f"compression ratio above {self.limits.max_ratio:g}:1 "
                    f"({total} bytes out of {self.source.bytes_read} read{links}); "
                    "refusing a likely decompression bomb",
                    name,
                )


def _member_parts(name: str) -> tuple[str, ...]:
    """Split a member name into safe path parts, or raise for anything that could escape."""
    if not name:
        raise UnsafeArchive("empty member name", name)
    if "\x00" in name:
        raise UnsafeArchive("member name contains a NUL byte", name)
    if not _is_utf8(name):
        raise UnsafeArchive("member name is not valid UTF-8", name)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeArchive("member name is too long", name)
    if "\\" in name:
        raise UnsafeArchive("member name contains a backslash", name)
    if name.startswith("/"):
        raise UnsafeArchive("absolute path", name)
    first = name.split("/", 1)[0]
    if len(first) >= 2 and first[1] == ":":
        raise UnsafeArchive("absolute path (drive letter)", name)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive("path contains '..'", name)
    if len(parts) > MAX_PATH_DEPTH:
        raise UnsafeArchive(f"path is deeper than {MAX_PATH_DEPTH} folders", name)
    return parts


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _resolve_link(member: str, parts: tuple[str, ...], target: str, *, symlink: bool) -> tuple:
    """The in-tree path parts a link points at, or raise if it leaves the tree."""
    if not target:
        raise UnsafeArchive("link with an empty target", member)
    if not _is_utf8(target):
        raise UnsafeArchive("link target is not valid UTF-8", member)
    if target.startswith("/") or "\x00" in target or "\\" in target:
        raise UnsafeArchive(f"link target {target!r} leaves the archive", member)
    # A symlink is relative to its own folder; a hardlink names a path from the archive root.
    base = list(parts[:-1]) if symlink else []
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                raise UnsafeArchive(f"link target {target!r} leaves the archive", member)
            base.pop()
        else:
            base.append(part)
    if not base:
        raise UnsafeArchive(f"link target {target!r} is the archive root", member)
    return tuple(base)


class _Extraction:
    """One extraction into a fresh `dest`, tracking what was written."""

    def __init__(self, dest: Path, limits: ArchiveLimits, source: _CountingReader) -> None:
        self.dest = dest
        self.root = os.path.realpath(dest)
        self.budget = _Budget(limits, source)
        # The member being read, named in errors raised by the archive libraries.
        self.current: str | None = None
        self.files: dict[tuple[str, ...], Path] = {}
        self.dirs: set[tuple[str, ...]] = set()
        # (member name, link parts, target parts) resolved once all regular files exist.
        self.links: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []

    def _path(self, member: str, parts: tuple[str, ...]) -> Path:
        path = self.dest.joinpath(*parts)
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise UnsafeArchive("path leaves the destination folder", member)
        return path

    def _claim(self, member: str, parts: tuple[str, ...], *, is_dir: bool) -> None:
        for i in range(1, len(parts)):
            if parts[:i] in self.files:
                raise UnsafeArchive("a parent of this path is a file", member)
        if parts in self.files:
            raise UnsafeArchive("duplicate member", member)
        if not is_dir and parts in self.dirs:
            raise UnsafeArchive("a file has the same path as a folder", member)

    def make_dir(self, member: str, parts: tuple[str, ...]) -> None:
        if not parts:
            return
        self._claim(member, parts, is_dir=True)
        path = self._path(member, parts)
        path.mkdir(parents=True, exist_ok=True)
        for i in range(1, len(parts) + 1):
            self.dirs.add(parts[:i])

    def write_file(self, member: str, parts: tuple[str, ...], stream: IO[bytes]) -> Path:
        if not parts:
            raise UnsafeArchive("file entry without a name", member)
        self._claim(member, parts, is_dir=False)
        if len(parts) > 1:
            self.make_dir(member, parts[:-1])
        path = self._path(member, parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        written = 0
        # Record before writing, so a failure mid-file still counts the path as taken.
        self.files[parts] = path
        with os.fdopen(os.open(path, flags, 0o644), "wb") as out:
            while True:
                chunk = stream.read(CHUNK_SIZE)
                if not chunk:
                    break
                written += len(chunk)
                self.budget.add_bytes(member, len(chunk), written)
                out.write(chunk)
        return path

    def defer_link(self, member: str, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
        if not parts:
            raise UnsafeArchive("link entry without a name", member)
        self._claim(member, parts, is_dir=False)
        # Reserve the name so a later member cannot take it.
        self.files[parts] = self.dest.joinpath(*parts)
        self.links.append((member, parts, target))

    def resolve_links(self) -> None:
        pending = {parts: (member, target) for member, parts, target in self.links}
        # Every link's final target first, so the bytes the copies will take are counted
        # against the limits before the first copy is written.
        copies: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        link_bytes = 0
        for member, parts, _ in self.links:
            seen: set[tuple[str, ...]] = {parts}
            target = pending[parts][1]
            # Follow link -> link chains, refusing loops.
            while target in pending:
                if target in seen:
                    raise UnsafeArchive("link loop", member)
                seen.add(target)
                target = pending[target][1]
            if target in self.dirs:
                raise UnsafeArchive("links to folders are not supported", member)
            if target not in self.files:
                missing = "/".join(target)
                raise UnsafeArchive(f"link target {missing!r} is not in the archive", member)
            copies.append((member, parts, target))
            link_bytes += os.stat(self.files[target]).st_size
        if copies:
            self.budget.check_total(
                copies[-1][0],
                self.budget.total_bytes + link_bytes,
                links=f", {link_bytes} of them copies of {len(copies)} links",
            )
        for member, parts, target in copies:
            with open(self.files[target], "rb") as src:
                del self.files[parts]
                self.write_file(member, parts, src)


def _detect_format(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise UnsafeArchive("not a tar, tar.gz, tar.bz2, tar.xz or zip archive")


def _decompressor(fmt: str, source: _CountingReader) -> IO[bytes]:
    if fmt == "gz":
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[arg-type]
    if fmt == "bz2":
        return bz2.BZ2File(source, mode="rb")  # type: ignore[arg-type]
    return lzma.LZMAFile(source, mode="rb")  # type: ignore[arg-type]


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that checks extension headers before `tarfile` reads them.

    `TarInfo._proc_member` is the hook the stdlib documents for subclasses ("can be overridden
    in a subclass"): it runs on each raw header right after its 512 bytes are parsed, before
    `_proc_gnulong` / `_proc_pax` read the header's payload (of whatever size it declares)
    into memory. GNU sparse maps are refused here too, before `tarfile` collects them.
    """

    def _proc_member(self, tarfile_: tarfile.TarFile):  # type: ignore[no-untyped-def]
        kind = self.type
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            self._check_extension(tarfile_, MAX_NAME_BYTES + 1, "GNU long name/link header")
        elif kind in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            self._check_extension(tarfile_, MAX_PAX_HEADER_BYTES, "PAX extended header")
        elif kind == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchive("sparse files are not allowed", self.name)
        else:
            tarfile_.extension_headers = 0  # type: ignore[attr-defined]
        return super()._proc_member(tarfile_)

    def _check_extension(self, tarfile_: tarfile.TarFile, limit: int, what: str) -> None:
        if self.size > limit:
            raise UnsafeArchive(f"{what} of {self.size} bytes; the limit is {limit}", self.name)
        count = getattr(tarfile_, "extension_headers", 0) + 1
        if count > MAX_EXTENSION_HEADERS:
            raise UnsafeArchive(
                f"more than {MAX_EXTENSION_HEADERS} extension headers in a row", self.name
            )
        tarfile_.extension_headers = count  # type: ignore[attr-defined]

    # GNU sparse files in PAX form: refused before `tarfile` reads their maps (the 1.0 form
    # reads as many map entries from the data as its first line asks for).
    def _proc_gnusparse_00(self, next_member, *args):  # type: ignore[no-untyped-def]
        raise UnsafeArchive("sparse files are not allowed", next_member.name)

    _proc_gnusparse_01 = _proc_gnusparse_00
    _proc_gnusparse_10 = _proc_gnusparse_00


def _tar_members(fileobj: IO[bytes]) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    # Stream mode ("r|"): members are read in order, never by seeking to header offsets.
    with tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_BoundedTarInfo) as tf:
        for info in tf:
            yield tf, info


def _extract_tar(fileobj: IO[bytes], job: _Extraction) -> None:
    limits = job.budget.limits
    for tf, info in _tar_members(fileobj):
        name = info.name
        job.current = name
        job.budget.count_member(name)
        parts = _member_parts(name)
        if info.isdir():
            job.make_dir(name, parts)
        elif info.issym() or info.islnk():
            target = _resolve_link(name, parts, info.linkname, symlink=info.issym())
            job.defer_link(name, parts, target)
        elif info.ischr() or info.isblk():
            raise UnsafeArchive("device files are not allowed", name)
        elif info.isfifo():
            raise UnsafeArchive("FIFOs are not allowed", name)
        elif info.isreg():
            if info.sparse is not None:
                raise UnsafeArchive("sparse files are not allowed", name)
            if info.size > limits.max_file_bytes:
                raise UnsafeArchive(
                    f"file is larger than the {limits.max_file_bytes} byte limit per file", name
                )
            stream = tf.extractfile(info)
            if stream is None:
                raise UnsafeArchive("file entry has no data", name)
            job.write_file(name, parts, stream)
        else:
            raise UnsafeArchive("unsupported entry type", name)
    job.resolve_links()


def _extract_zip(fileobj: _CountingReader, job: _Extraction) -> None:
    limits = job.budget.limits
    with zipfile.ZipFile(fileobj) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise UnsafeArchive(f"more than {limits.max_files} entries in the archive")
        for info in infos:
            name = info.filename
            job.current = name
            job.budget.count_member(name)
            if info.flag_bits & 0x1:
                raise UnsafeArchive("encrypted entries are not supported", name)
            parts = _member_parts(name)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode) if mode else 0
            if info.is_dir() or kind == stat.S_IFDIR:
                job.make_dir(name, parts)
            elif kind == stat.S_IFLNK:
                with zf.open(info) as fh:
                    raw_target = fh.read(MAX_NAME_BYTES + 1)
                if len(raw_target) > MAX_NAME_BYTES:
                    raise UnsafeArchive("symlink target is too long", name)
                target_text = raw_target.decode("utf-8", "replace")
                job.defer_link(name, parts, _resolve_link(name, parts, target_text, symlink=True))
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                raise UnsafeArchive("device files are not allowed", name)
            elif kind == stat.S_IFIFO:
                raise UnsafeArchive("FIFOs are not allowed", name)
            elif kind in (0, stat.S_IFREG):
                if info.file_size > limits.max_file_bytes:
                    raise UnsafeArchive(
                        f"file is larger than the {limits.max_file_bytes} byte limit per file",
                        name,
                    )
                with zf.open(info) as stream:
                    job.write_file(name, parts, stream)
            else:
                raise UnsafeArchive("unsupported entry type", name)
    job.resolve_links()


def safe_extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> list[Path]:
    """Unpack `archive` into `dest` (which must not exist or be empty); return the files written.

    Raises `UnsafeArchive` for anything hostile or over `limits`; `dest` is then removed.
    """
    limits = limits or ArchiveLimits()
    archive = Path(archive)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or dest.is_symlink() or any(dest.iterdir())):
        raise UnsafeArchive(f"destination {dest} exists and is not an empty folder")
    fmt = _detect_format(archive)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with open(archive, "rb") as raw:
            source = _CountingReader(raw)
            job = _Extraction(dest, limits, source)
            try:
                if fmt == "zip":
                    _extract_zip(source, job)
                elif fmt == "tar":
                    _extract_tar(source, job)  # type: ignore[arg-type]
                else:
                    with _decompressor(fmt, source) as stream:
                        _extract_tar(stream, job)
            except UnsafeArchive:
                raise
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, lzma.LZMAError) as exc:
                raise UnsafeArchive(f"corrupt or unreadable archive: {exc}", job.current) from exc
            except (UnicodeError, ValueError) as exc:
                raise UnsafeArchive(f"unreadable archive entry: {exc}", job.current) from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return sorted(job.files.values())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
