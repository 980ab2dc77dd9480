"""Running generator processes (`python -m loadgen`, through loadgen.launcher) for a load
test: the spec each gets, the loop that reads their events while showing life, and the
parts of a fan-out, each in its own worker, which the coordinating step waits for."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from runs.plans import StepError

from ..choices import LoadTestState as State
from ..models import LoadTest, LoadTestPartStage

logger = logging.getLogger(__name__)

#: How often the generate step shows life (and so learns of a cancel): at most this many
#: seconds between two heartbeats, so a cancel stops the generator within a second.
POLL_SECONDS = 0.2
#: A fan-out's generators start together this long after the coordinator asks.
FANOUT_LEAD_SECONDS = 5.0
#: A part of a fan-out that has not started this long after the common start is left out.
PART_START_GRACE_SECONDS = 10.0
#: The generator's hard deadline beyond the planned stages (start-up, last answers).
DEADLINE_SLACK_SECONDS = 30.0
#: How long an answer may take before it counts as a timeout.
REQUEST_TIMEOUT_SECONDS = 30.0
#: Errors-stop: the generator stops itself after this many answers when the error ratio of
#: the last interval passes the test's stop.error_rate.
STOP_MIN_REQUESTS = 20


def generator_spec(load_test: LoadTest, *, part: int = 0, parts: int = 1) -> dict[str, Any]:
    """The spec for part `part` of `parts` generators: the same requests, each offering
    1/parts of every stage's rate, all starting at the common start."""
    spec = dict(load_test.generator_spec)
    spec["stages"] = [
        {"rate": stage["rate"] / parts, "duration_s": stage["duration_s"]}
        for stage in spec["stages"]
    ]
    spec["seed"] = int(spec.get("seed", 1)) + part
    if parts > 1 and load_test.generation_start_at:
        spec["start_at"] = load_test.generation_start_at
    return spec


def run_generator(
    spec: dict[str, Any],
    *,
    on_event,
    heartbeat,
    should_stop=lambda: "",
    deadline_s: float,
) -> dict[str, Any]:
    """Run one generator process until it is done, calling `on_event` for each event and
    `heartbeat` at least every POLL_SECONDS (it raises to stop: a cancel). The generator
    is stopped and reaped in a `finally`, whatever happens here. Returns its done event."""
    from loadgen.launcher import GeneratorProcess

    done: dict[str, Any] = {}
    stop_reason = ""
    deadline = time.monotonic() + deadline_s
    # Leaving the block stops the generator, waits up to 2 s, then kills it: whatever
    # happens here (a cancel raised by the heartbeat included).
    with GeneratorProcess(spec) as generator:
        while True:
            for event in generator.events(timeout=POLL_SECONDS):
                kind = event.get("event")
                if kind == "error":
                    raise StepError(f"The load generator refused its spec: {event}")
                if kind == "done":
                    done = event
                elif kind in ("started", "tick", "stage"):
                    reason = on_event(event) or ""
                    if reason and not stop_reason:
                        stop_reason = reason
                        generator.stop()
            heartbeat()
            if done:
                break
            if not stop_reason:
                stop_reason = should_stop() or ""
                if stop_reason:
                    generator.stop()
            if generator.eof:
                code = generator.wait(2.0)
                raise StepError(
                    f"The load generator exited (code {code}) before it was done: "
                    f"{generator.stderr_tail[-500:]}"
                )
            if time.monotonic() > deadline:
                raise StepError("The load generator ran past its deadline; it was stopped.")
        pid = generator.pid
    done.setdefault("stopped_because", stop_reason)
    done["pid"] = pid
    return done


