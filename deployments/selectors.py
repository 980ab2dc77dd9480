"""Reads of the deployments app, shaped for their pages and API answers (no N+1 queries)."""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from monitoring.choices import Statistic
from monitoring.selectors import metric_data, metric_target
from monitoring.sources import MetricQuery, align, combine
from portal import aws, dataplane
from portal.errors import NotFound
from registry.choices import VersionStatus
from registry.models import ModelVersion, RegisteredModel, TestResult
from runs.models import RunLogLine
from runs.selectors import run_follow, run_log_since, steps_prefetch
from toolkit.codec import TensorError, case_request, decode_response, describe

from .backends.base import smoke_case
from .choices import ACTIVE_DEPLOYMENT_STATES, Backend, DeploymentState
from .models import (
    Deployment,
    Endpoint,
    Environment,
    LiveVersion,
    LiveVersionHistory,
    PromotionRequest,
)

SUCCEEDED_ONCE = (
    DeploymentState.SUCCEEDED,
    DeploymentState.SUPERSEDED,
    DeploymentState.ROLLED_BACK,
)
LINEAGE_FIELDS = [
    ("source_repository", "Source repository"),
    ("source_commit", "Commit"),
    ("dataset_uri", "Dataset"),
    ("dataset_version", "Dataset version"),
    ("training_job", "Training job"),
    ("parent", "Parent version"),
    ("frameworks", "Frameworks"),
    ("metrics", "Metrics"),
    ("tags", "Tags"),
    ("package_sha256", "Package sha256"),
]


def environment_list() -> QuerySet[Environment]:
    return Environment.objects.annotate(endpoint_count=Count("endpoints")).order_by("order", "name")


def endpoint_list(*, environment: str | None = None) -> QuerySet[Endpoint]:
    queryset = (
        Endpoint.objects.select_related("environment", "created_by")
        .annotate(
            live_count=Count("live_versions", distinct=True),
            active_count=Count(
                "deployments",
                filter=Q(deployments__state__in=ACTIVE_DEPLOYMENT_STATES),
                distinct=True,
            ),
        )
        .prefetch_related(
            Prefetch(
                "live_versions",
                queryset=LiveVersion.objects.select_related("model", "version").order_by(
                    "model__name"
                ),
            )
        )
        .order_by("environment__order", "name")
    )
    if environment:
        queryset = queryset.filter(environment__name=environment)
    return queryset


def endpoint_get(*, name: str) -> Endpoint:
    """One endpoint by name; NotFound when there is none."""
    # PostgreSQL cannot compare text with NUL in it (the query fails): no name holds one.
    endpoint = (
        None
        if "\x00" in name
        else Endpoint.objects.select_related("environment", "created_by").filter(name=name).first()
    )
    if endpoint is None:
        raise NotFound(f"No endpoint named {name}.", field="endpoint")
    return endpoint


def live_versions(*, endpoint: Endpoint) -> QuerySet[LiveVersion]:
    return (
        LiveVersion.objects.filter(endpoint=endpoint)
        .select_related("model", "version", "deployment", "deployment__created_by")
        .order_by("model__name")
    )


def live_version(*, endpoint: Endpoint, model: RegisteredModel) -> LiveVersion | None:
    return (
        LiveVersion.objects.select_related("version").filter(endpoint=endpoint, model=model).first()
    )


def live_timeline(
    *, endpoint: Endpoint, model: RegisteredModel | None = None
) -> QuerySet[LiveVersionHistory]:
    """The periods during which each version served, newest first."""
    queryset = LiveVersionHistory.objects.filter(endpoint=endpoint).select_related(
        "model", "version", "deployment", "deployment__created_by"
    )
    if model is not None:
        queryset = queryset.filter(model=model)
    return queryset.order_by("model__name", "-since", "-id")


