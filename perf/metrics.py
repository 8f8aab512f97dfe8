"""Prometheus metrics: the runtime's own, the cache listener, per-request DB metrics, pool gauges and ``/metrics``.

HTTP metrics (request counts and latency per view, status, method) are django-prometheus's, written by this
module's two middlewares (``HttpMetricsMiddleware``, ``HttpViewMetricsMiddleware``: only the ones read, see
``HttpMetrics``); this module adds what only the project knows (docs/serving.md lists every name):

- cache: ``vcci_cache_events_total{tier,resource,event}`` and ``vcci_cache_seconds{tier,resource}``,
  fed by ``CacheMetricsListener`` from ``perf.cache.STATS_LISTENERS`` (``install()``, from ``perf.apps``);
- database: ``vcci_db_queries_per_request{view}`` and ``vcci_db_seconds_per_request{view}``, from the
  counts ``perf.middleware.DBStatsMiddleware`` keeps (``RequestMetricsMiddleware``), and the
  connection pool's ``perf.db.pool_stats()`` as ``vcci_db_pool_*`` gauges and counters;
- slow queries: ``vcci_db_slow_query_seconds``, each query ``perf.db`` logs as slow (``SLOW_QUERY_LISTENERS``);
- what the alerts of ops/prometheus/alerts.yml need besides: ``vcci_dependency_up{dependency}`` (``/readyz``'s
  checks, run at each scrape) and ``vcci_worker_processes{role}`` against ``vcci_worker_processes_configured``;
- the domain's own (calculations, batch sizes, imports) are defined by the domain, in
  ``emissions/metrics.py``, on the same registry; ``child`` serves their hot paths too.

Several gunicorn workers (multiprocess mode)
    With ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported, every metric writes to
    per-process files in that directory (vcci/gunicorn.conf.py sets, creates and empties it), and
    ``metrics_view`` merges all of them: counters and histograms are summed over every worker, dead ones
    included, so totals never go backwards when a worker is recycled. Gauges say how to combine
    processes (``multiprocess_mode``); the pool gauges use ``livesum``: the sum over live workers
    (a dead worker's files are removed by ``mark_process_dead``), i.e. connections held by the whole
    server, the number to compare with PostgreSQL's ``max_connections``. Without the variable (tests,
    ``runserver``, a management command) the process's own default registry is served.

A management command is a process of its own: its samples reach ``/metrics`` only when it runs with
the server's ``PROMETHEUS_MULTIPROC_DIR`` in its environment (its counter files then stay there,
summed with the workers', until the server restarts and empties the directory).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from timeit import default_timer
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django_prometheus.conf import NAMESPACE
from django_prometheus.middleware import Metrics
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from perf.admission import operations_lane
from perf.db import SLOW_QUERY_LISTENERS, pool_stats, request_db_stats
from perf.gcpause import timed_passes
from perf.health import NOT_CONFIGURED, check_database, check_redis

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


# Checked before the first metric below is created: prometheus_client would otherwise fail on opening its
# file with a bare FileNotFoundError naming a .db file, not the setting.
if multiprocess_dir() is not None and not os.path.isdir(str(multiprocess_dir())):
    raise ImproperlyConfigured(
        f"{MULTIPROC_ENV}={multiprocess_dir()!r} is not a directory: create it (vcci/gunicorn.conf.py does for "
        "the server) or unset it for a process whose metrics need not reach /metrics."
    )

INF = float("inf")
# HTTP and DB time (settings.PROMETHEUS_LATENCY_BUCKETS, also django-prometheus's): from 1 ms.
LATENCY_BUCKETS: tuple[float, ...] = tuple(settings.PROMETHEUS_LATENCY_BUCKETS)
# Cache calls: an L1 lookup takes microseconds, a Redis round trip about 0.1-1 ms, a compute up to seconds.
CACHE_BUCKETS: tuple[float, ...] = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, INF,
)  # fmt: skip
QUERY_COUNT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100, 250, 1000, INF)
UNNAMED_VIEW = "<unnamed view>"  # django-prometheus's label for a request no URL pattern matched

# -- cache -------------------------------------------------------------------------------------

CACHE_EVENTS = Counter(
    "vcci_cache_events_total",
    "Two-level cache events (perf.cache): hit, miss, promotion, store, wait, error, compute; per tier and resource.",
    ["tier", "resource", "event"],
)
CACHE_SECONDS = Histogram(
    "vcci_cache_seconds",
    "Time of cache calls per tier (l1 lookup, l2 Redis round trip, db compute) and resource.",
    ["tier", "resource"],
    buckets=CACHE_BUCKETS,
)

# -- the cyclic garbage collector -----------------------------------------------------------------

# A young-generation pass takes about a millisecond; a full one tens to hundreds (perf.gcpause.tune_for_serving).
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, INF)
GC_PAUSE_SECONDS = Histogram(
    "vcci_gc_pause_seconds",
    "Each pass of Python's cyclic garbage collector in a server process, by generation (2: a full pass). The "
    "process runs nothing else meanwhile: every request it holds waits.",
    ["generation"],
    buckets=GC_PAUSE_BUCKETS,
)

EVENT_LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, INF)
EVENT_LOOP_LAG = Histogram(
    "vcci_event_loop_lag_seconds",
    "How late a gevent worker's hub woke a greenlet that asked to be woken (perf.looplag), by role: what a request "
    "whose bytes or database answer arrive at that moment waits before it runs; the wait before its head is read is "
    "in no request timer.",
    ["role"],
    buckets=EVENT_LOOP_LAG_BUCKETS,
)

# -- admission -------------------------------------------------------------------------------

ADMISSION_REFUSED = Counter(
    "vcci_admission_refused_total",
    "Requests refused with 503 + Retry-After (perf.admission): heavy_busy, in_flight or db_pool.",
    ["reason"],
)
# Retry-After's delay is ADMISSION_RETRY_AFTER (1 s by default) at rest and doubles while a worker refuses, up to
# ADMISSION_RETRY_AFTER_MAX (30 s by default): with the defaults, a bucket per doubling.
RETRY_AFTER_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0, INF)
ADMISSION_RETRY_AFTER_TOLD = Histogram(
    "vcci_admission_retry_after_seconds",
    "The Retry-After each admission refusal told its client (perf.admission.Backoff), by reason: how long "
    "the refused clients were asked to stay away, which grows while a worker refuses and falls back when it stops.",
    ["reason"],
    buckets=RETRY_AFTER_BUCKETS,
)
ADMISSION_HEAVY_LIMIT = Gauge(
    "vcci_admission_heavy_limit",
    "Bulk requests the processes of each role admit at once (perf.admission.HeavyLane), as of each one's last bulk "
    "request, summed over the live ones: vcci_admission_heavy_slots while bulk work is quick, fewer while it takes "
    "longer than ADMISSION_HEAVY_TARGET.",
    ["role"],
    multiprocess_mode="livesum",
)
ADMISSION_HEAVY_SLOTS = Gauge(
    "vcci_admission_heavy_slots",
    "The most bulk requests the processes of each role admit at once (ADMISSION_HEAVY_SLOTS per worker; in each bulk "
    "pool process, as many as the workers may forward), summed over the live ones.",
    ["role"],
    multiprocess_mode="livesum",
)
THROTTLED = Counter("vcci_throttled_total", "Requests refused with 429 (perf.throttle), by scope.", ["scope"])
THROTTLE_UNAVAILABLE = Counter(
    "vcci_throttle_unavailable_total",
    "Requests let through without being counted because Redis did not answer (perf.throttle fails open).",
)
BULK_POOL_REQUESTS = Counter(
    "vcci_bulk_pool_requests_total",
    "Bulk requests by what a worker did with them (perf.bulkpool): forwarded to the bulk pool, served here (local,"
    " the pool unreachable), or failed (502, the pool failed after the request was sent).",
    ["outcome"],
)

# -- database ----------------------------------------------------------------------------------

DB_QUERIES = Histogram(
    "vcci_db_queries_per_request",
    "Database queries per request (the sum is the total query count), by view.",
    ["view"],
    buckets=QUERY_COUNT_BUCKETS,
)
DB_SECONDS = Histogram(
    "vcci_db_seconds_per_request",
    "Wall time spent in database queries per request (the sum is total DB time), by view.",
    ["view"],
    buckets=LATENCY_BUCKETS,
)

# Queries perf.db logs as slow (SLOW_QUERY_MS, 200 ms by default) up to statement_timeout (30 s by default). 1.0 is a
# bucket: the slow-query alert counts the queries above 1 s as _count minus the le="1.0" bucket.
SLOW_QUERY_BUCKETS = (0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, INF)
SLOW_QUERY_SECONDS = Histogram(
    "vcci_db_slow_query_seconds",
    "Duration of each query slower than SLOW_QUERY_MS (perf.db's slow-query log), in any process of the server.",
    buckets=SLOW_QUERY_BUCKETS,
)

# perf.db.pool_stats() key -> gauge. livesum: summed over live workers (see the module docstring).
POOL_GAUGES: dict[str, Gauge] = {
    key: Gauge(name, documentation, multiprocess_mode="livesum")
    for key, name, documentation in (
        ("pool_max", "vcci_db_pool_max_size", "Pool max_size, summed over workers (W x P)."),
        ("pool_min", "vcci_db_pool_min_size", "Pool min_size, summed over workers."),
        ("pool_size", "vcci_db_pool_connections", "PostgreSQL connections the pools hold (in use, idle, opening)."),
        ("pool_available", "vcci_db_pool_available_connections", "Idle connections in the pools."),
        ("requests_waiting", "vcci_db_pool_requests_waiting", "Requests waiting for a pooled connection now."),
    )
}
# perf.db.pool_stats() counter key -> (counter, scale to base unit). Published as increments since the last update.
POOL_COUNTERS: dict[str, tuple[Counter, float]] = {
    key: (Counter(name, documentation), scale)
    for key, name, documentation, scale in (
        ("requests_num", "vcci_db_pool_requests_total", "Connections asked of the pools.", 1.0),
        ("requests_queued", "vcci_db_pool_requests_queued_total", "Requests that had to wait for a connection.", 1.0),
        ("requests_wait_ms", "vcci_db_pool_wait_seconds_total", "Time requests waited for a connection.", 0.001),
        ("requests_errors", "vcci_db_pool_request_errors_total", "Requests that got no connection (timeout).", 1.0),
        ("returns_bad", "vcci_db_pool_returns_bad_total", "Connections returned to the pools broken.", 1.0),
        ("connections_num", "vcci_db_pool_connects_total", "PostgreSQL connections opened by the pools.", 1.0),
        ("connections_ms", "vcci_db_pool_connect_seconds_total", "Time spent opening connections.", 0.001),
        ("connections_errors", "vcci_db_pool_connect_errors_total", "Failed connection attempts.", 1.0),
        ("connections_lost", "vcci_db_pool_connections_lost_total", "Connections found broken in the pools.", 1.0),
    )
}


# -- dependencies and worker processes (what the alerts of ops/prometheus/alerts.yml watch) --------------------

# mostrecent: the value the last scrape's worker found; a worker that never answered a scrape writes none.
DEPENDENCY_UP = Gauge(
    "vcci_dependency_up",
    "1 when the dependency answered /readyz's check at the last scrape (database: SELECT 1, redis: PING), else 0.",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
WORKER_PROCESSES = Gauge(
    "vcci_worker_processes",
    "Processes serving requests, by role (main: the gunicorn workers; bulk: the bulk pool's), live ones only.",
    ["role"],
    multiprocess_mode="livesum",
)
WORKER_PROCESSES_CONFIGURED = Gauge(
    "vcci_worker_processes_configured",
    "GUNICORN_WORKERS of each role's server: the vcci_worker_processes it should have.",
    ["role"],
    multiprocess_mode="max",
)
# vcci/gunicorn.conf.py's: the server's role (the bulk pool runs with VCCI_SERVER_ROLE=bulk) and its worker count.
ROLE_ENV = "VCCI_SERVER_ROLE"
WORKERS_ENV = "GUNICORN_WORKERS"
DEFAULT_WORKERS = 2


def record_dependencies() -> dict[str, int]:
    """Run ``/readyz``'s checks and set ``vcci_dependency_up``; return what was set.

    A dependency that is not configured (no Redis: the local-memory cache) is not published. The
    checks are bounded by ``READYZ_TIMEOUT`` and the Redis socket timeouts, so a scrape during an
    outage takes about that long.
    """
    published: dict[str, int] = {}
    for name, check in (("database", check_database), ("redis", check_redis)):
        try:
            result = check()
        except Exception:
            up = 0
        else:
            if result == NOT_CONFIGURED:
                continue
            up = 1
        DEPENDENCY_UP.labels(name).set(up)
        published[name] = up
    return published


def server_role() -> str:
    """This process's role label: ``bulk`` in the bulk pool, else ``main``."""
    return os.environ.get(ROLE_ENV) or "main"


