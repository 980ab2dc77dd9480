"""Staging an upload: a file Django already spooled to disk is linked and hashed, not copied."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile

from registry.artifacts import PayloadTooLarge, stage_upload

from .archives import demo_archive, upload


def spooled(path) -> TemporaryUploadedFile:
    """The archive as Django hands over an upload larger than FILE_UPLOAD_MAX_MEMORY_SIZE."""
    data = path.read_bytes()
    uploaded = TemporaryUploadedFile(path.name, "application/gzip", len(data), None)
    uploaded.write(data)
    uploaded.seek(0)
    return uploaded


def test_a_spooled_upload_is_linked_into_staging_and_hashed(tmp_path):
    archive = demo_archive(tmp_path / "demo.tar.gz")
    uploaded = spooled(archive)
    staged = stage_upload(uploaded)
    try:
        assert os.path.samefile(staged.path, uploaded.temporary_file_path())
        assert staged.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert staged.size_bytes == archive.stat().st_size
        assert staged.suffix == ".tar.gz"
        uploaded.close()  # Django removes its file after the request: the staged one stays
        assert staged.path.read_bytes() == archive.read_bytes()
    finally:
        staged.discard()


def test_a_spooled_upload_and_one_in_memory_stage_alike(tmp_path):
    archive = demo_archive(tmp_path / "demo.tar.gz")
    linked = stage_upload(spooled(archive))
    copied = stage_upload(upload(archive))
    assert (linked.sha256, linked.size_bytes) == (copied.sha256, copied.size_bytes)
    assert not os.path.samefile(copied.path, archive)


def test_a_spooled_upload_over_the_limit_is_refused_and_not_kept(tmp_path, settings):
    archive = demo_archive(tmp_path / "demo.tar.gz")
    uploaded = spooled(archive)
    uploaded.size = 10  # a declared size that lies: the bytes on disk decide
    settings.BERTH_UPLOAD_MAX_BYTES = 100
    with pytest.raises(PayloadTooLarge):
        stage_upload(uploaded)
    assert not list((tmp_path / "uploads").glob("staged-*"))
