"""The local data plane backend: place the package in the endpoint's model store, make sure
the gateway knows the endpoint, warm the model, smoke-test it through the invocation API
(with boto3's sagemaker-runtime client, exactly as clients call it), then switch the
gateway's alias for the model (the live pointer) to the new package."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from toolkit.codec import case_request

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

# Loading an ensemble into Triton takes seconds on a CPU; large GPU models take longer.
LOAD_TIMEOUT_SECONDS = 600
ADMIN_TIMEOUT_SECONDS = 30


class GatewayError(DeploymentStepError):
    """The data plane gateway refused a request or could not be reached."""


class GatewayClient:
    """The data plane gateway's admin API (JSON over HTTP)."""

    def __init__(self, base_url: str | None = None, *, token: str | None = None):
        self.base_url = (base_url or settings.BERTH_DATAPLANE_URL).rstrip("/")
        token = settings.BERTH_DATAPLANE_ADMIN_TOKEN if token is None else token
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = urllib3.PoolManager(retries=False)

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        timeout: float = ADMIN_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        url = self.base_url + path
        headers = dict(self.auth)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self.http.request(
                method,
                url,
                body=json.dumps(body).encode() if body is not None else None,
                headers=headers,
                timeout=urllib3.Timeout(connect=5, read=timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise GatewayError(
                f"The data plane at {self.base_url} did not answer {method} {path}: {exc}"
            ) from exc
        try:
            data = json.loads(response.data) if response.data else {}
        except ValueError:
            data = {"message": response.data[:500].decode(errors="replace")}
        if response.status >= 400:
            reason = (
                data.get("Message")
                or data.get("message")
                or data.get("detail")
                or data.get("error")
                or data
            )
            raise GatewayError(f"{method} {path} answered {response.status}: {reason}")
        return data

    def ensure_endpoint(self, name: str, *, store: str, memory_budget_bytes: int | None) -> dict:
        body: dict[str, Any] = {"store": store}
        if memory_budget_bytes:
            body["memory_budget_bytes"] = memory_budget_bytes
        return self.request("PUT", f"/admin/endpoints/{quote(name)}", body)

    def load(self, endpoint: str, target_model: str) -> dict:
        return self.request(
            "POST",
            f"/admin/endpoints/{quote(endpoint)}/models/{quote(target_model)}/load",
            {},
            timeout=LOAD_TIMEOUT_SECONDS,
        )

    def set_alias(self, endpoint: str, model: str, target_model: str) -> dict:
        return self.request(
            "PUT",
            f"/admin/endpoints/{quote(endpoint)}/aliases/{quote(model)}",
            {"target_model": target_model},
        )

    def aliases(self, endpoint: str) -> dict:
        return self.request("GET", f"/admin/endpoints/{quote(endpoint)}/aliases")


def runtime_client(base_url: str | None = None):
    """boto3's sagemaker-runtime client pointed at the local data plane. The gateway does not
    check signatures; boto3 still wants credentials to sign with."""
    return _runtime_client((base_url or settings.BERTH_DATAPLANE_URL).rstrip("/"))


@functools.lru_cache(maxsize=8)
def _runtime_client(base_url: str):
    # Building a client loads botocore's service model (~0.1 s); a worker keeps one per
    # data plane. boto3 clients are safe to share between threads.
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=base_url,
        region_name=settings.AWS_REGION or "us-east-1",
        aws_access_key_id="berth-local",
        aws_secret_access_key="berth-local",
        config=Config(retries={"max_attempts": 1}, read_timeout=LOAD_TIMEOUT_SECONDS),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_root() -> Path:
    return Path(settings.BERTH_DATAPLANE_STORE)


def endpoint_store(endpoint: Endpoint) -> Path:
    """The folder of the data plane's model store the endpoint's packages go to: one folder
    directly under the store root, named after the endpoint's target. The target is a
    validated name already; this refuses anything else once more, after resolving links,
    because a package written elsewhere (another endpoint's folder, outside the store) is
    exactly what the approval gate exists to prevent."""
    from deployments.models import ENDPOINT_NAME_PATTERN

    name = endpoint.target_name
    if not name or not re.fullmatch(ENDPOINT_NAME_PATTERN, name):
        raise DeploymentStepError(
            f"Endpoint {endpoint.name} maps to {name!r}, which is not an endpoint name: "
            "refusing to place anything."
        )
    root = store_root().resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise DeploymentStepError(
            f"The model store folder of {endpoint.name} resolves to {folder}, outside "
            f"{root}: refusing to place anything."
        )
    return folder


def place_package(source_uri: str, expected_sha256: str, dest: Path, log=None) -> bool:
    """Put the package at `dest` atomically, with its `.sha256` sidecar. Returns False when
    the same package (same sha256) is already there. The file is fetched into a folder on the
    same filesystem and renamed into place, so the data plane never sees half a package."""
    from registry.storage import artifact_store

    sidecar = dest.with_name(dest.name + ".sha256")
    if dest.exists() and expected_sha256 and sha256_of(dest) == expected_sha256:
        if not sidecar.exists():
            _write_atomically(sidecar, f"{expected_sha256}  {dest.name}\n")
        return False
    incoming = store_root() / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=incoming) as scratch:
        fetched = Path(artifact_store().fetch(source_uri, Path(scratch) / dest.name))
        digest = sha256_of(fetched)
        if expected_sha256 and digest != expected_sha256:
            raise DeploymentStepError(
                f"The package fetched from {source_uri} has sha256 {digest}, the registry "
                f"recorded {expected_sha256}: refusing to place it."
            )
        # Sidecar first: whenever the package is visible, its checksum is too.
        _write_atomically(sidecar, f"{digest}  {dest.name}\n")
        if fetched.stat().st_dev != dest.parent.stat().st_dev:
            staged = Path(scratch) / (dest.name + ".staged")
            shutil.copyfile(fetched, staged)
            fetched = staged
        os.replace(fetched, dest)
    return True


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class LocalBackend(EndpointBackend):
    name = "local"

    def __init__(self, gateway: GatewayClient | None = None):
        self.gateway = gateway or GatewayClient()

    def plan(self, endpoint: Endpoint) -> list[Step]:
        return [
            Step("place_package", "Place the package in the endpoint's model store"),
            Step("ensure_endpoint", "Make sure the data plane serves the endpoint"),
            Step("warm", "Load the model into Triton"),
            Step("smoke_test", "Smoke-test through the invocation API"),
            Step("activate", "Point the model's alias at the new version"),
        ]

    @staticmethod
    def _names(deployment: Deployment) -> tuple[str, str]:
        return deployment.endpoint.target_name, deployment.version.package_name

    def step_place_package(self, ctx: StepContext) -> dict[str, Any]:
        version = ctx.deployment.version
        if not version.package_uri:
            raise DeploymentStepError(f"{version} has no package; deploy a packaged version.")
        dest = endpoint_store(ctx.deployment.endpoint) / version.package_name
        placed = place_package(version.package_uri, version.package_sha256, dest)
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
