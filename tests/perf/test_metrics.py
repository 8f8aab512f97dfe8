"""perf.metrics: /metrics access control, and the counters each kind of work moves (in this process's registry;
tests/vcci/test_gunicorn_serving.py checks the sums across real gunicorn workers)."""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from perf import admission, db, health, metrics
from perf import cache as perf_cache
from perf.metrics import INVALID_METHOD, CacheMetricsListener, HttpMetrics, PoolMetrics, ip_allowed, token_allowed
from tests.emissions.api.payloads import electricity_input
from tests.perf.test_db import FakeClock
from vcci.urls import urlpatterns as project_urls

OUTSIDER = "203.0.113.9"  # TEST-NET-3: never in the allowlist


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cache_events(tier: str, event: str) -> float:
    """vcci_cache_events_total for one tier and event, summed over resources (as the load test sums them)."""
    return sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "vcci_cache_events"
        for s in family.samples
        if s.name == "vcci_cache_events_total" and s.labels["tier"] == tier and s.labels["event"] == event
    )


def scrape(client: Client | None = None, **extra: Any) -> dict[str, float]:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


# -- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_the_default_allowlist_admits_local_clients(address):
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE vcci_calculations_total counter" in response.content


def test_the_format_is_negotiated_as_prometheus_does():
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.content.endswith(b"# EOF\n")


@pytest.mark.parametrize("address", [OUTSIDER, "10.0.0.1", "", "not-an-address"])
def test_other_clients_are_refused(address):
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 403
    assert b"vcci_" not in response.content


@override_settings(METRICS_ALLOWED_IPS=["10.0.0.0/8", "192.0.2.7"])
@pytest.mark.parametrize(
    ("address", "status"), [("10.20.30.40", 200), ("192.0.2.7", 200), ("192.0.2.8", 403), ("127.0.0.1", 403)]
)
def test_the_allowlist_takes_addresses_and_networks(address, status):
    assert Client(REMOTE_ADDR=address).get("/metrics").status_code == status


@override_settings(METRICS_TOKEN="s3cret-token")
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cret-token", 200),
        ("bearer s3cret-token", 200),
        ("Bearer s3cret-tokeN", 403),
        ("Bearer s3cret", 403),
        ("Bearer ", 403),
        ("Token s3cret-token", 403),
        ("s3cret-token", 403),
    ],
)
def test_the_bearer_token_admits_any_address(authorization, status):
    response = Client(REMOTE_ADDR=OUTSIDER).get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == status


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=[])
def test_with_no_token_and_no_allowlist_nobody_gets_in():
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert not token_allowed("Bearer ", "")


def test_the_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(metrics.hmac, "compare_digest", spy)
    assert token_allowed("Bearer abc", "abc")
    assert not token_allowed("Bearer abd", "abc")
    assert calls == [(b"abc", b"abc"), (b"abd", b"abc")]


def test_ip_allowed_reads_ipv4_mapped_ipv6_addresses_as_ipv4():
    assert ip_allowed("::ffff:10.1.2.3", ["10.0.0.0/8"])
    assert not ip_allowed("::ffff:10.1.2.3", ["::1"])
    assert not ip_allowed("garbage", ["0.0.0.0/0"])


@pytest.mark.parametrize("url", ["/healthz", "/readyz"])
def test_health_endpoints_need_no_authentication(url, db):
    assert Client(REMOTE_ADDR=OUTSIDER).get(url).status_code == 200


# -- what the metrics show ----------------------------------------------------------------------


def test_latency_buckets_start_at_one_millisecond():
    assert settings.PROMETHEUS_LATENCY_BUCKETS[0] == 0.001
    assert HttpMetrics.get_instance().requests_latency_by_view_method._upper_bounds[0] == 0.001
    assert metrics.DB_SECONDS._upper_bounds[0] == 0.001
    Client().get("/healthz")
    buckets = [
        key
        for key in scrape()
        if key.startswith("django_http_requests_latency_seconds_by_view_method_bucket") and "'healthz'" in key
    ]
    assert buckets[0].startswith("django_http_requests_latency_seconds_by_view_method_bucket[('le', '0.001')")


def failing_view(request: HttpRequest) -> HttpResponse:
    raise ValueError("broken")


def plain_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


# The project's URLs plus two plain Django views: one answers, one raises (what no project view should do).
urlpatterns = [
    path("metrics-test/fails", failing_view, name="metrics-test-fails"),
    path("metrics-test/plain", plain_view, name="metrics-test-plain"),
    *project_urls,
]
LATENCY = "django_http_requests_latency_seconds_by_view_method"
RESPONSES = "django_http_responses_total_by_status_view_method_total"


