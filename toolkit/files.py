"""Placing a file somewhere else without writing its bytes again when the file system allows.

Packages are mostly model weights, gigabytes on GPU models: the registry's artifact store,
its staging of uploads, the data plane's local model store and the serving folders Triton
loads from all take a file by hard link where they can, and copy only across file systems
(or where links are refused)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def link_or_copy(source: Path, dest: Path) -> None:
    """Make `dest` (which may exist: it is replaced) a hard link of `source`, or a copy with
    the same permission bits where the two are on different file systems or links are
    refused. A gigabyte costs nothing linked and seconds copied.

    A link shares the file: whoever writes `dest` in place writes `source` too, so a file
    that is rewritten afterwards must be unlinked and written anew."""
    source, dest = Path(source), Path(dest)
    link = dest.with_name(f"{dest.name}.link-{uuid.uuid4().hex[:8]}")
    try:
        os.link(source, link)
    except OSError:
        shutil.copyfile(source, dest)
        shutil.copymode(source, dest)
        return
    os.replace(link, dest)
