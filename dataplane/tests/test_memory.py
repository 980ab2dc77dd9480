"""Footprint readings of the Triton process tree (host memory; NVML only with a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from dataplane.gateway import LoadedModel
from dataplane.memory import MemoryProbe, host_utilization


def test_tree_reading_counts_children_resident_memory() -> None:
    probe = MemoryProbe()
    before = probe.read(os.getpid())
    # A child that holds 64 MiB resident: the tree's reading grows by at least that much.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]);"
            " print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        during = probe.read(os.getpid())
        assert during.rss_bytes - before.rss_bytes >= 64 * 1024 * 1024
        assert child.pid in probe.tree_pids(os.getpid())
    finally:
        child.communicate(b"", timeout=10)
    assert probe.read(None).rss_bytes == 0


def test_without_a_gpu_budgets_count_host_memory() -> None:
    probe = MemoryProbe()
    if probe.has_gpu:  # On a GPU machine the NVML path is the one in use.
        assert probe.gpu_utilization() is not None
        return
    assert probe.gpu([os.getpid()]) == 0
    assert probe.gpu_utilization() is None
    model = LoadedModel("a_1.tar.gz", "a", ["a"], "a-", 100, 7, 0.0, 1)
    assert model.footprint(gpu=False) == 100 and model.footprint(gpu=True) == 7


def test_host_utilization_is_a_percentage() -> None:
    cpu, memory = host_utilization()
    assert 0 <= cpu <= 100 * (psutil.cpu_count() or 1)
    assert 0 < memory <= 100