def live_version_at(
    *, endpoint: Endpoint, at: datetime, model: RegisteredModel | None = None
) -> QuerySet[LiveVersionHistory]:
    """Which version served each model (or `model`) on the endpoint at time `at`."""
    return live_timeline(endpoint=endpoint, model=model).filter(
        Q(until__isnull=True) | Q(until__gt=at), since__lte=at
    )


def rollback_target(*, endpoint: Endpoint, model: RegisteredModel) -> ModelVersion | None:
    """The version that served before the live one (the one a rollback returns to)."""
    periods = list(
        LiveVersionHistory.objects.filter(endpoint=endpoint, model=model)
        .select_related("version__model")
        .order_by("-since", "-id")[:20]
    )
    if not periods or periods[0].until is not None:
        return None
    live_version_id = periods[0].version_id
    for period in periods[1:]:
        if period.version_id != live_version_id:
            return period.version
    return None


def deployment_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Deployment]:
    queryset = (
        Deployment.objects.select_related(
            "endpoint__environment",
            "model",
            "version",
            "previous_version",
            "created_by",
            "promotion",
        )
        .prefetch_related("runs", steps_prefetch("runs__"))
        .order_by("-created_at", "-id")
    )
    for key, value in (filters or {}).items():
        if value not in (None, ""):
            queryset = queryset.filter(**{key: value})
    return queryset


def deployment_get(*, pk: int) -> Deployment:
    """One deployment with what its page shows; NotFound when there is none."""
    deployment = (
        Deployment.objects.select_related(
            "endpoint__environment",
            "model",
            "version__model",
            "previous_version",
            "created_by",
            "promotion",
        )
        .prefetch_related("runs", steps_prefetch("runs__"))
        .filter(pk=pk)
        .first()
    )
    if deployment is None:
        raise NotFound(f"No deployment #{pk}.", field="deployment")
    return deployment


def deployment_log_since(
    *, deployment: Deployment, since: int = 0, limit: int = 500
) -> list[RunLogLine]:
    """Log lines of the deployment's run after the line with id `since` (0: from the start)."""
    return run_log_since(run=deployment.run, since=since, limit=limit)


def deployment_follow(*, deployment: Deployment, since: int = 0) -> dict[str, Any]:
    """The answer of the deployment's log API: the engine's one shape for any run's log,
    with the deployment's own state."""
    return run_follow(
        run=deployment.run,
        state=deployment.state,
        finished=deployment.state not in ACTIVE_DEPLOYMENT_STATES,
        since=since,
    )


def active_deployment(*, endpoint: Endpoint, model: RegisteredModel) -> Deployment | None:
    return (
        Deployment.objects.filter(
            endpoint=endpoint, model=model, state__in=ACTIVE_DEPLOYMENT_STATES
        )
        .order_by("-created_at")
        .first()
    )


def staging_success(*, version: ModelVersion) -> Deployment | None:
    """The latest deployment of `version` that succeeded on an endpoint needing no approval."""
    return (
        Deployment.objects.filter(
            version=version,
            state__in=SUCCEEDED_ONCE,
            endpoint__environment__requires_approval=False,
        )
        .select_related("endpoint__environment")
        .order_by("-finished_at", "-id")
        .first()
    )


def deployable_versions(*, model: RegisteredModel | None = None) -> QuerySet[ModelVersion]:
    """Versions that passed their tests (tested or packaged); only packaged ones deploy.
    Models with the newest registration first (what a person just trained), each model's
    versions together, newest first."""
    latest = (
        ModelVersion.objects.filter(model=OuterRef("model"))
        .order_by("-registered_at")
        .values("registered_at")[:1]
    )
    queryset = (
        ModelVersion.objects.filter(status__in=[VersionStatus.TESTED, VersionStatus.PACKAGED])
        .select_related("model", "registered_by", "parent__model")
        .annotate(
            tests_passed=Count("test_results", filter=Q(test_results__outcome="passed")),
            tests_total=Count("test_results"),
            model_latest=Subquery(latest),
        )
        .order_by("-model_latest", "model__name", "-version")
    )
    if model is not None:
        queryset = queryset.filter(model=model)
    return queryset


