"""perf.db: pool sizing and statistics, statement normalization, the slow-query execute wrapper."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from perf import db
from perf.db import (
    POOL_STAT_KEYS,
    PoolConfigError,
    db_stats_scope,
    install_execute_wrapper,
    normalize_sql,
    pool_options,
    pool_size_for,
    pool_stats,
    refresh_statistics,
    request_db_stats,
    slow_query_counts,
    slow_query_wrapper,
    worker_concurrency,
)
from tests.factories import OrganizationFactory


@pytest.fixture(autouse=True)
def _empty_slow_query_table():
    db.reset_slow_query_counts()
    yield
    db.reset_slow_query_counts()


# -- pool sizing (pure) -------------------------------------------------------------------------


def test_pool_size_splits_the_budget_between_workers():
    # (100 - 10) // 4 = 22 per worker; 4 x 22 = 88 <= 90.
    assert pool_size_for(workers=4, worker_connections=100, max_connections=100, reserve=10) == 22


def test_pool_size_is_clamped_to_the_worker_concurrency():
    # The budget would allow 45 each, but a worker never runs more than 8 requests at once.
    assert pool_size_for(workers=2, worker_connections=8, max_connections=100, reserve=10) == 8


@pytest.mark.parametrize(
    ("workers", "max_connections", "reserve"),
    [(4, 100, 97), (8, 10, 3), (1, 10, 10)],
)
def test_pool_size_refuses_less_than_one_connection_per_worker(workers, max_connections, reserve):
    with pytest.raises(PoolConfigError, match="fewer than one per worker"):
        pool_size_for(workers=workers, worker_connections=100, max_connections=max_connections, reserve=reserve)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 0}, "GUNICORN_WORKERS"),
        ({"worker_connections": 0}, "GUNICORN_WORKER_CONNECTIONS"),
        ({"reserve": -1}, "DB_RESERVED_CONNECTIONS"),
    ],
)
def test_pool_size_refuses_nonsense_inputs(kwargs, field):
    args = {"workers": 2, "worker_connections": 100, "max_connections": 100, "reserve": 10, **kwargs}
    with pytest.raises(PoolConfigError, match=field):
        pool_size_for(**args)


def test_workers_times_pool_max_stays_within_the_budget():
    for workers in range(1, 30):
        for reserve in (0, 3, 10, 20):
            size = pool_size_for(workers=workers, worker_connections=1000, max_connections=100, reserve=reserve)
            assert size >= 1
            assert workers * size <= 100 - reserve
            assert workers * (size + 1) > 100 - reserve  # the largest such size


def test_worker_concurrency_by_worker_class():
    assert worker_concurrency("gevent", 100) == 100
    assert worker_concurrency("sync", 100) == 1
    assert worker_concurrency("gthread", 100, threads=8) == 8
    assert worker_concurrency("sync", 100, threads=4) == 4  # gunicorn runs gthread then
    assert worker_concurrency("gthread", 100) == 1
    assert worker_concurrency("gunicorn.workers.ggevent.GeventWorker", 100) == 100
    assert worker_concurrency("gunicorn.workers.gthread.ThreadWorker", 100, threads=8) == 8
    with pytest.raises(PoolConfigError, match="GUNICORN_WORKER_CONNECTIONS"):
        worker_concurrency("gevent", 0)
    with pytest.raises(PoolConfigError, match="GUNICORN_THREADS must be at least 1; got 0"):
        worker_concurrency("gthread", 100, threads=0)


def test_pool_options_defaults():
    options = pool_options(workers=2, worker_connections=100, max_connections=100, reserve=10)
    assert options == {"min_size": 2, "max_size": 45, "timeout": 10.0, "reconnect_timeout": 1.0, "name": "vcci"}


def test_pool_options_accepts_an_explicit_size_within_the_budget():
    options = pool_options(
        workers=2, worker_connections=100, max_connections=100, reserve=10, min_size=0, max_size=10, timeout=2.5
    )
    assert (options["min_size"], options["max_size"], options["timeout"]) == (0, 10, 2.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_size": 46}, "DB_POOL_MAX_SIZE=46 is too large"),
        ({"max_size": 0}, "DB_POOL_MAX_SIZE must be at least 1"),
        ({"max_size": 5, "min_size": 6}, "DB_POOL_MIN_SIZE must be between 0 and DB_POOL_MAX_SIZE"),
        ({"min_size": -1}, "DB_POOL_MIN_SIZE"),
        ({"timeout": 0}, "DB_POOL_TIMEOUT"),
    ],
)
def test_pool_options_refuses_impossible_combinations(kwargs, message):
    with pytest.raises(PoolConfigError, match=message):
        pool_options(workers=2, worker_connections=100, max_connections=100, reserve=10, **kwargs)


# -- the pool on PostgreSQL ---------------------------------------------------------------------


def test_settings_configure_the_pool():
    database = settings.DATABASES["default"]
    pool = database["OPTIONS"]["pool"]
    assert pool["max_size"] >= pool["min_size"] >= 0
    assert pool["timeout"] > 0
    assert database["CONN_MAX_AGE"] == 0  # Django refuses persistent connections with a pool
    # statement_timeout is still sent (direct connection, not PgBouncer).
    assert "statement_timeout" in database["OPTIONS"]["options"]


@pytest.mark.django_db
def test_connection_comes_from_the_pool_and_reaches_the_test_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), current_setting('statement_timeout')")
        database, timeout = cursor.fetchone()
    assert connection.pool is not None
    assert connection.connection._pool is connection.pool  # the live connection was checked out of it
    # The pool was built after pytest-django switched NAME to the test database.
    assert database == settings.DATABASES["default"]["NAME"]
    assert database.startswith("test_")
    assert timeout != "0"


@pytest.mark.django_db
def test_pool_stats_report_every_documented_key():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    stats = pool_stats()
    assert tuple(stats) == POOL_STAT_KEYS
    assert all(isinstance(value, int) for value in stats.values())
    assert stats["pool_max"] == settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    assert stats["pool_min"] == settings.DATABASES["default"]["OPTIONS"]["pool"]["min_size"]
    assert stats["requests_num"] >= 1  # at least this test's connection was requested
    assert 0 <= stats["pool_available"] <= stats["pool_size"] <= stats["pool_max"]


def test_pool_stats_are_empty_without_a_pool(monkeypatch):
    class Unpooled:  # what DatabaseWrapper.pool is with pooling off (or PgBouncer mode)
        pool = None

    monkeypatch.setattr("django.db.connections", {"default": Unpooled()})
    assert pool_stats() == {}


# -- statement normalization --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        ("SELECT pg_sleep(0.25)", "SELECT pg_sleep(?)"),
        ("SELECT  *\n  FROM t\tWHERE a = 'x''y' AND b = -1.5e3", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ('SELECT "t"."id" FROM "t" WHERE "t"."org_id" = %s', 'SELECT "t"."id" FROM "t" WHERE "t"."org_id" = ?'),
        ("SELECT 1 FROM t WHERE id IN (%s, %s, %s)", "SELECT ? FROM t WHERE id IN (?, ...)"),
        ("SELECT 1 FROM t WHERE id IN (4, 5)", "SELECT ? FROM t WHERE id IN (?, ...)"),
        ("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s), (%s, %s)", "INSERT INTO t (a, b) VALUES (?, ...), ..."),
        ("SELECT 1 -- who\n/* trace=abc */ FROM t WHERE x = %(name)s", "SELECT ? FROM t WHERE x = ?"),
        ("SELECT E'\\n', $1, $$body$$", "SELECT ?, ?, ?"),
    ],
)
def test_normalize_sql(sql, normalized):
    assert normalize_sql(sql) == normalized


def test_statements_differing_only_in_values_share_a_fingerprint():
    a = normalize_sql("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'a'")
    b = normalize_sql("SELECT * FROM t WHERE id IN (7, 8) AND name = 'bb'")
    assert a == b
    assert db.fingerprint(a) == db.fingerprint(b)


def test_very_long_statements_are_cut():
    sql = "INSERT INTO t (a) VALUES " + ", ".join(["(%s)"] * 10_000)
    normalized = normalize_sql(sql)
    assert normalized.startswith("INSERT INTO t (a) VALUES (?)")
    assert normalized.endswith(" ...")
    assert len(normalized) < db.MAX_NORMALIZED_INPUT


# -- the slow-query wrapper ---------------------------------------------------------------------


@pytest.mark.django_db
def test_wrapper_is_installed_on_the_connection():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.execute_wrappers.count(slow_query_wrapper) == 1
    install_execute_wrapper(connection=connection)  # idempotent on reconnects
    assert connection.execute_wrappers.count(slow_query_wrapper) == 1


def test_wrapper_survives_a_connection_opened_inside_an_execute_wrapper_block():
    class FakeConnection:
        execute_wrappers: list

    def theirs(execute, sql, params, many, context):
        return execute(sql, params, many, context)

    fake = FakeConnection()
    fake.execute_wrappers = [theirs]  # a block is open when the connection is created
    install_execute_wrapper(connection=fake)
    fake.execute_wrappers.pop()  # what connection.execute_wrapper() does on exit
    assert fake.execute_wrappers == [slow_query_wrapper]


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=200)
def test_slow_query_is_logged_normalized_and_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="vcci.slow_query"), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.25)")
        cursor.execute("SELECT pg_sleep(%s)", [0.25])
    records = [r for r in caplog.records if r.name == "vcci.slow_query"]
    assert len(records) == 2
    for record in records:
        assert record.statement == "SELECT pg_sleep(?)"
        assert record.duration_ms >= 250  # pg_sleep's duration is a lower bound
        assert "SELECT pg_sleep(?)" in record.getMessage()
    counts = slow_query_counts()
    assert list(counts) == [db.fingerprint("SELECT pg_sleep(?)")]
    entry = counts[db.fingerprint("SELECT pg_sleep(?)")]
    assert entry["statement"] == "SELECT pg_sleep(?)"
    assert entry["count"] == 2
    assert entry["max_ms"] >= 250
    assert entry["total_ms"] >= 500


class FakeClock:
    """A ``time.perf_counter`` stand-in: each query takes exactly ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += self.step
        return self.now


