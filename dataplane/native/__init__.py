"""The gateway's request path, compiled to C with mypyc.

Every invocation runs through `httpserver`, `upstream`, `payload`, `metrics` and `server`,
and interpreted they cost several times the Python of a bare uvloop/httptools proxy.
mypyc (mypy's compiler, with which mypy and black are built) turns these type-annotated modules
into C extensions: classes become C structs, calls between their methods direct C calls.
The Python source stays the one source; nothing is written twice.

The compiled modules go to `dataplane/_native/` (not in git), with a manifest of the sources
and the interpreter they were built from. `dataplane/__init__.py` puts that folder first on
the package's path only when the manifest matches the sources as they are now, so an edited
module is never shadowed by a stale build: it runs interpreted (with a warning) until
`python -m dataplane.native` builds again, which `scripts/bootstrap` does. Where no C
compiler is found the gateway runs interpreted, the same code, slower.
`BERTH_GATEWAY_INTERPRETED=1` runs it interpreted on purpose.

    python -m dataplane.native            # build if the sources changed
    python -m dataplane.native --check    # exit 1 unless the build is current
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
FOLDER = PACKAGE / "_native"
MANIFEST = "manifest.json"
# The modules every invocation runs through. Others stay interpreted: what they do per
# request is small (gateway.py's lookups) or nothing (the admin API's handlers are in
# server.py, compiled along).
MODULES = ("httpserver", "upstream", "payload", "metrics", "server")
# The shared library the compiled modules import: `<group>__mypyc`, inside this package.
GROUP = "dataplane.compiled"
INTERPRETED_ENV = "BERTH_GATEWAY_INTERPRETED"


def fingerprint() -> dict[str, str]:
    """What a build is valid for: each module's source and this interpreter's ABI."""
    found = {
        name: hashlib.sha256((PACKAGE / f"{name}.py").read_bytes()).hexdigest() for name in MODULES
    }
    found["abi"] = str(sysconfig.get_config_var("SOABI"))
    return found


def built_fingerprint(folder: Path = FOLDER) -> dict[str, str] | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current(folder: Path = FOLDER) -> bool:
    """Whether `folder` holds a build of the sources as they are now."""
    return built_fingerprint(folder) == fingerprint()


def wanted() -> bool:
    return os.environ.get(INTERPRETED_ENV, "").strip() in ("", "0")


def in_use() -> bool:
    """Whether the gateway's modules imported in this process are the compiled ones."""
    import dataplane.httpserver

    return not dataplane.httpserver.__file__.endswith(".py")


def build(folder: Path = FOLDER) -> None:
    """Compile MODULES into `folder` (replaced whole, so no module of an older build stays)."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    root = PACKAGE.parent
    with tempfile.TemporaryDirectory(prefix="berth-native-") as scratch:
        work = Path(scratch)
        cwd = Path.cwd()
        os.chdir(root)  # mypyc names modules by their paths from here.
        try:
            extensions = mypycify(
                # Only the compiled modules must type-check; what they import is read for its
                # types (untyped libraries as Any).
                ["--follow-imports", "silent", "--ignore-missing-imports"]
                + ["--cache-dir", str(work / "mypy-cache")]
                + [f"dataplane/{name}.py" for name in MODULES],
                opt_level="3",
                group_name=GROUP,
                target_dir=str(work / "c"),
            )
            distribution = Distribution({"name": "berth-native", "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(work / "lib")
            command.build_temp = str(work / "temp")
            distribution.run_command("build_ext")
        finally:
            os.chdir(cwd)
        # Staged beside `folder` and swapped in by renames: a gateway starting meanwhile finds
        # the old build, none (and runs interpreted), or the new one, never half of one.
        staged = folder.with_name(folder.name + ".new")
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        staged.mkdir()
        for library in (work / "lib" / "dataplane").iterdir():
            shutil.copy2(library, staged / library.name)
        (staged / MANIFEST).write_text(json.dumps(fingerprint(), indent=2), encoding="utf-8")
        if folder.exists():
            folder.rename(old)
        staged.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
