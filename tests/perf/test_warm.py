"""perf.warm: what is warmed, as whom, the report's numbers and Redis line, and the boot-time background job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from gunicorn.workers.ggevent import GeventWorker

from emissions.calculation import FactorResolver
from emissions.models import EmissionFactor, ExchangeRate, Organization
from perf import warm as warm_module
from perf.warm import (
    STEPS_PER_ORGANIZATION,
    Counts,
    Step,
    WarmError,
    WarmReport,
    active_organizations,
    check_host,
    default_host,
    member_user,
    warm,
    warm_on_boot,
)
from tests.factories import EmissionFactory, ExchangeRateFactory, MembershipFactory, SupplierFactory

UNREACHABLE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connection refused
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
}
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture
def data(org: Organization, steel_factor: EmissionFactor) -> int:
    """One emission with a supplier, on a published factor; a year of exchange rates. Returns the supplier id."""
    supplier = SupplierFactory.create(organization=org)
    EmissionFactory.create(
        organization=org, factor=steel_factor, activity__supplier=supplier, activity__activity=steel_factor.activity
    )
    ExchangeRateFactory.create(currency="EUR", year=2022)
    return supplier.pk


# -- what and as whom ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (["api.example.com", "localhost"], "api.example.com"),
        (["*", ".example.com", "[::1]"], "[::1]"),
        (["*"], "localhost"),
        ([], "localhost"),
    ],
)
def test_default_host_is_the_first_plain_allowed_host(allowed, expected):
    with override_settings(ALLOWED_HOSTS=allowed):
        assert default_host() == expected


def test_check_host_refuses_what_the_site_refuses():
    check_host("testserver", "https")
    with pytest.raises(WarmError, match="not in ALLOWED_HOSTS"):
        check_host("evil.example", "http")
    with pytest.raises(WarmError, match="scheme"):
        check_host("testserver", "ftp")


@pytest.mark.django_db
def test_active_organizations_have_activity_records(org, other_org, data):
    assert [o.slug for o in active_organizations()] == ["acme"]


@pytest.mark.django_db
def test_member_user_is_a_real_member_with_its_membership_loaded(org, django_assert_num_queries):
    membership = MembershipFactory.create(organization=org)
    with django_assert_num_queries(1):
        user = member_user(org)
    with django_assert_num_queries(0):
        assert user.pk == membership.user_id
        assert hasattr(user, "membership")
        assert user.membership.organization_id == org.pk


@pytest.mark.django_db
def test_member_user_without_members_is_an_unsaved_stand_in(org, django_assert_num_queries):
    user = member_user(org)
    with django_assert_num_queries(0):
        assert user.pk is None and user.username == "warm_cache"
        assert hasattr(user, "membership")
        assert user.membership.organization == org
        assert user.is_authenticated


# -- warming and its report ------------------------------------------------------------------------


@pytest.mark.django_db
def test_factor_resolution_is_primed_for_the_calculator(org, data, steel_factor, django_assert_num_queries):
    report = warm([org], host="testserver")
    assert not report.errors
    with django_assert_num_queries(0):
        resolver = FactorResolver(org)
        resolver.source.prime_activities([steel_factor.activity])
        resolver.source.prime_suppliers([data])
        resolver.source.prime_rates([2022])
        rate = resolver.exchange_rate("EUR", "USD", 2022)
    assert rate == ExchangeRate.objects.get().rate


@pytest.mark.django_db
def test_counts_fill_then_hit(org, data):
    first = warm([org], host="testserver")
    assert len(first.steps) == STEPS_PER_ORGANIZATION  # the progress bar's total per organization
    assert [(s.kind, s.counts.filled > 0, s.counts.hits) for s in first.steps] == [
        (step.kind, True, 0) for step in first.steps
    ]
    second = warm([org], host="testserver")
    for before, after in zip(first.steps, second.steps, strict=True):
        assert after.counts.lookups == before.counts.lookups
        assert after.counts.hits == after.counts.lookups and after.counts.filled == after.counts.computes == 0
    assert second.summary().startswith("1 organization(s): factors 4 hit / 0 filled")
    assert second.summary().endswith("0 error(s)")


@pytest.mark.django_db
def test_a_second_warm_up_renews_what_the_first_stored(org, data, steel_factor):
    from perf.cache import tiered

    warm([org], host="testserver")
    client = tiered()._client
    keys = client.keys(f"vcci:c:{tiered().key_version}:*candidates:*")
    assert keys
    for key in keys:
        client.expire(key, 3)  # as if stored by a warm-up almost a TTL ago
    warm([org], host="testserver")
    assert all(client.ttl(key) > 3 for key in keys)


def test_counts_between_snapshots():
    before = {("l1", "emissions", "hit"): 2, ("l1", "emissions", "miss"): 1}
    after = {
        ("l1", "emissions", "hit"): 3,
        ("l1", "emissions", "miss"): 4,
        ("l1", "factors", "miss"): 1,
        ("l2", "emissions", "hit"): 1,
        ("l2", "emissions", "miss"): 2,
        ("l2", "factors", "wait"): 1,
        ("db", "emissions", "compute"): 1,
    }
    counts = Counts.between(before, after)
    assert counts == Counts(lookups=5, l1_hits=1, l2_hits=1, waits=1, computes=1)
    assert (counts.hits, counts.filled) == (3, 2)


@pytest.mark.django_db
def test_redis_line(org, data):
    report = warm([org], host="testserver")
    assert report.redis.status == "ok" and report.redis.keys > 0 and report.redis.used_memory_human
    assert report.l1_size > 0


@pytest.mark.django_db
@override_settings(CACHES=UNREACHABLE)
def test_redis_down_still_warms_this_process_and_says_so(org, data, caplog):
    with caplog.at_level(logging.ERROR, logger="vcci.cache"):
        report = warm([org], host="testserver")
    assert not report.errors
    assert report.redis.status == "unreachable"
    assert report.redis.describe().startswith("Redis unreachable (ConnectionError")
    assert report.l1_size > 0
    assert sum(step.counts.computes for step in report.steps) > 0


@pytest.mark.django_db
@override_settings(CACHES=LOCMEM)
def test_without_redis(org, data):
    report = warm([org], host="testserver")
    assert not report.errors
    assert report.redis.status == "absent"
    assert "not configured" in report.redis.describe()


# -- warm-up when a gunicorn worker boots ----------------------------------------------------------


class SyncWorker:
    """What warm_on_boot needs of a gunicorn worker: its logger (and its class)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("tests.perf.warm")


