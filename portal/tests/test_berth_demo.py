import io
import tarfile

import numpy as np
import onnxruntime
import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.http import HttpRequest

from portal.management.commands.berth_demo import DEMO_USERS, build_fine_tuned_archive
from registry.models import ModelVersion, RegisteredModel
from toolkit import examples

pytestmark = pytest.mark.django_db


def run() -> str:
    out = io.StringIO()
    call_command("berth_demo", stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def stores(settings, tmp_path):
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.BERTH_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_demo_users_can_log_in_with_the_printed_passwords_and_have_their_roles(client):
    output = run()
    for name, (password, group, superuser) in DEMO_USERS.items():
        assert f"{name:<10} / {password}" in output
        user = get_user_model().objects.get(username=name)
        assert user.groups.filter(name=group).exists()
        assert user.is_superuser is superuser
        # django-axes throttles password logins per request: the test client passes one.
        assert client.login(request=HttpRequest(), username=name, password=password)
    approver = get_user_model().objects.get(username="approver")
    assert approver.has_perm("deployments.approve_promotionrequest")


def test_demo_model_has_two_versions_with_lineage_and_running_again_changes_nothing():
    run()
    model = RegisteredModel.objects.get(name="demo_ensemble")
    v1, v2 = model.versions.order_by("version")
    assert v1.parent is None and v2.parent == v1
    assert v1.source_commit and v1.dataset_uri.startswith("s3://") and v1.training_job
    assert v1.dataset_version.startswith("sha256:") and v1.metrics["accuracy"] > 0.9
    assert set(v1.frameworks) == {"onnx", "python"} and "fine-tuned" in v2.tags
    assert v1.content_sha256 != v2.content_sha256
    assert v1.registered_by.username == "scientist"

    password_hash = get_user_model().objects.get(username="scientist").password
    run()
    assert ModelVersion.objects.filter(model=model).count() == 2
    assert get_user_model().objects.count() == len(DEMO_USERS)
    # A second run keeps passwords someone may have changed.
    assert get_user_model().objects.get(username="scientist").password == password_hash


def test_fine_tuned_test_cases_match_the_fine_tuned_classifier(tmp_path):
    archive = build_fine_tuned_archive(tmp_path / "ft.tar.gz")
    with tarfile.open(archive) as tar:
        onnx_bytes = tar.extractfile("demo_classifier/1/model.onnx").read()
        spec = yaml.safe_load(tar.extractfile("berth.yaml"))
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    original = onnxruntime.InferenceSession(
        examples.classifier_onnx_bytes(examples.DEMO_WEIGHTS, examples.DEMO_BIAS),
        providers=["CPUExecutionProvider"],
    )
    assert spec["model"] == "demo_ensemble" and len(spec["tests"]) == 3
    for case in spec["tests"]:
        raw_spec = case["inputs"]["RAW"]
        raw = np.array(raw_spec["data"], dtype=np.float32).reshape(raw_spec["shape"])
        features = ((raw - examples.DEMO_MEAN) / examples.DEMO_STD).astype(np.float32)
        (probabilities,) = session.run(None, {"FEATURES": features})
        expected = case["expected"]["PROBABILITIES"]
        np.testing.assert_allclose(
            probabilities.ravel(), expected["data"], atol=expected["atol"], rtol=expected["rtol"]
        )
        # Fine-tuning changed the answers: the cases are not the original ones.
        (before,) = original.run(None, {"FEATURES": features})
        assert not np.allclose(before.ravel(), expected["data"], atol=1e-5)
