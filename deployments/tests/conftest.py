import json

import boto3
import pytest
from moto import mock_aws


@pytest.fixture(autouse=True)
def isolated_stores(settings, tmp_path):
    """Each test gets its own artifact store and data plane model store."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_DATAPLANE_STORE = str(tmp_path / "stores")
    settings.BERTH_WEBHOOK_URLS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return tmp_path


@pytest.fixture(autouse=True)
def eager_celery():
    """Unit tests run tasks in-process; the flows that matter run through a real worker in
    tests/test_deploy_flow.py."""
    from portal.celery import app

    # The app reads Django settings under the CELERY_ namespace: set the namespaced key.
    previous = app.conf.task_always_eager
    app.conf.update(CELERY_TASK_ALWAYS_EAGER=True)
    yield
    app.conf.update(CELERY_TASK_ALWAYS_EAGER=previous)


@pytest.fixture
def scientist(db):
    from .factories import user_in

    return user_in("data scientist", username="dana")


@pytest.fixture
def platform_admin(db):
    """A member of the admin group: creates and changes endpoints and environments."""
    from .factories import user_in

    return user_in("admin", username="ada", is_staff=True)


@pytest.fixture
def approver(db):
    from .factories import user_in

    return user_in("approver", username="alex")


@pytest.fixture
def second_approver(db):
    from .factories import user_in

    return user_in("approver", username="sam")


@pytest.fixture
def aws(monkeypatch, settings):
    """moto for every AWS API; a bucket for SageMaker endpoint prefixes."""
    from .factories import AWS_REGION

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    settings.AWS_REGION = AWS_REGION
    settings.AWS_ENDPOINT_URL = ""
    with mock_aws():
        boto3.client("s3", region_name=AWS_REGION).create_bucket(Bucket="berth-models")
        sagemaker_execution_role(monkeypatch)
        yield


def sagemaker_execution_role(monkeypatch, name: str = "berth-sagemaker") -> str:
    """The execution role the factories' SageMaker endpoints name, trusting SageMaker, as
    the deployment preflight reads it. moto does not implement iam:SimulatePrincipalPolicy:
    here it answers what IAM answers a principal allowed to pass the role (the refusals are
    contract tests with botocore's Stubber)."""
    from moto.iam.responses import IamResponse

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam = boto3.client("iam", region_name="us-east-1")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

    def simulate_principal_policy(self):
        from moto.core.responses import ActionResult

        action = self._get_param("ActionNames")[0]
        return ActionResult(
            {
                "EvaluationResults": [
                    {
                        "EvalActionName": action,
                        "EvalResourceName": resource,
                        "EvalDecision": "allowed",
                    }
                    for resource in self._get_param("ResourceArns")
                ],
                "IsTruncated": False,
            }
        )

    monkeypatch.setattr(
        IamResponse, "simulate_principal_policy", simulate_principal_policy, raising=False
    )
    return arn
