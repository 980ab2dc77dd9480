"""A wake-up at an exact monotonic time for the scheduler (Linux `timerfd`, via ctypes).

Event-loop timers (uvloop's libuv timers, asyncio's selector timeouts) count whole
milliseconds: a request due 0.3 ms from now goes out up to a millisecond late, and since
latency counts from the intended time, that lateness would land in every percentile. A
timerfd armed at the absolute CLOCK_MONOTONIC time (the clock `time.monotonic` reads) and
watched by the event loop wakes the scheduler within microseconds of the time asked for.
Where timerfd is missing (not Linux), `LoopTimer` falls back to the loop's own timers,
rounded up to the next millisecond so the scheduler never spins.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class LoopTimer:
    """Calls `callback()` once at or after each `at(when)` (a `time.monotonic` reading)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            self._fd = fd
            self._settime = libc.timerfd_settime
            self._spec = _Itimerspec()
            self._spec_ref = ctypes.byref(self._spec)
            loop.add_reader(fd, self._fired)

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    def at(self, when: float) -> None:
        if self._fd >= 0:
            if when <= 0:
                when = 1e-9  # Zero would disarm the timer.
            seconds = math.floor(when)
            value = self._spec.it_value
            value.tv_sec = seconds
            value.tv_nsec = int((when - seconds) * 1e9)
            self._settime(self._fd, TFD_TIMER_ABSTIME, self._spec_ref, None)
            return
        if self._handle is not None:
            self._handle.cancel()
        delay = math.ceil((when - time.monotonic()) * 1000.0) / 1000.0
        self._handle = self._loop.call_later(max(delay, 0.0), self._callback)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # Re-armed since it fired: not due yet.
            return
        self._callback()

    def cancel(self) -> None:
        if self._fd >= 0:
            value = self._spec.it_value
            value.tv_sec = value.tv_nsec = 0
            self._settime(self._fd, TFD_TIMER_ABSTIME, self._spec_ref, None)
        elif self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