def announce_worker() -> None:
    """Count this process in ``vcci_worker_processes`` (once per process: the value is 1, set again harmlessly)."""
    role = server_role()
    try:
        configured = int(os.environ.get(WORKERS_ENV, "").strip() or DEFAULT_WORKERS)
    except ValueError:
        configured = DEFAULT_WORKERS  # gunicorn.conf.py refuses such a value before any worker starts
    WORKER_PROCESSES.labels(role).set(1)
    WORKER_PROCESSES_CONFIGURED.labels(role).set(configured)
    # The gate publishes its bulk slots and their limit when made: made now, a process that has served no bulk
    # request yet is in their sums too.
    from perf.admission import gate

    gate()


# Children of labelled metrics, kept so a hot path (a 10,000-item batch, every cache event) skips labels():
# it takes a lock and validates the label values on every call. Plain dict reads and setdefault are safe
# under the GIL and under gevent.
_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Counter | Histogram, *values: str) -> Any:
    """``metric.labels(*values)``, memoized: the child of a labelled metric for a hot path."""
    key = (metric, *values)
    found = _children.get(key)
    if found is None:
        found = _children.setdefault(key, metric.labels(*values))
    return found


class CacheMetricsListener:
    """A ``perf.cache.StatsListener``: every cache event as Prometheus samples."""

    def count(self, tier: str, resource: str, event: str, n: int) -> None:
        child(CACHE_EVENTS, tier, resource, event).inc(n)

    def observe(self, tier: str, resource: str, seconds: float) -> None:
        child(CACHE_SECONDS, tier, resource).observe(seconds)


