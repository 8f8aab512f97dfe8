"""VCCI settings, read from the environment (django-environ).

With no ``DATABASE_URL`` / ``REDIS_URL`` the project runs on the embedded default
(SQLite + local-memory cache) for a quick first look; with them it uses PostgreSQL
through psycopg 3 and Redis through django-redis.
"""

import ipaddress
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from perf.db import PoolConfigError, pool_options, worker_concurrency
from perf.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local ``.env`` (written by ``make run``, never committed) supplies SECRET_KEY and friends;
# real environment variables take precedence over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)

# A development key is tolerated only with DEBUG on; production must supply one.
SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off.")
    SECRET_KEY = "vcci-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Trigram (pg_trgm) expression indexes for factor search; inert on SQLite.
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_countries",
    # Admin login lockout (django-axes): failed logins per username and address, below.
    "axes",
    # Content-Security-Policy (CONTENT_SECURITY_POLICY below); its system checks catch settings in the 3.x format.
    "csp",
    "emissions",
    "perf",
    # Prometheus: its request metrics' names and classes (written by perf.metrics' middleware below); /metrics itself
    # is perf.metrics.metrics_view.
    "django_prometheus",
]

MIDDLEWARE = [
    # First: its latency histogram then covers every other middleware, and static files served by WhiteNoise.
    "perf.metrics.HttpMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Publishes each request's query count and DB time (vcci_db_*): must wrap DBStatsMiddleware, which
    # counts until it returns.
    "perf.metrics.RequestMetricsMiddleware",
    # Refuses what exceeds capacity (503 + Retry-After) once the view is known (process_view), before any database work.
    "perf.admission.AdmissionMiddleware",
    # Per-request query count and DB time; before everything that may query (sessions, auth).
    "perf.middleware.DBStatsMiddleware",
    # Request id (X-Request-ID) and the audit context of the request's writes: no query (emissions.audit).
    "emissions.audit.AuditContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY below): django-csp's, built once.
    "perf.security.CSPMiddleware",
    # Sees the resolved view (its per-view counters and latency) and the view's exceptions.
    "perf.metrics.HttpViewMetricsMiddleware",
    # Last, as axes asks: turns a login refused for a lockout into its 429, which the metrics above then count. It
    # only reads a flag the login sets, so it costs other requests nothing.
    "axes.middleware.AxesMiddleware",
]

# Django's cookie-then-session storage, its backends made only for requests that use messages (the admin's pages).
MESSAGE_STORAGE = "perf.messages.LazyFallbackStorage"

