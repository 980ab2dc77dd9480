"""Who reads load tests reads deployments; who approves promotions approves load tests of
production endpoints; admins may do anything with them."""

from django.db import migrations


def grant_loadtest_permissions(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    config = apps.get_app_config("loadtests")
    if not getattr(config, "models_module", None):
        config.models_module = True
    create_permissions(config, verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    mine = Permission.objects.filter(content_type__app_label="loadtests")
    readers = mine.filter(codename__in=["view_loadtest", "view_loadteststage"])
    for group in Group.objects.filter(
        permissions__content_type__app_label="deployments",
        permissions__codename="view_deployment",
    ).distinct():
        group.permissions.add(*readers)
    for group in Group.objects.filter(
        permissions__content_type__app_label="deployments",
        permissions__codename="approve_promotionrequest",
    ).distinct():
        group.permissions.add(*mine.filter(codename="approve_loadtest"), *readers)
    admin = Group.objects.filter(name="admin").first()
    if admin is not None:
        admin.permissions.add(*mine)


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("deployments", "0005_environment_loadtest_bounds"),
        ("loadtests", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant_loadtest_permissions, migrations.RunPython.noop)]
