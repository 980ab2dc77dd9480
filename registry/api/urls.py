from django.urls import path

from . import views

app_name = "registry-api"

urlpatterns = [
    path("models/", views.ModelListCreate.as_view(), name="model-list"),
    path("models/<str:name>/", views.ModelRetrieve.as_view(), name="model-detail"),
    path(
        "models/<str:name>/versions/", views.ModelVersionListRegister.as_view(), name="version-list"
    ),
    path(
        "models/<str:name>/versions/<int:version>/",
        views.VersionRetrieve.as_view(),
        name="version-detail",
    ),
    path(
        "models/<str:name>/versions/<int:version>/retry/",
        views.VersionRetry.as_view(),
        name="version-retry",
    ),
    path("versions/", views.VersionList.as_view(), name="all-versions"),
]