CACHE_LISTENER = CacheMetricsListener()


def install() -> None:
    """Register the cache listener with ``perf.cache`` and the slow-query histogram with ``perf.db`` (once each)."""
    from perf.cache import STATS_LISTENERS

    if not any(isinstance(listener, CacheMetricsListener) for listener in STATS_LISTENERS):
        STATS_LISTENERS.append(CACHE_LISTENER)
    if SLOW_QUERY_SECONDS.observe not in SLOW_QUERY_LISTENERS:
        SLOW_QUERY_LISTENERS.append(SLOW_QUERY_SECONDS.observe)


class PoolMetrics:
    """Publishes ``perf.db.pool_stats()`` of this process to the ``vcci_db_pool_*`` metrics.

    ``update()`` is called after each request (at most every ``interval`` seconds: reading the stats
    takes the pool's lock) and, forced, before each scrape. psycopg_pool's counters run from the
    pool's creation; they are published as increments, so that Prometheus counters of every worker
    can be summed. A pool that was recreated (its counters restarted) counts from zero again.
    """

    def __init__(self, alias: str = "default", interval: float = 1.0) -> None:
        self.alias = alias
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._updated = -INF

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._updated < self.interval:
            return
        self._updated = now
        stats = pool_stats(self.alias)
        if not stats:
            return
        for key, gauge in POOL_GAUGES.items():
            gauge.set(stats[key])
        with self._lock:
            for key, (counter, scale) in POOL_COUNTERS.items():
                value, previous = stats[key], self._last.get(key, 0)
                delta = value - previous if value >= previous else value
                self._last[key] = value
                if delta:
                    counter.inc(delta * scale)


