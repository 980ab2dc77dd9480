from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What each role may do in the registry. The groups themselves come from the deployments
# migration that creates the roles; granting the registry's share again after every migrate
# (and every test flush, which also sends post_migrate) keeps it from going missing.
REGISTRY_ROLES = {
    "data scientist": [
        "add_registeredmodel",
        "change_registeredmodel",
        "view_registeredmodel",
        "add_modelversion",
        "change_modelversion",
        "view_modelversion",
        "view_testresult",
    ],
    "approver": ["view_registeredmodel", "view_modelversion", "view_testresult"],
    "admin": None,  # everything on the registry
}


def grant_registry_roles(sender, apps=None, using="default", **kwargs) -> None:
    if apps is None:
        from django.apps import apps
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        return
    registry_permissions = Permission.objects.using(using).filter(
        content_type__app_label="registry"
    )
    for name, codenames in REGISTRY_ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        permissions = (
            registry_permissions
            if codenames is None
            else registry_permissions.filter(codename__in=codenames)
        )
        group.permissions.add(*permissions)


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        post_migrate.connect(grant_registry_roles, sender=self, dispatch_uid="registry-roles")
