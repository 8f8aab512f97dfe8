"""VCCI URL configuration: admin, REST API v1 and its OpenAPI schema, metrics and health endpoints, the landing page."""

from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from emissions.admin_views import dashboard_view, report_download_view
from emissions.pages import HomeView
from perf.health import healthz, readyz
from perf.metrics import metrics_view

urlpatterns = [
    # The API first: resolution tries the patterns in order, and API requests are the many.
    path("api/v1/", include("emissions.api.urls")),
    # The admin's own pages (emissions.admin_views), before its URLs: the admin ends with a catch-all.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="dashboard"),
    path(
        "admin/reports/<slug:name>.<slug:file_format>",
        admin.site.admin_view(report_download_view),
        name="admin-report",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's start-up script from its own URL (?script), not inline: the Content-Security-Policy allows
    # scripts from this origin only (settings.CONTENT_SECURITY_POLICY).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # drf-spectacular's ReDoc page links Google Fonts' stylesheet, which loads the fonts.
    path(
        "api/redoc/",
        csp_update({"style-src": ["https://fonts.googleapis.com"], "font-src": ["https://fonts.gstatic.com"]})(
            SpectacularRedocView.as_view(url_name="schema")
        ),
        name="api-redoc",
    ),
    # Operations: Prometheus scrape (allowlist or token, perf.metrics), liveness and readiness (no auth).
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Last: a browser's first stop, the fewest requests.
    path("", HomeView.as_view(), name="home"),
]

# What Django answers itself (no pattern matched, a bad Host, an unhandled exception) is JSON under /api/, like
# every other API error; HTML elsewhere (perf.errors).
handler400 = "perf.errors.bad_request"
handler403 = "perf.errors.permission_denied"
handler404 = "perf.errors.page_not_found"
handler500 = "perf.errors.server_error"
