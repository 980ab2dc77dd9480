from django.urls import re_path

from . import views

app_name = "monitoring-api"

urlpatterns = [
    # Endpoint names are letters, digits and '-' (any other address is no endpoint's).
    re_path(
        r"^endpoints/(?P<name>[a-zA-Z0-9-]+)/metric-data/$",
        views.MetricDataView.as_view(),
        name="metric-data",
    ),
]
