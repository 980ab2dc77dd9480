from django.urls import path

from . import views

app_name = "loadtests"

urlpatterns = [
    path("new/", views.loadtest_new, name="new"),
    path("new/preview/", views.loadtest_preview, name="preview"),
    path("<int:pk>/", views.loadtest_detail, name="detail"),
    path("<int:pk>/live/", views.loadtest_live, name="live"),
    path("<int:pk>/recommendation/", views.loadtest_recommendation, name="recommendation"),
    path("<int:pk>/cancel/", views.loadtest_cancel, name="cancel"),
    path("<int:pk>/approve/", views.loadtest_approve, name="approve"),
    path("<int:pk>/reject/", views.loadtest_reject, name="reject"),
    path("<int:pk>/apply/", views.loadtest_apply, name="apply"),
]
