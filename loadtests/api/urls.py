from rest_framework.routers import SimpleRouter

from . import views

app_name = "loadtests-api"

router = SimpleRouter()
router.register("loadtests", views.LoadTestViewSet, basename="loadtest")

urlpatterns = router.urls
