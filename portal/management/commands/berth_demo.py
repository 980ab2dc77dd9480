"""Load Berth's demo data: three users (one per role) and the demo ensemble registered with
its lineage, plus a second version fine-tuned from the first. Safe to run again: what
exists is left as it is."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from portal.choices import Source

DEMO_MODEL = "demo_ensemble"
DEMO_REPOSITORY = "https://github.com/berth-demo/iris-ensemble"
DEMO_DATASET = "s3://berth-demo-datasets/iris/v3/iris.csv"
TRAINING_JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/"

# name -> (password, group, superuser). Demo passwords: change them on any shared machine.
DEMO_USERS: dict[str, tuple[str, str, bool]] = {
    "scientist": ("scientist-demo", "data scientist", False),
    "approver": ("approver-demo", "approver", False),
    "admin": ("admin-demo", "admin", True),
}

# Portal endpoint -> environment; scripts/run starts data plane endpoints of the same names.
DEMO_ENDPOINTS = {"local-staging": "staging", "local-production": "production"}

# The fine-tuned version nudges the classifier's weights; its test cases are recomputed
# from the same math, so both versions pass their own tests.
FINE_TUNE_DELTA = np.array(
    [[0.05, -0.02, -0.03], [-0.04, 0.03, 0.01], [0.02, -0.05, 0.03], [0.01, 0.02, -0.03]],
    dtype=np.float32,
)


def _dataset_hash(version: str) -> str:
    return "sha256:" + hashlib.sha256(f"{DEMO_DATASET}#{version}".encode()).hexdigest()


def demo_lineage(number: int) -> dict:
    """Lineage of demo version `number` (1: trained from scratch, 2: fine-tuned from 1)."""
    if number == 1:
        return {
            "source_repository": DEMO_REPOSITORY,
            "source_commit": "4f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a",
            "dataset_uri": DEMO_DATASET,
            "dataset_version": _dataset_hash("v3"),
            "training_job": TRAINING_JOB_ARN + "iris-ensemble-2026-11-20",
            "metrics": {"accuracy": 0.953, "f1_macro": 0.951, "log_loss": 0.142},
            "frameworks": ["onnx", "python"],
            "tags": ["demo", "iris", "tabular"],
        }
    return {
        "source_repository": DEMO_REPOSITORY,
        "source_commit": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",
        "dataset_uri": DEMO_DATASET.replace("/v3/", "/v4/"),
        "dataset_version": _dataset_hash("v4"),
        "training_job": TRAINING_JOB_ARN + "iris-ensemble-ft-2026-11-22",
        "metrics": {"accuracy": 0.967, "f1_macro": 0.966, "log_loss": 0.118},
        "frameworks": ["onnx", "python"],
        "tags": ["demo", "iris", "tabular", "fine-tuned"],
    }


def build_fine_tuned_archive(dest_file: Path) -> Path:
    """The demo repository with fine-tuned classifier weights and matching test cases."""
    from toolkit import examples

    weights = examples.DEMO_WEIGHTS + FINE_TUNE_DELTA
    bias = examples.DEMO_BIAS
    with tempfile.TemporaryDirectory(prefix="berth-demo-ft-") as tmp:
        repo = examples.write_demo_repository(Path(tmp) / "repo")
        (repo / "demo_classifier" / "1" / "model.onnx").write_bytes(
            examples.classifier_onnx_bytes(weights, bias)
        )
        cases = []
        for case in examples.demo_test_cases():
            spec = case["inputs"]["RAW"]
            raw = np.array(spec["data"], dtype=np.float32).reshape(spec["shape"])
            features = (raw - examples.DEMO_MEAN) / examples.DEMO_STD
            expected = examples.classify(features, weights, bias)
            case["expected"]["PROBABILITIES"]["data"] = [
                round(float(v), 6) for v in expected.ravel()
            ]
            cases.append(case)
        examples.write_berth_yaml(repo, DEMO_MODEL, cases)
        return examples.pack_repository(repo, dest_file)


class Command(BaseCommand):
    help = "Create the demo users and register the demo ensemble (idempotent)."

    def handle(self, *args, **options):
        users = self.ensure_users()
        versions = self.ensure_model(owner=users["scientist"])
        self.ensure_endpoints(actor=users["admin"])
        lines = ["", "  Demo logins (user / password):"]
        for name, (password, group, _) in DEMO_USERS.items():
            lines.append(f"    {name:<10} / {password:<16} ({group})")
        lines.append("")
        lines.append("  Demo model: " + ", ".join(f"{v} [{v.status}]" for v in versions))
        self.stdout.write("\n".join(lines))

    def ensure_users(self) -> dict:
        User = get_user_model()
        users = {}
        with transaction.atomic():
            for name, (password, group_name, superuser) in DEMO_USERS.items():
                # The groups come from a migration; get_or_create keeps the demo working
                # on a database where they were removed.
                group, _ = Group.objects.get_or_create(name=group_name)
                user = User.objects.filter(username=name).first()
                if user is None:
                    user = User(username=name, email=f"{name}@berth.example")
                    user.set_password(password)
                    user.is_staff = superuser or group_name == "approver"
                    user.is_superuser = superuser
                    user.save()
                user.groups.add(group)
                users[name] = user
        return users

    def ensure_model(self, *, owner) -> list:
        from registry import services
        from registry.models import ModelVersion, RegisteredModel
        from toolkit.examples import build_demo_archive

        model = RegisteredModel.objects.filter(name=DEMO_MODEL).first()
        if model is None:
            model = services.model_create(
                actor=owner,
                name=DEMO_MODEL,
                description=(
                    "Iris-like classifier: a Python step standardizes the four measurements, "
                    "an ONNX model (Gemm + Softmax) gives the class probabilities."
                ),
                tags=["demo", "ensemble"],
                source=Source.ADMIN,
            )
        existing = {v.version: v for v in ModelVersion.objects.filter(model=model)}
        with tempfile.TemporaryDirectory(prefix="berth-demo-") as tmp:
            if 1 not in existing:
                archive = build_demo_archive(Path(tmp) / "demo_ensemble.tar.gz")
                existing[1] = services.version_register(
                    actor=owner,
                    model=model,
                    archive=archive,
                    lineage=demo_lineage(1),
                    source=Source.ADMIN,
                )
            if 2 not in existing:
                archive = build_fine_tuned_archive(Path(tmp) / "demo_ensemble_ft.tar.gz")
                existing[2] = services.version_register(
                    actor=owner,
                    model=model,
                    archive=archive,
                    lineage={**demo_lineage(2), "parent": f"{DEMO_MODEL}:1"},
                    source=Source.ADMIN,
                )
        return [existing[number] for number in sorted(existing)]

    def ensure_endpoints(self, *, actor) -> None:
        """The portal's endpoints for the two endpoints scripts/run starts in the local data
        plane, when the deployments migrations did not create them."""
        from deployments import services
        from deployments.choices import Backend
        from deployments.models import Endpoint, Environment

        for name, environment_name in DEMO_ENDPOINTS.items():
            if Endpoint.objects.filter(name=name).exists():
                continue
            environment = Environment.objects.filter(name=environment_name).first()
            if environment is None:
                continue
            services.endpoint_create(
                actor=actor,
                name=name,
                environment=environment,
                backend=Backend.LOCAL,
                target_name=name,
                description=f"The local data plane's {name} endpoint (started by scripts/run).",
                source=Source.ADMIN,
            )