ROOT_URLCONF = "vcci.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own templates first: its admin branding (admin/base_site.html) replaces Django's.
        "DIRS": [BASE_DIR / "vcci" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "vcci.wsgi.application"

# An empty DATABASE_URL / REDIS_URL means "not set": the embedded default is used.
DATABASES = {
    "default": environ.Env.db_url_config(env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
# PostgreSQL only: connection pool, statement timeout, PgBouncer mode. docs/database.md explains each knob.
DB_PGBOUNCER: bool = env.bool("DB_PGBOUNCER", default=False)
# PostgreSQL only: the fixed-shape hot queries (keyset pages, the token lookup) run as prepared statements
# (perf.postgresql's prepared_cursor); set below, with the pool.
DB_PREPARED_STATEMENTS: bool = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _db = DATABASES["default"]
    # Django's backend, whose pool fails fast while PostgreSQL is unreachable (perf.postgresql.base).
    _db["ENGINE"] = "perf.postgresql"
    _db_options = _db.setdefault("OPTIONS", {})
    # Seconds one connection attempt may take (libpq's connect_timeout; psycopg counts less than 2 as 2). Without
    # it an unreachable host that drops packets holds the attempt for the kernel's TCP timeout (minutes).
    _db_options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=2))
    if DB_PGBOUNCER:
        # PgBouncer in transaction mode hands each transaction to any server connection, so nothing
        # may outlive a transaction: no server-side cursors (QuerySet.iterator() opens one WITH HOLD
        # outside a transaction) and no prepared statements (psycopg prepares after prepare_threshold
        # executions; None never prepares, Django's default, set here so a URL option cannot undo it; the
        # prepared cursor of DB_PREPARED_STATEMENTS sets its own threshold, and is off by default here).
        # statement_timeout and random_page_cost are not sent as startup options (PgBouncer refuses or
        # ignores those); set them on the role or database instead: ALTER ROLE ... SET statement_timeout,
        # ALTER DATABASE ... SET random_page_cost (docs/database.md, "Planner settings").
        _db["DISABLE_SERVER_SIDE_CURSORS"] = True
        _db_options["prepare_threshold"] = None
    else:
        # Bound every statement so a runaway query cannot hold a worker forever. random_page_cost: PostgreSQL's
        # 4.0 default prices a random page read for spinning disks; on SSD / page-cached data (1.1, the usual SSD
        # value) the planner picks the covering index-only scans of the summaries, 1.5-2.7x faster when measured
        # (docs/database.md, "Planner settings", has the measurements and why VACUUM must have run).
        _random_page_cost = env.str("DB_RANDOM_PAGE_COST", default="1.1")
        try:
            if not 0 < float(_random_page_cost) < float("inf"):
                raise ValueError
        except ValueError:
            raise ImproperlyConfigured(
                f"DB_RANDOM_PAGE_COST must be a positive number (PostgreSQL's random_page_cost); "
                f"got {_random_page_cost!r}."
            ) from None
        _db_options.setdefault(
            "options",
            f"-c statement_timeout={env.int('DB_STATEMENT_TIMEOUT_MS', default=30000)}"
            f" -c random_page_cost={float(_random_page_cost):g}",
        )

    # Django's native psycopg pool: one pool per process (per gunicorn worker), shared by its greenlets.
    # Sizing (perf.db.pool_size_for): each of GUNICORN_WORKERS processes may hold up to pool max_size
    # connections, so
    #     GUNICORN_WORKERS x max_size <= DB_MAX_CONNECTIONS - DB_RESERVED_CONNECTIONS
    # where the reserve covers superuser_reserved_connections (3 by default) plus headroom for admin
    # sessions, migrations, cron jobs and management commands. max_size defaults to that budget per
    # worker, clamped to the worker's concurrency (GUNICORN_WORKER_CONNECTIONS greenlets under gevent,
    # 1 for sync workers). Greenlets beyond max_size queue inside the pool (FIFO) and wait at most
    # DB_POOL_TIMEOUT seconds for a connection, then get 503 + Retry-After (perf.admission): requests
    # may exceed max_size, with a bounded wait. The GUNICORN_* defaults match vcci/gunicorn.conf.py.
    # Off by default behind PgBouncer, which already pools (DB_POOL=1 keeps a small pool anyway).
    if env.bool("DB_POOL", default=not DB_PGBOUNCER):
        if _db.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                "CONN_MAX_AGE must be 0 with the connection pool (DB_POOL); remove conn_max_age from DATABASE_URL."
            )
        _db["CONN_MAX_AGE"] = 0
        try:
            _db_options["pool"] = pool_options(
                workers=env.int("GUNICORN_WORKERS", default=2),
                worker_connections=worker_concurrency(
                    env.str("GUNICORN_WORKER_CLASS", default="gevent"),
                    env.int("GUNICORN_WORKER_CONNECTIONS", default=1000),
                    env.int("GUNICORN_THREADS", default=1),
                ),
                max_connections=env.int("DB_MAX_CONNECTIONS", default=100),
                # The bulk pool's server (vcci/gunicorn.conf.py sets what its pools may hold) comes out of the budget.
                reserve=env.int("DB_RESERVED_CONNECTIONS", default=10) + env.int("BULK_POOL_DB_CONNECTIONS", default=0),
                min_size=env.int("DB_POOL_MIN_SIZE", default=None),
                max_size=env.int("DB_POOL_MAX_SIZE", default=None),
                timeout=env.float("DB_POOL_TIMEOUT", default=3.0),
                reconnect_timeout=env.float("DB_POOL_RECONNECT_TIMEOUT", default=1.0),
            )
        except PoolConfigError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
    # With the pool, a connection is checked before it is handed out (whether the server closed it, by a peek at its
    # socket; if so psycopg_pool's check_connection: perf.postgresql.base.check_connection); without it,
    # at the start of each request. On by default with the pool: after PostgreSQL restarts, every pooled connection
    # is dead, and each would otherwise fail the request that drew it.
    _db["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default="pool" in _db_options)
    # A statement is prepared per connection: worth it only on connections that outlive a request (the pool, or
    # CONN_MAX_AGE). Behind PgBouncer only if it tracks prepared statements (>= 1.22, and psycopg on libpq >= 17):
    # docs/database.md.
    DB_PREPARED_STATEMENTS = env.bool(
        "DB_PREPARED_STATEMENTS",
        default=not DB_PGBOUNCER and ("pool" in _db_options or _db.get("CONN_MAX_AGE", 0) != 0),
    )
# A request waiting for a database connection looks this often (seconds) whether PostgreSQL's last connection attempt
# failed; if so it gives up (503 + Retry-After) instead of waiting out DB_POOL_TIMEOUT (perf.postgresql.base,
# perf.errors). A slice is time for one connection attempt, which the pool makes at once for a waiting request.
DB_UNREACHABLE_WAIT: float = env.float("DB_UNREACHABLE_WAIT", default=1.0)
# A pooled connection idle this long (seconds) gets the full check on checkout (an empty statement, one round trip)
# whatever its socket says: a NAT, load balancer or firewall may have dropped it silently (perf.postgresql.base
# .check_connection). 0: every checkout, as psycopg_pool's own check.
DB_POOL_CHECK_IDLE: float = env.float("DB_POOL_CHECK_IDLE", default=30.0)
if DB_POOL_CHECK_IDLE < 0:
    raise ImproperlyConfigured(f"DB_POOL_CHECK_IDLE must be 0 or more seconds; got {DB_POOL_CHECK_IDLE}.")

# Admission control and cooperative scheduling (perf.admission, docs/capacity.md), per worker process.
# Requests that compute running at once (idle keep-alive connections and reads the cache answers do not count); the
# next waits. A request spends most of its time on the CPU, so a few at once keep a worker busy; each one more only
# makes every other one slower (every database or Redis wait costs a turn of all of them): under overload 250 per
# worker kept bulk requests from finishing within a minute, and at 64 a cached read took seconds; at 8 rather than
# 32, with the short wait below, 24 % more requests were served without think time (docs/capacity/analysis.md).
# Below the pool (41 to 45).
ADMISSION_MAX_IN_FLIGHT: int = env.int("ADMISSION_MAX_IN_FLIGHT", default=8)
# Reads a view may answer from the cache (perf.conditional.CachedResponseMixin) running at once, apart from those:
# they need no place unless the cache cannot answer (then they wait for one). Each takes about a millisecond.
ADMISSION_MAX_CACHED_IN_FLIGHT: int = env.int("ADMISSION_MAX_CACHED_IN_FLIGHT", default=16)
# Seconds a request may wait for a place among those (first come, first served) before it gets 503.
# Short: a request that cannot start soon is better refused at once (the client waits out Retry-After instead of a
# queue, and the worker answers it with a fraction of the CPU a wait and a late refusal cost).
ADMISSION_QUEUE_WAIT: float = env.float("ADMISSION_QUEUE_WAIT", default=0.2)
# The most bulk requests (views declaring perf.admission.heavy) running at once per worker; a further one waits for a
# slot at most ADMISSION_HEAVY_WAIT seconds, then gets 503. 3 rather than 2: in 10-minute seed runs at 500 users, side
# by side, 3 refused 0.80-0.89 % of the requests and 2 refused 1.62-4.28 % (docs/capacity/analysis.md, section 15).
ADMISSION_HEAVY_SLOTS: int = env.int("ADMISSION_HEAVY_SLOTS", default=3)
ADMISSION_HEAVY_WAIT: float = env.float("ADMISSION_HEAVY_WAIT", default=1.0)
# Seconds a bulk request may take before fewer run at once (perf.admission.HeavyLane): one slower than this that shared
# the lane halves the slots in use (once per slow period, not below one); one taking at most half of it gives one back,
# as does every RECOVERY (4) targets without a change, up to ADMISSION_HEAVY_SLOTS. 0: fixed. Under overload, with the
# bulk pool at nice +5, its CPU is then shared by fewer requests: in single 2-minute runs, each finished within 5 s
# instead of 9 s (docs/capacity/analysis.md, section 10).
ADMISSION_HEAVY_TARGET: float = env.float("ADMISSION_HEAVY_TARGET", default=1.0)
# Seconds a refused client is told to wait (Retry-After) follow a delay: ADMISSION_RETRY_AFTER while a worker refuses
# little, doubling each second it refuses more than one request in a hundred it serves, up to ADMISSION_RETRY_AFTER_MAX
# (perf.admission.Backoff). 30 rather than 16: under overload (500 users, no think time) a refused client sent away
# is one fewer in the queue, and in single runs the longer ceiling served more (docs/capacity/analysis.md, section 17).
# Every value a refusal can be told stays at least 2 s away from GUNICORN_KEEPALIVE (vcci/gunicorn.conf.py says why;
# the check perf.W003 tells when one does not).
ADMISSION_RETRY_AFTER: int = env.int("ADMISSION_RETRY_AFTER", default=1)
ADMISSION_RETRY_AFTER_MAX: int = env.int("ADMISSION_RETRY_AFTER_MAX", default=30)
# Each refusal told a random whole number of seconds from the upper half of the delay (never near the keep-alive)
# rather than the delay itself, so that the clients refused in one second do not all come back in one second. Side by
# side at 500 users it changed the requests served by nothing measurable, and the longest request was shorter in three
# pairs out of three (docs/capacity/analysis.md, section 18).
ADMISSION_RETRY_AFTER_JITTER: bool = env.bool("ADMISSION_RETRY_AFTER_JITTER", default=True)
# gunicorn's idle keep-alive (its default matches vcci/gunicorn.conf.py), read here to keep Retry-After away from it.
GUNICORN_KEEPALIVE: int = env.int("GUNICORN_KEEPALIVE", default=20)
# CPU a greenlet may hold before a long loop lets the others run (milliseconds; perf.admission.cooperate), and
# per request running (both lanes) when that is more: bulk work keeps its share of the CPU as load grows.
COOPERATE_SLICE_MS: float = env.float("COOPERATE_SLICE_MS", default=10.0)
COOPERATE_SLICE_PER_REQUEST_MS: float = env.float("COOPERATE_SLICE_PER_REQUEST_MS", default=1.0)

# The cyclic garbage collector in the server's processes (perf.gcpause.tune_for_serving, docs/serving.md): freeze
# what is loaded at start (off only to compare), and its thresholds (gen0[,gen1[,gen2]]; empty: Python's 700,10,10).
GC_FREEZE: bool = env.bool("GC_FREEZE", default=True)


def _gc_thresholds(values: list[str]) -> list[int]:
    """``GC_THRESHOLDS``: 1 to 3 integers, the first at least 1 (0 would turn automatic collection off: the cycles
    every request leaves would grow a worker without bound), the others at least 0."""
    try:
        thresholds = [int(value) for value in values]
    except ValueError:
        thresholds = []
    if values and (not 1 <= len(thresholds) <= 3 or thresholds[0] < 1 or min(thresholds) < 0):
        raise ImproperlyConfigured(
            f"GC_THRESHOLDS={','.join(values)!r}: give 1 to 3 integers (gen0[,gen1[,gen2]]), the first at least 1 "
            "and the others at least 0, or leave it empty for Python's."
        )
    return thresholds


GC_THRESHOLDS: list[int] = _gc_thresholds(env.list("GC_THRESHOLDS", default=[]))

# Seconds between two measurements of how late each gevent worker's event loop wakes a ready greenlet
# (vcci_event_loop_lag_seconds, perf.looplag); 0: not measured.
EVENT_LOOP_LAG_INTERVAL: float = env.float("EVENT_LOOP_LAG_INTERVAL", default=0.1)
if not EVENT_LOOP_LAG_INTERVAL >= 0:  # NaN too
    raise ImproperlyConfigured(f"EVENT_LOOP_LAG_INTERVAL must be 0 (off) or more; got {EVENT_LOOP_LAG_INTERVAL}")

# The bulk pool (perf.bulkpool): the Unix socket of the server that serves bulk requests at a lower CPU priority.
# vcci/gunicorn.conf.py starts that server and sets this for its workers; empty (tests, runserver), every request
# is served where it arrives. Seconds a worker waits for the bulk pool to answer, or to send more of a body.
BULK_POOL_SOCKET: str = env.str("BULK_POOL_SOCKET", default="")
BULK_POOL_TIMEOUT: float = env.float("BULK_POOL_TIMEOUT", default=60.0)

# Queries slower than this (milliseconds) are logged on "vcci.slow_query" and counted (perf.db).
SLOW_QUERY_MS: float = env.float("SLOW_QUERY_MS", default=200.0)
# X-DB-Queries / X-DB-Time-ms response headers (perf.middleware): they reveal internals, so off in production.
DB_METRICS_HEADERS: bool = env.bool("DB_METRICS_HEADERS", default=DEBUG)

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite ignores the covering columns (INCLUDE) of the PostgreSQL indexes; that is expected
    # on the embedded default, where no performance claim is made.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]

REDIS_URL: str = env.str("REDIS_URL", default="")
# Annotated as Django's own setting is: the two branches' literals would otherwise infer an unusable type.
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "vcci",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # Short timeouts bound what an unreachable or stalled Redis adds to a request; perf.cache then
                # stops trying for CACHE_RETRY_AFTER seconds, so the timeout is paid once per outage, not per call.
                "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_CONNECT_TIMEOUT", default=0.25),
                "SOCKET_TIMEOUT": env.float("REDIS_SOCKET_TIMEOUT", default=0.25),
                # Bounded per process, by default to the requests a worker runs at once (its greenlets under gevent,
                # at most ADMISSION_MAX_IN_FLIGHT + ADMISSION_MAX_CACHED_IN_FLIGHT) so that no request waits for a
                # connection; with a smaller bound a request waits up to REDIS_POOL_TIMEOUT
                # seconds, then counts as a Redis failure. redis-py uses hiredis's parser when it is installed.
                "CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool",
                "CONNECTION_POOL_KWARGS": {
                    # At least 8: a sync or gthread worker still has its warm-up thread and scrapes.
                    "max_connections": env.int(
                        "REDIS_MAX_CONNECTIONS",
                        default=max(
                            8,
                            min(
                                worker_concurrency(
                                    env.str("GUNICORN_WORKER_CLASS", default="gevent"),
                                    env.int("GUNICORN_WORKER_CONNECTIONS", default=1000),
                                    env.int("GUNICORN_THREADS", default=1),
                                ),
                                ADMISSION_MAX_IN_FLIGHT + ADMISSION_MAX_CACHED_IN_FLIGHT
                                if ADMISSION_MAX_IN_FLIGHT and ADMISSION_MAX_CACHED_IN_FLIGHT
                                else 1_000_000,
                            ),
                        ),
                    ),
                    # No retries, said explicitly: redis-py's own default client retries 3 times with backoff up
                    # to 10 s, which would turn one Redis stall into seconds per request. perf.cache handles
                    # failures itself (circuit breaker, immediate retries of version bumps only).
                    "retry": Retry(NoBackoff(), 0),
                    "timeout": env.float("REDIS_POOL_TIMEOUT", default=0.25),
                },
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "vcci"}}

