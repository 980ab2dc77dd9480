"""The open-loop scheduler: requests at their intended times, measured from those times.

Every arrival has an intended send time on one schedule clock that runs through all the
stages without a gap (uniform spacing or Poisson). A timer (`loadgen.timer`, microsecond
precise) wakes the scheduler at the next intended time and it sends every request that is
due; wakes are at least 0.5 ms apart, so at high rates one wake sends a batch. A
request's latency counts from its
intended time, never from when it was sent: when the server stalls, the requests scheduled
during the stall wait for connections or answers and show it in the percentiles (no
coordinated omission). The lateness of the send itself (lag = actual - intended) is the
generator's own: it is reported per interval and per stage, with `on_schedule` false when
its p99 passes max(2 ms, 10% of the inter-arrival time) or requests had to wait for the
in-flight cap, so a user sees when the generator, not the endpoint, was the limit.

Connections are kept alive and reused last-in first-out; the pool grows while requests are
due and none is idle, up to `max_connections` (and `max_in_flight`); requests beyond the
cap wait in order, keeping their intended time. Answers come back as callbacks on the
connection (no task per request), and one periodic sweep times out requests whose
`timeout_s`, counted from their intended time, has passed.

Output (one JSON object a line): `started`, then a `tick` every `report_interval_s`
(interval deltas), a `stage` line when each stage's requests are all answered or timed out,
and `done` with the reason. Extra keys beside the contract's: `scheduled` (arrivals, sent
or not), `waited` (arrivals that waited for the in-flight cap) and `on_schedule` on ticks
too, and `partial` on a stage line written when the generator stopped before the stage's
requests were all answered.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from dataplane.upstream import UpstreamConnection, UpstreamError, UpstreamResponse
from loadgen import histograms
from loadgen.spec import Spec
from loadgen.timer import LoopTimer

Emit = Callable[[dict[str, Any]], None]

#: How often unanswered requests are checked against their deadline (at most).
SWEEP_INTERVAL_S = 0.1
#: The scheduler wakes at most this often; arrivals closer together go out in batches.
MIN_WAKE_GAP_S = 0.0005
#: Lag within this is on schedule at any rate (event-loop timers tick in milliseconds).
LAG_FLOOR_S = 0.002
LAG_SHARE_OF_INTERVAL = 0.1
#: Intervals looked back over for the error-rate stop, newest first.
ERROR_WINDOW_INTERVALS = 10
#: Connections opened before the first request when the start leaves time for it.
PREWARM_CONNECTIONS = 4


class _Counts:
    """What one interval or one stage counted."""

    __slots__ = (
        "scheduled",
        "sent",
        "completed",
        "ok",
        "errors",
        "by_model",
        "hist",
        "lag",
        "waited",
    )

    def __init__(self) -> None:
        self.scheduled = 0
        self.sent = 0
        self.completed = 0
        self.ok = 0
        self.errors: dict[str, int] = {"timeout": 0, "connect": 0}
        self.by_model: dict[str, list[int]] = {}
        self.hist = histograms.new()
        self.lag = histograms.new()
        self.waited = 0

    def lag_ms(self) -> tuple[float | None, float | None]:
        if not self.lag.get_total_count():
            return None, None
        return (
            round(self.lag.get_value_at_percentile(99) / 1000.0, 3),
            round(self.lag.get_max_value() / 1000.0, 3),
        )

    def fields(self) -> dict[str, Any]:
        lag_p99, lag_max = self.lag_ms()
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "completed": self.completed,
            "ok": self.ok,
            "errors": dict(self.errors),
            "hist": histograms.encode(self.hist),
            "lag_p99_ms": lag_p99,
            "lag_max_ms": lag_max,
            "waited": self.waited,
            "by_model": {m: {"ok": c[0], "errors": c[1]} for m, c in self.by_model.items()},
        }


class _Request:
    """One arrival in flight (connecting, sent) or answered; called back with its answer."""

    __slots__ = ("gen", "intended", "stage", "index", "conn", "done")

    def __init__(self, gen: Generator, intended: float, stage: int, index: int) -> None:
        self.gen = gen
        self.intended = intended
        self.stage = stage
        self.index = index
        self.conn: UpstreamConnection | None = None
        self.done = False

    def answer(self, response: UpstreamResponse | None, error: UpstreamError | None) -> None:
        self.gen._answered(self, response, error)


class Generator:
    """Runs one spec against one request source (`loadgen.targets`), writing events."""

    def __init__(self, spec: Spec, source: Any, emit: Emit) -> None:
        self.spec = spec
        self.source = source
        self.pool = source.pool
        self.emit = emit
        self.clock = time.monotonic
        self.models = [r.target_model for r in spec.requests]
        weights = [r.weight for r in spec.requests]
        self._cumulative = list(accumulate(weights))
        self._total_weight = self._cumulative[-1]
        self._pick_rng = random.Random(spec.seed)
        self._arrival_rng = random.Random(spec.seed + 1)
        self._cap = min(spec.max_in_flight, spec.max_connections)
        self.in_flight = 0
        self._pending: deque[_Request] = deque()  # Sent or connecting, in intended order.
        self._waiting: deque[tuple[float, int, int]] = deque()  # (intended, stage, index)
        self._stages = [_Counts() for _ in spec.stages]
        self._interval = _Counts()
        self._outstanding = [0] * len(spec.stages)  # Arrivals not yet answered, per stage.
        self._stage_cpu = [0.0] * len(spec.stages)
        self._stage_started = [False] * len(spec.stages)
        self._sending_over = [False] * len(spec.stages)
        self._next_report = 0
        self._recent: deque[tuple[int, int]] = deque(maxlen=ERROR_WINDOW_INTERVALS)
        self._timers: list[asyncio.TimerHandle | None] = [None, None, None, None]
        self._stopping = False
        self.reason: str | None = None
        self.finished: asyncio.Future[str] | None = None
        self._cpu_start = time.process_time()
        self._cpu_tick = self._cpu_start
        self._ticks = 0
        # The schedule: `_stage` sends, its `_n`th arrival is due at `_next`.
        self._stage = 0
        self._n = 0
        self._next = 0.0
        self._stage_start = 0.0
        self.start = 0.0
        self._wake: LoopTimer | None = None

    # -- the schedule ---------------------------------------------------------------------

    def _stage_end(self) -> float:
        return self._stage_start + self.spec.stages[self._stage].duration_s

    def _first_arrival(self) -> float:
        stage = self.spec.stages[self._stage]
        self._n = 0
        if self.spec.arrival == "poisson":
            return self._stage_start + self._arrival_rng.expovariate(stage.rate)
        return self._stage_start

    def _advance(self) -> float:
        stage = self.spec.stages[self._stage]
        self._n += 1
        if self.spec.arrival == "poisson":
            return self._next + self._arrival_rng.expovariate(stage.rate)
        return self._stage_start + self._n / stage.rate

    def _enter_stage(self) -> None:
        self._stage_started[self._stage] = True
        self._stage_cpu[self._stage] = time.process_time()

    def _pump(self) -> None:
        """Send every arrival that is due, then sleep until the next one."""
        if self._stopping:
            return
        now = self.clock()
        stages = self.spec.stages
        while True:
            end = self._stage_end()
            if self._next >= end:  # The stage's last arrival is out: on to the next stage.
                if end > now:
                    break
                self._end_sending(self._stage)
                if self._stage + 1 >= len(stages):
                    self._maybe_finish()
                    return
                self._stage_start = end
                self._stage += 1
                self._enter_stage()
                self._next = self._first_arrival()
                continue
            if self._next > now:
                break
            self._arrive(self._next, now)
            self._next = self._advance()
        # At most one wake per MIN_WAKE_GAP_S: above that rate, each wake sends a batch.
        self._wake.at(max(min(self._next, self._stage_end()), now + MIN_WAKE_GAP_S))

    def _pick(self) -> int:
        if len(self._cumulative) == 1:
            return 0
        i = bisect_right(self._cumulative, self._pick_rng.random() * self._total_weight)
        return min(i, len(self._cumulative) - 1)

    def _arrive(self, intended: float, now: float) -> None:
        stage = self._stage
        index = self._pick()
        self._stages[stage].scheduled += 1
        self._interval.scheduled += 1
        self._outstanding[stage] += 1
        if self._waiting or self.in_flight >= self._cap:
            self._waiting.append((intended, stage, index))
            self._stages[stage].waited += 1
            self._interval.waited += 1
            return
        self._send(intended, stage, index, now)

    def _send(self, intended: float, stage: int, index: int, now: float) -> None:
        request = _Request(self, intended, stage, index)
        self.in_flight += 1
        self._pending.append(request)
        lag_us = (now - intended) * 1e6
        histograms.record_us(self._stages[stage].lag, lag_us)
        histograms.record_us(self._interval.lag, lag_us)
        self._stages[stage].sent += 1
        self._interval.sent += 1
        conn = self.pool.acquire_idle()
        if conn is None:
            asyncio.get_running_loop().create_task(self._connect(request))
            return
        request.conn = conn
        conn.request_with_callback(self.source.data(index), request.answer)

    async def _connect(self, request: _Request) -> None:
        try:
            conn = await self.pool.connect()
        except UpstreamError as exc:
            self._answered(request, None, exc)
            return
        except Exception as exc:  # TLS and resolver failures are connect errors too.
            self._answered(request, None, UpstreamError(str(exc), sent=False))
            return
        if request.done or self._stopping:  # Timed out (or stopped) while connecting.
            self._give_back(conn)
            return
        request.conn = conn
        conn.request_with_callback(self.source.data(request.index), request.answer)

    def _give_back(self, conn: UpstreamConnection) -> None:
        """A free connection serves the first waiting arrival, or goes back to the pool."""
        if self._stopping:
            conn.close()
            return
        if self._waiting and not conn.closed:
            intended, stage, index = self._waiting.popleft()
            request = _Request(self, intended, stage, index)
            self.in_flight += 1
            self._pending.append(request)
            lag_us = (self.clock() - intended) * 1e6
            histograms.record_us(self._stages[stage].lag, lag_us)
            histograms.record_us(self._interval.lag, lag_us)
            self._stages[stage].sent += 1
            self._interval.sent += 1
            request.conn = conn
            conn.request_with_callback(self.source.data(index), request.answer)
            return
        self.pool.release(conn)

    # -- answers ----------------------------------------------------------------------------

    def _answered(
        self, request: _Request, response: UpstreamResponse | None, error: UpstreamError | None
    ) -> None:
        if request.done:
            return
        request.done = True
        self.in_flight -= 1
        now = self.clock()
        if error is None:
            status = response.status  # type: ignore[union-attr]
            if 200 <= status < 300:
                self._record(request.stage, request.index, None, now - request.intended)
            else:
                self._record(request.stage, request.index, str(status), 0.0)
        else:
            self._record(request.stage, request.index, _kind(error), 0.0)
        conn = request.conn
        if conn is not None:
            if error is None:
                self._give_back(conn)
            else:
                conn.close()
        # A connection that broke still frees a place under the cap.
        while self._waiting and self.in_flight < self._cap and not self._stopping:
            conn = self.pool.acquire_idle()
            if conn is not None:
                self._give_back(conn)
                continue
            intended, stage, index = self._waiting.popleft()
            self._send(intended, stage, index, now)
        if self._sending_over[request.stage] and not self._outstanding[request.stage]:
            self._maybe_finish()

    def _record(self, stage: int, index: int, error: str | None, latency_s: float) -> None:
        """Count one answered (or failed) arrival in its stage and in the interval."""
        self._outstanding[stage] -= 1
        model = self.models[index]
        for counts in (self._stages[stage], self._interval):
            counts.completed += 1
            per_model = counts.by_model.get(model)
            if per_model is None:
                per_model = counts.by_model[model] = [0, 0]
            if error is None:
                counts.ok += 1
                per_model[0] += 1
                histograms.record_us(counts.hist, latency_s * 1e6)
            else:
                counts.errors[error] = counts.errors.get(error, 0) + 1
                per_model[1] += 1

    def _sweep(self) -> None:
        """Time out arrivals whose deadline (intended time + timeout_s) has passed."""
        if self._stopping:
            return
        deadline = self.clock() - self.spec.timeout_s
        pending = self._pending
        while pending and pending[0].done:
            pending.popleft()
        expired = []
        for request in pending:
            if request.intended > deadline:
                break
            if not request.done:
                expired.append(request)
        for request in expired:
            if request.conn is not None:
                request.conn.timeout()  # Closes it and calls back with a timeout.
            else:
                self._answered(request, None, UpstreamError("timeout", sent=False, timed_out=True))
        waiting = self._waiting
        while waiting and waiting[0][0] <= deadline:
            _, stage, index = waiting.popleft()
            self._record(stage, index, "timeout", 0.0)
        if any(self._sending_over) and not self._stopping:
            self._maybe_finish()
        loop = asyncio.get_running_loop()
        self._timers[2] = loop.call_later(
            min(SWEEP_INTERVAL_S, self.spec.timeout_s / 4), self._sweep
        )

    # -- reports ------------------------------------------------------------------------------

    def _end_sending(self, stage: int) -> None:
        self._sending_over[stage] = True
        self._stage_cpu[stage] = time.process_time() - self._stage_cpu[stage]

    def _stage_line(self, index: int, *, partial: bool = False) -> dict[str, Any]:
        stage = self.spec.stages[index]
        counts = self._stages[index]
        if not self._sending_over[index]:
            self._stage_cpu[index] = time.process_time() - self._stage_cpu[index]
        line = {
            "event": "stage",
            "stage": index,
            "rate": stage.rate,
            "duration_s": stage.duration_s,
        }
        line.update(counts.fields())
        line["cpu_s"] = round(self._stage_cpu[index], 4)
        line["on_schedule"] = _on_schedule(counts.waited, line["lag_p99_ms"], stage.rate)
        if partial:
            line["partial"] = True
        return line

    def _maybe_finish(self) -> None:
        """Write the lines of the stages whose requests are all answered, in order."""
        stages = self.spec.stages
        while (
            self._next_report < len(stages)
            and self._sending_over[self._next_report]
            and not self._outstanding[self._next_report]
        ):
            if self._next_report == len(stages) - 1:
                self._tick(final=True)
            self.emit(self._stage_line(self._next_report))
            self._next_report += 1
        if self._next_report >= len(stages):
            self._finish("completed")

    def _tick(self, final: bool = False) -> None:
        if not final:
            self._timers[1] = None
        if self._stopping:
            return
        now = self.clock()
        cpu = time.process_time()
        counts, self._interval = self._interval, _Counts()
        line = {
            "event": "tick",
            "stage": min(self._stage, len(self.spec.stages) - 1),
            "elapsed_s": round(now - self.start, 3),
        }
        line.update(counts.fields())
        line["cpu_s"] = round(cpu - self._cpu_tick, 4)
        line["waiting"] = len(self._waiting)
        line["in_flight"] = self.in_flight
        line["on_schedule"] = _on_schedule(
            counts.waited, line["lag_p99_ms"], self.spec.stages[line["stage"]].rate
        )
        self._cpu_tick = cpu
        self.emit(line)
        if final:
            return
        self._recent.append((counts.completed, sum(counts.errors.values())))
        if self._error_rate_passed():
            self.stop("error_rate")
            return
        self._ticks += 1
        loop = asyncio.get_running_loop()
        when = self.start + (self._ticks + 1) * self.spec.report_interval_s
        self._timers[1] = loop.call_later(max(when - self.clock(), 0.0), self._tick)

    def _error_rate_passed(self) -> bool:
        completed = errors = 0
        for done, failed in reversed(self._recent):
            completed += done
            errors += failed
            if completed >= self.spec.stop_min_requests:
                return errors / completed > self.spec.stop_error_rate
        return False

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, start: float) -> str:
        """Generate from `start` (this clock) to the end; returns the reason it ended."""
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.start = start
        if start - self.clock() > 0.05:
            await self._prewarm(start)
            if self._stopping:
                return self.reason or "stopped"
        self._stage_start = start
        self._next = self._first_arrival()
        self._wake = LoopTimer(loop, self._pump)
        self._timers[0] = loop.call_later(max(start - self.clock(), 0.0), self._begin)
        self._timers[1] = loop.call_later(
            max(start + self.spec.report_interval_s - self.clock(), 0.0), self._tick
        )
        self._timers[2] = loop.call_later(
            max(start - self.clock(), 0.0) + SWEEP_INTERVAL_S, self._sweep
        )
        self._timers[3] = loop.call_later(
            max(start + self.spec.max_duration_s - self.clock(), 0.0), self.stop, "deadline"
        )
        return await self.finished

    def _begin(self) -> None:
        self._enter_stage()
        self._pump()

    async def _prewarm(self, start: float) -> None:
        """Open a few connections before the start, so the first requests find them."""
        count = min(PREWARM_CONNECTIONS, self._cap)
        budget = min(start - self.clock() - 0.02, 1.0)
        if budget <= 0:
            return
        tasks = [asyncio.ensure_future(self.pool.connect()) for _ in range(count)]
        done, not_done = await asyncio.wait(tasks, timeout=budget)
        for task in not_done:
            task.cancel()
        for task in done:
            if task.exception() is None:
                self.pool.release(task.result())

    def stop(self, reason: str) -> None:
        """Stop sending now; report what was measured and end with `reason`."""
        if self._stopping or self.finished is None or self.finished.done():
            return
        self._tick(final=True)
        for index in range(self._next_report, len(self.spec.stages)):
            if self._stage_started[index]:
                complete = self._sending_over[index] and not self._outstanding[index]
                self.emit(self._stage_line(index, partial=not complete))
        self._next_report = len(self.spec.stages)
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.reason = reason
        for handle in self._timers:
            if handle is not None:
                handle.cancel()
        if self._wake is not None:
            self._wake.close()
        for request in self._pending:
            if not request.done and request.conn is not None:
                request.conn.close()
        self.pool.close()
        self.emit({"event": "done", "reason": reason, "cpu_s": round(self.cpu_s, 4)})
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(reason)

    @property
    def cpu_s(self) -> float:
        return time.process_time() - self._cpu_start


def _on_schedule(waited: int, lag_p99_ms: float | None, rate: float) -> bool:
    """Whether the generator kept to its schedule: no arrival waited for the in-flight cap
    and the send lag's p99 is within max(2 ms, 10% of the inter-arrival time)."""
    allowed_ms = max(LAG_FLOOR_S, LAG_SHARE_OF_INTERVAL / rate) * 1000.0
    return waited == 0 and (lag_p99_ms is None or lag_p99_ms <= allowed_ms)


def _kind(error: UpstreamError) -> str:
    return "timeout" if error.timed_out else "connect"


def epoch_to_clock(epoch: float, clock: Callable[[], float] = time.monotonic) -> float:
    """The monotonic clock's reading at wall-clock time `epoch`."""
    return clock() + (epoch - time.time())


def clock_to_epoch(value: float, clock: Callable[[], float] = time.monotonic) -> float:
    return time.time() + (value - clock())
