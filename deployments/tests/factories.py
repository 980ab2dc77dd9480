"""Factories for deployments tests: users in the right groups, packaged versions whose
package (the demo ensemble) really sits in the artifact store, endpoints."""

from __future__ import annotations

import hashlib
import json
import tempfile
from functools import cache
from pathlib import Path

import boto3
import factory
import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from deployments.choices import Backend
from deployments.models import Endpoint, Environment
from registry.choices import ArtifactSource, VersionStatus
from registry.models import ModelVersion, RegisteredModel, TestResult
from registry.storage import artifact_store
from toolkit.examples import build_demo_archive, demo_test_cases


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.org")
    password = factory.django.Password("berth-test-pw")


def user_in(group: str, **kwargs) -> object:
    """A user in one of the groups the data migration creates."""
    user = UserFactory(**kwargs)
    user.groups.add(Group.objects.get(name=group))
    return user


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel
        django_get_or_create = ("name",)

    name = "demo_ensemble"
    owner = factory.SubFactory(UserFactory)


@cache
def demo_package_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = build_demo_archive(Path(scratch) / "demo.tar.gz")
        return path.read_bytes()


def packaged_version(
    *,
    model: RegisteredModel | None = None,
    version: int | None = None,
    registered_by=None,
    test_cases: list | None = None,
    status: str = VersionStatus.PACKAGED,
    **lineage,
) -> ModelVersion:
    """A version whose package is in the artifact store, as the registry leaves it."""
    model = model or RegisteredModelFactory()
    registered_by = registered_by or model.owner
    number = version or (model.versions.count() + 1)
    data = demo_package_bytes()
    sha = hashlib.sha256(data).hexdigest()
    package_name = f"{model.name}_{number}.tar.gz"
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / package_name
        local.write_bytes(data)
        uri = artifact_store().put(local, f"packages/{model.name}/{package_name}")
    defaults = {
        "source_repository": "https://git.example.org/ml/demo",
        "source_commit": f"{number:040x}",
        "dataset_uri": "s3://datasets/iris.csv",
        "dataset_version": f"v{number}",
    }
    defaults.update(lineage)
    mv = ModelVersion.objects.create(
        model=model,
        version=number,
        status=status,
        artifact_source=ArtifactSource.UPLOAD,
        artifact_uri=uri,
        content_sha256=sha,
        size_bytes=len(data),
        registered_by=registered_by,
        test_cases=demo_test_cases() if test_cases is None else test_cases,
        package_uri=uri if status == VersionStatus.PACKAGED else "",
        package_sha256=sha if status == VersionStatus.PACKAGED else "",
        package_size_bytes=len(data) if status == VersionStatus.PACKAGED else None,
        **defaults,
    )
    for case in mv.test_cases:
        TestResult.objects.create(version=mv, name=case["name"], outcome="passed", duration_ms=3.0)
    return mv


def environment(name: str) -> Environment:
    return Environment.objects.get(name=name)


def sagemaker_endpoint(name: str = "sm-staging", env: str = "staging", **fields) -> Endpoint:
    values = {
        "environment": environment(env),
        "backend": Backend.SAGEMAKER,
        "region": "us-east-1",
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 1,
        "execution_role_arn": "arn:aws:iam::123456789012:role/berth-sagemaker",
        "s3_prefix": f"s3://berth-models/{name}/",
        "image_uri": (
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
        ),
    }
    values.update(fields)
    allow(values["environment"], s3_prefix=values["s3_prefix"], role=values["execution_role_arn"])
    return Endpoint.objects.create(name=name, **values)


def allow(env: Environment, *, s3_prefix: str = "", role: str = "") -> Environment:
    """Put a bucket and a role on an environment's allow-lists, as an admin would."""
    from deployments.models import s3_bucket_of

    bucket = s3_bucket_of(s3_prefix)
    if bucket and bucket not in env.allowed_s3_buckets:
        env.allowed_s3_buckets = [*env.allowed_s3_buckets, bucket]
    if role and role not in env.allowed_role_arns:
        env.allowed_role_arns = [*env.allowed_role_arns, role]
    env.save(update_fields=["allowed_s3_buckets", "allowed_role_arns"])
    return env


AWS_REGION = "us-east-1"


def queue_answer(case: dict, *, scale: float = 1.0) -> None:
    """What moto's sagemaker-runtime answers next. moto does not run models, it returns
    canned bodies; the smoke test still checks the answer it gets against the test case."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    outputs = [
        {
            "name": name,
            "datatype": "FP32",
            "shape": [len(spec["data"])],
            "data": (np.asarray(spec["data"]) * scale).tolist(),
        }
        for name, spec in case["expected"].items()
    ]
    sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][AWS_REGION].results_queue.append(
        (json.dumps({"outputs": outputs}), "application/json", "AllTraffic", "")
    )


def run(deployment, claim: str | None = None):
    """Execute a deployment in-process, as the worker's task does."""
    from deployments import services

    return services.deployment_execute(
        deployment_id=deployment.pk, claim=claim or f"test-{deployment.pk}"
    )


def seed_reference_data() -> None:
    """Environments, the local endpoints and the groups, as the data migration creates them:
    transactional tests (real workers) flush the database after them, this puts them back."""
    from importlib import import_module

    from django.apps import apps

    import_module("deployments.migrations.0002_environments_endpoints_groups").forwards(apps, None)
    import_module(
        "deployments.migrations.0003_endpoint_target_allowlists"
    ).grant_configure_permission(apps, None)
    import_module("deployments.migrations.0004_deployment_runs").grant_run_permissions(apps, None)


def put_alarm(name: str) -> None:
    """A CloudWatch alarm in the test region (moto), for rollback guardrails."""
    boto3.client("cloudwatch", region_name=AWS_REGION).put_metric_alarm(
        AlarmName=name,
        MetricName="Invocation5XXErrors",
        Namespace="AWS/SageMaker",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