# Metrics and health (perf.metrics, perf.health; docs/serving.md).
# django-prometheus's request latency histograms (and vcci_db_seconds_per_request) in seconds. Its default
# starts at 10 ms, coarser than a cached API read; these start at 1 ms and end at GUNICORN_TIMEOUT (60 s).
PROMETHEUS_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, float("inf"),
)  # fmt: skip
# PROMETHEUS_METRIC_NAMESPACE stays unset: django-prometheus's metrics keep their usual django_* names (as
# published dashboards expect); the project's own metrics are named vcci_* explicitly.
# /metrics is served to clients whose address (REMOTE_ADDR: behind a same-host proxy, that is the proxy's)
# is in METRICS_ALLOWED_IPS (addresses or CIDR networks; empty = none), or that send
# "Authorization: Bearer <METRICS_TOKEN>" (empty token = token access off); others get 403.
METRICS_ALLOWED_IPS: list[str] = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
for _entry in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry.strip(), strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS entries must be IP addresses or networks (10.0.0.0/8); got {_entry!r}."
        ) from None
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
# /readyz: how long the database check may wait for a pooled connection and run (statement_timeout).
# Redis is bounded by REDIS_CONNECT_TIMEOUT / REDIS_SOCKET_TIMEOUT above.
READYZ_TIMEOUT: float = env.float("READYZ_TIMEOUT", default=1.0)

