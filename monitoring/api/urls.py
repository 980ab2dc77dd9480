from django.urls import path

from . import views

app_name = "monitoring-api"

urlpatterns = [
    path(
        "endpoints/<str:name>/metric-data/",
        views.MetricDataView.as_view(),
        name="metric-data",
    ),
]
