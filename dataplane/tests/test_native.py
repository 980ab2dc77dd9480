"""The gateway's compiled request path: used when current, never when stale, same behaviour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane import native

ROOT = Path(native.__file__).resolve().parents[2]


def _import_httpserver(package_parent: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import dataplane.httpserver from `package_parent` in a new interpreter: where it came
    from on stdout, the package's warnings on stderr."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import logging; logging.basicConfig(); import dataplane.httpserver as m; "
            "print(m.__file__)",
        ],
        cwd=package_parent,
        env={**os.environ, "PYTHONPATH": str(package_parent), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.skipif(
    not native.wanted(), reason=f"{native.INTERPRETED_ENV} asks for the interpreted gateway"
)
def test_the_gateway_runs_compiled():
    assert native.current(), (
        f"{native.FOLDER} is missing or was built from other sources: "
        f"python -m dataplane.native (scripts/bootstrap runs it)"
    )
    assert native.in_use()
    import dataplane.server

    assert Path(dataplane.server.__file__).parent == native.FOLDER


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    """A copy of the dataplane package with its compiled build, to edit."""
    if not native.current():
        pytest.skip("no current build to copy")
    shutil.copytree(
        ROOT / "dataplane",
        tmp_path / "dataplane",
        ignore=shutil.ignore_patterns("tests", "__pycache__"),
    )
    return tmp_path


def test_a_current_copy_runs_compiled(package_copy: Path):
    found = _import_httpserver(package_copy)
    assert Path(found.stdout.strip()).parent == package_copy / "dataplane" / "_native"


def test_an_edited_module_runs_interpreted_until_built_again(package_copy: Path):
    source = package_copy / "dataplane" / "httpserver.py"
    source.write_text(source.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")

    found = _import_httpserver(package_copy)

    assert found.stdout.strip() == str(source)
    assert "built from other sources" in found.stderr


def test_a_build_for_another_interpreter_is_not_used(package_copy: Path):
    manifest = package_copy / "dataplane" / "_native" / native.MANIFEST
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    manifest.write_text(json.dumps({**recorded, "abi": "cpython-399-x86_64-linux-gnu"}))

    found = _import_httpserver(package_copy)

    assert found.stdout.strip().endswith("dataplane/httpserver.py")


def test_interpreted_on_request():
    found = _import_httpserver(ROOT, **{native.INTERPRETED_ENV: "1"})
    assert found.stdout.strip() == str(ROOT / "dataplane" / "httpserver.py")
    assert found.stderr == ""


def test_the_interpreted_gateway_obeys_the_same_http_rules(tmp_path: Path):
    """The protocol's tests, run again on the interpreted modules: both builds are the same
    code, and this keeps them the same."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "dataplane/tests/test_httpserver.py",
            "dataplane/tests/test_upstream.py",
            "dataplane/tests/test_payload.py",
        ],
        cwd=ROOT,
        env={**os.environ, native.INTERPRETED_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