# Summaries read the rollup tables (emissions.rollups; docs/reports.md) on PostgreSQL; off: they sum the emissions,
# as on SQLite (the benchmark's "before", or while a rollup difference check_rollups found is being repaired).
ROLLUP_READS: bool = env.bool("ROLLUP_READS", default=True)

# Two-level cache (perf.cache; docs/cache.md explains each knob). CACHE_L1_TTL bounds how long another worker
# may serve what it read before a write committed; the writing worker sees its write at once.
CACHE_ENABLED: bool = env.bool("CACHE_ENABLED", default=True)
CACHE_L1_TTL: float = env.float("CACHE_L1_TTL", default=2.0)
CACHE_L1_MAX_BYTES: int = env.int("CACHE_L1_MAX_BYTES", default=64 * 1024 * 1024)
CACHE_L2_TTL: int = env.int("CACHE_L2_TTL", default=600)
CACHE_NEGATIVE_TTL: int = env.int("CACHE_NEGATIVE_TTL", default=30)
CACHE_LOCK_WAIT: float = env.float("CACHE_LOCK_WAIT", default=2.0)
CACHE_RETRY_AFTER: float = env.float("CACHE_RETRY_AFTER", default=5.0)
# Part of every cache key and ETag: change it on a deploy that changes what a cached value or response holds.
CACHE_VERSION: str = env.str("CACHE_VERSION", default="1")
# Cached GETs answered before DRF's request cycle (perf.fastpath, called from CachedResponseMixin.dispatch); off only
# to measure what it saves.
CACHE_FAST_PATH: bool = env.bool("CACHE_FAST_PATH", default=True)
# Deep cursor pages of the emissions and activities lists keep their body once the same page is asked for again in a
# worker (within CACHE_L2_TTL): people page on from popular first pages, a full scan reads each page once.
CACHE_DEEP_PAGES: bool = env.bool("CACHE_DEEP_PAGES", default=True)
# Cached response bodies of this size and up also keep a gzip form, served to clients that accept it (0: never).
CACHE_GZIP_MIN_BYTES: int = env.int("CACHE_GZIP_MIN_BYTES", default=1024)
# A CSV export (GET /api/v1/emissions/export.csv) of at most this many bytes is kept in the cache as it is streamed,
# and the same export is answered from it until its rows change (0: never kept; every export still has an ETag).
# The default is about the largest value L1 keeps (a sixteenth of CACHE_L1_MAX_BYTES's default); a larger one is kept
# in Redis only. A process keeping an export holds up to about three times this much at its end (docs/cache.md).
EXPORT_CACHE_MAX_BYTES: int = env.int("EXPORT_CACHE_MAX_BYTES", default=4 * 1024 * 1024)
# Cache-Control max-age (seconds) a client may reuse a response without asking again, per resource. Every
# resource holds data an organization may change at any moment, so by default clients revalidate every time
# (a 304 costs no database query); raise one where minutes of client-side staleness are acceptable.
CACHE_MAX_AGE: dict[str, int] = {
    # 0 too: the list includes the organization's own supplier factors, which it may change at any moment.
    "factors": env.int("CACHE_MAX_AGE_FACTORS", default=0),
    "suppliers": env.int("CACHE_MAX_AGE_SUPPLIERS", default=0),
    "emissions": env.int("CACHE_MAX_AGE_EMISSIONS", default=0),
}
# Each gunicorn worker fills its cache at start (vcci/gunicorn.conf.py), in the background.
CACHE_WARM_ON_BOOT: bool = env.bool("CACHE_WARM_ON_BOOT", default=False)

