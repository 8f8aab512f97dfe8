"""API v1 routes. Names: ``factor-list``, ``supplier-detail``, ``supplier-factor-list``, ``emission-summary``,
``emission-export``, ``calculate``, ..."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from emissions.api import imports, jobs, recalculations, reports, views

router = DefaultRouter()
# Resolution tries the routes in this order: the most requested resources first.
router.register("emissions", views.EmissionViewSet, basename="emission")
router.register("activities", views.ActivityViewSet, basename="activity")
router.register("factors", views.FactorViewSet, basename="factor")
router.register("suppliers", views.SupplierViewSet, basename="supplier")
router.register("jobs", jobs.JobViewSet, basename="job")  # job-list, job-detail, job-cancel
router.register("restatements", recalculations.RestatementViewSet, basename="restatement")
router.register("reports", reports.ReportViewSet, basename="report")  # report-inventory
router.register("reports", reports.ReportTableViewSet, basename="report-table")  # report-table-esrs-e1-6, ...

# Resolution tries these in order, and every API request pays for each pattern tried before its own: the
# router's routes (the cached reads) come first, behind only the one route they would otherwise take.
urlpatterns = [
    # Before the router, whose emissions/<pk>.<format> route would otherwise take "export.csv".
    path("emissions/export.csv", views.EmissionExportView.as_view(), name="emission-export"),
    # Spliced in, not include()d: one resolver level less on every API request (same patterns, same order).
    *router.urls,
    path("calculate/", views.CalculateView.as_view(), name="calculate"),
    path("calculate/batch/", views.CalculateBatchView.as_view(), name="calculate-batch"),
    path(
        "suppliers/<int:supplier_pk>/factors/",
        views.SupplierFactorViewSet.as_view({"get": "list", "post": "create"}),
        name="supplier-factor-list",
    ),
    path(
        "suppliers/<int:supplier_pk>/factors/<int:pk>/",
        views.SupplierFactorViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="supplier-factor-detail",
    ),
    path("imports/", imports.ImportView.as_view(), name="import-list"),
    path("recalculations/", recalculations.RecalculationView.as_view(), name="recalculation-list"),
    path(
        "restatements/<int:restatement_pk>/lines/",
        recalculations.RestatementLineViewSet.as_view({"get": "list"}),
        name="restatement-line-list",
    ),
]
