from django.urls import path

app_name = "monitoring-api"

urlpatterns: list = []
