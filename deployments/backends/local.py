"""The local data plane backend: place the package in the endpoint's model store, make sure
the gateway knows the endpoint, warm the model, smoke-test it through the invocation API
(with boto3's sagemaker-runtime client, exactly as clients call it), then switch the
gateway's alias for the model (the live pointer) to the new package."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from deployments.models import ENDPOINT_NAME_PATTERN
from monitoring.sources import LocalDataPlaneSource, MetricTarget
from portal.dataplane import DataPlaneClient, DataPlaneError, runtime_client
from toolkit.archive import sha256_file
from toolkit.codec import case_request
from toolkit.store_layout import (
    StoreLayoutError,
    endpoint_folder,
    ensure_sidecar,
    incoming_folder,
    put_package,
)

from .base import (
    DeploymentStepError,
    EndpointBackend,
    Step,
    StepContext,
    check_smoke_answer,
    smoke_case,
)

if TYPE_CHECKING:
    from deployments.models import Deployment, Endpoint


def endpoint_store(endpoint: Endpoint) -> Path:
    """The folder of the data plane's model store the endpoint's packages go to, named after
    the endpoint's target. The target is a validated name already; this refuses anything
    else once more, because a package written elsewhere (another endpoint's folder, outside
    the store) is exactly what the approval gate exists to prevent."""
    name = endpoint.target_name
    if not name or not re.fullmatch(ENDPOINT_NAME_PATTERN, name):
        raise DeploymentStepError(
            f"Endpoint {endpoint.name} maps to {name!r}, which is not an endpoint name: "
            "refusing to place anything."
        )
    try:
        return endpoint_folder(settings.BERTH_DATAPLANE_STORE, name)
    except StoreLayoutError as exc:
        raise DeploymentStepError(
            f"Endpoint {endpoint.name}: {exc} Refusing to place anything."
        ) from exc


def store_package_copy(source_uri: str, expected_sha256: str, dest: Path) -> bool:
    """Copy a package from the artifact store to `dest` in a model store, with its sidecar.
    Returns False when the same package (same sha256) is already there. It is fetched into
    the store's incoming folder and renamed into place (toolkit.store_layout)."""
    from registry.storage import artifact_store

    if dest.exists() and expected_sha256 and sha256_file(dest) == expected_sha256:
        ensure_sidecar(dest, digest=expected_sha256)
        return False
    incoming = incoming_folder(settings.BERTH_DATAPLANE_STORE)
    incoming.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=incoming) as scratch:
        fetched = Path(artifact_store().fetch(source_uri, Path(scratch) / dest.name))
        digest = sha256_file(fetched)
        if expected_sha256 and digest != expected_sha256:
            raise DeploymentStepError(
                f"The package fetched from {source_uri} has sha256 {digest}, the registry "
                f"recorded {expected_sha256}: refusing to place it."
            )
        put_package(fetched, dest, digest=digest)
    return True


class LocalBackend(EndpointBackend):
    name = "local"

    def __init__(self, gateway: DataPlaneClient | None = None):
        self.gateway = gateway or DataPlaneClient()

    def plan(self, endpoint: Endpoint) -> list[Step]:
        return [
            Step("place_package", "Place the package in the endpoint's model store"),
            Step("ensure_endpoint", "Make sure the data plane serves the endpoint"),
            Step("warm", "Load the model into Triton"),
            Step("smoke_test", "Smoke-test through the invocation API"),
            Step("activate", "Point the model's alias at the new version"),
        ]

    def run_step(self, step: str, ctx: StepContext) -> dict[str, Any] | None:
        try:
            return super().run_step(step, ctx)
        except DataPlaneError as exc:
            # The client's message says what the data plane answered (or that it did not).
            raise DeploymentStepError(str(exc)) from exc

    def metric_source(self, endpoint: Endpoint) -> MetricTarget:
        """The data plane's own statistics, read through its admin API; it keeps them in
        memory for a while only, so the portal stores them as they come."""
        return MetricTarget(
            endpoint=endpoint,
            source=LocalDataPlaneSource(self.gateway.base_url),
            source_endpoint=endpoint.target_name,
        )

    @staticmethod
    def _names(deployment: Deployment) -> tuple[str, str]:
        return deployment.endpoint.target_name, deployment.version.package_name

    def step_place_package(self, ctx: StepContext) -> dict[str, Any]:
        version = ctx.deployment.version
        if not version.package_uri:
            raise DeploymentStepError(f"{version} has no package; deploy a packaged version.")
        dest = endpoint_store(ctx.deployment.endpoint) / version.package_name
        placed = store_package_copy(version.package_uri, version.package_sha256, dest)
        if not placed:
            ctx.log(f"{dest.name} is already in the model store with the same sha256.")
            return {"skipped": True, "path": str(dest)}
        ctx.log(f"Placed {dest.name} ({dest.stat().st_size} bytes) in {dest.parent}.")
        return {"path": str(dest), "sha256": version.package_sha256}

    def step_ensure_endpoint(self, ctx: StepContext) -> dict[str, Any]:
        endpoint = ctx.deployment.endpoint
        name, _ = self._names(ctx.deployment)
        store = endpoint_store(endpoint)
        store.mkdir(parents=True, exist_ok=True)
        answer = self.gateway.ensure_endpoint(
            name, store=str(store), memory_budget_bytes=endpoint.memory_budget_bytes
        )
        ctx.log(f"The data plane serves endpoint {name} from {store}.")
        return {"endpoint": name, "gateway": answer}

    def step_warm(self, ctx: StepContext) -> dict[str, Any]:
        name, target = self._names(ctx.deployment)
        ctx.heartbeat()
        answer = self.gateway.load(name, target)
        ctx.log(f"Loaded {target} on {name}: {json.dumps(answer)[:300]}")
        return {"load": answer}

    def step_smoke_test(self, ctx: StepContext) -> dict[str, Any]:
        name, target = self._names(ctx.deployment)
        case = smoke_case(ctx.deployment)
        if case is None:
            ctx.log(
                f"{ctx.deployment.version} has no test cases: the load succeeded, there is "
                "nothing to compare an answer with.",
                level="warning",
            )
            return {"skipped": True}
        try:
            response = runtime_client(self.gateway.base_url).invoke_endpoint(
                EndpointName=name,
                TargetModel=target,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(case_request(case)).encode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise DeploymentStepError(f"Invoking {target} on {name} failed: {exc}") from exc
        return check_smoke_answer(ctx, case, response["Body"].read(), target_model=target)

    def step_activate(self, ctx: StepContext) -> dict[str, Any]:
        name, target = self._names(ctx.deployment)
        model = ctx.deployment.model.name
        self.gateway.set_alias(name, model, target)
        ctx.log(f"Clients asking {name} for {model} now get {target}.")
        return {"alias": {model: target}}