@override_settings(ROOT_URLCONF=__name__)
def test_each_request_is_counted_once_by_status_view_and_method_and_timed():
    before = {
        "requests": sample("django_http_requests_before_middlewares_total"),
        "all latency": sample("django_http_requests_latency_including_middlewares_seconds_count"),
        "latency": sample(f"{LATENCY}_count", view="metrics-test-plain", method="GET"),
        "responses": sample(RESPONSES, status="200", view="metrics-test-plain", method="GET"),
    }
    assert Client().get("/metrics-test/plain").status_code == 200
    assert sample("django_http_requests_before_middlewares_total") == before["requests"] + 1
    assert sample("django_http_requests_latency_including_middlewares_seconds_count") == before["all latency"] + 1
    assert sample(f"{LATENCY}_count", view="metrics-test-plain", method="GET") == before["latency"] + 1
    assert sample(RESPONSES, status="200", view="metrics-test-plain", method="GET") == before["responses"] + 1


@override_settings(ROOT_URLCONF=__name__)
def test_a_view_exception_is_counted_by_type_and_view_and_timed_once():
    labels = {"view": "metrics-test-fails", "method": "GET"}
    latency, responses = sample(f"{LATENCY}_count", **labels), sample(RESPONSES, status="500", **labels)
    by_type = sample("django_http_exceptions_total_by_type_total", type="ValueError")
    by_view = sample("django_http_exceptions_total_by_view_total", view="metrics-test-fails")
    assert Client(raise_request_exception=False).get("/metrics-test/fails").status_code == 500
    assert sample("django_http_exceptions_total_by_type_total", type="ValueError") == by_type + 1
    assert sample("django_http_exceptions_total_by_view_total", view="metrics-test-fails") == by_view + 1
    assert sample(RESPONSES, status="500", **labels) == responses + 1
    # django-prometheus's own middleware observed a failed request's latency twice (its exception and response hooks).
    assert sample(f"{LATENCY}_count", **labels) == latency + 1


@override_settings(ROOT_URLCONF=__name__)
def test_an_admission_refusal_is_counted_as_a_request_and_a_refusal_not_as_the_views_503(monkeypatch, admission_gate):
    admission_gate()
    monkeypatch.setattr(admission, "admit", lambda request: False)  # no place comes free: load shed
    labels = {"view": "metrics-test-plain", "method": "GET"}
    requests, refused = (
        sample("django_http_requests_before_middlewares_total"),
        sample("vcci_admission_refused_total", reason="in_flight"),
    )
    responses, latency = sample(RESPONSES, status="503", **labels), sample(f"{LATENCY}_count", **labels)
    response = Client().get("/metrics-test/plain")
    assert response.status_code == 503 and response["Retry-After"]
    assert sample("django_http_requests_before_middlewares_total") == requests + 1
    assert sample("vcci_admission_refused_total", reason="in_flight") == refused + 1
    # Not the view's answer: the 5xx share (VCCIHighErrorRate) reads this counter and must not fire on load shedding.
    assert sample(RESPONSES, status="503", **labels) == responses
    assert sample(f"{LATENCY}_count", **labels) == latency


@override_settings(ROOT_URLCONF=__name__)
def test_an_unknown_method_is_labelled_invalid_so_clients_cannot_make_series():
    invalid = {"status": "200", "view": "metrics-test-plain", "method": INVALID_METHOD}
    responses, latency = (
        sample(RESPONSES, **invalid),
        sample(f"{LATENCY}_count", view="metrics-test-plain", method=INVALID_METHOD),
    )
    for method in ("BREW", "WHEN"):
        assert Client().generic(method, "/metrics-test/plain").status_code == 200
    assert sample(RESPONSES, **invalid) == responses + 2
    assert sample(f"{LATENCY}_count", view="metrics-test-plain", method=INVALID_METHOD) == latency + 2
    assert sample(f"{LATENCY}_count", view="metrics-test-plain", method="BREW") == 0
    assert sample(RESPONSES, status="200", view="metrics-test-plain", method="WHEN") == 0