def wait_for_parts(
    load_test: LoadTest, position: int, parts: int, heartbeat, timeout: float | None = None
) -> list[LoadTestPartStage]:
    """The other parts' rows for stage `position`, waiting (with heartbeats) until each
    part wrote it or stopped. A part that never started (no free worker took its task by
    the common start plus PART_START_GRACE_SECONDS), or stays silent past the timeout, is
    left out: the stage holds what the others measured, and the log says so."""
    if parts <= 1:
        return []
    timeout = timeout if timeout is not None else REQUEST_TIMEOUT_SECONDS + 10
    deadline = time.monotonic() + timeout
    started_by = (load_test.generation_start_at or time.time()) + PART_START_GRACE_SECONDS
    while True:
        rows = list(
            LoadTestPartStage.objects.filter(load_test=load_test, position=position, part__gte=1)
        )
        have = {row.part for row in rows}
        own = {
            row.part: row
            for row in LoadTestPartStage.objects.filter(load_test=load_test, position=-1)
        }
        missing = [
            part
            for part in range(1, parts)
            if part not in have
            and not (part in own and own[part].done)
            and not (part not in own and time.time() > started_by)
        ]
        if not missing:
            absent = [part for part in range(1, parts) if part not in have]
            if absent:
                logger.warning(
                    "Load test #%s stage %s: parts %s did not report",
                    load_test.pk,
                    position,
                    absent,
                )
            return rows
        if time.monotonic() > deadline:
            logger.warning("Load test #%s: parts missing for stage %s", load_test.pk, position)
            return rows
        heartbeat()
        time.sleep(POLL_SECONDS)


def run_part(load_test_id: int, part: int, parts: int) -> dict[str, Any]:
    """Part `part` of a fan-out, in its own worker: generate 1/parts of the load from the
    common start, write each stage's figures for the coordinator, stop when it asks (or
    the test ended). Never resumed either: a part whose test is no longer running exits."""
    load_test = LoadTest.objects.select_related("endpoint").get(pk=load_test_id)
    own, _ = LoadTestPartStage.objects.get_or_create(
        load_test=load_test, part=part, position=-1, defaults={"heartbeat_at": timezone.now()}
    )
    too_late = time.time() > (load_test.generation_start_at or 0) + PART_START_GRACE_SECONDS
    if own.done or too_late or load_test.state != State.RUNNING or load_test.stop_requested:
        # Done already, the test is over, or too late: the coordinator left it out.
        LoadTestPartStage.objects.filter(pk=own.pk).update(done=True)
        return {"skipped": True}
    last_poll = {"at": 0.0}

    def on_event(event: dict[str, Any]) -> str:
        if event.get("event") != "stage":
            return ""
        LoadTestPartStage.objects.update_or_create(
            load_test=load_test,
            part=part,
            position=int(event["stage"]),
            defaults={
                "sent": int(event.get("sent") or 0),
                "completed": int(event.get("completed") or 0),
                "ok": int(event.get("ok") or 0),
                "errors": event.get("errors") or {},
                "histogram": event.get("hist") or "",
                "cpu_seconds": float(event.get("cpu_s") or 0),
                "schedule_lag_p99_ms": event.get("lag_p99_ms"),
                "on_schedule": bool(event.get("on_schedule", True)),
                "by_model": event.get("by_model") or {},
                "heartbeat_at": timezone.now(),
            },
        )
        return ""

    def should_stop() -> str:
        now = time.monotonic()
        if now - last_poll["at"] < POLL_SECONDS:
            return ""
        last_poll["at"] = now
        LoadTestPartStage.objects.filter(pk=own.pk).update(heartbeat_at=timezone.now())
        current = LoadTest.objects.filter(pk=load_test_id).values("state", "stop_requested").first()
        if not current or current["stop_requested"] or current["state"] != State.RUNNING:
            return "coordinator"
        return ""

    planned = sum(stage["duration_s"] for stage in load_test.generator_spec["stages"])
    error = ""
    try:
        done = run_generator(
            generator_spec(load_test, part=part, parts=parts),
            on_event=on_event,
            heartbeat=lambda: None,
            should_stop=should_stop,
            deadline_s=planned
            + FANOUT_LEAD_SECONDS
            + DEADLINE_SLACK_SECONDS
            + REQUEST_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - told to the coordinator through the row
        error = str(exc)[:2000]
        done = {}
        logger.exception("Part %s of load test #%s failed", part, load_test_id)
    with transaction.atomic():
        LoadTestPartStage.objects.filter(pk=own.pk).update(
            done=True, error=error, heartbeat_at=timezone.now()
        )
    return {"reason": done.get("reason"), "error": error}
