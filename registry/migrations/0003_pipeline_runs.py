"""The pipeline runs on the engine: each version's progress log, attempts and heartbeat move
to a run of the plan of its current step (runs.Run, RunStep, RunLogLine). A version a worker
was on, or that waited for its next step, gets a pending run (with its attempts), which its
queued message or else the engine's sweep carries out."""

from django.db import migrations
from django.utils.dateparse import parse_datetime

PLANS = {
    "validate": "registry.plans.ValidatePlan",
    "test": "registry.plans.TestPlan",
    "package": "registry.plans.PackagePlan",
}
# status -> (step whose run holds the log, run state, step state)
BY_STATUS = {
    "registered": ("validate", "pending", "pending"),
    "validating": ("validate", "pending", "pending"),
    "invalid": ("validate", "succeeded", "done"),
    "validated": ("test", "pending", "pending"),
    "testing": ("test", "pending", "pending"),
    "test_failed": ("test", "succeeded", "done"),
    "tested": ("test", "succeeded", "done"),
    "packaging": ("package", "pending", "pending"),
    "packaged": ("package", "succeeded", "done"),
}
LABELS = {"validate": "Validate", "test": "Test on Triton", "package": "Package"}


def forward(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ModelVersion = apps.get_model("registry", "ModelVersion")
    Run = apps.get_model("runs", "Run")
    RunStep = apps.get_model("runs", "RunStep")
    RunLogLine = apps.get_model("runs", "RunLogLine")
    versions = ModelVersion.objects.exclude(progress_log=[]) | ModelVersion.objects.filter(
        status__in=["registered", "validating", "validated", "testing", "packaging"]
    )
    if not versions.exists():
        return
    content_type, _ = ContentType.objects.get_or_create(app_label="registry", model="modelversion")
    for version in versions.distinct().order_by("id").iterator():
        step, run_state, step_state = BY_STATUS.get(
            version.status, ("validate", "failed", "failed")
        )
        active = run_state == "pending"
        run = Run.objects.create(
            content_type=content_type,
            object_id=version.pk,
            plan=PLANS[step],
            state=run_state,
            heartbeat_at=version.heartbeat_at,
            attempts=version.attempts if active else 0,
            created_at=version.status_changed_at,
            started_at=version.status_changed_at,
            finished_at=None if active else version.status_changed_at,
        )
        RunStep.objects.create(run=run, position=0, name=step, label=LABELS[step], state=step_state)
        RunLogLine.objects.bulk_create(
            RunLogLine(
                run=run,
                created_at=parse_datetime(line.get("at") or "") or version.status_changed_at,
                step=str(line.get("step") or "")[:64],
                message=str(line.get("message") or ""),
            )
            for line in (version.progress_log or [])
            if isinstance(line, dict)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("registry", "0002_tags_gin_index"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
        migrations.RemoveField(model_name="modelversion", name="progress_log"),
        migrations.RemoveField(model_name="modelversion", name="attempts"),
        migrations.RemoveField(model_name="modelversion", name="heartbeat_at"),
    ]