# Admin login lockout (django-axes; README, "Admin login lockout"). After ADMIN_LOGIN_FAILURE_LIMIT wrong passwords
# for one username from one client address, that pair is refused (429, the right password included) until
# ADMIN_LOGIN_COOLOFF_MINUTES have passed since the last failure (a try during the lockout restarts it). Counted per
# username *and* address: per username alone, anyone could lock any user out by guessing wrong under their name; per
# address alone, everyone behind one NAT or proxy would be locked out together. The price: one username attacked
# from many addresses is slowed only per address (strong passwords remain the defence there).
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out login before any password is checked (perf.admin: logins without a request pass).
    "perf.admin.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failures are rows in PostgreSQL: every gunicorn worker sees the same counts, whatever the cache (the embedded default
# is per process), and they survive a Redis flush. A login attempt costs a few indexed queries.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT: int = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
_cooloff_minutes: float = env.float("ADMIN_LOGIN_COOLOFF_MINUTES", default=15.0)
if AXES_FAILURE_LIMIT < 1 or not 0 < _cooloff_minutes < float("inf"):
    raise ImproperlyConfigured(
        "ADMIN_LOGIN_FAILURE_LIMIT must be at least 1 and ADMIN_LOGIN_COOLOFF_MINUTES a positive number of minutes; "
        f"got {AXES_FAILURE_LIMIT} and {_cooloff_minutes}."
    )
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes)
# A successful login clears that pair's failures: whoever got the password right needs no further guesses.
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
# The address a failure is counted under: REMOTE_ADDR, or behind a reverse proxy listed in ADMIN_LOGIN_TRUSTED_PROXIES
# (which otherwise makes every client look alike) the address that proxy appended to X-Forwarded-For (perf.admin).
ADMIN_LOGIN_TRUSTED_PROXIES: list[str] = env.list("ADMIN_LOGIN_TRUSTED_PROXIES", default=[])
AXES_CLIENT_IP_CALLABLE = "perf.admin.login_client_address"