def lineage(version: ModelVersion | None) -> dict[str, Any]:
    if version is None:
        return {}
    values: dict[str, Any] = {}
    for field, _label in LINEAGE_FIELDS:
        value = getattr(version, field, None)
        if field == "parent":
            value = str(value) if value else ""
        values[field] = value
    return values


def lineage_diff(old: ModelVersion | None, new: ModelVersion) -> list[dict[str, Any]]:
    """Field by field lineage of the version that serves now and the one replacing it."""
    before, after = lineage(old), lineage(new)
    return [
        {
            "field": field,
            "label": label,
            "old": before.get(field) if old is not None else None,
            "new": after.get(field),
            "changed": old is None or before.get(field) != after.get(field),
        }
        for field, label in LINEAGE_FIELDS
    ]


def test_results(*, version: ModelVersion) -> list[TestResult]:
    return list(TestResult.objects.filter(version=version).order_by("id"))


def promotion_evidence(
    *, version: ModelVersion, staging_deployment: Deployment, target_endpoint: Endpoint
) -> dict[str, Any]:
    """What an approver needs to decide, frozen at request time."""
    results = test_results(version=version)
    live = live_version(endpoint=target_endpoint, model=version.model)
    return {
        "tests": {
            "passed": sum(1 for r in results if r.outcome == "passed"),
            "total": len(results),
            "results": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "outcome": r.outcome,
                    "duration_ms": r.duration_ms,
                    "message": r.message[:500],
                }
                for r in results
            ],
        },
        "staging_deployment": {
            "id": staging_deployment.pk,
            "endpoint": staging_deployment.endpoint.name,
            "state": staging_deployment.state,
            "finished_at": staging_deployment.finished_at.isoformat()
            if staging_deployment.finished_at
            else None,
            "smoke_test": next(
                (
                    s.get("result", {})
                    for s in staging_deployment.steps
                    if s["name"] == "smoke_test"
                ),
                {},
            ),
        },
        "staging_metrics": staging_metrics(deployment=staging_deployment),
        # No load test is recorded yet; the key keeps the evidence's shape for the page.
        "load_tests": [],
        "replaces": {"version": live.version.version if live else None},
        "lineage_diff": lineage_diff(live.version if live else None, version),
        "package": {"name": version.package_name, "sha256": version.package_sha256},
    }


# The most periods one metric query asks for: GetMetricData answers up to 100,800 datapoints
# per call; a day of minutes is plenty for a sum and a worst-period p99.
STAGING_METRIC_MAX_PERIODS = 1440


