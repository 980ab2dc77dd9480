"""A load test as a plan on the engine (runs): prepare the requests, generate the load in a
generator process (`python -m loadgen`, never inside Celery's prefork worker) while writing
each stage's figures live, then analyse them into a verdict and a recommendation.

What a run's life means for the load test (running, finished, failed, cancelled) happens in
the hooks, in the same transaction as the run's change, with the audit record.

A load test is never resumed (max_attempts = 1): load generated twice is not the load that
was asked for, and a half-measured stage cannot be continued. A worker killed mid-test
leaves a run the sweep fails once its heartbeat is BERTH_LOADTEST_STALE_SECONDS old, with
the stages measured so far kept; a redelivered task message (attempt 2) fails at once. The
generator never outlives its worker: its launcher sets PR_SET_PDEATHSIG, it stops on EOF
of its stdin, and it has a hard max_duration_s.
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.audit import state_transition
from portal.choices import AuditAction, Source
from runs.models import Run
from runs.plans import Plan, PlanStep, RunContext, RunLost, StepError

from .. import recommend
from ..choices import (
    FINISHED_LOADTEST_STATES,
    LOADTEST_TRANSITIONS,
    Mix,
    Pattern,
    PayloadSource,
)
from ..choices import LoadTestState as State
from ..models import LoadTest, LoadTestStage
from .generators import (
    DEADLINE_SLACK_SECONDS,
    FANOUT_LEAD_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    STOP_MIN_REQUESTS,
    generator_spec,
    run_generator,
    run_part,
    wait_for_parts,
)
from .measure import EndpointProbe, StageWriter, cloudwatch_stage_figures, stage_dict

logger = logging.getLogger(__name__)

__all__ = [
    "LoadTestPlan",
    "may_cancel",
    "run_part",
    "set_state",
    "stage_dict",
]


def _locked(pk: int) -> LoadTest:
    return (
        LoadTest.objects.select_for_update(of=("self",))
        .select_related("endpoint__environment")
        .get(pk=pk)
    )


def set_state(
    load_test: LoadTest,
    to_state: str,
    *,
    actor=None,
    reason: str = "",
    source: str = Source.WORKER,
    fields: tuple[str, ...] = (),
    changes: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Move a load test (locked by the caller) along LOADTEST_TRANSITIONS, audited."""
    changes = dict(changes or {})
    if to_state in FINISHED_LOADTEST_STATES and load_test.finished_at is None:
        changes["finished_at"] = timezone.now()
    if to_state in FINISHED_LOADTEST_STATES:
        # The parts of a fan-out stop with it.
        changes["stop_requested"] = True
    state_transition(
        load_test,
        to_state,
        transitions=LOADTEST_TRANSITIONS,
        refusal=(
            f"Load test #{load_test.pk} is {load_test.get_state_display().lower()}; it cannot "
            f"become {State(to_state).label.lower()}."
        ),
        actor=actor,
        action=AuditAction.of("loadtest", to_state),
        source=source or Source.WORKER,
        reason=reason,
        data=data,
        changes=changes,
        fields=fields,
    )


def may_cancel(actor, load_test: LoadTest) -> bool:
    """The requester, approvers (of load tests or of promotions) and admins cancel."""
    from deployments.services import APPROVE_PERMISSION, may_configure

    if actor is None or not getattr(actor, "is_authenticated", False):
        return False
    return bool(
        actor.pk == load_test.created_by_id
        or actor.has_perm("loadtests.approve_loadtest")
        or actor.has_perm(APPROVE_PERMISSION)
        or may_configure(actor)
    )


