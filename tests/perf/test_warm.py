"""perf.warm: the registry, how steps are run and counted, the report's numbers and Redis line, the boot-time job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from gunicorn.workers.ggevent import GeventWorker

from emissions.models import Organization
from perf import tenants
from perf import warm as warm_module
from perf.cache import Namespace, tiered
from perf.registry import Registry
from perf.tenants import Tenants
from perf.warm import (
    Counts,
    Step,
    Views,
    WarmError,
    WarmReport,
    WarmStep,
    WarmUp,
    check_host,
    default_host,
    register,
    registry,
    warm,
    warm_on_boot,
)
from tests.factories import ActivityRecordFactory

UNREACHABLE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connection refused
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
}
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture
def active(org: Organization) -> None:
    """``org`` has an activity record: the domain counts it active (worth warming); ``other_org`` has none."""
    ActivityRecordFactory.create(organization=org)


# -- where to -------------------------------------------------------------------------------------


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


# -- the registry and the run --------------------------------------------------------------------

THROWAWAY = Namespace("warm-test")


class Throwaway:
    """A warm-up of two kinds that fills one cache key per organization and kind, recording what it was given."""

    def __init__(self, *, failing: str | None = None) -> None:
        self.planned: list[list[str]] = []
        self.failing = failing

    def plan(self, organizations: Sequence[Any], views: Views) -> list[list[WarmStep]]:
        self.planned.append([org.slug for org in organizations])
        return [[self._step("second", org), self._step("first", org)] for org in organizations]

    def _step(self, kind: str, org: Any) -> WarmStep:
        def fill() -> None:
            if kind == self.failing:
                raise RuntimeError(f"{kind} broke")
            tiered().get_or_compute([THROWAWAY], f"{org.slug}:{kind}", lambda: kind)

        return WarmStep(kind, f"{kind} of {org.slug}", fill)


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Throwaway], WarmUp]:
    """Make a throwaway warm-up the only registered one, for this test."""

    def install(throwaway: Throwaway) -> WarmUp:
        monkeypatch.setattr(warm_module, "_registry", Registry("warm-up"))
        return register(WarmUp("throwaway", ("first", "second"), throwaway.plan))

    return install


@pytest.mark.django_db
def test_steps_run_in_plan_order_and_are_counted_fill_then_hit(org, other_org, only):
    throwaway = Throwaway()
    only(throwaway)
    first = warm([org, other_org], host="testserver")
    assert throwaway.planned == [["acme", "globex"]]  # one plan per run, for every organization
    assert [(s.organization, s.kind) for s in first.steps] == [
        ("acme", "second"),
        ("acme", "first"),
        ("globex", "second"),
        ("globex", "first"),
    ]
    assert all(s.counts == Counts(lookups=1, computes=1) for s in first.steps)
    assert list(first.by_kind()) == ["first", "second"]  # the registered kinds' order, not the steps'
    second = warm([org, other_org], host="testserver")
    assert all(s.counts.hits == s.counts.lookups == 1 and s.counts.computes == 0 for s in second.steps)
    assert second.summary() == "2 organization(s): first 2 hit / 0 filled, second 2 hit / 0 filled; 0 error(s)"


@pytest.mark.django_db
def test_a_failing_step_is_reported_and_the_others_still_run(org, only, caplog):
    only(Throwaway(failing="second"))
    with caplog.at_level(logging.ERROR, logger="vcci.cache"):
        report = warm([org], host="testserver")
    assert report.errors == ["acme: second of acme: RuntimeError: second broke"]
    assert [s.counts.filled for s in report.steps] == [0, 1]
    assert "Cache warm-up of second of acme failed for organization acme" in caplog.text


def test_a_taken_name_is_refused_for_another_warm_up(only):
    warm_up = only(Throwaway())
    assert register(warm_up) is warm_up  # the same one again is harmless
    with pytest.raises(ValueError, match="'throwaway' is already registered"):
        register(WarmUp("throwaway", ("other",), Throwaway().plan))
    assert registry() == [warm_up]


@pytest.mark.django_db
def test_a_view_step_fails_unless_the_view_answers_200(org, api):
    user = api.user
    views = Views(host="testserver", scheme="https")
    assert views.get(user, "supplier-list").status_code == 200
    views.step("suppliers", user, "supplier-list").action()
    refused = views.step("suppliers", user, "emission-summary", {"group_by": "nothing"})
    assert refused.label == "GET /api/v1/emissions/summary/?group_by=nothing"
    with pytest.raises(WarmError, match="answered 400"):
        refused.action()


# -- the report ------------------------------------------------------------------------------------


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
def test_redis_line(org, only):
    only(Throwaway())
    report = warm([org], host="testserver")
    assert report.redis.status == "ok" and report.redis.keys > 0 and report.redis.used_memory_human
    assert report.l1_size > 0


@pytest.mark.django_db
@override_settings(CACHES=UNREACHABLE)
def test_redis_down_still_warms_this_process_and_says_so(org, only, caplog):
    only(Throwaway())
    with caplog.at_level(logging.ERROR, logger="vcci.cache"):
        report = warm([org], host="testserver")
    assert not report.errors
    assert report.redis.status == "unreachable"
    assert report.redis.describe().startswith("Redis unreachable (ConnectionError")
    assert report.l1_size > 0
    assert sum(step.counts.computes for step in report.steps) > 0


@pytest.mark.django_db
@override_settings(CACHES=LOCMEM)
def test_without_redis(org, only):
    only(Throwaway())
    report = warm([org], host="testserver")
    assert not report.errors
    assert report.redis.status == "absent"
    assert "not configured" in report.redis.describe()


# -- warm-up when a gunicorn worker boots ----------------------------------------------------------


# The domain's lookups replaced by ones that need no database.
NO_ORGANIZATIONS = Tenants(by_slug=lambda slugs: [], active=list, largest=lambda: None)


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
def test_sync_worker_warms_active_orgs_in_a_daemon_thread(monkeypatch, org, other_org, active, caplog):
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
    monkeypatch.setattr(tenants, "_registered", NO_ORGANIZATIONS)
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
    monkeypatch.setattr(tenants, "_registered", NO_ORGANIZATIONS)
    monkeypatch.setattr(warm_module, "warm", lambda organizations, **kwargs: report)
    with override_settings(CACHE_WARM_ON_BOOT=True), caplog.at_level(logging.INFO, logger="tests.perf.warm"):
        warm_on_boot(SyncWorker()).join(timeout=60)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Cache warm-up: acme: GET /api/v1/suppliers/: WarmError: answered 500"]


@pytest.mark.django_db
def test_gevent_worker_warms_in_a_greenlet_and_leaves_open_connections_alone(monkeypatch, org, active):
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