def staging_metrics(*, deployment: Deployment, now: datetime | None = None) -> dict[str, Any]:
    """How the version fared on staging since its deployment there finished: requests,
    error rate (4XX and 5XX over requests) and p99 model latency, from the staging
    endpoint's own metric source (its backend's `metric_source`). Per target model where
    the source can tell, else the whole endpoint (`scope` says which). p99 over several
    periods is the worst period's (`sources.combine`: percentiles do not recombine). A
    source that cannot answer leaves the figures empty and says why in `error`: evidence
    is still worth recording without them."""

    start = deployment.finished_at or deployment.created_at
    end = now or timezone.now()
    span = max((end - start).total_seconds(), 60.0)
    period = 60 * max(1, -(-int(span) // (60 * STAGING_METRIC_MAX_PERIODS)))
    target = metric_target(deployment.endpoint)
    model = deployment.version.package_name if target.source.per_model else ""
    queries = [
        MetricQuery("Invocations", Statistic.SUM, model),
        MetricQuery("Invocation4XXErrors", Statistic.SUM, model),
        MetricQuery("Invocation5XXErrors", Statistic.SUM, model),
        MetricQuery("ModelLatency", Statistic.P99, model),
    ]
    series, error = metric_data(
        target=target,
        queries=queries,
        start=align(start, period),
        end=align(end, period) + timedelta(seconds=period),
        period=period,
    )
    totals = [
        combine(q.stat, one.values) if one.values else None
        for q, one in zip(queries, series, strict=True)
    ]
    requests, errors_4xx, errors_5xx, p99_us = totals
    errors = (errors_4xx or 0) + (errors_5xx or 0)
    return {
        "endpoint": deployment.endpoint.name,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "scope": "target model" if model else "endpoint",
        "target_model": model,
        "requests": int(requests or 0),
        "errors": int(errors),
        "error_rate": (errors / requests) if requests else None,
        "error_rate_percent": (100 * errors / requests) if requests else None,
        "p99_ms": p99_us / 1000 if p99_us is not None else None,
        "error": error,
    }


def promotion_list(*, state: str | None = None) -> QuerySet[PromotionRequest]:
    queryset = PromotionRequest.objects.select_related(
        "version__model",
        "target_endpoint__environment",
        "staging_deployment__endpoint",
        "requested_by",
        "decided_by",
        "deployment",
    ).order_by("-requested_at", "-id")
    if state:
        queryset = queryset.filter(state=state)
    return queryset


def promotion_get(*, pk: int) -> PromotionRequest:
    """One promotion request; NotFound when there is none."""
    promotion = promotion_list().filter(pk=pk).first()
    if promotion is None:
        raise NotFound(f"No promotion request #{pk}.", field="promotion")
    return promotion


def model_get(*, name: str) -> RegisteredModel:
    """One registered model by name (what a deployment page needs of it); NotFound when
    there is none."""
    model = None if "\x00" in name else RegisteredModel.objects.filter(name=name).first()
    if model is None:
        raise NotFound(f"No registered model named {name}.", field="model")
    return model


def version_get(*, model_name: str, version: int) -> ModelVersion:
    """One version of a model; NotFound when there is none."""
    found = (
        None
        if "\x00" in model_name
        else ModelVersion.objects.select_related("model", "parent__model")
        .filter(model__name=model_name, version=version)
        .first()
    )
    if found is None:
        raise NotFound(f"{model_name} has no version {version}.", field="version")
    return found


# How to call an endpoint -------------------------------------------------------------------

# A test case's request body shown in snippets is cut here: a page is no place for a tensor
# of megabytes, and the test-request button sends the full case anyway.
SNIPPET_BODY_MAX_CHARS = 4000


def invocation_url(endpoint: Endpoint) -> str:
    """Where clients POST invocations: the data plane's public address for local endpoints
    (BERTH_DATAPLANE_PUBLIC_URL, else the address the portal itself uses), the SageMaker
    runtime's regional address otherwise."""
    if endpoint.backend == Backend.SAGEMAKER:
        region = endpoint.region or settings.AWS_REGION or "us-east-1"
        base = f"https://runtime.sagemaker.{region}.amazonaws.com"
    else:
        base = (settings.BERTH_DATAPLANE_PUBLIC_URL or settings.BERTH_DATAPLANE_URL).rstrip("/")
    return f"{base}/endpoints/{endpoint.target_name}/invocations"


def first_test_case(version: ModelVersion) -> dict[str, Any] | None:
    """The case the smoke test and the test-request button send (one rule: the smoke
    test's)."""
    return smoke_case(Deployment(version=version))


def version_inputs(version: ModelVersion) -> list[dict[str, Any]]:
    """The entry model's inputs (name, datatype, shape) as validation read them from
    config.pbtxt; from the first test case when the repository summary has none."""
    summary = version.repository_summary or {}
    entry = summary.get("entry_model")
    for model in summary.get("models") or []:
        if model.get("name") == entry and model.get("inputs"):
            return [
                {
                    "name": tensor.get("name"),
                    "datatype": tensor.get("datatype"),
                    "shape": tensor.get("dims") or tensor.get("shape"),
                    "optional": bool(tensor.get("optional")),
                }
                for tensor in model["inputs"]
            ]
    case = first_test_case(version) or {}
    return [
        {
            "name": name,
            "datatype": spec.get("datatype"),
            "shape": spec.get("shape"),
            "optional": False,
        }
        for name, spec in (case.get("inputs") or {}).items()
    ]


def call_info(*, endpoint: Endpoint, version: ModelVersion) -> dict[str, Any]:
    """What a client needs to call `version` on `endpoint`: the URL, the target model, the
    inputs and a request body (the first test case's, else one with the inputs' names)."""
    case = first_test_case(version)
    if case is not None:
        body = case_request(case)
    else:
        body = {
            "inputs": [
                {"name": i["name"], "datatype": i["datatype"], "shape": i["shape"], "data": []}
                for i in version_inputs(version)
            ]
        }
    text = json.dumps(body, separators=(",", ":"))
    return {
        "endpoint": endpoint,
        "version": version,
        "url": invocation_url(endpoint),
        "base_url": invocation_url(endpoint).rsplit("/endpoints/", 1)[0],
        "target_model": version.package_name,
        "inputs": version_inputs(version),
        "has_case": case is not None,
        "body": text if len(text) <= SNIPPET_BODY_MAX_CHARS else None,
        "body_too_long": len(text) > SNIPPET_BODY_MAX_CHARS,
        # The body quoted for a POSIX shell (inside '...') and as a Python string literal.
        "shell_body": shlex.quote(text),
        "python_body": repr(text),
        "is_sagemaker": endpoint.backend == Backend.SAGEMAKER,
        "region": endpoint.region or "",
    }


def deployed_version(*, endpoint: Endpoint, pk: int) -> ModelVersion | None:
    """The version `pk` if a deployment to `endpoint` placed it there, else None."""
    return (
        ModelVersion.objects.select_related("model")
        .filter(
            pk=pk,
            deployments__endpoint=endpoint,
            deployments__state__in=SUCCEEDED_ONCE,
        )
        .first()
    )


def send_test_request(*, endpoint: Endpoint, version: ModelVersion) -> dict[str, Any]:
    """Send `version`'s first test case to `endpoint` as a client would (the SageMaker
    runtime API, TargetModel set) and say what came back: HTTP status, latency, outputs.
    Nothing is stored: it is a probe, like a curl from the page."""
    case = first_test_case(version)
    if case is None:
        return {
            "ok": False,
            "status": None,
            "latency_ms": None,
            "error": f"{version} has no test cases to send.",
        }
    if endpoint.backend == Backend.SAGEMAKER:
        runtime = aws.sagemaker_runtime(endpoint.region or settings.AWS_REGION)
    else:
        runtime = dataplane.runtime_client()
    started = time.perf_counter()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint.target_name,
            TargetModel=version.package_name,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(case_request(case)).encode(),
        )
        raw = response["Body"].read()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return {
            "ok": False,
            "case": case.get("name"),
            "status": exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            "latency_ms": (time.perf_counter() - started) * 1000,
            "error": f"{error.get('Code', '')}: {error.get('Message', exc)}",
        }
    except BotoCoreError as exc:
        return {
            "ok": False,
            "case": case.get("name"),
            "status": None,
            "latency_ms": None,
            "error": str(exc),
        }
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        outputs = {
            name: describe(array) for name, array in decode_response(json.loads(raw)).items()
        }
    except (ValueError, TensorError, KeyError) as exc:
        return {
            "ok": False,
            "case": case.get("name"),
            "status": response["ResponseMetadata"]["HTTPStatusCode"],
            "latency_ms": latency_ms,
            "error": f"The answer is not KServe v2 JSON: {exc}; {raw[:200]!r}",
        }
    return {
        "ok": True,
        "case": case.get("name"),
        "status": response["ResponseMetadata"]["HTTPStatusCode"],
        "latency_ms": latency_ms,
        "outputs": outputs,
    }
