"""The real tritonserver from nvidia-pytriton, driven through TritonServer (no mocks)."""

from __future__ import annotations

import glob
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from toolkit.examples import (
    classify,
    onnx_model_parameters,
    write_failing_model_repository,
    write_onnx_model_repository,
    write_python_model_repository,
)
from toolkit.modelconfig import format_model_config, read_model_config
from toolkit.shim import PARAM_MODEL_FILENAME, PARAM_RUNTIME, prepare_repository
from toolkit.triton import (
    DEFAULT_PYTHON_BACKEND_THREADS,
    TritonInferError,
    TritonLoadError,
    TritonServer,
    TritonStartError,
    python_backend_threads,
)

pytestmark = pytest.mark.triton


def _case_inputs(case: dict) -> dict[str, np.ndarray]:
    return {
        name: np.array(spec["data"], dtype=np.float32).reshape(spec["shape"])
        for name, spec in case["inputs"].items()
    }


def test_demo_ensemble_answers_its_test_cases(triton: TritonServer, demo_repository: Path) -> None:
    names = prepare_repository(demo_repository, triton.repository, prefix="cases--")
    seconds = triton.load(names["demo_ensemble"])
    assert seconds < 60
    spec = yaml.safe_load((demo_repository / "berth.yaml").read_text())
    assert spec["model"] == "demo_ensemble"
    for case in spec["tests"]:
        outputs = triton.infer(names[spec["model"]], _case_inputs(case))
        for tensor, expected in case["expected"].items():
            np.testing.assert_allclose(
                outputs[tensor].ravel(),
                expected["data"],
                atol=expected["atol"],
                rtol=expected["rtol"],
                err_msg=case["name"],
            )
    metadata = triton.model_metadata(names["demo_ensemble"])
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("RAW", "FP32", [-1, 4])
    ]
    triton.unload(names["demo_ensemble"])


def test_model_whose_initialize_raises_fails_to_load_with_the_reason(
    triton: TritonServer, tmp_path: Path
) -> None:
    src = write_failing_model_repository(tmp_path / "src", "broken", message="weights are corrupt")
    names = prepare_repository(src, triton.repository, prefix="fail--")
    with pytest.raises(TritonLoadError) as info:
        triton.load(names["broken"], timeout=60)
    assert info.value.model == "fail--broken"
    assert "weights are corrupt" in info.value.reason
    assert triton.alive
    assert not triton.model_ready("fail--broken")


def test_unloading_an_ensemble_unloads_its_steps_and_ends_their_stubs(
    triton: TritonServer, demo_repository: Path
) -> None:
    names = prepare_repository(demo_repository, triton.repository, prefix="unload--")
    triton.load(names["demo_ensemble"])
    assert set(names.values()) <= triton.loaded_models()
    stub_models = {stub.model for stub in triton.stub_processes()}
    assert {names["demo_preprocess"], names["demo_classifier"]} <= stub_models
    stub_pids = [s.pid for s in triton.stub_processes() if s.model in names.values()]

    triton.unload(names["demo_ensemble"], dependents=True)

    assert not set(names.values()) & triton.loaded_models(include_unloading=True)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) for pid in stub_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(psutil.pid_exists(pid) for pid in stub_pids)
    with pytest.raises(TritonInferError):
        triton.infer(names["demo_ensemble"], {"RAW": np.ones((1, 4), np.float32)})


def test_two_prefixed_copies_serve_side_by_side(
    triton: TritonServer, demo_repository: Path
) -> None:
    first = prepare_repository(demo_repository, triton.repository, prefix="demo_1--")
    second = prepare_repository(demo_repository, triton.repository, prefix="demo_2--")
    triton.load(first["demo_ensemble"])
    triton.load(second["demo_ensemble"])
    raw = {"RAW": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)}
    a = triton.infer(first["demo_ensemble"], raw)["PROBABILITIES"]
    b = triton.infer(second["demo_ensemble"], raw)["PROBABILITIES"]
    np.testing.assert_allclose(a, b)

    triton.unload(first["demo_ensemble"])
    # The other copy keeps its own steps and keeps answering.
    np.testing.assert_allclose(triton.infer(second["demo_ensemble"], raw)["PROBABILITIES"], b)
    assert first["demo_classifier"] not in triton.loaded_models()
    triton.unload(second["demo_ensemble"])


