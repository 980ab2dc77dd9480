"""Environments (staging, production), the two local endpoints a fresh installation deploys
to, and the groups people are put in: data scientist, approver, admin."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ENVIRONMENTS = [
    {
        "name": "staging",
        "label": "Staging",
        "requires_approval": False,
        "order": 10,
        "description": "Deploy freely; what succeeds here may be promoted.",
    },
    {
        "name": "production",
        "label": "Production",
        "requires_approval": True,
        "order": 20,
        "description": "Deployments start from a promotion request an approver approved.",
    },
]

LOCAL_ENDPOINTS = [
    ("local-staging", "staging", "The local data plane's staging endpoint."),
    ("local-production", "production", "The local data plane's production endpoint."),
]

VIEW_ALL = [
    ("registry", "view_registeredmodel"),
    ("registry", "view_modelversion"),
    ("registry", "view_testresult"),
    ("deployments", "view_environment"),
    ("deployments", "view_endpoint"),
    ("deployments", "view_deployment"),
    ("deployments", "view_deploymentlog"),
    ("deployments", "view_liveversion"),
    ("deployments", "view_liveversionhistory"),
    ("deployments", "view_promotionrequest"),
]

GROUPS = {
    "data scientist": VIEW_ALL
    + [
        ("registry", "add_registeredmodel"),
        ("registry", "change_registeredmodel"),
        ("registry", "add_modelversion"),
        ("registry", "change_modelversion"),
        ("deployments", "add_endpoint"),
        ("deployments", "add_deployment"),
        ("deployments", "add_promotionrequest"),
    ],
    "approver": VIEW_ALL
    + [
        ("deployments", "approve_promotionrequest"),
        ("deployments", "add_deployment"),
    ],
    # Everything on the registry and deployments apps (and tokens/audit in the portal).
    "admin": None,
}


def forwards(apps, schema_editor):
    # Permissions are normally created after all migrations ran; create them now so the
    # groups can be given them in the same migrate.
    for app_label in ("portal", "registry", "deployments"):
        config = apps.get_app_config(app_label)
        if not getattr(config, "models_module", None):
            # A migration's app config stub has no models module; create_permissions
            # skips apps without one.
            config.models_module = True
        create_permissions(config, verbosity=0, apps=apps)

    Environment = apps.get_model("deployments", "Environment")
    Endpoint = apps.get_model("deployments", "Endpoint")
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    environments = {}
    for spec in ENVIRONMENTS:
        environments[spec["name"]], _ = Environment.objects.get_or_create(
            name=spec["name"], defaults=spec
        )
    for name, environment, description in LOCAL_ENDPOINTS:
        Endpoint.objects.get_or_create(
            name=name,
            defaults={
                "environment": environments[environment],
                "backend": "local",
                "dataplane_endpoint": name,
                "description": description,
                "instance_type": "",
            },
        )

    for group_name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        if perms is None:
            permissions = Permission.objects.filter(
                content_type__app_label__in=["portal", "registry", "deployments"]
            )
        else:
            # A permission of a model retired since (deployment logs, now run logs) is
            # absent when this runs again against today's models (tests reseeding).
            permissions = [
                permission
                for app, codename in perms
                for permission in Permission.objects.filter(
                    content_type__app_label=app, codename=codename
                )[:1]
            ]
        group.permissions.add(*permissions)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(GROUPS)).delete()
    apps.get_model("deployments", "Endpoint").objects.filter(
        name__in=[name for name, _, _ in LOCAL_ENDPOINTS], deployments__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0001_initial"),
        ("registry", "0001_initial"),
        ("portal", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