# Production (HTTPS) settings: README, "Production settings", lists them. Each defaults to what works on plain HTTP
# (make run, tests); `manage.py check --deploy` is clean once the README's production values are set.
# Behind a TLS-terminating proxy, the header it sets to say the client used HTTPS, as "Header-Name,value"
# (X-Forwarded-Proto,https): only set it when the proxy always sets or strips that header (Django's docs).
_proxy_ssl_header: list[str] = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        f"SECURE_PROXY_SSL_HEADER must be 'Header-Name,value' (X-Forwarded-Proto,https); got {_proxy_ssl_header!r}."
    )
if _proxy_ssl_header:
    # Django reads the header from request.META: X-Forwarded-Proto -> HTTP_X_FORWARDED_PROTO.
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header[0].strip().upper().replace("-", "_"), _proxy_ssl_header[1])
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=False)
# Load balancers and orchestrators probe these over plain HTTP inside the network: never redirected.
SECURE_REDIRECT_EXEMPT: list[str] = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=False)
# Origins (scheme and host) allowed to send unsafe requests with the session's CSRF token, e.g. https://vcci.example.
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# A CSRF failure under /api/ answers JSON like every other API error (perf.errors).
CSRF_FAILURE_VIEW = "perf.errors.csrf_failure"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp 4: one dict of directives). Scripts only from this origin: the admin has no
# inline script, and the Swagger UI page loads its start-up script from its own URL (SpectacularSwaggerSplitView in
# vcci/urls.py). Styles also inline: the admin and both API-docs pages carry <style> blocks and style attributes, and
# ReDoc injects its styles at run time. data: images are Swagger UI's icons; blob: workers ReDoc's search. The ReDoc
# page adds Google Fonts, which its template links (vcci/urls.py). Frames: none, like X_FRAME_OPTIONS.
CONTENT_SECURITY_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic writes (WhiteNoise serves from there).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _default_factor_dir() -> str:
    # The official data sets are not shipped with the project; by convention they sit in
    # a ``shared/data`` folder beside the checkout (see the README's "Emission-factor data").
    candidate = BASE_DIR.parent / "shared" / "data"
    return str(candidate) if candidate.is_dir() else ""