def test_only_the_read_request_metrics_are_published():
    Client().get("/healthz")
    names = {key.partition("[")[0] for key in scrape()}
    published = {name for name in names if name.startswith("django_http_")}
    assert {
        "django_http_requests_before_middlewares_total",
        "django_http_requests_latency_including_middlewares_seconds_bucket",
        f"{LATENCY}_bucket",
        RESPONSES,
    } <= published
    # What the dashboard, the alerts and the runbook do not read is not written on every request.
    assert (
        not {
            "django_http_requests_total_by_transport_total",
            "django_http_requests_total_by_view_transport_method_total",
            "django_http_responses_total_by_charset_total",
            "django_http_requests_body_total_bytes_bucket",
            "django_http_responses_body_total_bytes_bucket",
            "django_http_responses_before_middlewares_total",
            "django_http_requests_total_by_method_total",
            "django_http_responses_total_by_status_total",
            "django_http_responses_total_by_templatename_total",
            "django_http_responses_streaming_total",
            "django_http_ajax_requests_total",
        }
        & published
    )


@pytest.mark.django_db
def test_cached_gets_count_l2_then_l1_hits(api, electricity_factor):
    assert any(isinstance(listener, CacheMetricsListener) for listener in perf_cache.STATS_LISTENERS)
    url = "/api/v1/factors/"
    l1_misses, l2_stores = cache_events("l1", "miss"), cache_events("l2", "store")
    cold = api.get(url)
    assert cold.status_code == 200
    assert cache_events("l1", "miss") > l1_misses
    assert cache_events("l2", "store") > l2_stores
    perf_cache.tiered().clear_local()  # as another worker: only Redis (L2) holds the page
    l2_hits, promotions = cache_events("l2", "hit"), cache_events("l2", "promotion")
    assert api.get(url).content == cold.content
    assert cache_events("l2", "hit") > l2_hits
    assert cache_events("l2", "promotion") > promotions
    l1_hits = cache_events("l1", "hit")
    assert api.get(url).content == cold.content  # the promoted copy, from this worker's memory
    assert cache_events("l1", "hit") > l1_hits
    assert sample("vcci_cache_seconds_count", tier="l2", resource="factors") >= 1


def test_the_cache_listener_feeds_both_metrics():
    listener = CacheMetricsListener()
    before = sample("vcci_cache_events_total", tier="l1", resource="probe", event="hit")
    listener.count("l1", "probe", "hit", 3)
    listener.observe("l2", "probe", 0.0004)
    assert sample("vcci_cache_events_total", tier="l1", resource="probe", event="hit") == before + 3
    assert sample("vcci_cache_seconds_bucket", tier="l2", resource="probe", le="0.0005") >= 1


@pytest.mark.django_db
@override_settings(DB_METRICS_HEADERS=True)
def test_each_request_publishes_its_query_count_and_db_time(api, electricity_factor):
    count = sample("vcci_db_queries_per_request_count", view="calculate")
    queries = sample("vcci_db_queries_per_request_sum", view="calculate")
    seconds = sample("vcci_db_seconds_per_request_sum", view="calculate")
    response = api.post("/api/v1/calculate/", electricity_input(), format="json")
    assert sample("vcci_db_queries_per_request_count", view="calculate") == count + 1
    assert sample("vcci_db_queries_per_request_sum", view="calculate") == queries + int(response["X-DB-Queries"])
    assert int(response["X-DB-Queries"]) > 0
    assert sample("vcci_db_seconds_per_request_sum", view="calculate") > seconds


@pytest.mark.django_db
def test_a_scrape_shows_this_process_pool():
    scraped = scrape()
    pool = metrics.pool_stats()
    assert scraped["vcci_db_pool_max_size[]"] == pool["pool_max"]
    assert scraped["vcci_db_pool_requests_total[]"] >= 1