POOL = PoolMetrics()


def view_name(request: HttpRequest) -> str:
    """The URL name of the view that served ``request`` (the label django-prometheus uses too)."""
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match is not None else None) or UNNAMED_VIEW


# -- HTTP requests (django-prometheus's names) ---------------------------------------------------

# The methods django-prometheus labels as they are; any other is labelled "<invalid method>".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
INVALID_METHOD = "<invalid method>"


class HttpMetrics(Metrics):
    """The django-prometheus request metrics that the dashboard (ops/grafana), the alerts (ops/prometheus) and the
    runbook (docs/operations.md) read, under django-prometheus's names, and none of the others.

    django-prometheus's middleware writes 16 values per request (counts of requests and of responses; by method, by
    transport, by view, transport and method, by status, by charset; both bodies' sizes, which joins a response's
    body once more only to measure it; two latency histograms, two values each; 17 with a DRF response, counted by
    template name too) and looks up 7 labelled children (8). In
    multiprocess mode each write takes a lock and writes the worker's file, and each lookup takes another lock: a
    cached summary served 10-20 % more requests a second without them (docs/capacity/analysis.md, section 20).
    These middlewares (``HttpMetricsMiddleware``, ``HttpViewMetricsMiddleware``) write 6 values and look up none
    (``child``), plus the two exception counters when a view raises. Requests by method or by status are sums of
    ``django_http_responses_total_by_status_view_method_total``; by transport or charset, body sizes, streaming
    responses and templates are no longer published.
    """

    _instance = None  # the singleton of this class, not django-prometheus's (get_instance)

    def register(self) -> None:
        self.requests_total = self.register_metric(
            Counter,
            "django_http_requests_before_middlewares_total",
            "Total count of requests before middlewares run.",
            namespace=NAMESPACE,
        )
        self.requests_latency_before = self.register_metric(
            Histogram,
            "django_http_requests_latency_including_middlewares_seconds",
            "Histogram of requests processing time (including middleware processing time).",
            buckets=LATENCY_BUCKETS,
            namespace=NAMESPACE,
        )
        self.requests_latency_by_view_method = self.register_metric(
            Histogram,
            "django_http_requests_latency_seconds_by_view_method",
            "Histogram of request processing time labelled by view.",
            ["view", "method"],
            buckets=LATENCY_BUCKETS,
            namespace=NAMESPACE,
        )
        self.responses_by_status_view_method = self.register_metric(
            Counter,
            "django_http_responses_total_by_status_view_method",
            "Count of responses by status, view, method.",
            ["status", "view", "method"],
            namespace=NAMESPACE,
        )
        self.exceptions_by_type = self.register_metric(
            Counter,
            "django_http_exceptions_total_by_type",
            "Count of exceptions by object type.",
            ["type"],
            namespace=NAMESPACE,
        )
        self.exceptions_by_view = self.register_metric(
            Counter,
            "django_http_exceptions_total_by_view",
            "Count of exceptions by view.",
            ["view"],
            namespace=NAMESPACE,
        )