def test_bad_request_is_an_infer_error_with_tritons_message(
    triton: TritonServer, demo_repository: Path
) -> None:
    names = prepare_repository(demo_repository, triton.repository, prefix="bad--")
    triton.load(names["demo_classifier"])
    with pytest.raises(TritonInferError) as info:
        triton.infer(names["demo_classifier"], {"FEATURES": np.ones((1, 5), np.float32)})
    assert info.value.status == 400
    assert "FEATURES" in info.value.message
    with pytest.raises(TritonInferError) as info:
        triton.infer("no-such-model", {"FEATURES": np.ones((1, 4), np.float32)})
    assert info.value.status in (400, 404)
    triton.unload(names["demo_classifier"])


def test_onnx_runtime_batches_concurrent_requests(triton: TritonServer, tmp_path: Path) -> None:
    src = write_onnx_model_repository(tmp_path / "src", "batched", seed=7)
    config = src / "batched" / "config.pbtxt"
    config.write_text(
        config.read_text() + "dynamic_batching { max_queue_delay_microseconds: 100000 }\n"
    )
    names = prepare_repository(src, triton.repository)
    triton.load(names["batched"])
    weights, bias = onnx_model_parameters(7)
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(1 + i % 2, 4)).astype(np.float32) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda x: triton.infer("batched", {"INPUT": x})["PROBABILITIES"], requests)
        )
    for x, answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(answer, classify(x, weights, bias), atol=1e-5)
    stats = triton.model_statistics("batched")
    assert stats["inference_count"] == sum(len(x) for x in requests)
    # Fewer executions than requests: the queue delay merged some into one onnxruntime run.
    assert stats["execution_count"] < len(requests)
    triton.unload("batched")


def test_custom_onnx_filename_and_completed_io_load_and_answer(
    triton: TritonServer, tmp_path: Path
) -> None:
    src = write_onnx_model_repository(tmp_path / "src", "custom_file", seed=3)
    version = src / "custom_file" / "1"
    (version / "model.onnx").rename(version / "classifier.onnx")
    (src / "custom_file" / "config.pbtxt").write_text(
        'name: "custom_file"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'default_model_filename: "classifier.onnx"\n'
    )
    prepare_repository(src, triton.repository)
    triton.load("custom_file")
    x = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)
    weights, bias = onnx_model_parameters(3)
    out = triton.infer("custom_file", {"INPUT": x})
    np.testing.assert_allclose(out["PROBABILITIES"], classify(x, weights, bias), atol=1e-5)
    triton.unload("custom_file")


def test_the_runtime_model_takes_its_settings_from_config_parameters(
    triton: TritonServer, tmp_path: Path
) -> None:
    """The served model.py is one file for every converted model: what it runs comes from
    config.pbtxt's parameters, so a changed parameter changes what loads."""
    src = write_onnx_model_repository(tmp_path / "src", "param_file", seed=5)
    prepare_repository(src, triton.repository)
    served = triton.repository / "param_file"
    (served / "1" / "model.onnx").rename(served / "1" / "renamed.onnx")
    config = read_model_config(served / "config.pbtxt")
    config.parameters[PARAM_MODEL_FILENAME].string_value = "renamed.onnx"
    (served / "config.pbtxt").write_text(format_model_config(config))
    triton.load("param_file")
    x = np.array([[1.0, 0.0, -1.0, 0.5]], np.float32)
    weights, bias = onnx_model_parameters(5)
    out = triton.infer("param_file", {"INPUT": x})
    np.testing.assert_allclose(out["PROBABILITIES"], classify(x, weights, bias), atol=1e-5)
    triton.unload("param_file")

    config.parameters[PARAM_RUNTIME].string_value = "tensorflow"
    (served / "config.pbtxt").write_text(format_model_config(config))
    with pytest.raises(TritonLoadError) as info:
        triton.load("param_file", timeout=60)
    assert "berth_runtime is 'tensorflow'" in info.value.reason


def test_memory_of_a_loaded_model_shows_in_its_stub(triton: TritonServer, tmp_path: Path) -> None:
    ballast = 96 * 1024 * 1024
    src = write_python_model_repository(tmp_path / "src", "heavy", ballast_bytes=ballast)
    prepare_repository(src, triton.repository)
    before = triton.process_tree_rss()
    triton.load("heavy")
    stubs = [s for s in triton.stub_processes() if s.model == "heavy"]
    assert len(stubs) == 1
    assert stubs[0].instance.startswith("heavy_")
    assert stubs[0].rss_bytes > ballast
    assert triton.process_tree_rss() - before > ballast * 0.9
    triton.unload("heavy")
    assert not [s for s in triton.stub_processes() if s.model == "heavy"]


