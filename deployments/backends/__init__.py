"""Endpoint backends: how a deployment is carried out on each kind of endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployments.choices import Backend

from .base import DeploymentStepError, EndpointBackend, Step, StepContext

if TYPE_CHECKING:
    from deployments.models import Endpoint


def backend_for(endpoint: Endpoint) -> EndpointBackend:
    """The backend that executes deployments onto `endpoint`."""
    if endpoint.backend == Backend.SAGEMAKER:
        from .sagemaker import SageMakerBackend

        return SageMakerBackend()
    from .local import LocalBackend

    return LocalBackend()


__all__ = ["DeploymentStepError", "EndpointBackend", "Step", "StepContext", "backend_for"]
