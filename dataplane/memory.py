"""Measuring what models cost: resident memory of the Triton process tree, GPU memory via NVML.

A model's footprint is the growth of these readings across its load: the Python backend
runs every model instance in its own stub process (a child of tritonserver), so the tree's
resident set grows by the stub plus what Triton itself allocates for the model. On a GPU,
NVML lists the memory each process holds on each device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemoryReading:
    rss_bytes: int
    gpu_bytes: int


class MemoryProbe:
    """Reads the Triton process tree's memory; GPU readings only when NVML finds a device."""

    def __init__(self, *, use_gpu: bool | None = None) -> None:
        self._nvml = None
        self.gpu_count = 0
        if use_gpu is False:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.gpu_count = pynvml.nvmlDeviceGetCount()
            self._nvml = pynvml if self.gpu_count else None
        except Exception as exc:  # No driver, no library, no device: host memory only.
            log.info("no GPU through NVML (%s); budgets count host memory", exc)
            self._nvml = None
            self.gpu_count = 0

    @property
    def has_gpu(self) -> bool:
        return self._nvml is not None

    @staticmethod
    def tree_pids(pid: int) -> list[int]:
        try:
            root = psutil.Process(pid)
            return [pid] + [child.pid for child in root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self, pids: list[int]) -> int:
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return total

    def gpu(self, pids: list[int]) -> int:
        if self._nvml is None:
            return 0
        nvml = self._nvml
        wanted = set(pids)
        total = 0
        for index in range(self.gpu_count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in wanted and proc.usedGpuMemory:
                    total += int(proc.usedGpuMemory)
        return total

    def read(self, pid: int | None) -> MemoryReading:
        if pid is None:
            return MemoryReading(0, 0)
        pids = self.tree_pids(pid)
        return MemoryReading(self.rss(pids), self.gpu(pids))

    def gpu_utilization(self) -> tuple[float, float] | None:
        """(sum of GPU utilization %, sum of GPU memory used %) over all devices."""
        if self._nvml is None:
            return None
        nvml = self._nvml
        util = mem = 0.0
        for index in range(self.gpu_count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            util += float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            mem += 100.0 * float(info.used) / float(info.total or 1)
        return util, mem


def host_utilization() -> tuple[float, float]:
    """(sum of each CPU core's utilization % since the last call, host memory used %)."""
    cpu = sum(psutil.cpu_percent(percpu=True))
    return cpu, psutil.virtual_memory().percent