@pytest.mark.parametrize(("seconds", "logged"), [(0.199, False), (0.2, True), (0.5, True)])
@override_settings(SLOW_QUERY_MS=200)
def test_threshold(monkeypatch, caplog, seconds, logged):
    monkeypatch.setattr(db.time, "perf_counter", FakeClock(seconds))
    with caplog.at_level(logging.WARNING, logger="vcci.slow_query"):
        result = slow_query_wrapper(lambda *args: "rows", "SELECT 1 WHERE a = %s", [1], False, {})
    assert result == "rows"
    assert bool([r for r in caplog.records if r.name == "vcci.slow_query"]) is logged
    assert bool(slow_query_counts()) is logged


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=200)
def test_fast_query_is_not_logged(monkeypatch, caplog):
    # The real query runs; only the clock is fixed, so the assertion does not depend on machine speed.
    monkeypatch.setattr(db.time, "perf_counter", FakeClock(0.001))
    with caplog.at_level(logging.WARNING, logger="vcci.slow_query"), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert [r for r in caplog.records if r.name == "vcci.slow_query"] == []
    assert slow_query_counts() == {}


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=200)
def test_failed_query_is_still_timed(monkeypatch, caplog):
    monkeypatch.setattr(db.time, "perf_counter", FakeClock(1.0))
    with (
        caplog.at_level(logging.WARNING, logger="vcci.slow_query"),
        db_stats_scope() as stats,
        pytest.raises(ZeroDivisionError),
    ):
        slow_query_wrapper(lambda *args: 1 / 0, "SELECT 1/0", None, False, {})
    assert stats.queries == 1
    assert [r.statement for r in caplog.records if r.name == "vcci.slow_query"] == ["SELECT ?/?"]


