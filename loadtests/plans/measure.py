"""Measuring a load test's stages: the endpoint around each stage (cache hits, model
loads, resource use) and the generator's events turned into LoadTestStage rows."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .. import recommend
from ..models import LoadTest, LoadTestPartStage, LoadTestStage

logger = logging.getLogger(__name__)


# Measuring the endpoint during a stage ---------------------------------------------------


class EndpointProbe:
    """Cache hits, model loads and resource use of the endpoint around each stage. Local:
    the data plane's cumulative counters read when a stage's first tick arrives and when
    its stage event does (after its last answer: the next stage has begun sending by then,
    so neighbouring windows overlap by the tail's length), the host's CPU and memory
    (psutil) and GPU (NVML, None without one) sampled on every tick. SageMaker: nothing
    here; the analyse step reads CloudWatch per minute."""

    def __init__(self, load_test: LoadTest):
        from deployments.choices import Backend

        self.endpoint = load_test.endpoint
        self.local = self.endpoint.backend == Backend.LOCAL
        self.client = None
        self.baselines: dict[int, dict[str, float] | None] = {}
        self.samples: dict[int, list[tuple[float, float, float | None]]] = {}
        self.nvml = None
        if self.local:
            import psutil

            from portal.dataplane import DataPlaneClient

            self.client = DataPlaneClient(timeout=5)
            psutil.cpu_percent(None)
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = pynvml.nvmlDeviceGetHandleByIndex(0)
            except Exception:  # noqa: BLE001 - no GPU (or no driver): GPU use stays None
                self.nvml = None

    def counters(self) -> dict[str, float] | None:
        if self.client is None:
            return None
        from portal.dataplane import DataPlaneError

        try:
            return self.client.counters(self.endpoint.target_name)
        except DataPlaneError as exc:
            logger.warning("No counters from the data plane: %s", exc)
            return None

    def stage_started(self, position: int) -> None:
        self.baselines[position] = self.counters()
        self.samples[position] = []

    def sample(self, position: int) -> None:
        if not self.local:
            return
        import psutil

        gpu = None
        if self.nvml is not None:
            try:
                import pynvml

                gpu = float(pynvml.nvmlDeviceGetUtilizationRates(self.nvml).gpu)
            except Exception:  # noqa: BLE001
                gpu = None
        self.samples.setdefault(position, []).append(
            (psutil.cpu_percent(None), psutil.virtual_memory().percent, gpu)
        )

    def stage_figures(self, position: int) -> dict[str, Any]:
        """The stage's figures (what was measured since it started)."""
        figures: dict[str, Any] = {}
        baseline = self.baselines.pop(position, None)
        samples = self.samples.pop(position, [])
        after = self.counters() if baseline is not None else None
        if baseline is not None and after is not None:
            lookups = after.get("cache_lookups", 0) - baseline.get("cache_lookups", 0)
            hits = after.get("cache_hits", 0) - baseline.get("cache_hits", 0)
            figures["cache_hit_ratio"] = round(hits / lookups, 4) if lookups > 0 else None
            figures["model_loads"] = int(
                max(0, after.get("model_loads", 0) - baseline.get("model_loads", 0))
            )
        if samples:
            figures["cpu_percent"] = round(sum(x[0] for x in samples) / len(samples), 1)
            figures["memory_percent"] = round(sum(x[1] for x in samples) / len(samples), 1)
            gpus = [x[2] for x in samples if x[2] is not None]
            figures["gpu_percent"] = round(sum(gpus) / len(gpus), 1) if gpus else None
        return figures


def cloudwatch_stage_figures(load_test: LoadTest, stages: list[LoadTestStage]) -> str:
    """Fill SageMaker stages' cache hits, loads and resource use from CloudWatch (whose
    datapoints are per minute: a stage shorter than a minute shares its minute's values).
    Returns a note for the result, or "" when nothing could be read."""
    from deployments.backends import backend_for
    from monitoring.sources import MetricQuery, MetricSourceError

    target = backend_for(load_test.endpoint).metric_source(load_test.endpoint)
    queries = [
        MetricQuery("ModelCacheHit", "Average"),
        MetricQuery("ModelLoadingTime", "SampleCount"),
        MetricQuery("CPUUtilization", "Average"),
        MetricQuery("GPUUtilization", "Average"),
        MetricQuery("MemoryUtilization", "Average"),
    ]
    fields = ["cache_hit_ratio", "model_loads", "cpu_percent", "gpu_percent", "memory_percent"]
    for stage in stages:
        if stage.started_at is None:
            continue
        end = stage.finished_at or timezone.now()
        start = stage.started_at.replace(second=0, microsecond=0)
        end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
        try:
            series = target.source.get_metric_data(
                endpoint=target.source_endpoint,
                queries=queries,
                start=start,
                end=end,
                period=60,
                variant=target.variant,
            )
        except (MetricSourceError, Exception) as exc:  # noqa: BLE001 - figures are optional
            return f"CloudWatch could not be read: {exc}"
        changed = []
        for name, one in zip(fields, series, strict=True):
            if not one.values:
                continue
            value = sum(one.values) if name == "model_loads" else sum(one.values) / len(one.values)
            setattr(stage, name, int(value) if name == "model_loads" else round(value, 4))
            changed.append(name)
        if changed:
            stage.save(update_fields=changed)
    return (
        "Cache hits, model loads and CPU/GPU/memory come from CloudWatch, which reports per "
        "minute: stages shorter than a minute share their minute's values."
    )


def _apply_figures(stage: LoadTestStage, figures: dict[str, Any]) -> list[str]:
    changed = []
    for name, value in figures.items():
        setattr(stage, name, value)
        changed.append(name)
    return changed


def _summary_fields(hist) -> dict[str, Any]:
    from loadgen import histograms

    summary = histograms.summary(hist)
    return {
        key: summary[key] for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
    }


def _add_errors(total: dict[str, int], errors: dict[str, Any] | None) -> dict[str, int]:
    for key, value in (errors or {}).items():
        if int(value or 0):
            total[str(key)] = total.get(str(key), 0) + int(value)
    return total


class StageWriter:
    """Turns the generator's events into LoadTestStage rows: live figures from the ticks
    (the merged histogram so far), final ones from the stage event. A stage's event comes
    after its last answer, when the next stage's ticks have begun: each stage keeps its
    own accumulation until its event closes it."""

    def __init__(self, load_test: LoadTest, probe: EndpointProbe, parts: int):
        from loadgen import histograms

        self.load_test = load_test
        self.probe = probe
        self.parts = parts
        self.histograms = histograms
        self.live: dict[int, dict[str, Any]] = {}
        self.stages = {s.position: s for s in load_test.stages.all()}
        # Where each stage begins on the generator's own clock (stages run back to back).
        self.offsets: dict[int, float] = {}
        offset = 0.0
        for position in sorted(self.stages):
            self.offsets[position] = offset
            offset += self.stages[position].planned_seconds
        self.finished: list[dict[str, Any]] = []

    def _live(self, position: int) -> dict[str, Any]:
        """The stage's accumulation, opened (and the stage's start recorded) on first sight."""
        live = self.live.get(position)
        if live is None:
            live = self.live[position] = {
                "sent": 0,
                "completed": 0,
                "ok": 0,
                "errors": {},
                "hist": self.histograms.new(),
                "cpu": 0.0,
                "lag": None,
            }
            self.probe.stage_started(position)
            stage = self.stages.get(position)
            if stage is not None and stage.started_at is None:
                stage.started_at = timezone.now()
                stage.save(update_fields=["started_at"])
        return live

    def start_stage(self, position: int) -> None:
        self._live(position)

    def tick(self, event: dict[str, Any]) -> None:
        position = int(event.get("stage", 0))
        stage = self.stages.get(position)
        if stage is None or stage.finished:
            return
        live = self._live(position)
        for key in ("sent", "completed", "ok"):
            live[key] += int(event.get(key) or 0)
        _add_errors(live["errors"], event.get("errors"))
        if event.get("hist"):
            live["hist"].add(self.histograms.decode(event["hist"]))
        live["cpu"] += float(event.get("cpu_s") or 0)
        live["lag"] = event.get("lag_p99_ms")
        self.probe.sample(position)
        if event.get("elapsed_s") is not None:
            # The generator's clock: our own would count from when the previous stage's
            # event arrived, after its last answers, and overstate the live rate.
            elapsed = float(event["elapsed_s"]) - self.offsets.get(position, 0.0)
        else:
            started = stage.started_at or timezone.now()
            elapsed = (timezone.now() - started).total_seconds()
        elapsed = min(max(elapsed, 1e-3), stage.planned_seconds)
        # Live figures of a fan-out are this part's, scaled to the whole.
        scale = self.parts
        stage.sent = live["sent"] * scale
        stage.completed = live["completed"] * scale
        stage.ok = live["ok"] * scale
        stage.errors = {k: v * scale for k, v in live["errors"].items()}
        stage.achieved_rps = round(stage.completed / elapsed, 3)
        stage.duration_seconds = round(elapsed, 3)
        stage.generator_cpu_seconds = round(live["cpu"] * scale, 4)
        stage.schedule_lag_p99_ms = live["lag"]
        for key, value in _summary_fields(live["hist"]).items():
            setattr(stage, key, value)
        stage.save(
            update_fields=[
                "sent",
                "completed",
                "ok",
                "errors",
                "achieved_rps",
                "duration_seconds",
                "generator_cpu_seconds",
                "schedule_lag_p99_ms",
                "p50_ms",
                "p90_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "mean_ms",
            ]
        )

    def finish(self, event: dict[str, Any], parts_rows: list[LoadTestPartStage]) -> LoadTestStage:
        """Close a stage with the generator's final figures (and the parts' of a fan-out)."""
        position = int(event.get("stage", 0))
        self._live(position)
        self.live.pop(position, None)
        stage = self.stages[position]
        hist = self.histograms.merge([event.get("hist") or "", *(p.histogram for p in parts_rows)])
        errors = _add_errors({}, event.get("errors"))
        for row in parts_rows:
            _add_errors(errors, row.errors)
        stage.sent = int(event.get("sent") or 0) + sum(p.sent for p in parts_rows)
        stage.completed = int(event.get("completed") or 0) + sum(p.completed for p in parts_rows)
        stage.ok = int(event.get("ok") or 0) + sum(p.ok for p in parts_rows)
        stage.errors = errors
        # Achieved: answers per second of the stage's planned duration (requests sent in a
        # stage count in it even when they complete after it ends).
        stage.duration_seconds = float(event.get("duration_s") or stage.planned_seconds)
        if event.get("partial") and stage.offered_rps:
            # Cut short (the errors-stop): it lasted as long as its requests were due.
            stage.duration_seconds = max(stage.sent / stage.offered_rps, 1e-3)
        stage.achieved_rps = round(stage.completed / stage.duration_seconds, 3)
        stage.generator_cpu_seconds = round(
            float(event.get("cpu_s") or 0) + sum(p.cpu_seconds for p in parts_rows), 4
        )
        lags = [event.get("lag_p99_ms"), *(p.schedule_lag_p99_ms for p in parts_rows)]
        lags = [lag for lag in lags if lag is not None]
        stage.schedule_lag_p99_ms = max(lags) if lags else None
        stage.on_schedule = bool(event.get("on_schedule", True)) and all(
            p.on_schedule for p in parts_rows
        )
        stage.histogram = self.histograms.encode(hist)
        for key, value in _summary_fields(hist).items():
            setattr(stage, key, value)
        _apply_figures(stage, self.probe.stage_figures(position))
        stage.finished = True
        stage.finished_at = timezone.now()
        stage.slo_met = recommend.slo_met(stage_dict(stage), self.load_test.config["slo"])
        stage.save()
        self.finished.append(stage_dict(stage))
        return stage


def stage_dict(stage: LoadTestStage) -> dict[str, Any]:
    """A stage as recommend.py reads it."""
    return {
        "position": stage.position,
        "offered_rps": stage.offered_rps,
        "achieved_rps": stage.achieved_rps,
        "completed": stage.completed,
        "ok": stage.ok,
        "errors": stage.errors,
        "p50_ms": stage.p50_ms,
        "p95_ms": stage.p95_ms,
        "p99_ms": stage.p99_ms,
    }
