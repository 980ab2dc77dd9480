"""Packages loaded as SageMaker's Triton loads them (toolkit.triton.packages), on the real
tritonserver: through its SageMaker frontend, reached only through the sandbox's relay."""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from toolkit.examples import (
    write_one_step_ensemble,
    write_python_model_repository,
    write_python_step_model,
)
from toolkit.shim import install_package
from toolkit.triton import (
    TritonError,
    TritonInferError,
    TritonLoadError,
    TritonOutOfMemory,
    TritonServer,
)
from toolkit.triton.install import SAGEMAKER_PORT
from toolkit.triton.packages import check_package_name
from toolkit.triton.stubs import process_tree

pytestmark = pytest.mark.triton

X = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _bls_package(dest: Path) -> Path:
    """An ensemble whose one step calls a sibling model of the package by plain name through
    BLS; the sibling is no step of the ensemble (a package built for a shared repository)."""
    write_one_step_ensemble(dest, "bls_pipeline", "bls_caller")
    write_python_step_model(
        dest,
        "bls_caller",
        """
        call = pb_utils.InferenceRequest(
            model_name="bls_sibling_add",
            requested_output_names=["OUTPUT"],
            inputs=[pb_utils.Tensor("INPUT", x)],
        )
        answer = call.exec()
        if answer.has_error():
            raise pb_utils.TritonModelException(answer.error().message())
        y = pb_utils.get_output_tensor_by_name(answer, "OUTPUT").as_numpy()
        """,
    )
    write_python_step_model(dest, "bls_sibling_add", "y = (x + 1).astype(np.float32)")
    return dest


def _stub_models(triton: TritonServer, folder: Path) -> set[str]:
    """Models of `folder` with a running stub (from each stub's model path)."""
    names = set()
    for proc in process_tree(triton.pid):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if len(cmdline) > 1 and cmdline[0].endswith("triton_python_backend_stub"):
            path = Path(cmdline[1])
            if path.is_relative_to(folder):
                names.add(path.relative_to(folder).parts[0])
    return names


def test_install_and_load_maps_the_ensemble_and_loads_only_its_steps(
    triton: TritonServer, tmp_path: Path
) -> None:
    source = _bls_package(tmp_path / "source")
    folder = triton.repository / "bls-pkg-1"
    assert install_package(source, folder, gpu=False) == "bls_pipeline"

    triton.load_package(folder, "bls-pkg-1", timeout=120)
    try:
        assert triton.loaded_packages()["bls-pkg-1"] == folder
        ready = triton.loaded_models()
        # The ensemble answers under the load name; its step loaded as a dependency; the
        # sibling, no step of it, did not load at all.
        assert {"bls-pkg-1", "bls_caller"} <= ready
        assert "bls_sibling_add" not in ready
        assert _stub_models(triton, folder) == {"bls_caller"}
        # So the BLS call by plain name fails, as it does on SageMaker's Triton.
        with pytest.raises(TritonInferError) as caught:
            triton.infer("bls-pkg-1", {"INPUT": X})
        assert "Model 'bls_sibling_add' is not ready" in caught.value.message
    finally:
        triton.unload_package("bls-pkg-1", timeout=60)


def test_the_same_models_of_two_versions_serve_side_by_side(
    triton: TritonServer, tmp_path: Path
) -> None:
    # Both versions hold a model named "scaler": namespacing keeps them apart.
    v1 = install_package(
        write_python_model_repository(tmp_path / "v1", "scaler", scale=2.0),
        triton.repository / "scaler-v1",
        gpu=False,
    )
    v2 = install_package(
        write_python_model_repository(tmp_path / "v2", "scaler", scale=3.0),
        triton.repository / "scaler-v2",
        gpu=False,
    )
    assert v1 == v2 == "scaler"
    triton.load_package(triton.repository / "scaler-v1", "scaler-v1", timeout=120)
    triton.load_package(triton.repository / "scaler-v2", "scaler-v2", timeout=120)
    try:
        np.testing.assert_allclose(triton.infer("scaler-v1", {"INPUT": X})["OUTPUT"], X * 2)
        np.testing.assert_allclose(triton.infer("scaler-v2", {"INPUT": X})["OUTPUT"], X * 3)
        triton.unload_package("scaler-v1", timeout=60)
        np.testing.assert_allclose(triton.infer("scaler-v2", {"INPUT": X})["OUTPUT"], X * 3)
    finally:
        triton.unload_package("scaler-v1", timeout=60)
        triton.unload_package("scaler-v2", timeout=60)


def test_a_loaded_name_is_refused_and_unload_frees_it(triton: TritonServer, tmp_path: Path) -> None:
    source = write_python_model_repository(tmp_path / "src", "again", scale=5.0)
    folder = triton.repository / "again-1"
    install_package(source, folder, gpu=False)
    triton.load_package(folder, "again-1", timeout=120)
    (stub,) = [p.pid for p in process_tree(triton.pid)[1:] if _is_stub_of(p, folder)]

    with pytest.raises(TritonLoadError) as caught:
        triton.load_package(folder, "again-1", timeout=120)
    assert caught.value.status == 409
    assert not caught.value.out_of_memory

    started = time.monotonic()
    triton.unload_package("again-1", timeout=60)
    # Unload returns once Triton has let go: the stub (and its memory) is gone already.
    assert not psutil.pid_exists(stub) or psutil.Process(stub).status() == psutil.STATUS_ZOMBIE
    assert "again-1" not in triton.loaded_packages()
    with pytest.raises(TritonInferError):
        triton.infer("again-1", {"INPUT": X})
    assert time.monotonic() - started < 60

    triton.load_package(folder, "again-1", timeout=120)
    np.testing.assert_allclose(triton.infer("again-1", {"INPUT": X})["OUTPUT"], X * 5)
    triton.unload_package("again-1", timeout=60)
    # Unloading a name that is not loaded is no error.
    triton.unload_package("again-1", timeout=60)