def test_tracked_statements_are_bounded(monkeypatch):
    monkeypatch.setattr(db, "MAX_TRACKED_STATEMENTS", 2)
    for table in ("a", "b", "c", "d"):
        db._record_slow_query(f"SELECT * FROM {table}", 300.0)
    counts = slow_query_counts()
    assert len(counts) == 3
    assert counts[db.OVERFLOW_KEY]["count"] == 2


# -- per-scope stats ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_scope_counts_queries_and_time():
    assert request_db_stats() is None
    with db_stats_scope() as stats, connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute("SELECT 1")
        assert request_db_stats() == stats.as_dict()
    assert stats.queries == 3
    assert stats.time_ms > 0
    assert request_db_stats() is None


@pytest.mark.django_db
def test_scopes_nest():
    with db_stats_scope() as outer, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        with db_stats_scope() as inner:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 1")
        cursor.execute("SELECT 1")
    assert (outer.queries, inner.queries) == (2, 2)


# -- planner statistics after bulk loads --------------------------------------------------------


def _reltuples(table: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_refresh_statistics_analyzes_inside_a_transaction():
    OrganizationFactory.create_batch(3)
    # Inside the test's transaction VACUUM is impossible: ANALYZE runs instead, and says so.
    assert refresh_statistics(["emissions_organization"], vacuum=True) == "ANALYZE"
    assert _reltuples("emissions_organization") == 3


@pytest.mark.django_db(transaction=True)
def test_refresh_statistics_vacuums_outside_a_transaction():
    OrganizationFactory.create_batch(2)
    assert refresh_statistics(["emissions_organization"], vacuum=True) == "VACUUM (ANALYZE)"
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples, relallvisible > 0 FROM pg_class WHERE relname = 'emissions_organization'")
        assert cursor.fetchone() == (2, True)  # the visibility map is set: index-only scans can skip the heap


@pytest.mark.django_db
def test_refresh_statistics_does_nothing_on_other_databases(monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(connection, "vendor", "mysql")
    with django_assert_num_queries(0):
        assert refresh_statistics(["emissions_organization"], vacuum=True) is None


@override_settings(SLOW_QUERY_MS=200)
def test_slow_query_listeners_get_the_duration_and_a_failing_one_never_fails_the_query(monkeypatch, caplog):
    heard: list[float] = []

    def failing(seconds: float) -> None:
        raise RuntimeError("listener down")

    monkeypatch.setattr(db, "SLOW_QUERY_LISTENERS", [heard.append, failing])
    monkeypatch.setattr(db.time, "perf_counter", FakeClock(1.5))
    with caplog.at_level(logging.WARNING, logger="vcci.slow_query"):
        result = slow_query_wrapper(lambda *args: "rows", "SELECT 2", None, False, {})
    assert result == "rows"
    assert heard == [1.5]
    assert "could not record a slow query" in [r.getMessage() for r in caplog.records]
