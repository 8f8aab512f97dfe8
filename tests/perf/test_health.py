"""/healthz and /readyz: liveness without touching any backing service, readiness naming the service that failed."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connections
from django.test import Client, override_settings
from psycopg_pool import PoolTimeout

from perf import cache as perf_cache


class Recorder:
    """A perf.cache stats listener that keeps every cache event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def count(self, tier: str, resource: str, event: str, n: int) -> None:
        self.events.append((tier, resource, event, n))

    def observe(self, tier: str, resource: str, seconds: float) -> None:
        self.events.append((tier, resource, "seconds"))


@pytest.fixture
def cache_events(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(perf_cache, "STATS_LISTENERS", [*perf_cache.STATS_LISTENERS, recorder])
    return recorder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.django_db
def test_healthz_answers_without_database_or_cache(django_assert_num_queries, cache_events):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert cache_events.events == []


def test_healthz_needs_no_database_at_all(cache_events):
    # Without the django_db mark pytest-django makes any query an error: none is attempted.
    assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_reports_both_services_ready():
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    assert "no-cache" in response["Cache-Control"] and "max-age=0" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_unreachable():
    port = closed_port()
    unreachable = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}}
    with override_settings(CACHES=unreachable):
        started = time.perf_counter()
        response = Client().get("/readyz")
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable: ConnectionError:")
    assert str(port) in body["checks"]["redis"]
    assert elapsed < 2, elapsed


@pytest.mark.django_db
def test_readyz_names_the_database_when_its_check_times_out(monkeypatch):
    # A database that does not answer within READYZ_TIMEOUT: statement_timeout cancels the statement.
    monkeypatch.setattr("perf.health.DATABASE_CHECK_SQL", "SELECT pg_sleep(5)")
    with override_settings(READYZ_TIMEOUT=0.2):
        started = time.perf_counter()
        response = Client().get("/readyz")
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["database"].startswith("unreachable: QueryCanceled:")
    assert "statement timeout" in checks["database"]
    assert elapsed < 2, elapsed


@pytest.mark.django_db
def test_readyz_names_the_database_when_it_cannot_connect(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise OperationalError("connection refused")

    monkeypatch.setattr("perf.health.check_database", refuse)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unreachable: OperationalError: connection refused", "redis": "ok"}


@pytest.mark.django_db
def test_readyz_waits_at_most_its_timeout_for_a_pooled_connection():
    # Every connection of the pool in use: Django would wait DB_POOL_TIMEOUT (3 s); readiness fails fast.
    pool = connections["default"].pool
    pool.open()
    min_size, max_size = pool.min_size, pool.max_size
    pool.resize(min_size=1, max_size=2)  # a small pool to exhaust (idle connections beyond it are handed out first)
    held = []
    try:
        with pytest.raises(PoolTimeout):
            while len(held) < 10:
                held.append(pool.getconn(timeout=0.3))
        with override_settings(READYZ_TIMEOUT=0.2):
            started = time.perf_counter()
            response = Client().get("/readyz")
            elapsed = time.perf_counter() - started
    finally:
        for conn in held:
            pool.putconn(conn)
        pool.resize(min_size=min_size, max_size=max_size)
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable: PoolTimeout:")
    assert elapsed < 2, elapsed
