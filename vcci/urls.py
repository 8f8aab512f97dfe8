"""VCCI URL configuration: admin, REST API v1 and its OpenAPI schema, metrics and health endpoints."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from perf.health import healthz, readyz
from perf.metrics import metrics_view

urlpatterns = [
    # The API first: resolution tries the patterns in order, and API requests are the many.
    path("api/v1/", include("emissions.api.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    # Operations: Prometheus scrape (allowlist or token, perf.metrics), liveness and readiness (no auth).
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
