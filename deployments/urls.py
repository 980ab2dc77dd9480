from django.urls import path

from . import views

app_name = "deployments"

urlpatterns = [
    path("endpoints/", views.endpoint_list, name="endpoint-list"),
    path("endpoints/new/", views.endpoint_create, name="endpoint-create"),
    path("endpoints/<str:name>/", views.endpoint_detail, name="endpoint-detail"),
    path("endpoints/<str:name>/rollback/", views.endpoint_rollback, name="endpoint-rollback"),
    path(
        "endpoints/<str:name>/test-request/",
        views.endpoint_test_request,
        name="endpoint-test-request",
    ),
    path("deployments/", views.deployment_list, name="deployment-list"),
    path("deployments/new/", views.wizard_start, name="wizard-start"),
    path("deployments/new/<int:step>/", views.wizard, name="wizard"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/progress/", views.deployment_progress, name="deployment-progress"),
    path("approvals/", views.promotion_list, name="promotion-list"),
    path("approvals/new/", views.promotion_create, name="promotion-create"),
    path("approvals/<int:pk>/", views.promotion_detail, name="promotion-detail"),
    path("approvals/<int:pk>/approve/", views.promotion_approve, name="promotion-approve"),
    path("approvals/<int:pk>/reject/", views.promotion_reject, name="promotion-reject"),
]
