"""Ending what a SageMaker endpoint left behind: recovering an endpoint SageMaker left
`Failed`, decommissioning one no longer needed (nothing of it bills afterwards)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..base import DeploymentStepError
from .calls import _paginate

if TYPE_CHECKING:
    from deployments.models import Endpoint


class EndpointLifecycle:
    """The SageMaker backend's recovery and decommissioning (a part of SageMakerBackend)."""

    def endpoint_status(self, endpoint: Endpoint) -> dict[str, Any] | None:
        """DescribeEndpoint of the endpoint; None when SageMaker has none."""
        return self._describe_endpoint(self._client(endpoint, "sagemaker"), endpoint)

    def recover(self, endpoint: Endpoint) -> dict[str, Any]:
        """Delete an endpoint SageMaker left Failed (quota, capacity, a bad image): it never
        serves again, and every deployment would meet it. The next deployment creates it
        anew from the endpoint's settings; models and configurations stay."""
        sm = self._client(endpoint, "sagemaker")
        described = self._describe_endpoint(sm, endpoint)
        if described is None:
            raise DeploymentStepError(
                f"SageMaker has no endpoint {endpoint.target_name}: the next deployment creates it."
            )
        status = described["EndpointStatus"]
        if status != "Failed":
            raise DeploymentStepError(
                f"Endpoint {endpoint.target_name} is {status}, not Failed: nothing to recover."
            )
        # A missing role or image is a common reason it failed; deleting it would only let
        # the next deployment fail the same way.
        checks = self.preflight(endpoint)
        checks.raise_for_failures()
        self.remove_autoscaling(endpoint)
        sm.delete_endpoint(EndpointName=endpoint.target_name)
        return {
            "deleted": True,
            "status": status,
            "failure_reason": described.get("FailureReason", ""),
            "config": described.get("EndpointConfigName", ""),
            "preflight_unchecked": checks.unchecked,
        }

    def _own_names(self, endpoint: Endpoint, names: Iterator[str], base: str, marker: str):
        pattern = re.compile(rf"^{re.escape(endpoint.name)}-{marker}-[0-9a-f]{{6}}$")
        return sorted({name for name in names if name == base or pattern.match(name)})

    def decommission(self, endpoint: Endpoint) -> dict[str, Any]:
        """Delete the endpoint, every endpoint configuration and model Berth created for it,
        and its autoscaling registration: nothing of it bills any more. S3 packages and
        model packages stay (they are the record)."""
        sm = self._client(endpoint, "sagemaker")
        deleted: dict[str, Any] = {"autoscaling": self.remove_autoscaling(endpoint)}
        described = self._describe_endpoint(sm, endpoint)
        if described is not None:
            sm.delete_endpoint(EndpointName=endpoint.target_name)
        deleted["endpoint"] = endpoint.target_name if described is not None else ""
        # What it ran when deleted (autoscaling may have moved it off the configured count).
        variants = (described or {}).get("ProductionVariants") or [{}]
        deleted["instance_count"] = variants[0].get("CurrentInstanceCount")
        configs = self._own_names(
            endpoint,
            (
                c["EndpointConfigName"]
                for c in _paginate(
                    sm, "list_endpoint_configs", "EndpointConfigs", NameContains=endpoint.name
                )
            ),
            endpoint.sagemaker_config_name,
            "c",
        )
        for name in configs:
            sm.delete_endpoint_config(EndpointConfigName=name)
        models = self._own_names(
            endpoint,
            (
                m["ModelName"]
                for m in _paginate(sm, "list_models", "Models", NameContains=endpoint.name)
            ),
            endpoint.sagemaker_model_name,
            "m",
        )
        for name in models:
            sm.delete_model(ModelName=name)
        deleted.update(configs=configs, models=models)
        return deleted
