from rest_framework.routers import SimpleRouter

from . import views

app_name = "deployments-api"

router = SimpleRouter()
router.register("environments", views.EnvironmentViewSet, basename="environment")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("promotions", views.PromotionRequestViewSet, basename="promotion")

urlpatterns = router.urls
