"""Shared fixtures of the toolkit tests: the demo repository and archive, and one Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.examples import build_demo_archive, write_demo_repository
from toolkit.triton import TritonServer, TritonStartError, tritonserver_binary


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo ensemble repository (source form: onnxruntime_onnx classifier, berth.yaml)."""
    return write_demo_repository(tmp_path_factory.mktemp("demo") / "repository")


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo repository packed as a .tar.gz package."""
    return build_demo_archive(tmp_path_factory.mktemp("demo-archive") / "demo_1.tar.gz")


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving repository of the session's Triton; tests prepare models into it."""
    return tmp_path_factory.mktemp("triton") / "repository"


@pytest.fixture(scope="session")
def triton(triton_repository: Path) -> Iterator[TritonServer]:
    """One real tritonserver for the session (explicit model control, free ports)."""
    try:
        tritonserver_binary()
    except TritonStartError as exc:
        pytest.skip(str(exc))
    triton_repository.mkdir(parents=True, exist_ok=True)
    server = TritonServer(triton_repository, log_path=triton_repository.parent / "triton.log")
    server.start(timeout=120)
    yield server
    server.stop()
