"""Loading packages as SageMaker's Triton loads them: through the SageMaker frontend's model
API, one package folder at a time, each registered as a model repository of its own.

SageMaker's multi-model Triton runs `tritonserver --allow-sagemaker=true
--model-control-mode=explicit --model-namespacing=true` and loads a package with
`POST /models` (`{"model_name": <name>, "url": <package folder>}`, header
`X-Amzn-SageMaker-Target-Model: <name>`). Triton then registers the folder as a repository
(namespaced, so packages may hold models of the same name), maps the package's ensemble
folder (or, with no ensemble, one folder) to `<name>` and loads it; an ensemble's steps load
as its dependencies, nothing else of the package loads. A Python model's BLS call to a
sibling by plain name therefore fails there unless the sibling is a step of the ensemble;
loading packages the same way here makes such a package fail here too. `DELETE
/models/<name>` unloads the model with its dependents and unregisters the folder.
Source: triton-inference-server/server src/sagemaker_server.cc (`SageMakerMMELoadModel`,
`SageMakerMMEUnloadModel`).

These functions are the one client of that API: `TritonServer.load_package` calls them, and
the gateway calls them from a worker thread (loads and unloads are rare and mostly waiting).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from toolkit.triton.errors import (
    TritonError,
    TritonLoadError,
    TritonOutOfMemory,
    triton_error_message,
)
from toolkit.triton.stubs import process_tree, stubs_under
from toolkit.triton.unixhttp import unix_request

if TYPE_CHECKING:
    from toolkit.triton.process import TritonProcess

TARGET_HEADER = "X-Amzn-SageMaker-Target-Model"
# A name Triton accepts as a model name and that is one URL path segment as it is.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def _error_text(status: int, body: bytes) -> str:
    # The frontend answers some refusals (a bad "url") with no body at all.
    return triton_error_message(body)[:2000] or f"HTTP {status}"


def check_package_name(name: str) -> None:
    """Refuse a name that is no Triton model name or no single URL path segment."""
    if not PACKAGE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"package name {name!r}: use letters, digits, '_', '.' and '-' (200 at most), "
            "starting with a letter or digit"
        )


def _request(
    process: TritonProcess, method: str, path: str, body: Any, name: str, timeout: float
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {TARGET_HEADER: name}
    if data is not None:
        headers["Content-Type"] = "application/json"
    return unix_request(process.sagemaker_address, method, path, data, headers, timeout)


def load_package(process: TritonProcess, folder: Path, name: str, *, timeout: float) -> None:
    """Load the package in `folder` (prepared by `toolkit.shim.install_package` inside the
    server's repository folder) as `name`.

    Raises `TritonOutOfMemory` on a 507, `TritonLoadError` otherwise (status 409: the name is
    already loaded), each with Triton's reason.
    """
    check_package_name(name)
    folder = Path(folder).resolve()
    repository = process.repository
    # The sandbox lets Triton read the server's repository and nothing else of the disk; the
    # repository itself is registered already.
    if folder == repository or not folder.is_relative_to(repository):
        raise TritonLoadError(
            name, f"package folder {folder} is not a folder inside the server's {repository}"
        )
    if not folder.is_dir():
        raise TritonLoadError(name, f"package folder {folder} does not exist")
    body = {"model_name": name, "url": str(folder)}
    try:
        status, payload = _request(process, "POST", "/models", body, name, timeout)
    except (TimeoutError, OSError) as exc:
        if not process.alive:
            raise TritonLoadError(name, "tritonserver exited while loading") from exc
        raise TritonLoadError(name, f"no answer from Triton within {timeout:.0f} s") from exc
    if status == 507:
        raise TritonOutOfMemory(name, _error_text(status, payload), status=status)
    if status != 200:
        raise TritonLoadError(name, _error_text(status, payload), status=status)


def package_folder(process: TritonProcess, name: str, *, timeout: float = 10.0) -> Path | None:
    """The folder loaded as `name` (`GET /models/<name>`), or None when none is."""
    check_package_name(name)
    status, payload = _request(process, "GET", f"/models/{name}", None, name, timeout)
    if status == 404:
        return None
    if status != 200:
        raise TritonError(f"GET /models/{name}: HTTP {status}: {_error_text(status, payload)}")
    return Path(json.loads(payload)["modelUrl"])


def loaded_packages(process: TritonProcess, *, timeout: float = 10.0) -> dict[str, Path]:
    """{name: folder} of the packages loaded and ready (`GET /models`)."""
    status, payload = unix_request(process.sagemaker_address, "GET", "/models", timeout=timeout)
    if status != 200:
        raise TritonError(f"GET /models: HTTP {status}: {_error_text(status, payload)}")
    models = json.loads(payload).get("models", [])
    # Triton lists a model that is not ready as an empty object.
    return {m["modelName"]: Path(m["modelUrl"]) for m in models if "modelName" in m}


def unload_package(process: TritonProcess, name: str, *, timeout: float) -> None:
    """Unload the package loaded as `name` with its dependents, and wait until Triton has let
    go of it: its folder unregistered and no stub of its models left (their memory freed).

    A name that is not loaded is not an error (a failed load leaves nothing behind).
    """
    deadline = time.monotonic() + timeout
    try:
        folder = package_folder(process, name, timeout=timeout)
        if folder is None:
            return
        # The package's stubs, found once: waiting then reads one /proc file per stub, which
        # keeps this cheap for the gateway thread that runs it.
        stubs = _processes(stubs_under(process_tree(process.pid), folder))
        status, payload = _request(process, "DELETE", f"/models/{name}", None, name, timeout)
    except (TimeoutError, OSError) as exc:
        raise TritonError(f"unload of '{name}': no answer from Triton: {exc}") from exc
    if status not in (200, 404):
        raise TritonError(f"unload of '{name}' failed: {_error_text(status, payload)}")
    # Triton answers once the target model is unavailable; its steps, and the stub
    # processes of all of them, may still be going.
    while any(_running(stub) for stub in stubs):
        if time.monotonic() > deadline:
            raise TritonError(f"unload of '{name}': models still running after {timeout:.0f} s")
        time.sleep(0.02)


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _running(proc: psutil.Process) -> bool:
    """Still running: an exited stub Triton has not reaped yet holds no memory."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
