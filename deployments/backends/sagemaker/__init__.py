"""The Amazon SageMaker multi-model endpoint backend (boto3).

A multi-model endpoint is one SageMaker model in `Mode: MultiModel` on the Triton serving
image, whose `ModelDataUrl` is an S3 prefix; every `<model>_<version>.tar.gz` under the
prefix is a target model clients name with `TargetModel`. The first deployment to an
endpoint creates the model, the endpoint configuration (GPU instance type and count) and the
endpoint, waits for InService, and registers target-tracking autoscaling on
`SageMakerVariantInvocationsPerInstance`; later deployments upload, and roll out a changed
image, role, prefix, instance type or count as a new model and endpoint configuration
through `UpdateEndpoint` with the endpoint's deployment guardrails (`guardrails`). A
preflight checks the role and image before SageMaker is asked for a model (`preflight`);
`pricing` says what an endpoint costs by the hour.
https://docs.aws.amazon.com/sagemaker/latest/dg/multi-model-endpoints.html
https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-policy.html

SageMaker has no alias for a target model: the live pointer is Berth's record of which
version clients should name, shown in the portal and the API."""

from .backend import (
    IN_SERVICE_TIMEOUT_SECONDS,
    NOT_FOUND_RETRIES,
    NOT_FOUND_RETRY_SECONDS,
    POLL_SECONDS,
    SCALABLE_DIMENSION,
    SETTLING_STATES,
    SageMakerBackend,
)
from .calls import (
    COLD_LOAD_FIRST_WAIT_SECONDS,
    COLD_LOAD_MAX_WAIT_SECONDS,
    COLD_LOAD_SECONDS,
    invoke_when_loaded,
)
from .rules import (
    DERIVED_SUFFIX_MAX,
    SAGEMAKER_ENDPOINT_NAME_MAX,
    SAGEMAKER_NAME_MAX,
    TRITON_IMAGE_VERSION,
    UnknownImageRegion,
    derived_name_problems,
    instance_type_problems,
    model_package_group_name,
    split_s3_uri,
    triton_image_uri,
)

__all__ = [
    "COLD_LOAD_FIRST_WAIT_SECONDS",
    "COLD_LOAD_MAX_WAIT_SECONDS",
    "COLD_LOAD_SECONDS",
    "DERIVED_SUFFIX_MAX",
    "IN_SERVICE_TIMEOUT_SECONDS",
    "NOT_FOUND_RETRIES",
    "NOT_FOUND_RETRY_SECONDS",
    "POLL_SECONDS",
    "SAGEMAKER_ENDPOINT_NAME_MAX",
    "SAGEMAKER_NAME_MAX",
    "SCALABLE_DIMENSION",
    "SETTLING_STATES",
    "TRITON_IMAGE_VERSION",
    "SageMakerBackend",
    "UnknownImageRegion",
    "derived_name_problems",
    "instance_type_problems",
    "invoke_when_loaded",
    "model_package_group_name",
    "split_s3_uri",
    "triton_image_uri",
]
