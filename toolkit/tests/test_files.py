"""toolkit.files.link_or_copy: a link where the file system allows, else a copy."""

import errno
import os
from pathlib import Path

import pytest

from toolkit import files
from toolkit.files import link_or_copy


def test_a_file_is_linked_and_replaces_what_was_there(tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 1024)
    dest = tmp_path / "served" / "weights.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    link_or_copy(source, dest)
    assert dest.stat().st_ino == source.stat().st_ino
    assert dest.read_bytes() == b"w" * 1024
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.bin"]


def test_across_file_systems_it_copies_with_the_same_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", refuse)
    source = tmp_path / "model.py"
    source.write_text("print('hi')\n")
    os.chmod(source, 0o640)
    dest = tmp_path / "copy.py"
    link_or_copy(source, dest)
    assert dest.stat().st_ino != source.stat().st_ino
    assert dest.read_text() == "print('hi')\n"
    assert dest.stat().st_mode & 0o777 == 0o640


def test_a_missing_source_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        link_or_copy(tmp_path / "nothing", tmp_path / "dest")