class LoadTestPlan(Plan):
    """prepare → generate → analyse. See the module's docstring for why it never resumes."""

    gave_up_note = "the stages measured so far are kept."
    heartbeat_seconds = 5

    @property
    def stale_seconds(self) -> int:
        return settings.BERTH_LOADTEST_STALE_SECONDS

    @property
    def max_attempts(self) -> int:
        return 1

    def load_subject(self, run: Run) -> LoadTest:
        return LoadTest.objects.select_related("endpoint__environment", "version__model").get(
            pk=run.object_id
        )

    def steps(self, subject: LoadTest) -> list[PlanStep]:
        return [
            PlanStep("prepare", "Resolve the requests and warm each model up"),
            PlanStep("generate", "Generate the load, stage by stage"),
            PlanStep("analyse", "Verdict and autoscaling recommendation"),
        ]

    def may_cancel(self, actor, subject: LoadTest) -> bool:
        return may_cancel(actor, subject)

    def cancel(self, run: Run, subject: LoadTest, *, actor, reason: str, source: str) -> None:
        from loadtests.services import loadtest_cancel

        loadtest_cancel(actor=actor, load_test=subject, reason=reason, source=source)

    def run_step(self, step: str, ctx: RunContext) -> dict[str, Any] | None:
        if ctx.run.attempts > 1:
            raise StepError(
                f"A load test is never resumed: its worker stopped during {step} (attempt "
                f"{ctx.run.attempts}). The stages measured so far are kept; start a new test."
            )
        return super().run_step(step, ctx)

    # Steps ----------------------------------------------------------------------------

    def step_prepare(self, ctx: RunContext) -> dict[str, Any]:
        from ..config import case_request_bodies, live_version_of, mix_weights, parse_upload

        load_test: LoadTest = ctx.subject
        config = load_test.config
        endpoint = load_test.endpoint
        models = list(config["models"])
        shares = None
        if config["mix"]["kind"] == Mix.REPLAY:
            shares = replay_shares(load_test, minutes=int(config["mix"]["replay_minutes"]))
            ctx.log(
                "Replaying the endpoint's traffic shares: "
                + (
                    ", ".join(f"{m} {shares.get(m, 0):g}" for m in models)
                    if shares
                    else "no traffic recorded; uniform instead."
                )
            )
        weights = mix_weights(config["mix"], models, shares)
        requests: list[dict[str, Any]] = []
        if config["payloads"]["source"] == PayloadSource.UPLOAD:
            uploaded = parse_upload(bytes(load_test.payload_upload or b""), models=models)
            for model in models:
                mine = [r for r in uploaded if r["target_model"] == model]
                for item in mine:
                    requests.append({**item, "weight": weights[model] / len(mine)})
        else:
            for model in models:
                bodies = case_request_bodies(live_version_of(endpoint, model))
                if not bodies:
                    raise StepError(f"{model} has no test cases to send and nothing was uploaded.")
                for body in bodies:
                    requests.append(
                        {
                            "target_model": model,
                            "content_type": "application/json",
                            "body_b64": base64.b64encode(body).decode(),
                            "weight": weights[model] / len(bodies),
                        }
                    )
        warmups = {}
        for model in models:
            ctx.heartbeat()
            first = next(r for r in requests if r["target_model"] == model)
            warmups[model] = warm_up(load_test, first)
            ctx.log(
                f"Warm-up request to {model}: {warmups[model]['status']} in "
                f"{warmups[model]['ms']:.0f} ms."
            )
        planned = sum(stage["duration_s"] for stage in config["stages"])
        spec = {
            "target": generator_target(load_test),
            "requests": requests,
            "stages": config["stages"],
            "arrival": config.get("arrival", "uniform"),
            "seed": int(config.get("seed", 1)),
            "start_at": None,
            "timeout_s": REQUEST_TIMEOUT_SECONDS,
            "report_interval_s": 0.5,
            "max_duration_s": planned + FANOUT_LEAD_SECONDS + REQUEST_TIMEOUT_SECONDS,
            "stop": {"error_rate": config["stop"]["error_rate"], "min_requests": STOP_MIN_REQUESTS},
        }
        LoadTest.objects.filter(pk=load_test.pk).update(generator_spec=spec)
        load_test.generator_spec = spec
        LoadTestStage.objects.bulk_create(
            [
                LoadTestStage(
                    load_test=load_test,
                    position=i,
                    offered_rps=stage["rate"],
                    planned_seconds=stage["duration_s"],
                )
                for i, stage in enumerate(config["stages"])
            ],
            ignore_conflicts=True,
        )
        rates = ", ".join(f"{s['rate']:g}" for s in config["stages"])
        ctx.log(
            f"{config['pattern']['kind']} over {len(models)} model(s) "
            f"({', '.join(f'{m} {weights[m]:.0%}' for m in models)}), {len(requests)} request "
            f"bodies, stages of {rates} req/s, {planned:g} s planned, "
            f"{config.get('generators', 1)} generator(s)."
        )
        return {"models": models, "weights": weights, "requests": len(requests), "warm_up": warmups}

    def step_generate(self, ctx: RunContext) -> dict[str, Any]:
        load_test: LoadTest = LoadTest.objects.select_related("endpoint__environment").get(
            pk=ctx.subject.pk
        )
        config = load_test.config
        parts = int(config.get("generators", 1))
        find_max = config["pattern"]["kind"] == Pattern.FIND_MAX
        if parts > 1:
            load_test.generation_start_at = time.time() + FANOUT_LEAD_SECONDS
            LoadTest.objects.filter(pk=load_test.pk).update(
                generation_start_at=load_test.generation_start_at, stop_requested=False
            )
            from ..tasks import loadtest_generate_part

            for part in range(1, parts):
                loadtest_generate_part.delay(load_test.pk, part, parts)
            ctx.log(f"Fanned out to {parts} generators starting together.")
        probe = EndpointProbe(load_test)
        writer = StageWriter(load_test, probe, parts)
        state = {"previous": None, "stop": ""}

        def on_event(event: dict[str, Any]) -> str:
            kind = event.get("event")
            if kind == "started":
                ctx.log(f"Generator started (pid {event.get('pid')}).")
                writer.start_stage(0)
            elif kind == "tick" and not state["stop"]:
                writer.tick(event)
            elif kind == "stage":
                if state["stop"]:
                    # Find-max already stopped: the next stage had begun sending; its
                    # partial figures stay as the ticks left them, not a measured stage.
                    return ""
                rows = wait_for_parts(load_test, int(event["stage"]), parts, ctx.heartbeat)
                if len(rows) < parts - 1:
                    ctx.log(
                        f"Stage {int(event['stage']) + 1}: {parts - 1 - len(rows)} of the "
                        f"{parts} generators did not report (no free worker?); the stage holds "
                        "what the others measured.",
                        level="warning",
                    )
                stage = writer.finish(event, rows)
                ctx.log(
                    f"Stage {stage.position + 1}: offered {stage.offered_rps:g} req/s, achieved "
                    f"{stage.achieved_rps:g}, p50 {stage.p50_ms} ms, p99 {stage.p99_ms} ms, "
                    f"{stage.error_count} errors"
                    + (" (cut short)" if event.get("partial") else "")
                    + ("" if stage.on_schedule else " (the generator fell behind schedule)")
                    + "."
                )
                if find_max:
                    reason = recommend.find_max_should_stop(
                        stage_dict(stage), state["previous"], config["slo"]
                    )
                    state["previous"] = stage_dict(stage)
                    if reason:
                        state["stop"] = reason
                        LoadTest.objects.filter(pk=load_test.pk).update(stop_requested=True)
                        ctx.log(f"Find-max stops: {reason.replace('_', ' ')}.")
                        return reason
            return ""

        planned = sum(stage["duration_s"] for stage in config["stages"])
        try:
            done = run_generator(
                generator_spec(load_test, parts=parts),
                on_event=on_event,
                heartbeat=ctx.heartbeat,
                deadline_s=planned
                + FANOUT_LEAD_SECONDS
                + DEADLINE_SLACK_SECONDS
                + REQUEST_TIMEOUT_SECONDS,
            )
        finally:
            if parts > 1:
                LoadTest.objects.filter(pk=load_test.pk).update(stop_requested=True)
        ctx.log(f"Generator done ({done.get('reason')}), {done.get('cpu_s', 0):.2f} CPU s.")
        return {
            "reason": done.get("reason"),
            "stopped_because": state["stop"] or done.get("reason"),
            "stages_measured": len(writer.finished),
            "generator_cpu_s": done.get("cpu_s"),
            "generator_pid": done.get("pid"),
        }

    def step_analyse(self, ctx: RunContext) -> dict[str, Any]:
        from deployments.choices import Backend

        load_test = LoadTest.objects.select_related("endpoint").get(pk=ctx.subject.pk)
        config = load_test.config
        stages = list(load_test.stages.filter(finished=True).order_by("position"))
        note = ""
        if load_test.endpoint.backend == Backend.SAGEMAKER:
            note = cloudwatch_stage_figures(load_test, stages)
        measured = [stage_dict(s) for s in stages]
        find_max = config["pattern"]["kind"] == Pattern.FIND_MAX
        instances = (
            load_test.endpoint.initial_instance_count
            if load_test.endpoint.backend == Backend.SAGEMAKER
            else 1
        )
        recommendation = recommend.recommend(
            measured,
            slo=config["slo"],
            safety_factor=float(config.get("safety_factor", 0.5)),
            instances=instances,
            peak_rps=config.get("peak_rps"),
        )
        verdict = recommend.verdict(measured, slo=config["slo"], find_max=find_max)
        generated = ctx.results.get("generate", {})
        result = {
            "recommendation": recommendation,
            "slo": config["slo"],
            "stopped_because": generated.get("stopped_because"),
            "stages_measured": len(measured),
            "generator_on_schedule": all(s.on_schedule for s in stages),
            "metrics_note": note,
            "rules": {
                "held": f"achieved ≥ {recommend.HELD_RATIO:.0%} of offered and the SLO met",
                "find_max_stop": (
                    f"SLO broken, achieved < {recommend.THROUGHPUT_RATIO:.0%} of offered, or "
                    f"not {recommend.RISE_RATIO - 1:.0%} above the previous stage"
                ),
            },
        }
        LoadTest.objects.filter(pk=load_test.pk).update(result=result, verdict=verdict)
        if recommendation:
            ctx.log(
                f"Max sustainable rate {recommendation['max_sustainable_rps']:g} req/s "
                f"({recommendation['max_sustainable_rps_per_instance']:g} per instance): target "
                f"{recommendation['target_invocations_per_instance']} invocations per instance "
                f"per minute at safety factor {recommendation['safety_factor']:g}."
            )
            if recommendation["lower_bound"]:
                ctx.log(
                    "Every stage up to the highest rate offered held: the endpoint may hold "
                    "more, so this rate is a lower bound. Test again with a higher maximum "
                    "rate to find its limit.",
                    level="warning",
                )
        else:
            ctx.log("No stage held the SLO: no recommendation.", level="warning")
        return {"verdict": verdict, "recommendation": bool(recommendation)}

    # Hooks ------------------------------------------------------------------------------

    def on_claim(self, run: Run, subject: LoadTest, *, resumed: bool, done: list[str]) -> None:
        load_test = _locked(subject.pk)
        if load_test.state in FINISHED_LOADTEST_STATES:
            raise RunLost()
        if load_test.state == State.PENDING:
            set_state(
                load_test,
                State.RUNNING,
                changes={"started_at": timezone.now()},
                data={"attempt": run.attempts},
            )

    def on_succeed(self, run: Run, subject: LoadTest, *, results: dict[str, Any]) -> None:
        load_test = _locked(subject.pk)
        if load_test.state != State.RUNNING:
            raise RunLost()
        set_state(load_test, State.SUCCEEDED, data={"verdict": load_test.verdict})

    def on_fail(
        self, run: Run, subject: LoadTest, *, step: str, error: str, actor=None, source: str = ""
    ) -> None:
        load_test = _locked(subject.pk)
        if load_test.state in FINISHED_LOADTEST_STATES:
            return
        load_test.error = error
        set_state(
            load_test,
            State.FAILED,
            actor=actor,
            reason=error,
            source=source or Source.WORKER,
            fields=("error",),
            data={"step": step} if step else None,
        )

    def on_cancel(
        self, run: Run, subject: LoadTest, *, actor=None, reason: str = "", source: str = ""
    ) -> None:
        load_test = _locked(subject.pk)
        if load_test.state in FINISHED_LOADTEST_STATES:
            return
        set_state(load_test, State.CANCELLED, actor=actor, reason=reason, source=source)


