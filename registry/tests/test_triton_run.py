"""The test step on a real tritonserver: packages load as SageMaker's Triton loads them (the
entry model and its steps, nothing else), on one warm server per process that survives
crashing model code."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from registry.triton_run import TEST_SERVER, run_tests
from registry.validation import validate_repository
from toolkit.examples import write_demo_repository, write_one_step_ensemble, write_python_step_model
from toolkit.triton import TritonStartError, tritonserver_binary

pytestmark = pytest.mark.triton

LOADED_AS = re.compile(r"Loaded \S+ as (t-\S+?)[ ,.]")


@pytest.fixture(autouse=True)
def test_server(settings):
    """Each test begins and ends with no test server in this process."""
    try:
        tritonserver_binary()
    except TritonStartError as exc:
        pytest.skip(str(exc))
    settings.BERTH_TRITON_GPU = False
    settings.BERTH_TRITON_IDLE_TIMEOUT = 300
    TEST_SERVER.stop()
    yield TEST_SERVER
    TEST_SERVER.stop()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


X = [1.0, 2.0, 3.0, 4.0]


def _case(name: str, model: str, expected: list[float]) -> dict:
    return {
        "name": name,
        "model": model,
        "inputs": {"INPUT": {"datatype": "FP32", "shape": [1, 4], "data": X}},
        "expected": {"OUTPUT": {"data": expected, "atol": 1e-5, "rtol": 1e-5}},
    }


def _summary(root: Path, cases: list[dict] | None = None) -> dict:
    """The validation summary (problems aside: the test step must stand on its own), with
    `cases` as its test cases when given."""
    summary = copy.deepcopy(validate_repository(root).summary)
    if cases is not None:
        summary["tests"] = cases
    return summary


def _run(root: Path, tmp_path: Path, summary: dict | None = None, **kwargs):
    lines: list[str] = []
    scratch = tmp_path / f"scratch-{time.monotonic_ns()}"
    scratch.mkdir()
    run = run_tests(
        root,
        summary=summary if summary is not None else _summary(root),
        scratch=scratch,
        log=lines.append,
        **kwargs,
    )
    return run, lines, scratch


def _outcomes(run) -> list[tuple[str, str, str]]:
    return [(r.name, r.outcome, r.message) for r in run.results]


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return write_demo_repository(tmp_path / "demo")


def test_two_runs_reuse_one_warm_server_and_leave_nothing_loaded(demo, tmp_path) -> None:
    first, first_lines, scratch = _run(demo, tmp_path, version_id=7)
    assert first.passed, _outcomes(first)
    server = TEST_SERVER.server
    pid = server.pid
    assert any(line.startswith("Triton started (pid") for line in first_lines), first_lines
    assert any(
        line.startswith("Loaded demo_ensemble as t-7-")
        and "demo_classifier" in line
        and "demo_preprocess" in line
        for line in first_lines
    ), first_lines
    # The run's part of the server log is kept with the step's scratch files.
    assert "Loading SageMaker TargetModel: t-7-" in (scratch / "triton.log").read_text()

    second, second_lines, _ = _run(demo, tmp_path, version_id=7)
    assert second.passed, _outcomes(second)
    assert TEST_SERVER.server is server and server.pid == pid
    assert any(line.startswith(f"Triton warm (pid {pid}") for line in second_lines), second_lines
    assert not any(line.startswith("Triton started") for line in second_lines)
    # Unloaded and removed once the run's cleanup (after its results) is done: nothing of
    # either run stays on the server.
    TEST_SERVER.wait()
    assert server.loaded_packages() == {}
    assert not [m for m in server.repository_index() if m.get("state") == "READY"]
    assert not [p for p in server.repository.iterdir() if not p.name.startswith(".")]
    # Each run loads under a name of its own.
    names = {LOADED_AS.search(" ".join(lines)).group(1) for lines in (first_lines, second_lines)}
    assert len(names) == 2


def test_a_step_is_invoked_by_its_own_name(demo, tmp_path) -> None:
    raw = [5.1, 3.5, 1.4, 0.2]
    features = (
        (np.array(raw, np.float32) - np.array([5.84, 3.05, 3.76, 1.20], np.float32))
        / np.array([0.83, 0.43, 1.76, 0.76], np.float32)
    ).tolist()
    step_case = {
        "name": "preprocess-alone",
        "model": "demo_preprocess",
        "inputs": {"RAW": {"datatype": "FP32", "shape": [1, 4], "data": raw}},
        "expected": {"FEATURES": {"data": features, "atol": 1e-4, "rtol": 1e-4}},
    }
    summary = _summary(demo)
    summary["tests"] = [*summary["tests"], step_case]
    run, lines, _ = _run(demo, tmp_path, summary)
    assert run.passed, _outcomes(run)
    assert [r.name for r in run.results][-1] == "preprocess-alone"


def test_a_case_naming_a_model_that_does_not_load_fails_clearly(demo, tmp_path) -> None:
    # A model beside the ensemble: in the package, but SageMaker's Triton does not load it.
    write_python_step_model(demo, "demo_extra", "y = x")
    summary = _summary(demo, [_case("extra", "demo_extra", X)])
    run, lines, _ = _run(demo, tmp_path, summary)
    [result] = run.results
    assert result.outcome == "error"
    assert "Model demo_extra is not loaded as SageMaker loads this package" in result.message
    assert "demo_ensemble" in result.message and "demo_preprocess" in result.message
    assert "demo_extra" not in TEST_SERVER.server.loaded_packages()


def test_a_bls_call_to_a_sibling_fails_while_the_same_logic_as_an_ensemble_passes(
    tmp_path,
) -> None:
    # The callee's name comes from a config parameter: no static check sees the call.
    bls = tmp_path / "bls"
    write_python_step_model(
        bls,
        "caller",
        """
        request = pb_utils.InferenceRequest(
            model_name=self.parameters["callee"],
            requested_output_names=["OUTPUT"],
            inputs=[pb_utils.Tensor("INPUT", x)],
        )
        answer = request.exec()
        if answer.has_error():
            raise pb_utils.TritonModelException(answer.error().message())
        y = pb_utils.get_output_tensor_by_name(answer, "OUTPUT").as_numpy()
        """,
        parameters='parameters { key: "callee" value: { string_value: "add_one" } }',
    )
    write_python_step_model(bls, "add_one", "y = (x + 1).astype(np.float32)")
    write_one_step_ensemble(bls, "pipeline", "caller")
    expected = [v + 1 for v in X]
    # A case naming the callee used to load it beside the entry model, and the BLS call then
    # passed; SageMaker's Triton loads only the ensemble and its step.
    cases = [_case("plus-one", "pipeline", expected), _case("callee", "add_one", expected)]
    run, lines, _ = _run(bls, tmp_path, _summary(bls, cases))
    assert not run.problems, (run.problems, lines)
    result, callee = run.results
    assert callee.outcome == "error"
    assert callee.message.startswith("Model add_one is not loaded as SageMaker loads")
    assert result.outcome == "error", _outcomes(run)
    assert "Model 'add_one' is not ready" in result.message, result.message
    assert "add_one is in the package but not loaded" in result.message
    # In the package's own terms: its files and models, not the worker's folders or the
    # load name.
    assert "caller/1/model.py" in result.message
    assert str(TEST_SERVER.server.repository) not in result.message
    assert not re.search(r"\bt-(\d+-)?[0-9a-f]{8}\b", result.message), result.message

    wired = tmp_path / "wired"
    write_python_step_model(wired, "add_one", "y = (x + 1).astype(np.float32)")
    write_one_step_ensemble(wired, "pipeline", "add_one")
    run, lines, _ = _run(
        wired, tmp_path, _summary(wired, [_case("plus-one", "pipeline", expected)])
    )
    assert run.passed, (_outcomes(run), lines)


def test_a_model_that_kills_the_server_errors_and_the_next_run_gets_a_new_one(
    demo, tmp_path
) -> None:
    warm, _, _ = _run(demo, tmp_path)
    assert warm.passed
    old_pid = TEST_SERVER.server.pid

    crash = tmp_path / "crash"
    # The stub's parent is tritonserver itself.
    write_python_step_model(crash, "crasher", "os.kill(os.getppid(), signal.SIGKILL)\ny = x")
    summary = _summary(crash, [_case("a", "crasher", X), _case("b", "crasher", X)])
    run, lines, _ = _run(crash, tmp_path, summary)
    assert not run.passed
    first, second = run.results
    assert first.outcome == "error"
    assert "tritonserver exited" in first.message, first.message
    assert second.outcome == "error" and second.message == "Not run: tritonserver exited during a."
    assert any(line.startswith("Triton exited during this run") for line in lines), lines
    assert TEST_SERVER.server is None

    after, after_lines, _ = _run(demo, tmp_path)
    assert after.passed, _outcomes(after)
    assert TEST_SERVER.server.pid != old_pid
    assert any(line.startswith("Triton started") for line in after_lines), after_lines


def test_a_stub_that_dies_errors_its_case_and_the_next_run_gets_a_clean_server(
    demo, tmp_path
) -> None:
    crash = tmp_path / "stub-exit"
    write_python_step_model(crash, "quitter", "os._exit(1)")
    run, lines, _ = _run(crash, tmp_path, _summary(crash, [_case("a", "quitter", X)]))
    [result] = run.results
    assert result.outcome == "error", _outcomes(run)
    assert "is not healthy" in result.message
    # Triton never finishes unloading a model whose stub died: the server is not reused.
    assert "A stub process of this package died: Triton restarts for the next run." in lines
    pid = TEST_SERVER.server.pid

    started = time.monotonic()
    after, after_lines, _ = _run(demo, tmp_path)
    assert after.passed, (_outcomes(after), after_lines)
    assert TEST_SERVER.server.pid != pid
    assert any(line.startswith("Triton started") for line in after_lines), after_lines
    # Thrown away, not waited for: Triton would wait 10 s for the dead stub's model.
    assert time.monotonic() - started < 8


def test_the_same_package_tested_twice_at_once_does_not_collide(demo, tmp_path) -> None:
    outcomes: dict[int, tuple] = {}

    def run(index: int) -> None:
        outcomes[index] = _run(demo, tmp_path, version_id=3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outcomes) == 2
    for result, lines, _ in outcomes.values():
        assert result.passed, (_outcomes(result), lines)
    names = {LOADED_AS.search(" ".join(lines)).group(1) for _, lines, _ in outcomes.values()}
    assert len(names) == 2 and all(name.startswith("t-3-") for name in names)
    # One started the server (on its own thread, which has ended since), the other found it
    # warm: runs on one server take turns, so the step names never meet.
    firsts = sorted(lines[0].split(" (")[0] for _, lines, _ in outcomes.values())
    assert firsts == ["Triton started", "Triton warm"], firsts
    assert TEST_SERVER.server.alive


def test_a_killed_workers_server_folder_is_removed_by_the_next_start(
    demo, tmp_path, settings
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    scratch = Path(settings.BERTH_SCRATCH_DIR)
    stale = scratch / f"triton-test-{gone.pid}-abc123" / "repository" / "t-1-deadbeef"
    stale.mkdir(parents=True)
    run, _, _ = _run(demo, tmp_path)
    assert run.passed
    assert not stale.parent.parent.exists()
    assert TEST_SERVER.server.repository.parent.name.startswith(f"triton-test-{os.getpid()}-")


def test_the_server_stops_when_idle_and_restarts_for_new_launch_settings(
    demo, tmp_path, settings, monkeypatch
) -> None:
    settings.BERTH_TRITON_IDLE_TIMEOUT = 1
    run, _, _ = _run(demo, tmp_path)
    assert run.passed
    server = TEST_SERVER.server
    deadline = time.monotonic() + 15
    while TEST_SERVER.server is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert TEST_SERVER.server is None and not server.alive

    settings.BERTH_TRITON_IDLE_TIMEOUT = 300
    run, _, _ = _run(demo, tmp_path)
    pid = TEST_SERVER.server.pid
    monkeypatch.setenv("BERTH_SANDBOX_MAX_OPEN_FILES", "4096")
    run, lines, _ = _run(demo, tmp_path)
    assert run.passed
    assert any("other launch settings" in line for line in lines), lines
    assert TEST_SERVER.server.pid != pid


@pytest.mark.parametrize("signal_name", ["worker_process_shutdown", "worker_shutdown"])
def test_a_worker_shutting_down_stops_its_server(demo, tmp_path, signal_name) -> None:
    from celery import signals

    import registry.tasks  # noqa: F401 - connects the shutdown hooks

    run, _, _ = _run(demo, tmp_path)
    assert run.passed
    server = TEST_SERVER.server
    home = server.repository.parent
    getattr(signals, signal_name).send(sender=None, pid=os.getpid(), exitcode=0)
    assert TEST_SERVER.server is None and not server.alive
    assert not home.exists()
