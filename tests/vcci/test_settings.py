"""vcci/settings.py: the database pool, PgBouncer mode and slow-query settings, as driven by the environment;
which settings modules install the bench app.

Each case executes the settings file afresh under a controlled environment; the running
suite's own settings are not touched.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
from pathlib import Path
from types import ModuleType

import pytest
from django.apps import apps
from django.conf import settings as active_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

import vcci.settings
import vcci.settings_dev
from emissions.models import Supplier
from tests.factories import SupplierFactory

SETTINGS_FILE = Path(vcci.settings.__file__)
PG_URL = "postgres://vcci@db.example:5432/vcci"
ENV_KEYS = (
    "DATABASE_URL",
    "DEBUG",
    "DB_POOL",
    "DB_PGBOUNCER",
    "DB_PREPARED_STATEMENTS",
    "DB_POOL_MIN_SIZE",
    "DB_POOL_MAX_SIZE",
    "DB_POOL_TIMEOUT",
    "DB_MAX_CONNECTIONS",
    "BULK_POOL_DB_CONNECTIONS",
    "BULK_POOL_SOCKET",
    "DB_RESERVED_CONNECTIONS",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_RANDOM_PAGE_COST",
    "DB_CONN_HEALTH_CHECKS",
    "DB_CONNECT_TIMEOUT",
    "DB_POOL_RECONNECT_TIMEOUT",
    "DB_UNREACHABLE_WAIT",
    "DB_POOL_CHECK_IDLE",
    "SECURE_PROXY_SSL_HEADER",
    "GUNICORN_WORKERS",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_WORKER_CONNECTIONS",
    "GUNICORN_KEEPALIVE",
    "SLOW_QUERY_MS",
    "DB_METRICS_HEADERS",
    "THROTTLE_RATE_USER",
    "THROTTLE_RATE_ORG",
    "THROTTLE_RATE_BULK",
    "THROTTLE_RATE_ANON",
    "THROTTLE_RATE_AUTH_FAILURES",
    "NUM_PROXIES",
    "GC_FREEZE",
    "GC_THRESHOLDS",
)


@pytest.fixture
def load_settings(monkeypatch):
    def load(**env: str) -> ModuleType:
        for key in ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("SECRET_KEY", "settings-test")
        monkeypatch.setenv("DATABASE_URL", PG_URL)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        spec = importlib.util.spec_from_file_location("vcci_settings_probe", SETTINGS_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def test_default_pool_from_gunicorn_defaults(load_settings):
    database = load_settings().DATABASES["default"]
    # 2 workers, 100 greenlets each, max_connections 100, reserve 10: (100 - 10) // 2 = 45.
    assert database["OPTIONS"]["pool"] == {
        "min_size": 2,
        "max_size": 45,
        "timeout": 3.0,
        "reconnect_timeout": 1.0,
        "name": "vcci",
    }
    assert database["CONN_MAX_AGE"] == 0
    # The project's backend (fails fast while PostgreSQL is unreachable); connections checked on checkout.
    assert database["ENGINE"] == "perf.postgresql"
    assert database["CONN_HEALTH_CHECKS"] is True
    assert database["OPTIONS"]["connect_timeout"] == 2
    assert database["OPTIONS"]["options"] == "-c statement_timeout=30000 -c random_page_cost=1.1"
    assert "DISABLE_SERVER_SIDE_CURSORS" not in database


def test_pool_sized_from_the_environment(load_settings):
    database = load_settings(
        GUNICORN_WORKERS="4",
        GUNICORN_WORKER_CONNECTIONS="50",
        DB_MAX_CONNECTIONS="300",
        DB_RESERVED_CONNECTIONS="20",
        DB_POOL_TIMEOUT="3.5",
        DB_STATEMENT_TIMEOUT_MS="5000",
    ).DATABASES["default"]
    # (300 - 20) // 4 = 70, clamped to the 50 greenlets a worker runs.
    assert database["OPTIONS"]["pool"] == {
        "min_size": 2,
        "max_size": 50,
        "timeout": 3.5,
        "reconnect_timeout": 1.0,
        "name": "vcci",
    }
    assert database["OPTIONS"]["options"] == "-c statement_timeout=5000 -c random_page_cost=1.1"


def test_sync_workers_need_one_connection_each(load_settings):
    pool = load_settings(GUNICORN_WORKER_CLASS="sync").DATABASES["default"]["OPTIONS"]["pool"]
    assert (pool["min_size"], pool["max_size"]) == (1, 1)


def test_explicit_sizes(load_settings):
    pool = load_settings(DB_POOL_MIN_SIZE="0", DB_POOL_MAX_SIZE="20").DATABASES["default"]["OPTIONS"]["pool"]
    assert (pool["min_size"], pool["max_size"]) == (0, 20)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_POOL_MAX_SIZE": "46"}, "DB_POOL_MAX_SIZE=46 is too large"),
        ({"GUNICORN_WORKERS": "20", "DB_MAX_CONNECTIONS": "25"}, "fewer than one per worker"),
        ({"DB_POOL_TIMEOUT": "0"}, "DB_POOL_TIMEOUT"),
    ],
)
def test_impossible_pool_is_refused(load_settings, env, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        load_settings(**env)


def test_persistent_connections_are_refused_with_the_pool(load_settings):
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE"):
        load_settings(DATABASE_URL=PG_URL + "?conn_max_age=60")


def test_pool_can_be_switched_off(load_settings):
    database = load_settings(DB_POOL="0").DATABASES["default"]
    assert "pool" not in database["OPTIONS"]
    assert database["OPTIONS"]["options"] == "-c statement_timeout=30000 -c random_page_cost=1.1"


def test_pgbouncer_mode(load_settings):
    settings = load_settings(DB_PGBOUNCER="1")
    database = settings.DATABASES["default"]
    assert settings.DB_PGBOUNCER is True
    assert database["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert database["OPTIONS"]["prepare_threshold"] is None
    assert "pool" not in database["OPTIONS"]  # PgBouncer pools
    assert "options" not in database["OPTIONS"]  # no startup parameters PgBouncer would refuse


def test_prepared_statements_with_persistent_connections_and_not_behind_pgbouncer(load_settings):
    assert load_settings().DB_PREPARED_STATEMENTS is True  # the pool
    assert load_settings(DB_PREPARED_STATEMENTS="0").DB_PREPARED_STATEMENTS is False
    # Without the pool, a connection per request: nothing to reuse, unless connections persist (CONN_MAX_AGE).
    assert load_settings(DB_POOL="0").DB_PREPARED_STATEMENTS is False
    assert load_settings(DB_POOL="0", DATABASE_URL=f"{PG_URL}?conn_max_age=60").DB_PREPARED_STATEMENTS is True
    assert load_settings(DB_PGBOUNCER="1").DB_PREPARED_STATEMENTS is False
    # A PgBouncer that tracks prepared statements (>= 1.22): asked for. The connection's threshold stays pinned to
    # None (the prepared cursor sets its own while it executes).
    behind = load_settings(DB_PGBOUNCER="1", DB_PREPARED_STATEMENTS="1")
    assert behind.DB_PREPARED_STATEMENTS is True and behind.DATABASES["default"]["OPTIONS"]["prepare_threshold"] is None
    assert "prepare_threshold" not in load_settings().DATABASES["default"]["OPTIONS"]  # Django's default: None
    assert load_settings(DB_PGBOUNCER="1", DB_POOL="1").DB_PREPARED_STATEMENTS is False  # a small pool, not asked for


def test_sqlite_prepares_nothing(load_settings, tmp_path):
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", DB_PREPARED_STATEMENTS="1")
    assert settings.DB_PREPARED_STATEMENTS is False


def test_random_page_cost_from_the_environment(load_settings):
    options = load_settings(DB_RANDOM_PAGE_COST="4").DATABASES["default"]["OPTIONS"]["options"]
    assert options == "-c statement_timeout=30000 -c random_page_cost=4"
    options = load_settings(DB_RANDOM_PAGE_COST="1.5", DB_POOL="0").DATABASES["default"]["OPTIONS"]["options"]
    assert options == "-c statement_timeout=30000 -c random_page_cost=1.5"


@pytest.mark.parametrize("value", ["fast", "0", "-1", "nan", "inf", ""])
def test_impossible_random_page_cost_is_refused(load_settings, value):
    with pytest.raises(ImproperlyConfigured, match=f"DB_RANDOM_PAGE_COST must be a positive number.*got '{value}'"):
        load_settings(DB_RANDOM_PAGE_COST=value)


def test_pool_check_idle_from_the_environment(load_settings):
    assert load_settings().DB_POOL_CHECK_IDLE == 30.0
    assert load_settings(DB_POOL_CHECK_IDLE="0").DB_POOL_CHECK_IDLE == 0.0  # every checkout, psycopg_pool's way


def test_a_negative_pool_check_idle_is_refused(load_settings):
    with pytest.raises(ImproperlyConfigured, match=r"DB_POOL_CHECK_IDLE must be 0 or more seconds; got -1\.0"):
        load_settings(DB_POOL_CHECK_IDLE="-1")


def test_collector_thresholds_from_the_environment(load_settings):
    assert load_settings().GC_THRESHOLDS == []  # Python's own
    assert load_settings(GC_THRESHOLDS="5000").GC_THRESHOLDS == [5000]
    assert load_settings(GC_THRESHOLDS="700,10,100").GC_THRESHOLDS == [700, 10, 100]
    assert load_settings(GC_FREEZE="0").GC_FREEZE is False
    assert load_settings().GC_FREEZE is True


@pytest.mark.parametrize("value", ["fast", "0", "-5", "1.5", "700,-1", "700,10,10,10"])
def test_impossible_collector_thresholds_are_refused(load_settings, value):
    # 0 first would turn automatic collection off; a fourth value would stop every worker at boot (gc.set_threshold).
    with pytest.raises(ImproperlyConfigured, match=r"GC_THRESHOLDS=.*give 1 to 3 integers"):
        load_settings(GC_THRESHOLDS=value)


def test_pgbouncer_mode_sends_no_planner_settings(load_settings):
    # Set on the database or role instead (docs/database.md); a bad value is not even read here.
    database = load_settings(DB_PGBOUNCER="1", DB_RANDOM_PAGE_COST="1.5").DATABASES["default"]
    assert "options" not in database["OPTIONS"]


@pytest.mark.django_db
def test_connections_plan_with_the_configured_page_cost():
    # The test database connects with the settings' options: the planner sees the SSD page cost
    # (or the one DB_RANDOM_PAGE_COST asks for), not the server's 4.0 default.
    with connection.cursor() as cursor:
        cursor.execute("SHOW random_page_cost")
        assert float(cursor.fetchone()[0]) == float(os.environ.get("DB_RANDOM_PAGE_COST") or "1.1")


def test_pgbouncer_mode_with_a_small_pool(load_settings):
    database = load_settings(DB_PGBOUNCER="1", DB_POOL="1", DB_POOL_MAX_SIZE="4").DATABASES["default"]
    assert database["OPTIONS"]["pool"]["max_size"] == 4
    assert database["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_pgbouncer_mode_cannot_be_undone_by_the_url(load_settings):
    database = load_settings(DB_PGBOUNCER="1", DATABASE_URL=PG_URL + "?prepare_threshold=5").DATABASES["default"]
    assert database["OPTIONS"]["prepare_threshold"] is None


def test_sqlite_gets_no_pool(load_settings, tmp_path):
    database = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}").DATABASES["default"]
    assert "pool" not in database.get("OPTIONS", {})


def test_slow_query_settings(load_settings):
    settings = load_settings()
    assert settings.SLOW_QUERY_MS == 200
    assert settings.DB_METRICS_HEADERS is False
    assert "perf.middleware.DBStatsMiddleware" in settings.MIDDLEWARE
    settings = load_settings(SLOW_QUERY_MS="50", DEBUG="1")
    assert settings.SLOW_QUERY_MS == 50
    assert settings.DB_METRICS_HEADERS is True  # on with DEBUG
    assert load_settings(DEBUG="1", DB_METRICS_HEADERS="0").DB_METRICS_HEADERS is False


def test_the_bench_app_is_installed_by_the_dev_and_test_settings_only(load_settings):
    # Production does not deploy the benchmark tooling; the tooling's settings and the suite (which tests it) do.
    assert "bench" not in vcci.settings.INSTALLED_APPS
    assert "bench" not in load_settings().INSTALLED_APPS
    assert "bench" in vcci.settings_dev.INSTALLED_APPS
    assert "bench" in active_settings.INSTALLED_APPS and apps.is_installed("bench")


def test_the_dev_settings_are_production_s_plus_the_bench_app():
    # The benchmarks run with vcci.settings_dev: anything else that differed would be measured instead of production.
    names = {name for name in dir(vcci.settings) if name.isupper()}
    assert {name for name in dir(vcci.settings_dev) if name.isupper()} == names
    assert {name for name in names if getattr(vcci.settings_dev, name) != getattr(vcci.settings, name)} == {
        "INSTALLED_APPS"
    }
    assert [*vcci.settings.INSTALLED_APPS, "bench"] == vcci.settings_dev.INSTALLED_APPS


def _open_cursors() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors")
        return cursor.fetchone()[0]


@pytest.mark.django_db
@pytest.mark.parametrize(("pgbouncer", "server_side"), [("1", False), ("0", True)])
def test_pgbouncer_mode_keeps_iterator_off_server_side_cursors(load_settings, monkeypatch, org, pgbouncer, server_side):
    # Apply the mode's cursor setting to the live test connection and watch pg_cursors mid-iteration.
    database = load_settings(DB_PGBOUNCER=pgbouncer).DATABASES["default"]
    disabled = database.get("DISABLE_SERVER_SIDE_CURSORS", False)
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", disabled)
    SupplierFactory.create_batch(3, organization=org)
    seen = []
    for supplier in Supplier.objects.order_by("pk").iterator(chunk_size=1):
        seen.append(supplier.pk)
        if len(seen) == 1:
            assert (_open_cursors() == 1) is server_side
    assert len(seen) == 3


def test_throttle_rates_default_and_from_the_environment(load_settings):
    rest_framework = load_settings().REST_FRAMEWORK
    assert rest_framework["DEFAULT_THROTTLE_RATES"] == {
        "user": "1200/min",
        "org": "6000/min",
        "bulk": "60/min",
        "anon": "60/min",
        "auth_failures": "30/min",
    }
    assert rest_framework["NUM_PROXIES"] == 0
    configured = load_settings(THROTTLE_RATE_USER="50/s", THROTTLE_RATE_BULK="off", NUM_PROXIES="1").REST_FRAMEWORK
    assert configured["DEFAULT_THROTTLE_RATES"]["user"] == "50/s"
    assert configured["DEFAULT_THROTTLE_RATES"]["bulk"] == "off"
    assert configured["NUM_PROXIES"] == 1


def test_a_mistyped_throttle_rate_stops_the_start_naming_its_variable(load_settings):
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_RATE_ORG: A rate is"):
        load_settings(THROTTLE_RATE_ORG="100 per minute")


def test_the_keep_alive_is_gunicorns_own_default_and_value(load_settings, monkeypatch):
    """Settings read GUNICORN_KEEPALIVE only to keep Retry-After away from it (the draw and the check perf.W003): it
    must be the value gunicorn uses, default included."""
    conf = SETTINGS_FILE.with_name("gunicorn.conf.py")
    assert load_settings().GUNICORN_KEEPALIVE == runpy.run_path(str(conf))["keepalive"] == 20
    settings = load_settings(GUNICORN_KEEPALIVE="45")
    assert settings.GUNICORN_KEEPALIVE == runpy.run_path(str(conf))["keepalive"] == 45
