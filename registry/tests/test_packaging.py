"""Packages: ordinary .tar.gz files (tarfile, tar, gzip and the safe extractor read them),
the same bytes for the same repository, deflated where that pays and stored where not."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from registry.packaging import SEGMENT, PackagingError, build_tar_gz, package_repository
from toolkit.archive import safe_extract

TEXT = "".join(f"input_{i} {{ data_type: TYPE_FP32 dims: [ {i % 7} ] }}\n" for i in range(40_000))


def write_repository(root: Path, *, seed: int = 1) -> Path:
    """Text that deflates well, weights that do not (over several segments, not aligned to
    them), an executable, an empty version folder and a link inside the repository."""
    rng = random.Random(seed)
    (root / "model" / "1").mkdir(parents=True)
    (root / "model" / "2").mkdir()
    (root / "model" / "config.pbtxt").write_text(TEXT)
    (root / "model" / "1" / "weights.bin").write_bytes(rng.randbytes(2 * SEGMENT + 12345))
    (root / "model" / "1" / "vocab.txt").write_text(TEXT[: SEGMENT // 3])
    script = root / "model" / "1" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (root / "model" / "1" / "latest.bin").symlink_to("weights.bin")
    return root


def contents(root: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir",)
        else:
            found[name] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def test_a_package_reads_back_whole_with_tarfile_tar_and_gzip(tmp_path):
    repo = write_repository(tmp_path / "repo")
    built = package_repository(repo, tmp_path / "model_1.tar.gz")
    data = built.path.read_bytes()
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    assert built.size_bytes == len(data)
    assert built.file_count == 8

    # Python's gzip and tarfile.
    with tarfile.open(built.path, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        tar.extractall(tmp_path / "by-tarfile", filter="tar")
    assert members["model/1/run.sh"].mode == 0o755
    assert members["model/config.pbtxt"].mode == 0o644
    assert members["model/1/latest.bin"].issym()
    assert {m.mtime for m in members.values()} == {946684800}
    assert contents(tmp_path / "by-tarfile") == contents(repo)
    assert len(gzip.decompress(data)) % 512 == 0

    # GNU tar and gzip, as SageMaker's container and a person would.
    subprocess.run(["gzip", "-t", str(built.path)], check=True)
    (tmp_path / "by-tar").mkdir()
    subprocess.run(["tar", "xzf", str(built.path), "-C", str(tmp_path / "by-tar")], check=True)
    assert contents(tmp_path / "by-tar") == contents(repo)

    # The registry's own extractor (links become copies of their target).
    safe_extract(built.path, tmp_path / "by-safe-extract")
    extracted = tmp_path / "by-safe-extract" / "model" / "1"
    assert (extracted / "latest.bin").read_bytes() == (repo / "model/1/weights.bin").read_bytes()


def test_the_same_repository_gives_the_same_bytes(tmp_path):
    first = build_tar_gz(write_repository(tmp_path / "a"), tmp_path / "a.tar.gz")
    second_repo = write_repository(tmp_path / "b")
    os.utime(second_repo / "model" / "config.pbtxt", (0, 0))  # times change nothing
    second = build_tar_gz(second_repo, tmp_path / "b.tar.gz")
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    other = build_tar_gz(write_repository(tmp_path / "c", seed=2), tmp_path / "c.tar.gz")
    assert other.sha256 != first.sha256


def test_weights_are_stored_and_text_is_deflated(tmp_path):
    rng = random.Random(3)
    weights = tmp_path / "weights"
    (weights / "m").mkdir(parents=True)
    (weights / "m" / "w.bin").write_bytes(rng.randbytes(3 * SEGMENT))
    built = build_tar_gz(weights, tmp_path / "weights.tar.gz")
    # Stored: 5 bytes per 64 KiB block on top of the tar stream, nothing spent deflating.
    assert 3 * SEGMENT < built.size_bytes < 3 * SEGMENT + 16 * 1024

    text = tmp_path / "text"
    (text / "m").mkdir(parents=True)
    (text / "m" / "config.pbtxt").write_text(TEXT * 3)
    built = build_tar_gz(text, tmp_path / "text.tar.gz")
    assert built.size_bytes < len(TEXT) * 3 / 5


def test_an_empty_repository_is_still_an_archive(tmp_path):
    (tmp_path / "empty").mkdir()
    built = build_tar_gz(tmp_path / "empty", tmp_path / "empty.tar.gz")
    with tarfile.open(built.path, "r:gz") as tar:
        assert tar.getmembers() == []
    subprocess.run(["gzip", "-t", str(built.path)], check=True)


def test_a_link_out_of_the_repository_is_refused_and_leaves_no_file(tmp_path):
    repo = write_repository(tmp_path / "repo")
    (repo / "model" / "escape").symlink_to(tmp_path)
    with pytest.raises(PackagingError) as caught:
        build_tar_gz(repo, tmp_path / "out.tar.gz")
    assert caught.value.member == "model/escape"
    assert not (tmp_path / "out.tar.gz").exists()