FACTOR_DATA_DIR: str = env.str("FACTOR_DATA_DIR", default=_default_factor_dir())

# Django's default (2.5 MiB) is smaller than the 10,000-activity POST the API documents: 10,000 realistic
# items are about 2.6 MiB of JSON, 10,000 with every field at its maximum length about 9.3 MiB (a test
# checks the fit). A larger body is answered 413 with a JSON message naming this limit.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=16 * 1024 * 1024)

# Seconds an Idempotency-Key's answer is kept (emissions.services.idempotency): a retry within this time gets the
# first answer back; after it, the key starts afresh. A day covers an ERP's retry window with room to spare;
# ``manage.py purge_idempotency_keys`` (run it daily) deletes what has expired.
IDEMPOTENCY_KEY_TTL: int = env.int("IDEMPOTENCY_KEY_TTL", default=24 * 3600)

# List pages (emissions, activities) written from value rows straight to JSON (perf.rows), DRF's bytes without its
# per-field cost; off (DRF's serializer and renderer) only to measure what it saves (manage.py bench_serialization).
LIST_ROWS: bool = env.bool("LIST_ROWS", default=True)

# Request limits (perf.throttle, emissions.api.throttles; README "Limits"): 429 + Retry-After past a scope's rate,
# counted in Redis and shared by every worker. Each is <requests>/<s|min|hour|day>, or off.
THROTTLE_RATES: dict[str, str] = {
    # Per API token: an integration's or a dashboard's own pace.
    "user": env.str("THROTTLE_RATE_USER", default="1200/min"),
    # Per organization, every member's token together.
    "org": env.str("THROTTLE_RATE_ORG", default="6000/min"),
    # Bulk work per organization (activity lists and calculation batches of 16 KiB or more, CSV exports).
    "bulk": env.str("THROTTLE_RATE_BULK", default="60/min"),
    # Unauthenticated requests per client address (the schema and its docs; API endpoints answer 401).
    "anon": env.str("THROTTLE_RATE_ANON", default="60/min"),
    # Failed authentications (unknown or malformed token, inactive user) per client address: 429 past it.
    "auth_failures": env.str("THROTTLE_RATE_AUTH_FAILURES", default="30/min"),
}
# A mistyped rate stops the start, naming its variable, rather than failing every request it applies to.
for _scope, _rate in THROTTLE_RATES.items():
    try:
        parse_rate(_rate)
    except ValueError as exc:
        raise ImproperlyConfigured(f"THROTTLE_RATE_{_scope.upper()}: {exc}") from None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "emissions.api.authentication.OrgTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "emissions.api.permissions.HasOrganization",
    ],
    # DjangoFilterBackend, without building a filter set for a request that names none of its filters (perf.filters).
    "DEFAULT_FILTER_BACKENDS": ["perf.filters.FilterBackend"],
    # JSON only: DRF's JSON parser with Decimal numbers, no NaN/Infinity and a nesting limit (emissions.api.parsers).
    # Every body of the API is JSON (batches and gases nest, which forms cannot say), and a form or multipart body
    # is a 415. The browsable API keeps its raw-data form, which posts JSON; only its HTML form goes.
    "DEFAULT_PARSER_CLASSES": ["emissions.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "EXCEPTION_HANDLER": "emissions.api.errors.exception_handler",
    # Request limits (THROTTLE_RATES above).
    "DEFAULT_THROTTLE_CLASSES": [
        "perf.throttle.AnonymousThrottle",
        "emissions.api.throttles.TokenThrottle",
        "emissions.api.throttles.OrganizationThrottle",
        "emissions.api.throttles.BulkThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": THROTTLE_RATES,
    # Proxies in front whose X-Forwarded-For entry is trusted for the client address: 0 reads REMOTE_ADDR only
    # (DRF's default, None, would take the whole header, which a client can fill to escape per-address limits).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "VCCI API",
    "DESCRIPTION": "Value Chain Carbon Intelligence: Scope 3 emissions from supplier activity data.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The error responses every operation can give, and path id bounds (emissions.api.schema).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "emissions.api.schema.postprocess",
    ],
}


