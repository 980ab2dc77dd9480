from django.urls import path

from . import views

app_name = "runs-api"

urlpatterns = [
    path("runs/<int:pk>/log/", views.RunLogView.as_view(), name="run-log"),
    path("runs/<int:pk>/cancel/", views.RunCancelView.as_view(), name="run-cancel"),
]
