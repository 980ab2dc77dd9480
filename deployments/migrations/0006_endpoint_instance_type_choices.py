"""An endpoint's GPU instance type is one of AWS's multi-model endpoint types plus those an
admin adds in settings: the choices are a callable, so changing the setting needs no
migration. Rows holding a type AWS refuses for multi-model endpoints stay as they are; a
deployment to them stops before it creates anything and says which types are allowed."""

from django.db import migrations, models

import deployments.choices


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0005_environment_loadtest_bounds"),
    ]

    operations = [
        migrations.AlterField(
            model_name="endpoint",
            name="instance_type",
            field=models.CharField(
                blank=True,
                choices=deployments.choices.gpu_instance_types,
                default="ml.g4dn.xlarge",
                max_length=32,
            ),
        ),
    ]
