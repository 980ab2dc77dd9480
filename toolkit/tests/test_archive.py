"""safe_extract against well-formed packages and hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.archive import ArchiveLimits, UnsafeArchive, safe_extract, sha256_file
from toolkit.examples import build_demo_archive

SMALL = ArchiveLimits(
    max_total_bytes=8 * 1024 * 1024,
    max_file_bytes=4 * 1024 * 1024,
    max_files=50,
    max_ratio=100.0,
    ratio_grace_bytes=256 * 1024,
)


# -- archive builders -----------------------------------------------------------------------------


def _tar(
    path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz"
) -> Path:
    with tarfile.open(path, mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


def _zip(path: Path, entries: list[tuple[str, bytes] | tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for entry in entries:
            info = zipfile.ZipInfo(entry[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            if len(entry) == 3:
                info.external_attr = entry[2] << 16
            zf.writestr(info, entry[1])
    return path


def _zero_bomb_tar(path: Path, size: int) -> Path:
    """A .tar.gz with one file of `size` zero bytes (compresses about 1000:1)."""

    class Zeros(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    info = tarfile.TarInfo("model/1/weights.bin")
    info.size = size
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb") as gz,
        tarfile.open(fileobj=gz, mode="w") as tf,
    ):
        tf.addfile(info, io.BufferedReader(Zeros(), 1024 * 1024))
    return path


def _random_bytes(size: int) -> bytes:
    """Incompressible bytes, deterministic between runs."""
    return hashlib.shake_256(b"berth").digest(size)


def _links_to_one_file(path: Path, *, file_bytes: int, links: int) -> Path:
    entries: list = [("m/weights.bin", _random_bytes(file_bytes))]
    entries += [_link(f"m/copy{n}.bin", "m/weights.bin", tarfile.LNKTYPE) for n in range(links)]
    return _tar(path, entries)


def _gnu_tar(path: Path, name: str, data: bytes) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def _pax_tar(path: Path, name: str, data: bytes, pax: dict[str, str]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.pax_headers = pax
        tf.addfile(info, io.BytesIO(data))
    return path


def _non_utf8_tar(path: Path) -> Path:
    with tarfile.open(path, "w", encoding="utf-8", errors="surrogateescape") as tf:
        info = tarfile.TarInfo("m/caf\udce9.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return path


def _zero_bomb_zip(path: Path, size: int) -> Path:
    chunk = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("model/1/weights.bin", "w", force_zip64=True) as out,
    ):
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return path


# -- well-formed packages -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip"])
def test_demo_package_extracts_to_the_same_files(
    suffix: str, demo_repository: Path, tmp_path: Path
) -> None:
    archive = build_demo_archive(tmp_path / f"demo_1{suffix}")
    dest = tmp_path / "out"
    written = safe_extract(archive, dest, SMALL)
    expected = sorted(
        p.relative_to(demo_repository) for p in demo_repository.rglob("*") if p.is_file()
    )
    assert sorted(p.relative_to(dest) for p in written) == expected
    for rel in expected:
        assert (dest / rel).read_bytes() == (demo_repository / rel).read_bytes()
    # The ensemble's empty version folder survives too.
    assert (dest / "demo_ensemble" / "1").is_dir()


def test_links_inside_the_tree_become_plain_copies(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "links.tar.gz",
        [
            ("shared/weights.bin", b"W" * 100),
            _link("m/1/model.bin", "../../shared/weights.bin"),
            _link("m/1/hard.bin", "shared/weights.bin", tarfile.LNKTYPE),
            _link("m/1/chain.bin", "model.bin"),
        ],
    )
    dest = tmp_path / "out"
    safe_extract(archive, dest, SMALL)
    for name in ("model.bin", "hard.bin", "chain.bin"):
        path = dest / "m" / "1" / name
        assert not path.is_symlink()
        assert path.read_bytes() == b"W" * 100
    assert stat.S_ISREG((dest / "m" / "1" / "hard.bin").lstat().st_mode)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"berth" * 100_000)
    assert sha256_file(path) == hashlib.sha256(b"berth" * 100_000).hexdigest()


# -- hostile archives -----------------------------------------------------------------------------

Builder = Callable[[Path], Path]

HOSTILE: dict[str, tuple[Builder, str | None, str]] = {
    "dot-dot": (
        lambda d: _tar(d / "a.tar.gz", [("../evil.txt", b"x")]),
        "../evil.txt",
        "'..'",
    ),
    "dot-dot-inside": (
        lambda d: _tar(d / "a.tar.gz", [("model/../../evil.txt", b"x")]),
        "model/../../evil.txt",
        "'..'",
    ),
    "absolute": (
        lambda d: _tar(d / "a.tar.gz", [(str(d / "sandbox" / "abs.txt"), b"x")]),
        None,
        "absolute path",
    ),
    "symlink-absolute": (
        lambda d: _tar(d / "a.tar.gz", [_link("model/passwd", "/etc/passwd")]),
        "model/passwd",
        "leaves the archive",
    ),
    "symlink-up": (
        lambda d: _tar(d / "a.tar.gz", [_link("model/up", "../../outside")]),
        "model/up",
        "leaves the archive",
    ),
    "symlink-then-write-through": (
        lambda d: _tar(d / "a.tar.gz", [_link("model/dir", ".."), ("model/dir/x.txt", b"x")]),
        "model/dir",
        "is the archive root",
    ),
    "hardlink-up": (
        lambda d: _tar(d / "a.tar.gz", [_link("model/h", "../secret", tarfile.LNKTYPE)]),
        "model/h",
        "leaves the archive",
    ),
    "link-to-missing": (
        lambda d: _tar(d / "a.tar.gz", [_link("model/l", "nothing.bin")]),
        "model/l",
        "not in the archive",
    ),
    "link-loop": (
        lambda d: _tar(d / "a.tar.gz", [_link("a", "b"), _link("b", "a")]),
        None,
        "link loop",
    ),
    "char-device": (
        lambda d: _tar(d / "a.tar.gz", [_special("model/null", tarfile.CHRTYPE)]),
        "model/null",
        "device files",
    ),
    "block-device": (
        lambda d: _tar(d / "a.tar.gz", [_special("model/sda", tarfile.BLKTYPE)]),
        "model/sda",
        "device files",
    ),
    "fifo": (
        lambda d: _tar(d / "a.tar.gz", [_special("model/pipe", tarfile.FIFOTYPE)]),
        "model/pipe",
        "FIFOs",
    ),
    "too-many-files": (
        lambda d: _tar(d / "a.tar.gz", [(f"m/{i}.txt", b"x") for i in range(51)]),
        "m/50.txt",
        "more than 50 entries",
    ),
    "file-too-big": (
        lambda d: _tar(d / "a.tar", [("m/big.bin", b"\x01" * (4 * 1024 * 1024 + 1))], "w"),
        "m/big.bin",
        "byte limit per file",
    ),
    "total-too-big": (
        lambda d: _tar(
            d / "a.tar",
            [(f"m/{i}.bin", bytes([i]) * (3 * 1024 * 1024)) for i in range(3)],
            "w",
        ),
        "m/2.bin",
        "archive unpacks to more than",
    ),
    "gzip-bomb": (
        lambda d: _zero_bomb_tar(d / "a.tar.gz", 3 * 1024 * 1024),
        "model/1/weights.bin",
        "compression ratio",
    ),
    "duplicate": (
        lambda d: _tar(d / "a.tar.gz", [("m/a.txt", b"1"), ("m/a.txt", b"2")]),
        "m/a.txt",
        "duplicate member",
    ),
    "file-under-file": (
        lambda d: _tar(d / "a.tar.gz", [("m/a", b"1"), ("m/a/b", b"2")]),
        "m/a/b",
        "parent of this path is a file",
    ),
    "backslash": (
        lambda d: _zip(d / "a.zip", [("..\\evil.txt", b"x")]),
        "..\\evil.txt",
        "backslash",
    ),
    "zip-dot-dot": (
        lambda d: _zip(d / "a.zip", [("../evil.txt", b"x")]),
        "../evil.txt",
        "'..'",
    ),
    "zip-absolute": (
        lambda d: _zip(d / "a.zip", [("/tmp/evil.txt", b"x")]),
        "/tmp/evil.txt",
        "absolute path",
    ),
    "zip-symlink-up": (
        lambda d: _zip(d / "a.zip", [("m/link", b"../../etc/passwd", 0o120777)]),
        "m/link",
        "leaves the archive",
    ),
    "zip-fifo": (
        lambda d: _zip(d / "a.zip", [("m/pipe", b"", 0o010644)]),
        "m/pipe",
        "FIFOs",
    ),
    "zip-bomb": (
        lambda d: _zero_bomb_zip(d / "a.zip", 3 * 1024 * 1024),
        "model/1/weights.bin",
        "compression ratio",
    ),
    "gnu-long-name-over-limit": (
        lambda d: _gnu_tar(d / "a.tar", "m/" + "n" * 4000, b"x"),
        "././@LongLink",
        "GNU long name/link header of 4003 bytes; the limit is 1025",
    ),
    "pax-header-over-limit": (
        lambda d: _pax_tar(d / "a.tar", "m/a.txt", b"x", {"comment": "c" * 100_000}),
        "././@PaxHeader",
        "PAX extended header of 100",
    ),
    "non-utf8-name": (
        lambda d: _non_utf8_tar(d / "a.tar"),
        "m/caf\\xe9.txt",
        "member name is not valid UTF-8",
    ),
    "hardlink-copies-over-total": (
        # 1 MiB stored once, linked 10 times: 11 MiB unpacked, counted before any copy.
        lambda d: _links_to_one_file(d / "a.tar.gz", file_bytes=1024 * 1024, links=10),
        "m/copy9.bin",
        "(11534336 bytes, 10485760 of them copies of 10 links)",
    ),
    "not-an-archive": (
        lambda d: (
            (d / "a.tar.gz").write_bytes(b"just some text, not an archive" * 20) and d / "a.tar.gz"
        ),
        None,
        "not a tar",
    ),
    "truncated": (
        lambda d: _truncate(_tar(d / "a.tar.gz", [("m/a.bin", bytes(range(256)) * 400)])),
        None,
        "corrupt or unreadable archive",
    ),
}


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_is_left(case: str, tmp_path: Path) -> None:
    build, member, message = HOSTILE[case]
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    archive = build(tmp_path)
    dest = sandbox / "dest"
    with pytest.raises(UnsafeArchive) as info:
        safe_extract(archive, dest, SMALL)
    error = info.value
    assert message in error.message
    if member is not None:
        assert error.member == member
        assert member in str(error)
    # The destination is removed and nothing was written next to it or above it.
    assert not dest.exists()
    assert list(sandbox.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({archive.name, "sandbox"})


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_decompression_bomb_is_stopped_after_a_few_megabytes(kind: str, tmp_path: Path) -> None:
    size = 256 * 1024 * 1024  # 256 MiB of zeros, about 250 KB compressed
    archive = (
        _zero_bomb_tar(tmp_path / "bomb.tar.gz", size)
        if kind == "tar"
        else _zero_bomb_zip(tmp_path / "bomb.zip", size)
    )
    limits = ArchiveLimits(max_total_bytes=4 * 1024**3, max_file_bytes=4 * 1024**3)
    started = time.monotonic()
    with pytest.raises(UnsafeArchive, match="compression ratio") as info:
        safe_extract(archive, tmp_path / "dest", limits)
    elapsed = time.monotonic() - started
    written = int(re.search(r"\((\d+) bytes out of", info.value.message).group(1))
    assert written < 64 * 1024 * 1024
    assert elapsed < 5
    assert not (tmp_path / "dest").exists()


def test_zip_member_lying_about_its_size_is_refused(tmp_path: Path) -> None:
    # A member declaring 10 bytes that inflates to 5 MiB: reading stops at the declared
    # size, the checksum then fails, and the member is named.
    archive = tmp_path / "liar.zip"
    _zip(archive, [("m/w.bin", b"\x07" * (5 * 1024 * 1024))])
    data = bytearray(archive.read_bytes())
    # Patch the uncompressed size in the central directory entry (offset 24 from "PK\1\2").
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    local = data.find(b"PK\x03\x04")
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchive) as info:
        safe_extract(archive, tmp_path / "dest", SMALL)
    assert info.value.member == "m/w.bin"
    assert "corrupt" in info.value.message
    assert not (tmp_path / "dest").exists()


def test_destination_must_be_new_or_empty(demo_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(UnsafeArchive, match="not an empty folder"):
        safe_extract(demo_archive, dest, SMALL)
    assert (dest / "keep.txt").read_text() == "mine"