# Jobs (emissions.jobs; docs/jobs.md): Celery workers on Redis run work bigger than a request. The broker is its own
# Redis database (default: the cache's server, database 1), so that clearing the cache never drops queued work.
# Without Redis (the embedded default) jobs run in the submitting process when its transaction commits.
def _redis_database(url: str, database: int) -> str:
    """``url`` (redis:// or rediss://) naming another database of the same server."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"Set CELERY_BROKER_URL: the broker cannot be derived from REDIS_URL {url!r}.")
    return urlunsplit(parts._replace(path=f"/{database}"))


CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="") or (
    _redis_database(REDIS_URL, 1) if REDIS_URL else ""
)
CELERY_TASK_ALWAYS_EAGER: bool = not CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE: str = env.str("CELERY_QUEUE", default="vcci")
# A message is acknowledged after its task ran, and put back when the process running it dies (SIGKILL, OOM): a chunk
# is done exactly once because it commits its work and its "done" together (emissions.jobs.runner).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: a chunk is seconds of CPU, so prefetching would only strand work on a busy process.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The job row holds state and results; Celery keeps none.
CELERY_TASK_IGNORE_RESULT = True
# A task taking longer than its hard time limit is killed and fails its job (TimeLimitExceeded): a chunk
# JOB_CHUNK_TIME_LIMIT seconds, planning and finishing (a whole import moved in one statement) JOB_FINISH_TIME_LIMIT.
# Each transaction's statement timeout is shorter than its task's limit (checked here), so that the database cancels a
# statement running too long rather than the kill leaving it running on, holding its locks. Redis redelivers a message
# left unacknowledged by a lost worker after CELERY_VISIBILITY_TIMEOUT, which must exceed the longest task's limit.
JOB_CHUNK_TIME_LIMIT: int = env.int("JOB_CHUNK_TIME_LIMIT", default=600)
CELERY_TASK_TIME_LIMIT: int = JOB_CHUNK_TIME_LIMIT
JOB_FINISH_TIME_LIMIT: int = env.int("JOB_FINISH_TIME_LIMIT", default=45 * 60)
# The statement timeout of a job's database work (the web's DB_STATEMENT_TIMEOUT_MS is for requests): a chunk's, and
# a plan's or finish's, which moves a whole import or recalculation into place in one statement per table.
JOB_CHUNK_STATEMENT_TIMEOUT_MS: int = env.int("JOB_CHUNK_STATEMENT_TIMEOUT_MS", default=JOB_CHUNK_TIME_LIMIT * 900)
JOB_STATEMENT_TIMEOUT_MS: int = env.int("JOB_STATEMENT_TIMEOUT_MS", default=30 * 60 * 1000)
JOB_LONGEST_TIME_LIMIT: int = max(JOB_CHUNK_TIME_LIMIT, JOB_FINISH_TIME_LIMIT)
CELERY_VISIBILITY_TIMEOUT: int = env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * JOB_LONGEST_TIME_LIMIT)
if JOB_CHUNK_STATEMENT_TIMEOUT_MS >= JOB_CHUNK_TIME_LIMIT * 1000:
    raise ImproperlyConfigured("JOB_CHUNK_STATEMENT_TIMEOUT_MS must be shorter than JOB_CHUNK_TIME_LIMIT.")
if JOB_STATEMENT_TIMEOUT_MS >= JOB_FINISH_TIME_LIMIT * 1000:
    raise ImproperlyConfigured("JOB_STATEMENT_TIMEOUT_MS must be shorter than JOB_FINISH_TIME_LIMIT.")
if CELERY_VISIBILITY_TIMEOUT <= JOB_LONGEST_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT must be longer than JOB_CHUNK_TIME_LIMIT and JOB_FINISH_TIME_LIMIT."
    )
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker process is replaced after this many tasks, bounding what a leak can grow to.
CELERY_WORKER_MAX_TASKS_PER_CHILD: int = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=1000)
# A chunk whose process died this many times mid-chunk (out of memory) fails its job at its next delivery.
JOB_CHUNK_MAX_ATTEMPTS: int = env.int("JOB_CHUNK_MAX_ATTEMPTS", default=5)
# Job kinds beyond the built-in ones (emissions.jobs.kinds.KIND_MODULES): kind name -> module with a ``KIND``.
JOB_KIND_MODULES: dict[str, str] = {}
# Rows per chunk of an import or a recalculation: a chunk is one transaction and one task.
JOB_CHUNK_ROWS: int = env.int("JOB_CHUNK_ROWS", default=20000)
# Uploaded import files and their chunks (POST /api/v1/imports/, import_activities): a storage every worker can read.
# A local folder by default (one machine, or a shared mount); README "Imports" shows object storage instead.
IMPORTS_DIR = Path(env.str("IMPORTS_DIR", default=str(BASE_DIR / "var" / "imports")))
STORAGES["imports"] = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": IMPORTS_DIR}}
# The largest CSV an upload may send (bytes): a 413 beyond it.
IMPORT_MAX_BYTES: int = env.int("IMPORT_MAX_BYTES", default=2 * 1024**3)
# A context manager (dotted path) around each step of a job run in-process (import_activities without --async): on a
# worker each step is a task of its own; the test settings check each for N+1 queries on its own, as they do a task.
JOB_STEP_CONTEXT = "contextlib.nullcontext"
# A recalculation whose restatement changes the total by at least this percentage is significant, unless the
# organization sets its own threshold (Organization.restatement_threshold_pct).
RESTATEMENT_THRESHOLD_PCT: Decimal = Decimal(env.str("RESTATEMENT_THRESHOLD_PCT", default="5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
