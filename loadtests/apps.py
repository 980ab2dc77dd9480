from django.apps import AppConfig


class LoadTestsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "loadtests"
    verbose_name = "Load tests"