class StubGeventWorker(GeventWorker):
    def __init__(self) -> None:  # gunicorn's needs the arbiter, sockets and config
        self.log = logging.getLogger("tests.perf.warm")


class Recorder:
    """Stands in for ``warm``: records each call (in the job's thread) and returns an empty report."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def __call__(self, organizations: Iterable[Organization], **kwargs: Any) -> WarmReport:
        slugs = [o.slug for o in organizations]  # evaluated here: the job's own database connection
        self.calls.append({"slugs": slugs, "thread": threading.current_thread().name, **kwargs})
        if self.error is not None:
            raise self.error
        return WarmReport(slugs, host=kwargs["host"], scheme=kwargs["scheme"])


def test_off_by_default_starts_nothing(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(warm_module, "warm", recorder)
    with override_settings(CACHE_WARM_ON_BOOT=False):
        assert warm_on_boot(SyncWorker()) is None
    assert recorder.calls == []


def test_nothing_when_the_cache_is_off(monkeypatch, caplog):
    recorder = Recorder()
    monkeypatch.setattr(warm_module, "warm", recorder)
    with override_settings(CACHE_WARM_ON_BOOT=True, CACHE_ENABLED=False), caplog.at_level(logging.INFO):
        assert warm_on_boot(SyncWorker()) is None
    assert recorder.calls == []
    assert "CACHE_ENABLED is off" in caplog.text


@pytest.mark.django_db(transaction=True)  # the job's thread has its own connection: it sees committed rows only
def test_sync_worker_warms_active_orgs_in_a_daemon_thread(monkeypatch, org, other_org, data, caplog):
    recorder = Recorder()
    monkeypatch.setattr(warm_module, "warm", recorder)
    with override_settings(CACHE_WARM_ON_BOOT=True), caplog.at_level(logging.INFO, logger="tests.perf.warm"):
        job = warm_on_boot(SyncWorker())
        assert isinstance(job, threading.Thread) and job.daemon
        job.join(timeout=60)
    assert not job.is_alive()
    assert recorder.calls == [
        {"slugs": ["acme"], "thread": "vcci-cache-warm", "host": "localhost", "scheme": "http", "progress": None}
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("Cache warm-up started")
    assert messages[-1].startswith("Cache warm-up done in")


def test_a_failing_warm_up_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setattr(warm_module, "active_organizations", list)
    monkeypatch.setattr(warm_module, "warm", Recorder(error=RuntimeError("database is starting up")))
    with override_settings(CACHE_WARM_ON_BOOT=True), caplog.at_level(logging.INFO, logger="tests.perf.warm"):
        job = warm_on_boot(SyncWorker())
        job.join(timeout=60)
    failed = [r for r in caplog.records if r.getMessage().startswith("Cache warm-up failed")]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert failed[0].exc_info and "database is starting up" in str(failed[0].exc_info[1])


def test_failed_items_are_logged_as_warnings(monkeypatch, caplog):
    report = WarmReport(["acme"], host="localhost", scheme="http")
    report.steps.append(Step("acme", "suppliers", "GET /api/v1/suppliers/", error="WarmError: answered 500"))
    monkeypatch.setattr(warm_module, "active_organizations", list)
    monkeypatch.setattr(warm_module, "warm", lambda organizations, **kwargs: report)
    with override_settings(CACHE_WARM_ON_BOOT=True), caplog.at_level(logging.INFO, logger="tests.perf.warm"):
        warm_on_boot(SyncWorker()).join(timeout=60)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Cache warm-up: acme: GET /api/v1/suppliers/: WarmError: answered 500"]


@pytest.mark.django_db
def test_gevent_worker_warms_in_a_greenlet_and_leaves_open_connections_alone(monkeypatch, org, data):
    import gevent

    recorder = Recorder()
    monkeypatch.setattr(warm_module, "warm", recorder)
    with override_settings(CACHE_WARM_ON_BOOT=True):
        job = warm_on_boot(StubGeventWorker())
    assert isinstance(job, gevent.Greenlet)
    job.join(timeout=60)
    assert job.successful()
    assert [call["slugs"] for call in recorder.calls] == [["acme"]]
    # Unpatched, the greenlet shared this thread's connection (inside the test's transaction): still open.
    assert connection.connection is not None
    assert Organization.objects.filter(slug="acme").exists()
