"""Deployments run on the engine: each deployment's steps, claim, heartbeat, attempts and
log lines move to a run of the deployment plan (runs.Run, RunStep, RunLogLine). Log lines
keep their ids, so a client following a log with `since` goes on where it was."""

from django.core.management.color import no_style
from django.db import migrations
from django.utils.dateparse import parse_datetime

PLAN = "deployments.plans.DeploymentPlan"
RUN_STATE = {
    "pending": "pending",
    "running": "running",
    "succeeded": "succeeded",
    "superseded": "succeeded",
    "rolled_back": "succeeded",
    "failed": "failed",
}


def _when(value):
    return parse_datetime(value) if isinstance(value, str) and value else None


def _reset_sequences(schema_editor, *models):
    connection = schema_editor.connection
    for sql in connection.ops.sequence_reset_sql(no_style(), list(models)):
        schema_editor.execute(sql)


def forward(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Deployment = apps.get_model("deployments", "Deployment")
    DeploymentLog = apps.get_model("deployments", "DeploymentLog")
    Run = apps.get_model("runs", "Run")
    RunStep = apps.get_model("runs", "RunStep")
    RunLogLine = apps.get_model("runs", "RunLogLine")
    if not Deployment.objects.exists():
        return
    content_type, _ = ContentType.objects.get_or_create(app_label="deployments", model="deployment")
    for deployment in Deployment.objects.order_by("id").iterator():
        run = Run.objects.create(
            content_type=content_type,
            object_id=deployment.pk,
            plan=PLAN,
            state=RUN_STATE.get(deployment.state, "failed"),
            claimed_by=deployment.claim,
            heartbeat_at=deployment.heartbeat_at,
            attempts=deployment.attempts,
            error=deployment.error,
            created_at=deployment.created_at,
            started_at=deployment.started_at,
            finished_at=deployment.finished_at,
        )
        RunStep.objects.bulk_create(
            RunStep(
                run=run,
                position=position,
                name=step.get("name", f"step{position}"),
                label=step.get("label", ""),
                state=step.get("state", "pending"),
                started_at=_when(step.get("started_at")),
                finished_at=_when(step.get("finished_at")),
                error=step.get("error") or "",
                result=step.get("result") or {},
            )
            for position, step in enumerate(deployment.steps or [])
        )
        RunLogLine.objects.bulk_create(
            RunLogLine(
                id=line.id,
                run=run,
                created_at=line.created_at,
                level=line.level,
                step=line.step,
                message=line.message,
            )
            for line in DeploymentLog.objects.filter(deployment=deployment).order_by("id")
        )
    _reset_sequences(schema_editor, RunLogLine)


def backward(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    DeploymentLog = apps.get_model("deployments", "DeploymentLog")
    Run = apps.get_model("runs", "Run")
    RunLogLine = apps.get_model("runs", "RunLogLine")
    for run in Run.objects.filter(plan=PLAN).order_by("id"):
        deployment = Deployment.objects.filter(pk=run.object_id).first()
        if deployment is None:
            continue
        deployment.claim = run.claimed_by[:64]
        deployment.heartbeat_at = run.heartbeat_at
        deployment.attempts = run.attempts
        deployment.steps = [
            {
                key: value
                for key, value in {
                    "name": step.name,
                    "label": step.label,
                    "state": step.state,
                    "started_at": step.started_at.isoformat() if step.started_at else None,
                    "finished_at": step.finished_at.isoformat() if step.finished_at else None,
                    "error": step.error,
                    "result": step.result,
                }.items()
                if value is not None
            }
            for step in run.steps.order_by("position")
        ]
        deployment.save(update_fields=["claim", "heartbeat_at", "attempts", "steps"])
        DeploymentLog.objects.bulk_create(
            DeploymentLog(
                id=line.id,
                deployment=deployment,
                created_at=line.created_at,
                level=line.level,
                step=line.step,
                message=line.message,
            )
            for line in RunLogLine.objects.filter(run=run).order_by("id")
        )
    _reset_sequences(schema_editor, DeploymentLog)
    # Going forward again copies them anew.
    Run.objects.filter(plan=PLAN).delete()


RUN_VIEW_PERMISSIONS = ("view_run", "view_runstep", "view_runlogline")


def grant_run_permissions(apps, schema_editor):
    """Who could read deployment logs reads runs; admins may do anything with them."""
    from django.contrib.auth.management import create_permissions

    config = apps.get_app_config("runs")
    if not getattr(config, "models_module", None):
        config.models_module = True
    create_permissions(config, verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    readers = Permission.objects.filter(
        content_type__app_label="runs", codename__in=RUN_VIEW_PERMISSIONS
    )
    for group in Group.objects.filter(
        permissions__content_type__app_label="deployments",
        permissions__codename="view_deployment",
    ).distinct():
        group.permissions.add(*readers)
    admin = Group.objects.filter(name="admin").first()
    if admin is not None:
        admin.permissions.add(*Permission.objects.filter(content_type__app_label="runs"))


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("deployments", "0003_endpoint_target_allowlists"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
        migrations.RunPython(grant_run_permissions, migrations.RunPython.noop),
        migrations.RemoveField(model_name="deployment", name="attempts"),
        migrations.RemoveField(model_name="deployment", name="claim"),
        migrations.RemoveField(model_name="deployment", name="heartbeat_at"),
        migrations.RemoveField(model_name="deployment", name="steps"),
        migrations.DeleteModel(name="DeploymentLog"),
    ]
