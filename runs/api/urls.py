from django.urls import path

from . import views

app_name = "runs-api"

urlpatterns = [path("runs/<int:pk>/log/", views.RunLogView.as_view(), name="run-log")]
