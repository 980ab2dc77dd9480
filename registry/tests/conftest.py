import pytest
from rest_framework.test import APIClient

from portal.services import token_create

from .factories import RegisteredModelFactory, UserFactory


@pytest.fixture(autouse=True)
def registry_dirs(settings, tmp_path):
    """Artifacts, uploads and scratch in this test's own folders."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.BERTH_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.BERTH_ALLOWED_SOURCE_DIRS = [str(tmp_path / "allowed")]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    (tmp_path / "allowed").mkdir()
    return tmp_path


@pytest.fixture
def user(db):
    return UserFactory(username="dana")


@pytest.fixture
def other_user(db):
    return UserFactory(username="eve")


@pytest.fixture
def model(user):
    return RegisteredModelFactory(name="iris", owner=user)


@pytest.fixture
def api(user):
    _, raw = token_create(actor=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def demo_tar(tmp_path):
    from .archives import demo_archive

    return demo_archive(tmp_path / "build" / "demo.tar.gz")


LINEAGE = {
    "source_repository": "https://git.example.com/ml/iris",
    "source_commit": "3f2c1a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39",
    "dataset_uri": "s3://datasets/iris/iris.csv",
    "dataset_version": "sha256:9b1e",
    "training_job": "https://ci.example.com/jobs/42",
    "metrics": {"accuracy": 0.97, "f1": 0.96},
    "frameworks": ["onnx", "python"],
    "tags": ["iris", "demo"],
}
