"""API v1 routes. Names: ``factor-list``, ``supplier-detail``, ``emission-summary``, ``calculate``, ..."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from emissions.api import views

router = DefaultRouter()
router.register("factors", views.FactorViewSet, basename="factor")
router.register("suppliers", views.SupplierViewSet, basename="supplier")
router.register("activities", views.ActivityViewSet, basename="activity")
router.register("emissions", views.EmissionViewSet, basename="emission")

urlpatterns = [
    path("calculate/", views.CalculateView.as_view(), name="calculate"),
    path("calculate/batch/", views.CalculateBatchView.as_view(), name="calculate-batch"),
    path("", include(router.urls)),
]