def method_label(request: HttpRequest) -> str:
    """The request's method as a label: one of ``KNOWN_METHODS``, else ``INVALID_METHOD`` (django-prometheus's rule;
    it also bounds the label's values, which a client chooses)."""
    method = request.method or ""
    return method if method in KNOWN_METHODS else INVALID_METHOD


class HttpMetricsMiddleware:
    """First in ``MIDDLEWARE``: counts every request and observes its time through every other middleware
    (django-prometheus's ``PrometheusBeforeMiddleware``, writing only ``HttpMetrics``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.metrics = HttpMetrics.get_instance()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        self.metrics.requests_total.inc()
        started = default_timer()
        response = self.get_response(request)
        self.metrics.requests_latency_before.observe(default_timer() - started)
        return response


class HttpViewMetricsMiddleware:
    """Near the end of ``MIDDLEWARE``, where the view is resolved: each response by status, view and method, and its
    time by view and method; a view's exception by type and view (django-prometheus's ``PrometheusAfterMiddleware``,
    writing only ``HttpMetrics``). Labelled children are memoized (``child``): views, statuses and methods are
    bounded sets.

    An admission refusal (``perf.admission.refusal``: load shed, 503 + ``Retry-After``) is not the view's answer and is
    left out of both: ``vcci_admission_refused_total`` counts it, and ``HttpMetricsMiddleware`` with every request. The
    refusal is made in ``AdmissionMiddleware.process_view``, which Django runs inside this middleware, so without
    this check it would count as the view's 503 and the 5xx alert (VCCIHighErrorRate) would fire on load shedding."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.metrics = HttpMetrics.get_instance()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = default_timer()
        response = self.get_response(request)
        if getattr(response, "admission_refused", False):
            return response
        seconds = default_timer() - started
        view, method = view_name(request), method_label(request)
        child(self.metrics.responses_by_status_view_method, str(response.status_code), view, method).inc()
        child(self.metrics.requests_latency_by_view_method, view, method).observe(seconds)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        self.metrics.exceptions_by_type.labels(type(exception).__name__).inc()
        if getattr(request, "resolver_match", None) is not None:
            self.metrics.exceptions_by_view.labels(view_name(request)).inc()


