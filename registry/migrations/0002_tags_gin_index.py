"""A GIN index on version tags for the `tag` filter (`tags @> '["gpu"]'`) on PostgreSQL.
SQLite has no such index and filters tags by text instead (registry/filtersets.py)."""

from django.db import migrations

INDEX = "registry_version_tags_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON registry_modelversion "
            "USING gin (tags jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
