"""What an endpoint maps to becomes `target_name`: stored resolved (never empty), a name
(never a path), unique per backend. Environments gain allow-lists of S3 buckets and IAM
roles. Creating and changing endpoints and environments becomes an admin's action: the
`configure_endpoint` permission, given to the admin group and taken from nobody else's.

Existing rows: an endpoint whose data-plane endpoint was empty maps to its own name. One
whose value is not a name (a path such as `../../x`), or that shares its target with another
endpoint of the same backend, is re-pointed to its own name (the endpoint whose own name is
the shared target keeps it, else the oldest); each re-pointing leaves an audit record."""

import re

import django.core.validators
from django.db import migrations, models

import deployments.models

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
PERMISSION = ("configure_endpoint", "Can create and change endpoints and environments (what they map to, allow-lists, approval)")


def fill_target_names(apps, schema_editor):
    Endpoint = apps.get_model("deployments", "Endpoint")
    AuditEvent = apps.get_model("portal", "AuditEvent")
    ContentType = apps.get_model("contenttypes", "ContentType")

    endpoints = list(Endpoint.objects.order_by("pk"))
    wanted = {}
    for endpoint in endpoints:
        value = (endpoint.dataplane_endpoint or "").strip() or endpoint.name
        wanted[endpoint.pk] = value if NAME.match(value) else endpoint.name
    owners = {}
    # The endpoint whose own name is the target keeps it; then the oldest.
    for endpoint in sorted(endpoints, key=lambda e: (wanted[e.pk] != e.name, e.pk)):
        owners.setdefault((endpoint.backend, wanted[endpoint.pk]), endpoint.pk)
    resolved = {}
    for endpoint in endpoints:
        key = (endpoint.backend, wanted[endpoint.pk])
        if owners[key] == endpoint.pk:
            resolved[endpoint.pk] = wanted[endpoint.pk]
    for endpoint in endpoints:
        if endpoint.pk in resolved:
            continue
        fallback = (endpoint.backend, endpoint.name)
        if fallback in owners and owners[fallback] != endpoint.pk:
            raise RuntimeError(
                f"Endpoint {endpoint.name} maps to {wanted[endpoint.pk]}, which another "
                f"{endpoint.backend} endpoint maps to, and its own name is taken as well: point "
                "it somewhere of its own (its dataplane_endpoint) before migrating."
            )
        owners[fallback] = endpoint.pk
        resolved[endpoint.pk] = endpoint.name

    content_type = None
    for endpoint in endpoints:
        before = endpoint.dataplane_endpoint or ""
        after = resolved[endpoint.pk]
        endpoint.target_name = after
        endpoint.save(update_fields=["target_name"])
        if before and before != after:
            if content_type is None:
                content_type, _ = ContentType.objects.get_or_create(
                    app_label="deployments", model="endpoint"
                )
            AuditEvent.objects.create(
                action="endpoint.remap",
                target_type=content_type,
                target_id=str(endpoint.pk),
                target_repr=endpoint.name[:255],
                reason=(
                    f"{before!r} is not a name or is another endpoint's target: "
                    f"{endpoint.name} now maps to its own name."
                ),
                data={"before": before, "after": after},
                source="migration",
            )


def restore_dataplane_endpoints(apps, schema_editor):
    Endpoint = apps.get_model("deployments", "Endpoint")
    Endpoint.objects.filter(backend="local").update(dataplane_endpoint=models.F("target_name"))


def grant_configure_permission(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="deployments", model="endpoint")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=PERMISSION[0], defaults={"name": PERMISSION[1]}
    )
    admin = Group.objects.filter(name="admin").first()
    if admin is not None:
        admin.permissions.add(permission)
    scientists = Group.objects.filter(name="data scientist").first()
    if scientists is not None:
        scientists.permissions.remove(
            *Permission.objects.filter(
                content_type=content_type, codename__in=["add_endpoint", "change_endpoint"]
            )
        )


def revoke_configure_permission(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(
        content_type__app_label="deployments", codename=PERMISSION[0]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0002_environments_endpoints_groups"),
        ("portal", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="target_name",
            field=models.CharField(
                blank=True,
                help_text="The data-plane endpoint (local) or SageMaker endpoint (sagemaker) "
                "this endpoint deploys to; empty: its own name. Unique per backend.",
                max_length=63,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
                        "Letters, digits and '-'; start and end with a letter or digit.",
                    )
                ],
            ),
        ),
        migrations.AddField(
            model_name="environment",
            name="allowed_role_arns",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="IAM role ARNs the SageMaker endpoints of this environment may run "
                "as. Empty: none.",
                validators=[deployments.models.validate_role_arn_list],
            ),
        ),
        migrations.AddField(
            model_name="environment",
            name="allowed_s3_buckets",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="S3 buckets the SageMaker endpoints of this environment may load "
                "packages from (their S3 prefix). Empty: none.",
                validators=[deployments.models.validate_bucket_list],
            ),
        ),
        migrations.RunPython(fill_target_names, restore_dataplane_endpoints),
        migrations.RemoveField(
            model_name="endpoint",
            name="dataplane_endpoint",
        ),
        migrations.AlterModelOptions(
            name="endpoint",
            options={
                "ordering": ["environment__order", "name"],
                "permissions": [PERMISSION],
            },
        ),
        migrations.RunPython(grant_configure_permission, revoke_configure_permission),
        migrations.AddConstraint(
            model_name="endpoint",
            constraint=models.UniqueConstraint(
                fields=("backend", "target_name"),
                name="one_endpoint_per_backend_target",
                violation_error_message="Another endpoint of this backend maps to this name.",
            ),
        ),
        migrations.AddConstraint(
            model_name="endpoint",
            constraint=models.CheckConstraint(
                condition=models.Q(("target_name__regex", "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")),
                name="endpoint_target_name_is_a_name",
                violation_error_message="What an endpoint maps to must be a name.",
            ),
        ),
    ]
