from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import views
from .api import api_not_found

api_v1 = [
    path("", include("registry.api.urls")),
    path("", include("deployments.api.urls")),
    path("", include("monitoring.api.urls")),
    path("", include("runs.api.urls")),
    path("", include("loadtests.api.urls")),
    # Anything else under the API answers the API's JSON 404, not the portal's HTML page.
    # Only addresses ending in '/', so APPEND_SLASH still redirects `models` to `models/`.
    # (`[\s\S]`, not `.`: a name with a newline in it is still an API address.)
    re_path(r"^(?:[\s\S]*/)?$", api_not_found),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", views.token_list, name="token-list"),
    path("account/tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    path("healthz", views.healthz, name="healthz"),
    path("models/", include("registry.urls")),
    path("", include("deployments.urls")),
    path("dashboards/", include("monitoring.urls")),
    path("loadtests/", include("loadtests.urls")),
    path("runs/", include("runs.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