def test_pool_counters_are_published_as_increments(monkeypatch):
    keys = {key: 0 for key in ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")}
    counters = dict.fromkeys(metrics.POOL_COUNTERS, 0)
    readings = iter(
        [
            {**keys, "pool_size": 3, **counters, "requests_num": 10, "requests_wait_ms": 1500},
            {**keys, "pool_size": 2, **counters, "requests_num": 25, "requests_wait_ms": 1500},
            # The pool was recreated: its counters restarted from zero.
            {**keys, "pool_size": 1, **counters, "requests_num": 4, "requests_wait_ms": 0},
        ]
    )
    monkeypatch.setattr(metrics, "pool_stats", lambda alias: next(readings))
    publisher = PoolMetrics(interval=3600)
    requests, wait = sample("vcci_db_pool_requests_total"), sample("vcci_db_pool_wait_seconds_total")
    publisher.update()
    assert sample("vcci_db_pool_requests_total") == requests + 10
    assert sample("vcci_db_pool_wait_seconds_total") == pytest.approx(wait + 1.5)
    assert sample("vcci_db_pool_connections") == 3
    publisher.update()  # within the interval: not read again
    assert sample("vcci_db_pool_requests_total") == requests + 10
    publisher.update(force=True)
    assert sample("vcci_db_pool_requests_total") == requests + 25
    assert sample("vcci_db_pool_connections") == 2
    publisher.update(force=True)
    assert sample("vcci_db_pool_requests_total") == requests + 29
    assert sample("vcci_db_pool_wait_seconds_total") == pytest.approx(wait + 1.5)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_with_a_multiprocess_directory_the_view_merges_every_process_files(tmp_path, monkeypatch):
    # Two other processes count into the directory; the view (any process) serves their sum.
    for n in (2, 5):
        result = run_python(
            "from prometheus_client import Counter\n"
            f"Counter('vcci_probe_total', 'probe', ['kind']).labels('x').inc({n})\n",
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        )
        assert result.returncode == 0, result.stderr
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert scrape()["vcci_probe_total[('kind', 'x')]"] == 7
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert "vcci_probe_total[('kind', 'x')]" not in scrape()


def test_a_missing_multiprocess_directory_is_named_at_startup(tmp_path):
    result = run_python(
        "import django; django.setup()",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"),
        DJANGO_SETTINGS_MODULE="vcci.settings_test",
    )
    assert result.returncode == 1
    assert "ImproperlyConfigured" in result.stderr
    assert f"PROMETHEUS_MULTIPROC_DIR='{tmp_path / 'missing'}' is not a directory" in result.stderr


# -- what the alert rules watch (ops/prometheus/alerts.yml) --------------------------------------------------------


@override_settings(SLOW_QUERY_MS=200)
def test_a_slow_query_is_observed_in_the_slow_query_histogram(monkeypatch):
    metrics.install()
    metrics.install()  # once, however often
    assert db.SLOW_QUERY_LISTENERS.count(metrics.SLOW_QUERY_SECONDS.observe) == 1
    before = {le: sample("vcci_db_slow_query_seconds_bucket", le=le) for le in ("1.0", "2.5")}
    count = sample("vcci_db_slow_query_seconds_count")
    monkeypatch.setattr(db.time, "perf_counter", FakeClock(1.5))  # the query takes 1.5 s
    db.slow_query_wrapper(lambda *args: "rows", "SELECT 2", None, False, {})
    assert sample("vcci_db_slow_query_seconds_count") == count + 1
    assert sample("vcci_db_slow_query_seconds_bucket", le="1.0") == before["1.0"]  # the alert's "slower than 1 s"
    assert sample("vcci_db_slow_query_seconds_bucket", le="2.5") == before["2.5"] + 1


@pytest.mark.django_db
def test_each_scrape_checks_postgresql_and_redis(monkeypatch):
    scraped = scrape()
    assert scraped["vcci_dependency_up[('dependency', 'database')]"] == 1
    assert scraped["vcci_dependency_up[('dependency', 'redis')]"] == 1

    monkeypatch.setattr(health, "DATABASE_CHECK_SQL", "SELECT no_such_column")
    scraped = scrape()
    assert scraped["vcci_dependency_up[('dependency', 'database')]"] == 0
    assert scraped["vcci_dependency_up[('dependency', 'redis')]"] == 1


def test_an_unreachable_redis_reads_0_and_no_redis_is_not_published(monkeypatch):
    def unreachable() -> str:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(metrics, "check_database", lambda: health.OK)
    monkeypatch.setattr(metrics, "check_redis", unreachable)
    assert metrics.record_dependencies() == {"database": 1, "redis": 0}
    assert sample("vcci_dependency_up", dependency="redis") == 0
    monkeypatch.setattr(metrics, "check_redis", lambda: health.NOT_CONFIGURED)
    assert metrics.record_dependencies() == {"database": 1}


@pytest.mark.parametrize(
    ("environ", "role", "configured"),
    [
        ({}, "main", 2),
        ({"GUNICORN_WORKERS": "3"}, "main", 3),
        ({"VCCI_SERVER_ROLE": "bulk", "GUNICORN_WORKERS": "1"}, "bulk", 1),
    ],
)
def test_a_process_serving_requests_counts_itself_as_a_worker_of_its_role(monkeypatch, environ, role, configured):
    for name in ("GUNICORN_WORKERS", "VCCI_SERVER_ROLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    Client().get("/healthz")  # a new handler builds the middleware, as a worker does once
    assert sample("vcci_worker_processes", role=role) == 1
    assert sample("vcci_worker_processes_configured", role=role) == configured