class RequestMetricsMiddleware:
    """Observes each request's query count and DB time and the collector's passes, and refreshes the pool metrics.

    Must come before ``perf.middleware.DBStatsMiddleware`` in ``MIDDLEWARE``: that one counts until
    it returns, so only code outside it sees the request's final numbers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        # Django builds the middleware once per process that serves requests (a worker, not a management command).
        announce_worker()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        stats = request_db_stats(request)
        if stats is not None:
            view = view_name(request)
            child(DB_QUERIES, view).observe(stats["queries"])
            child(DB_SECONDS, view).observe(stats["time_ms"] / 1000.0)
        POOL.update()
        # The collector's passes are timed where they happen and observed here, where taking a lock is safe.
        for generation, seconds in timed_passes():
            child(GC_PAUSE_SECONDS, str(generation)).observe(seconds)
        return response


# -- /metrics ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def parse_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``METRICS_ALLOWED_IPS`` entries (addresses or CIDR networks) as networks; raises ValueError on a bad one."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def ip_allowed(address: str, allowed: Iterable[str]) -> bool:
    """Whether ``address`` (``REMOTE_ADDR``) is one of, or inside one of, the ``allowed`` entries."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return any(ip in network for network in parse_networks(tuple(allowed)))


def token_allowed(authorization: str, token: str) -> bool:
    """Whether the ``Authorization`` header is ``Bearer <token>``; always False when ``token`` is empty."""
    if not token:
        return False
    scheme, _, credentials = authorization.partition(" ")
    # compare_digest: the time taken does not depend on how much of the token matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def metrics_allowed(request: HttpRequest) -> bool:
    """``/metrics`` access rule: a client address in ``METRICS_ALLOWED_IPS`` or the ``METRICS_TOKEN`` bearer token."""
    return token_allowed(request.headers.get("Authorization", ""), settings.METRICS_TOKEN) or ip_allowed(
        request.META.get("REMOTE_ADDR", ""), settings.METRICS_ALLOWED_IPS
    )


def registry() -> CollectorRegistry:
    """What ``/metrics`` serves: every worker's files in multiprocess mode, else this process's registry."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)
    return merged


@operations_lane
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of every metric; 403 unless ``metrics_allowed(request)``."""
    if not metrics_allowed(request):
        return HttpResponseForbidden("Forbidden: /metrics needs an allowed address or the metrics token.\n")
    POOL.update(force=True)  # this worker's pool as of now; the others' as of their last request
    record_dependencies()
    # The format the scraper asks for (Accept), as prometheus_client's own exporter negotiates it: the
    # classic text format 0.0.4 by default, OpenMetrics when requested.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)