# What the steps need from the endpoint --------------------------------------------------


# What the steps need from the endpoint --------------------------------------------------


def generator_target(load_test: LoadTest) -> dict[str, Any]:
    """Where the generator sends: the data plane's invocation route, or SageMaker's runtime
    (SigV4; `endpoint_url` when the portal's AWS endpoint is overridden)."""
    from deployments.choices import Backend

    endpoint = load_test.endpoint
    if endpoint.backend == Backend.SAGEMAKER:
        return {
            "kind": "sagemaker",
            "region": endpoint.region or settings.AWS_REGION,
            "endpoint": endpoint.target_name,
            "endpoint_url": settings.AWS_ENDPOINT_URL or None,
        }
    return {
        "kind": "http",
        "url": settings.BERTH_DATAPLANE_URL.rstrip("/"),
        "endpoint": endpoint.target_name,
        "unix_path": None,
        "headers": {},
    }


def warm_up(load_test: LoadTest, request: dict[str, Any]) -> dict[str, Any]:
    """One request to a target model before the load (a cold model loads on its first
    request, which is not what the stages should measure). A refusal fails the step."""
    from botocore.exceptions import BotoCoreError, ClientError

    from deployments.choices import Backend
    from portal import aws
    from portal.dataplane import runtime_client

    endpoint = load_test.endpoint
    if endpoint.backend == Backend.SAGEMAKER:
        client = aws.client("sagemaker-runtime", region_name=endpoint.region or settings.AWS_REGION)
    else:
        client = runtime_client()
    began = time.monotonic()
    try:
        client.invoke_endpoint(
            EndpointName=endpoint.target_name,
            TargetModel=request["target_model"],
            ContentType=request["content_type"],
            Body=base64.b64decode(request["body_b64"]),
        )["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise StepError(f"The warm-up request to {request['target_model']} failed: {exc}") from exc
    return {"status": 200, "ms": round((time.monotonic() - began) * 1000, 1)}


def replay_shares(load_test: LoadTest, *, minutes: int) -> dict[str, float] | None:
    """Invocations per target model over the last `minutes`, from the endpoint's metric
    source (per model where the source can tell: the local data plane; SageMaker has no
    per-model metrics, so None)."""
    from deployments.backends import backend_for
    from monitoring.sources import MetricQuery, MetricSourceError

    target = backend_for(load_test.endpoint).metric_source(load_test.endpoint)
    if not target.source.per_model:
        return None
    end = datetime.now(UTC)
    start = end - timedelta(minutes=minutes)
    models = list(load_test.config["models"])
    try:
        series = target.source.get_metric_data(
            endpoint=target.source_endpoint,
            queries=[MetricQuery("Invocations", "Sum", target_model=m) for m in models],
            start=start,
            end=end,
            period=60,
            variant=target.variant,
        )
    except MetricSourceError:
        return None
    shares = {m: float(sum(one.values)) for m, one in zip(models, series, strict=True)}
    return shares if sum(shares.values()) > 0 else None
