from django.urls import path

from . import views

app_name = "runs"

urlpatterns = [path("<int:pk>/cancel/", views.run_cancel, name="cancel")]
