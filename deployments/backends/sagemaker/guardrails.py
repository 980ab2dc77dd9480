"""Deployment guardrails for a change of a SageMaker multi-model endpoint: how UpdateEndpoint
shifts traffic from the old fleet to the new one, how long each step bakes, and which
CloudWatch alarms roll it back.

What SageMaker supports here, from AWS's guide: blue/green updates with all-at-once, canary
or linear traffic shifting, a baking period per step, a wait before the old fleet ends, an
execution timeout and auto-rollback on alarms. Its exclusions (Marketplace containers, Inf1
instances; for rolling deployments serverless and multi-variant endpoints) name none of what
a Triton multi-model endpoint on GPU instances uses, and the new configuration keeps the
variant's name, as blue/green requires.
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails.html
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html

Not offered: rolling deployments (RollingUpdatePolicy). SageMaker allows them for a
single-variant endpoint, but each batch must be 5-50% of the instances, so an endpoint of one
instance (the usual start) cannot roll at all, and every batch meets an empty model cache
while the fleet serves at reduced capacity. On any update the new fleet starts with no target
model loaded: each one cold-loads on its first invocation there
(https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoints.html), so alarms on
latency see those loads; alarms on errors are the safer guardrail."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployments.models import Endpoint

GUARDRAILS_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails.html"
EXCLUSIONS_DOC = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html"
)
# TrafficRoutingConfig: a canary is at most 50% of the variant's instances, a linear step
# 10-50%. https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html
CANARY_MAX_PERCENT = 50
LINEAR_MIN_PERCENT = 10
LINEAR_MAX_PERCENT = 50
NOT_OFFERED = (
    "Rolling deployments are not offered: each batch must be 5-50% of the instances, so a "
    "one-instance endpoint cannot roll, and every batch starts with no model loaded."
)
COLD_CACHE_NOTE = (
    "The new fleet starts with no model loaded: each target model cold-loads on its first "
    "invocation there, so alarms on latency see those loads."
)


def _step_key(endpoint: Endpoint) -> str | None:
    return {"CANARY": "CanarySize", "LINEAR": "LinearStepSize"}.get(endpoint.rollout_traffic)


def rollout_problems(endpoint: Endpoint) -> dict[str, str]:
    """Why SageMaker would refuse the endpoint's rollout settings, per field (the first
    reason of each); empty when it would take them. Clears a step size all-at-once does not
    use. Alarm names are checked against CloudWatch separately (`missing_alarms`)."""
    problems: dict[str, str] = {}
    if _step_key(endpoint) is None:
        endpoint.rollout_step_size = None
    else:
        size, fleet = endpoint.rollout_step_size, endpoint.initial_instance_count or 1
        canary = endpoint.rollout_traffic == "CANARY"
        low, high = (1, CANARY_MAX_PERCENT) if canary else (LINEAR_MIN_PERCENT, LINEAR_MAX_PERCENT)
        what = "A canary" if canary else "A linear step"
        if not size:
            problems["rollout_step_size"] = f"{what} needs a size."
        elif endpoint.rollout_step_type == "CAPACITY_PERCENT" and not low <= size <= high:
            problems["rollout_step_size"] = f"{what} is {low}-{high}% of the fleet."
        elif endpoint.rollout_step_type == "INSTANCE_COUNT" and not (
            size * 100 <= high * fleet and size * 100 >= low * fleet
        ):
            problems["rollout_step_size"] = (
                f"{what} is {low}-{high}% of the endpoint's {fleet} instance(s): {size} is not. "
                "Give it in percent, or change the instance count."
            )
    timeout = endpoint.rollout_timeout_seconds
    waited = waiting_seconds(endpoint)
    if timeout and "rollout_step_size" not in problems and timeout <= waited:
        problems["rollout_timeout_seconds"] = (
            f"The update waits {waited} s in all (baking and the old fleet's wait); its "
            "timeout must be longer."
        )
    return problems


def traffic_steps(endpoint: Endpoint) -> int:
    """How many traffic shifts the update makes (each followed by a baking period)."""
    size = endpoint.rollout_step_size or 0
    if endpoint.rollout_traffic == "CANARY":
        return 2
    if endpoint.rollout_traffic == "LINEAR" and size:
        whole = (
            100
            if endpoint.rollout_step_type == "CAPACITY_PERCENT"
            else (endpoint.initial_instance_count or 1)
        )
        return math.ceil(whole / size)
    return 1


def waiting_seconds(endpoint: Endpoint) -> int:
    return (
        traffic_steps(endpoint) * endpoint.rollout_wait_seconds
        + endpoint.rollout_termination_wait_seconds
    )


def deployment_config(endpoint: Endpoint) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig for the endpoint's settings, as botocore's service
    model wants it. All at once with no wait is what SageMaker does without one; it is sent
    anyway, so what the portal shows is what was asked for."""
    routing: dict[str, Any] = {
        "Type": endpoint.rollout_traffic,
        "WaitIntervalInSeconds": endpoint.rollout_wait_seconds,
    }
    key = _step_key(endpoint)
    if key:
        routing[key] = {"Type": endpoint.rollout_step_type, "Value": endpoint.rollout_step_size}
    policy: dict[str, Any] = {
        "TrafficRoutingConfiguration": routing,
        "TerminationWaitInSeconds": endpoint.rollout_termination_wait_seconds,
    }
    if endpoint.rollout_timeout_seconds:
        policy["MaximumExecutionTimeoutInSeconds"] = endpoint.rollout_timeout_seconds
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if endpoint.rollback_alarms:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": name} for name in endpoint.rollback_alarms]
        }
    return config


def describe_rollout(endpoint: Endpoint) -> str:
    """The guardrail policy in words, as the wizard, the endpoint page and the API show it."""
    unit = "%" if endpoint.rollout_step_type == "CAPACITY_PERCENT" else " instance(s)"
    bake = endpoint.rollout_wait_seconds
    if endpoint.rollout_traffic == "CANARY":
        shift = f"canary of {endpoint.rollout_step_size}{unit}, baked {bake} s, then the rest"
    elif endpoint.rollout_traffic == "LINEAR":
        shift = (
            f"linear steps of {endpoint.rollout_step_size}{unit} "
            f"({traffic_steps(endpoint)} steps), each baked {bake} s"
        )
    else:
        shift = f"all traffic at once, baked {bake} s"
    parts = [f"Blue/green: {shift}"]
    if endpoint.rollout_termination_wait_seconds:
        parts.append(f"old fleet kept {endpoint.rollout_termination_wait_seconds} s more")
    if endpoint.rollout_timeout_seconds:
        parts.append(f"timeout {endpoint.rollout_timeout_seconds} s")
    parts.append(
        "rolled back if " + " or ".join(endpoint.rollback_alarms) + " goes to ALARM"
        if endpoint.rollback_alarms
        else "no auto-rollback alarms"
    )
    return "; ".join(parts) + "."


def missing_alarms(cloudwatch, names: Iterable[str]) -> list[str]:
    """The names CloudWatch has no alarm for (metric or composite), in the client's region;
    DescribeAlarms page after page."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found: set[str] = set()
    pages = cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNames=wanted, AlarmTypes=["MetricAlarm", "CompositeAlarm"]
    )
    for page in pages:
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            found.add(alarm["AlarmName"])
    return [name for name in wanted if name not in found]
