"""perf.middleware.DBStatsMiddleware: per-request query count and DB time, kept apart per request."""

from __future__ import annotations

import threading

import gevent
import pytest
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from perf.db import request_db_stats
from perf.middleware import DBStatsMiddleware
from tests.factories import SupplierFactory

pytestmark = pytest.mark.django_db


def view_running(queries: int, between=None):
    """A view that runs ``queries`` queries, calling ``between()`` after each one."""

    def view(request: HttpRequest) -> HttpResponse:
        for _ in range(queries):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if between is not None:
                between()
        # What code inside the request sees (e.g. a log line or the monitoring layer).
        stats = request_db_stats()
        assert stats is not None
        return HttpResponse(str(stats["queries"]))

    return view


def test_middleware_is_installed_before_sessions_and_auth():
    middleware = settings.MIDDLEWARE
    ours = middleware.index("perf.middleware.DBStatsMiddleware")
    assert ours < middleware.index("django.contrib.sessions.middleware.SessionMiddleware")
    assert ours < middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")


def test_counts_equal_the_queries_the_view_ran():
    request = RequestFactory().get("/x/")
    with CaptureQueriesContext(connection) as captured:
        response = DBStatsMiddleware(view_running(4))(request)
    assert len(captured) == 4
    assert response.content == b"4"
    stats = request_db_stats(request)
    assert stats["queries"] == len(captured)
    assert stats["time_ms"] > 0
    assert request_db_stats() is None  # the scope ended with the request


@override_settings(DB_METRICS_HEADERS=True)
def test_api_request_counts_match_captured_queries(api, org):
    SupplierFactory.create_batch(3, organization=org)
    with CaptureQueriesContext(connection) as captured:
        response = api.get(reverse("supplier-list"))
    assert response.status_code == 200
    assert len(captured) > 0
    assert int(response["X-DB-Queries"]) == len(captured)
    assert float(response["X-DB-Time-ms"]) >= 0


@override_settings(DB_METRICS_HEADERS=True)
def test_headers_when_enabled():
    response = DBStatsMiddleware(view_running(2))(RequestFactory().get("/x/"))
    assert response["X-DB-Queries"] == "2"
    assert float(response["X-DB-Time-ms"]) >= 0


@override_settings(DB_METRICS_HEADERS=False)
def test_no_headers_when_disabled():
    request = RequestFactory().get("/x/")
    response = DBStatsMiddleware(view_running(2))(request)
    assert "X-DB-Queries" not in response
    assert "X-DB-Time-ms" not in response
    assert request_db_stats(request)["queries"] == 2  # still collected for monitoring


def test_concurrent_greenlets_keep_separate_counts():
    # Each greenlet yields to the other after every query, so their requests interleave.
    def serve(queries: int) -> tuple[HttpRequest, HttpResponseBase]:
        request = RequestFactory().get("/x/")
        return request, DBStatsMiddleware(view_running(queries, between=lambda: gevent.sleep(0)))(request)

    first, second = gevent.spawn(serve, 3), gevent.spawn(serve, 5)
    gevent.joinall([first, second], raise_error=True)
    (request_a, response_a), (request_b, response_b) = first.value, second.value
    assert (response_a.content, response_b.content) == (b"3", b"5")
    assert request_db_stats(request_a)["queries"] == 3
    assert request_db_stats(request_b)["queries"] == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_keep_separate_counts():
    # Both requests are inside their scope at the same time: each thread waits for the other
    # after its first query and again before finishing.
    barrier = threading.Barrier(2, timeout=30)
    results: dict[int, tuple[HttpRequest, HttpResponseBase]] = {}
    errors: list[BaseException] = []

    def serve(queries: int) -> None:
        calls = 0

        def between() -> None:
            nonlocal calls
            calls += 1
            if calls in (1, queries - 1):
                barrier.wait()

        try:
            request = RequestFactory().get("/x/")
            results[queries] = (request, DBStatsMiddleware(view_running(queries, between))(request))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()  # give this thread's connection back to the pool

    threads = [threading.Thread(target=serve, args=(n,)) for n in (3, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results[3][1].content == b"3"
    assert results[6][1].content == b"6"
    assert request_db_stats(results[3][0])["queries"] == 3
    assert request_db_stats(results[6][0])["queries"] == 6