def test_stubs_run_numpys_blas_on_one_thread_unless_told_otherwise(
    triton: TritonServer, tmp_path: Path
) -> None:
    src = write_python_model_repository(tmp_path / "src", "lean")
    prepare_repository(src, triton.repository)
    triton.load("lean")
    [stub] = [s for s in triton.stub_processes() if s.model == "lean"]
    environment = psutil.Process(stub.pid).environ()
    assert environment["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")
    triton.unload("lean")


def test_a_python_model_instance_keeps_few_triton_threads(
    triton: TritonServer, tmp_path: Path
) -> None:
    # Triton's own default (32 threads per instance) made every instance cost ~35 threads.
    src = write_python_model_repository(tmp_path / "src", "threads")
    prepare_repository(src, triton.repository)
    before = psutil.Process(triton.pid).num_threads()
    triton.load("threads")
    added = psutil.Process(triton.pid).num_threads() - before
    triton.unload("threads")
    assert 0 < added <= DEFAULT_PYTHON_BACKEND_THREADS + 6


def test_python_backend_threads_must_be_a_positive_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BERTH_TRITON_PYTHON_THREADS", "16")
    assert python_backend_threads() == 16
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("BERTH_TRITON_PYTHON_THREADS", bad)
        with pytest.raises(TritonStartError, match="BERTH_TRITON_PYTHON_THREADS"):
            python_backend_threads()


def test_stop_after_a_crash_leaves_no_process_or_shared_memory(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    prepare_repository(write_python_model_repository(tmp_path / "src", "scale"), repo)
    server = TritonServer(repo, log_path=tmp_path / "triton.log").start()
    try:
        server.load("scale")
        out = server.infer("scale", {"INPUT": np.array([[1, 2, 3, 4]], np.float32)})
        np.testing.assert_allclose(out["OUTPUT"], [[2, 4, 6, 8]])
        pids = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
        assert pids
        prefix = server.process.shm_prefix
        # A sandboxed server's /dev/shm is its own tmpfs, seen here through its /proc root.
        shm = f"/proc/{server.pid}/root/dev/shm" if server.process.sandboxed else "/dev/shm"
        assert glob.glob(f"{shm}/{prefix}*")
        # tritonserver dies without cleaning up: its stubs are orphaned until stop().
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.alive
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if psutil.pid_exists(p)]
    assert not glob.glob(f"/dev/shm/{prefix}*")


def test_missing_repository_is_refused_before_starting(tmp_path: Path) -> None:
    server = TritonServer(tmp_path / "missing", log_path=tmp_path / "triton.log")
    with pytest.raises(TritonStartError, match="is not a folder"):
        server.start(timeout=60)
    assert not server.alive


def test_start_failure_reports_tritons_log(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    repo.mkdir()
    server = TritonServer(repo, log_path=tmp_path / "triton.log")
    server.process.extra_args = ["--model-control-mode=bogus"]
    with pytest.raises(TritonStartError) as info:
        server.start(timeout=60)
    assert "exited with status" in str(info.value)
    assert "invalid argument for --model-control-mode" in info.value.log_tail
    assert info.value.log_tail in str(info.value)
    assert not server.alive


def test_triton_dies_with_the_process_that_launched_it(tmp_path: Path) -> None:
    """A worker or gateway killed with SIGKILL must not leave a server holding memory."""
    import subprocess
    import sys

    (tmp_path / "repo").mkdir()
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from toolkit.triton import TritonProcess; "
            "p = TritonProcess(Path(sys.argv[1])); p.start(); print(p.pid, flush=True); "
            "time.sleep(600)",
            str(tmp_path / "repo"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        triton_pid = int(launcher.stdout.readline())
        assert psutil.pid_exists(triton_pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(triton_pid) and time.monotonic() < deadline:
            try:
                if psutil.Process(triton_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        gone = not psutil.pid_exists(triton_pid) or (
            psutil.Process(triton_pid).status() == psutil.STATUS_ZOMBIE
        )
        assert gone, "tritonserver outlived the process that started it"
    finally:
        launcher.kill()
