import pytest
from moto import mock_aws


@pytest.fixture
def aws(monkeypatch, settings):
    """Every AWS client the portal hands out talks to moto, with throwaway credentials."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ENDPOINT_URL = ""
    with mock_aws():
        yield


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("dana", password="pw-dana-123")


@pytest.fixture
def staging(db):
    from deployments.models import Environment

    environment, _ = Environment.objects.get_or_create(
        name="staging", defaults={"label": "Staging", "order": 1}
    )
    return environment


@pytest.fixture
def sagemaker_endpoint(staging):
    from deployments.models import Endpoint

    return Endpoint.objects.create(
        name="berth-sm-staging",
        environment=staging,
        backend="sagemaker",
        region="us-east-1",
        execution_role_arn="arn:aws:iam::123456789012:role/berth",
        s3_prefix="s3://berth-models/staging/",
    )


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: a data plane that is down."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_endpoint(staging, settings, closed_port):
    from deployments.models import Endpoint

    settings.BERTH_DATAPLANE_URL = f"http://127.0.0.1:{closed_port}"
    # The deployments migration creates the local endpoints of a fresh installation.
    endpoint, _ = Endpoint.objects.update_or_create(
        name="local-staging",
        defaults={
            "environment": staging,
            "backend": "local",
            "dataplane_endpoint": "local-staging",
        },
    )
    return endpoint
