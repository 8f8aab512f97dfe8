"""Django's error views (``handler400``/``403``/``404``/``500``, ``CSRF_FAILURE_VIEW``): JSON under ``/api/``.

DRF answers the errors raised inside its views in the API's shape (``emissions.api.errors``). What Django
answers itself bypasses DRF: a URL no pattern matches (``/api/v1/suppliers/abc/``: the id converter takes
digits only), a disallowed ``Host`` (400), a CSRF failure outside DRF (403), an exception no view handled
(500). Under ``API_PREFIX`` those get ``{"detail": ...}`` as JSON, like every other API error; elsewhere
(the admin, the docs pages) Django's own HTML pages.

A 500 caused by the database being out of reach is a 503 with ``Retry-After`` instead (JSON under the API, a
plain page elsewhere): the request may succeed once PostgreSQL is back. That is PostgreSQL unreachable
(``perf.postgresql.base.DatabaseUnreachable``), a pool with no free connection (``PoolTimeout``: normally
``perf.admission`` answers that first, for exceptions from views) or a connection lost mid-request.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

logger = logging.getLogger("vcci.errors")
API_PREFIX = "/api/"
UNAVAILABLE = "The database is unreachable; retry this request after the delay in Retry-After."
_UNAVAILABLE_PAGE = "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1><p>{}</p>"


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def json_error(status: int, detail: str) -> HttpResponse:
    """``{"detail": detail}`` with ``status``, never cached."""
    response = HttpResponse(json.dumps({"detail": detail}), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) means PostgreSQL could not be reached in time."""
    import psycopg
    from psycopg_pool import PoolTimeout

    from perf.postgresql.base import DatabaseUnreachable

    return any(
        isinstance(link, DatabaseUnreachable | PoolTimeout)
        # A connection that died under the request: lost (no SQLSTATE), a connection exception (class 08), or
        # the server shutting down or starting (57P01-57P03).
        or (isinstance(link, psycopg.OperationalError) and _connection_lost(getattr(link, "sqlstate", None)))
        for link in exception_chain(exc)
    )


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def _connection_lost(sqlstate: str | None) -> bool:
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


def unavailable(request: HttpRequest) -> HttpResponse:
    """503 with ``Retry-After``: JSON for the API, a plain page elsewhere."""
    if is_api(request):
        response = json_error(503, UNAVAILABLE)
    else:
        response = HttpResponse(_UNAVAILABLE_PAGE.format(UNAVAILABLE), status=503, content_type="text/html")
        response["Cache-Control"] = "no-store"
    response["Retry-After"] = str(settings.ADMISSION_RETRY_AFTER)
    # One line, not Django's error log with a traceback per request: during an outage every request fails alike
    # (and the pool logs each failed connection attempt).
    logger.warning("503 database unavailable: %s %s", request.method, request.path)
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return json_error(400, "Bad request.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return json_error(403, "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return json_error(404, "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception (django.core.handlers.exception), so it is sys.exc_info()'s.
    if database_unavailable(sys.exc_info()[1]):
        return unavailable(request)
    if is_api(request):
        return json_error(500, "A server error occurred.")
    return defaults.server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "", **kwargs: Any) -> HttpResponse:
    """CSRF_FAILURE_VIEW. DRF's own views check CSRF themselves (session authentication) and answer in JSON."""
    if is_api(request):
        return json_error(403, f"CSRF Failed: {reason}" if reason else "CSRF Failed.")
    return django_csrf_failure(request, reason=reason, **kwargs)
