"""The model store's layout: what the portal writes is what the data plane reads, and no name
leads out of the store."""

import hashlib
import os
from pathlib import Path

import pytest

from dataplane.stores import LocalStore
from toolkit.store_layout import (
    StoreLayoutError,
    endpoint_folder,
    ensure_sidecar,
    parse_sidecar,
    put_package,
    sidecar_name,
)


def test_a_placed_package_is_read_back_with_its_checksum(tmp_path):
    root = tmp_path / "stores"
    folder = endpoint_folder(root, "local-staging")
    fetched = tmp_path / "incoming" / "demo_1.tar.gz"
    fetched.parent.mkdir()
    fetched.write_bytes(b"package bytes")
    digest = hashlib.sha256(b"package bytes").hexdigest()

    put_package(fetched, folder / "demo_1.tar.gz", digest=digest)

    store = LocalStore(folder)
    assert store.exists("demo_1.tar.gz") and store.expected_sha256("demo_1.tar.gz") == digest
    assert (folder / sidecar_name("demo_1.tar.gz")).read_text() == f"{digest}  demo_1.tar.gz\n"
    assert not fetched.exists()  # moved, not copied
    assert sorted(p.name for p in folder.iterdir()) == ["demo_1.tar.gz", "demo_1.tar.gz.sha256"]


def test_ensure_sidecar_keeps_an_existing_one(tmp_path):
    package = tmp_path / "demo_1.tar.gz"
    package.write_bytes(b"x")
    ensure_sidecar(package, digest="a" * 64)
    ensure_sidecar(package, digest="b" * 64)
    assert parse_sidecar((tmp_path / "demo_1.tar.gz.sha256").read_text()) == "a" * 64


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        ("A" * 64 + "  demo_1.tar.gz\n", "a" * 64),
        ("a" * 64, "a" * 64),
        ("", None),
        ("not-a-digest demo_1.tar.gz", None),
        ("a" * 63, None),
    ],
)
def test_parse_sidecar(text, digest):
    assert parse_sidecar(text) == digest


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", "/etc"])
def test_names_that_leave_the_store_are_refused(tmp_path, name):
    with pytest.raises(StoreLayoutError, match="outside"):
        endpoint_folder(tmp_path, name)


def test_a_link_out_of_the_store_is_refused(tmp_path):
    root, outside = tmp_path / "stores", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "linked")
    with pytest.raises(StoreLayoutError, match="outside"):
        endpoint_folder(root, "linked")
    assert endpoint_folder(root, "fine") == Path(root / "fine").resolve()
