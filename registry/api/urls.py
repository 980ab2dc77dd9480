from django.urls import path, register_converter

from ..models import model_name_validator
from . import views

app_name = "registry-api"


class ModelNameConverter:
    """A registered model's name, in the alphabet names are validated with: any other
    address (a '/', a NUL) is no model's and answers the API's 404 before a query runs."""

    regex = model_name_validator.regex.pattern.removeprefix("^").removesuffix("$")

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ModelNameConverter, "model_name")

urlpatterns = [
    path("models/", views.ModelListCreate.as_view(), name="model-list"),
    path("models/<model_name:name>/", views.ModelRetrieve.as_view(), name="model-detail"),
    path(
        "models/<model_name:name>/versions/",
        views.ModelVersionListRegister.as_view(),
        name="version-list",
    ),
    path(
        "models/<model_name:name>/versions/<int:version>/",
        views.VersionRetrieve.as_view(),
        name="version-detail",
    ),
    path(
        "models/<model_name:name>/versions/<int:version>/retry/",
        views.VersionRetry.as_view(),
        name="version-retry",
    ),
    path("versions/", views.VersionList.as_view(), name="all-versions"),
    path("schemas/berth.yaml.json", views.berth_schema_document, name="berth-schema"),
]
