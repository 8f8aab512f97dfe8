"""Per-request database statistics.

``DBStatsMiddleware`` opens a ``perf.db.db_stats_scope()`` around the rest of the middleware
chain and the view, so the slow-query execute wrapper (installed on every connection, see
``perf.db``) adds each query's count and time to this request. Place it early in ``MIDDLEWARE``
so that queries made by later middleware (sessions, authentication) are counted too.

The numbers are attached to the request (``perf.db.request_db_stats(request)``) and, when
``settings.DB_METRICS_HEADERS`` is on, returned as ``X-DB-Queries`` / ``X-DB-Time-ms``
response headers. Queries run while a streaming response is consumed happen after the view
returned and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from perf.db import db_stats_scope


class DBStatsMiddleware:
    """Count the queries and DB time of each request; optionally report them in response headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with db_stats_scope() as stats:
            # Kept on the request for monitoring code that runs outside this middleware.
            request.db_stats = stats  # type: ignore[attr-defined]
            response = self.get_response(request)
        if getattr(settings, "DB_METRICS_HEADERS", False):
            response["X-DB-Queries"] = str(stats.queries)
            response["X-DB-Time-ms"] = f"{stats.time_ms:.1f}"
        return response
