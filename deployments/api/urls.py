from django.urls import path

app_name = "deployments-api"

urlpatterns: list = []
