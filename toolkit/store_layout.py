"""The layout of a local model store, written by the portal (deploying a version places its
package there) and read by the data plane (a miss fetches the package from there).

    <store root>/<endpoint>/<model>_<version>.tar.gz          the package
    <store root>/<endpoint>/<model>_<version>.tar.gz.sha256   its sha256, as `sha256sum`
                                                              writes it: "<hex>  <name>"
    <store root>/<endpoint>/aliases.json                      model name -> live package
    <store root>/.incoming/                                   packages being fetched

An S3 model store (a SageMaker multi-model endpoint's `ModelDataUrl`) holds the same names
under its prefix. Both sides use this module, so what one writes is what the other reads.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

ALIASES_FILE = "aliases.json"
SIDECAR_SUFFIX = ".sha256"
INCOMING_FOLDER = ".incoming"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class StoreLayoutError(ValueError):
    """A path that would leave the store's layout (another endpoint's folder, outside the
    store root)."""


def endpoint_folder(root: Path | str, endpoint: str) -> Path:
    """The folder of `endpoint`'s packages: one folder directly under the store root.
    Checked after resolving links, because a package written elsewhere (another endpoint's
    folder, outside the store) is what the approval gate exists to prevent."""
    base = Path(root).resolve()
    folder = (base / endpoint).resolve()
    if not endpoint or folder.parent != base:
        raise StoreLayoutError(
            f"The model store folder of endpoint {endpoint!r} resolves to {folder}, outside "
            f"the endpoint folders of {base}."
        )
    return folder


def incoming_folder(root: Path | str) -> Path:
    """Where packages are fetched before they are renamed into an endpoint's folder: on the
    store's filesystem, so the rename is atomic."""
    return Path(root) / INCOMING_FOLDER


def sidecar_name(package: str) -> str:
    """The name of the file holding `package`'s sha256."""
    return package + SIDECAR_SUFFIX


def sidecar_text(digest: str, package: str) -> str:
    return f"{digest}  {package}\n"


def parse_sidecar(text: str) -> str | None:
    """The digest a sidecar holds (lower case), or None when it holds none."""
    token = text.strip().split()[0] if text.strip() else ""
    return token.lower() if _SHA256.match(token) else None


def write_atomically(path: Path, text: str) -> None:
    """Write `path` through a temporary file renamed over it: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def put_package(fetched: Path, dest: Path, *, digest: str) -> None:
    """Move a fetched package to `dest` with its sidecar, so the data plane never sees half
    a package or a package without its checksum: the sidecar is written first, then the
    package is renamed into place (copied next to `dest` first when `fetched` lies on
    another filesystem, where a rename is not atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(dest.with_name(sidecar_name(dest.name)), sidecar_text(digest, dest.name))
    if fetched.stat().st_dev != dest.parent.stat().st_dev:
        staged = dest.with_name(f".tmp-{dest.name}.part")
        shutil.copyfile(fetched, staged)
        fetched = staged
    os.replace(fetched, dest)


def ensure_sidecar(dest: Path, *, digest: str) -> None:
    """Write the sidecar of a package already in place, when it has none."""
    sidecar = dest.with_name(sidecar_name(dest.name))
    if not sidecar.exists():
        write_atomically(sidecar, sidecar_text(digest, dest.name))
