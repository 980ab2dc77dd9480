"""The processes of a running Triton: tritonserver and its Python-backend stubs, one stub per
model instance, with the memory each holds."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil

from toolkit.triton.install import STUB_NAME


@dataclass(frozen=True)
class StubProcess:
    """One Python-backend stub: one model instance, its own process."""

    pid: int
    model: str
    instance: str
    rss_bytes: int


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The process `pid` and all its descendants (empty when it is gone)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(processes: list[psutil.Process]) -> int:
    """Resident memory of `processes` together, in bytes."""
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def stub_processes(processes: list[psutil.Process], repository: Path) -> list[StubProcess]:
    """The Python-backend stubs among `processes`, with the model each serves and its memory."""
    stubs = []
    for proc in processes:
        try:
            cmdline = proc.cmdline()
            if not cmdline or not cmdline[0].endswith(STUB_NAME):
                continue
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        model, instance = _stub_model(cmdline, repository)
        stubs.append(StubProcess(pid=proc.pid, model=model, instance=instance, rss_bytes=rss))
    return stubs


def _stub_model(cmdline: list[str], repository: Path) -> tuple[str, str]:
    """Model and instance names from a stub's command line.

    The stub is started as: stub <model_dir>/<version>/model.py <shm region> <shm size>
    <shm growth> <parent pid> <python lib> <ipc handle> <instance name> <runtime model dir>.
    """
    model = ""
    if len(cmdline) > 1:
        path = Path(cmdline[1])
        with contextlib.suppress(ValueError):
            model = path.relative_to(repository).parts[0]
        if not model and len(path.parts) >= 3:
            model = path.parts[-3]
    instance = cmdline[8] if len(cmdline) > 8 else ""
    return model, instance


def stubs_under(processes: list[psutil.Process], folder: Path) -> list[int]:
    """The stubs among `processes` serving a model of `folder` (a package's repository):
    a stub's first argument is its model's `<model dir>/<version>/model.py`."""
    pids = []
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmdline = proc.cmdline()
            if len(cmdline) > 1 and cmdline[0].endswith(STUB_NAME):
                with contextlib.suppress(ValueError):
                    Path(cmdline[1]).relative_to(folder)
                    pids.append(proc.pid)
    return pids
