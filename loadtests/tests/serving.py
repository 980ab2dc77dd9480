"""Models that take a known time, for load tests against the real data plane: a Python
model that sleeps `delay_s` per request (one instance, so requests queue behind each
other as on a busy server) and, optionally, stalls `stall_s` once at its `stall_at`-th
request or answers errors after its `fail_after`-th. Packed as the registry packs them
and published into a gateway's model store."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

from dataplane.tests.gateway_fixtures import publish

INPUT = [1.0, 2.0, 3.0, 4.0]


def timed_case() -> dict[str, Any]:
    """The test case the versions of these models carry (what the load test sends)."""
    return {
        "name": "timed",
        "inputs": {"INPUT": {"datatype": "FP32", "shape": [1, 4], "data": INPUT}},
        "expected": {"OUTPUT": {"data": INPUT, "atol": 1e-6, "rtol": 1e-6}},
    }


def write_timed_repository(
    dest: Path,
    name: str,
    *,
    delay_s: float,
    stall_at: int = 0,
    stall_s: float = 0.0,
    fail_after: int = 0,
) -> Path:
    model = dest / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""
            name: "{name}"
            backend: "python"
            max_batch_size: 8
            input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
            output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
            instance_group [ {{ kind: KIND_CPU count: 1 }} ]
            """
        ).lstrip()
    )
    (model / "1" / "model.py").write_text(
        textwrap.dedent(
            f'''
            """Answers its input after {delay_s} s; stalls {stall_s} s once, at request
            {stall_at} (0: never); answers errors after request {fail_after} (0: never)."""

            import time

            import numpy as np
            import triton_python_backend_utils as pb_utils

            DELAY_S = {float(delay_s)!r}
            STALL_AT = {int(stall_at)}
            STALL_S = {float(stall_s)!r}
            FAIL_AFTER = {int(fail_after)}


            class TritonPythonModel:
                def initialize(self, args):
                    self.count = 0

                def execute(self, requests):
                    responses = []
                    for request in requests:
                        self.count += 1
                        if STALL_AT and self.count == STALL_AT:
                            time.sleep(STALL_S)
                        time.sleep(DELAY_S)
                        if FAIL_AFTER and self.count > FAIL_AFTER:
                            error = pb_utils.TritonError("failing on purpose")
                            responses.append(pb_utils.InferenceResponse(error=error))
                            continue
                        x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                        out = pb_utils.Tensor("OUTPUT", x.astype(np.float32))
                        responses.append(pb_utils.InferenceResponse([out]))
                    return responses
            '''
        ).lstrip()
    )
    return dest


def publish_timed(store: Path, name: str, version: int = 1, **timing) -> str:
    """Publish `<name>_<version>.tar.gz` into `store`; its package name."""
    package = f"{name}_{version}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="berth-lt-") as tmp:
        repo = write_timed_repository(Path(tmp) / "repo", name, **timing)
        publish(store, package, repo)
    return package
