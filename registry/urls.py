from django.urls import path

from . import views

app_name = "registry"

urlpatterns = [
    path("", views.model_list, name="model-list"),
    path("<str:name>/", views.model_detail, name="model-detail"),
    path("<str:name>/upload/", views.version_upload, name="version-upload"),
    path("<str:name>/v<int:version>/", views.version_detail, name="version-detail"),
    path("<str:name>/v<int:version>/status/", views.version_status, name="version-status"),
    path("<str:name>/v<int:version>/retry/", views.version_retry, name="version-retry"),
]