def _is_stub_of(proc: psutil.Process, folder: Path) -> bool:
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return len(cmdline) > 1 and Path(cmdline[1]).is_relative_to(folder)


def test_a_failed_load_carries_tritons_reason_and_leaves_the_name_free(
    triton: TritonServer, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    write_python_step_model(source, "broken", "y = x")
    model_py = source / "broken" / "1" / "model.py"
    model_py.write_text(
        model_py.read_text().replace(
            "    def initialize(self, args):\n",
            '    def initialize(self, args):\n        raise RuntimeError("weights are corrupt")\n',
        )
    )
    folder = triton.repository / "broken-1"
    install_package(source, folder, gpu=False)
    for _ in range(2):  # Triton unregistered the folder after the failure: it may retry.
        with pytest.raises(TritonLoadError) as caught:
            triton.load_package(folder, "broken-1", timeout=120)
        assert "weights are corrupt" in caught.value.reason
        assert caught.value.status == 400
    assert "broken-1" not in triton.loaded_packages()


def test_an_out_of_memory_load_is_a_507(triton: TritonServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_python_step_model(source, "hungry", "y = x")
    model_py = source / "hungry" / "1" / "model.py"
    model_py.write_text(
        model_py.read_text().replace(
            "    def initialize(self, args):\n",
            "    def initialize(self, args):\n"
            '        raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")\n',
        )
    )
    folder = triton.repository / "hungry-1"
    install_package(source, folder, gpu=False)
    with pytest.raises(TritonOutOfMemory) as caught:
        triton.load_package(folder, "hungry-1", timeout=120)
    assert caught.value.out_of_memory and caught.value.status == 507


def test_package_names_must_be_model_names_and_path_segments(triton: TritonServer) -> None:
    for bad in ("", "a/b", "../x", "..", "-lead", "sp ace", "x" * 201, "q?x"):
        with pytest.raises(ValueError):
            check_package_name(bad)
    check_package_name("demo_1-0123abcd.v2")
    with pytest.raises(ValueError):
        triton.load_package(triton.repository, "a/b", timeout=5)
    with pytest.raises(TritonLoadError, match="does not exist"):
        triton.load_package(triton.repository / "absent", "absent", timeout=5)
    # Outside the repository the sandbox would not let Triton see it.
    with pytest.raises(TritonLoadError, match="not a folder inside the server's"):
        triton.load_package(triton.repository.parent, "outside", timeout=5)
    with pytest.raises(TritonLoadError, match="not a folder inside the server's"):
        triton.load_package(triton.repository, "itself", timeout=5)


def test_the_sagemaker_frontend_is_reachable_only_through_the_relay(
    triton: TritonServer,
) -> None:
    assert triton.process.sandboxed
    addresses = {"127.0.0.1", "0.0.0.0"}
    for info in psutil.net_if_addrs().values():
        addresses |= {a.address for a in info if a.family == socket.AF_INET}
    for host in sorted(addresses):
        with pytest.raises(OSError):
            socket.create_connection((host, SAGEMAKER_PORT), timeout=2).close()
    # The frontend Triton started listens there, inside the sandbox's network namespace.
    assert "Started Sagemaker HTTPService at 0.0.0.0:" in triton.process.log_tail(10**6)
    assert isinstance(triton.loaded_packages(), dict)


def test_unsandboxed_the_frontend_is_on_a_free_port_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_python_model_repository(tmp_path / "src", "open", scale=4.0)
    repository = tmp_path / "repository"
    install_package(source, repository / "open-1", gpu=False)
    with TritonServer(repository, log_path=tmp_path / "triton.log", sandbox=False) as server:
        assert "listens on port" in caplog.text and "ALL interfaces" in caplog.text
        host, port = server.process.sagemaker_address
        # No network namespace: the frontend is reachable from this host directly.
        socket.create_connection((host, port), timeout=2).close()
        server.load_package(repository / "open-1", "open-1", timeout=120)
        np.testing.assert_allclose(server.infer("open-1", {"INPUT": X})["OUTPUT"], X * 4)
        server.unload_package("open-1", timeout=60)


def _relays(server: TritonServer) -> list[psutil.Process]:
    found = []
    for proc in process_tree(server.pid):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if "-I" in cmdline and "-c" in cmdline and str(SAGEMAKER_PORT) in cmdline:
            found.append(proc)
    return found


def test_a_relay_that_dies_is_started_again(tmp_path: Path) -> None:
    source = write_python_model_repository(tmp_path / "src", "again", scale=3.0)
    repository = tmp_path / "repository"
    install_package(source, repository / "again-1", gpu=False)
    with TritonServer(repository, log_path=tmp_path / "triton.log") as server:
        [relay] = _relays(server)
        relay.kill()
        relay.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            replacements = [p for p in _relays(server) if p.pid != relay.pid]
            if replacements:
                break
            time.sleep(0.05)
        assert replacements, "no relay was started again"
        # Packages still load and unload through it.
        for _ in range(100):
            try:
                server.load_package(repository / "again-1", "again-1", timeout=120)
                break
            except TritonError:  # the new relay binds its socket a moment after it starts
                time.sleep(0.05)
        np.testing.assert_allclose(server.infer("again-1", {"INPUT": X})["OUTPUT"], X * 3)
        server.unload_package("again-1", timeout=60)


def test_unload_of_a_gone_server_is_an_error(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    server = TritonServer(repository, log_path=tmp_path / "triton.log").start(120)
    server.stop()
    with pytest.raises(TritonError):
        server.unload_package("any", timeout=5)
