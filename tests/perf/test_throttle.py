"""perf.throttle: shared atomic counters in fixed windows, leases, one round trip per request, fail open."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.test import override_settings
from django.urls import reverse
from django_redis import get_redis_connection
from redis.exceptions import ConnectionError as RedisConnectionError

from perf import throttle
from perf.throttle import UNAVAILABLE, Outcome, _Counters, lease_size
from tests.factories import EmissionFactory
from tests.helpers import Clock

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("throttle_clock")]


def allowed(outcomes: list[Outcome]) -> list[bool]:
    return [outcome.allowed for outcome in outcomes]


def test_a_window_allows_its_rate_then_refuses_until_it_ends() -> None:
    clock = Clock(120.0 + 45.25)  # 45.25 s into a minute window
    counters = _Counters(clock=clock)
    outcomes = [counters.count([("s", "caller", 3, 60)])[0] for _ in range(5)]
    assert allowed(outcomes) == [True, True, True, False, False]
    assert outcomes[-1].wait == pytest.approx(14.75)  # the time left in the window: Retry-After
    clock.now = 180.0  # the next window
    assert allowed(counters.count([("s", "caller", 3, 60)])) == [True]


def test_every_process_counts_into_the_same_number() -> None:
    """Two processes (two counter sets, one Redis): together they get the rate, not each."""
    clock = Clock()
    first, second = _Counters(clock=clock), _Counters(clock=clock)
    seen = [(first if i % 2 else second).count([("s", "caller", 4, 60)])[0].allowed for i in range(6)]
    assert seen == [True, True, True, True, False, False]


def test_concurrent_requests_are_each_counted_once() -> None:
    """INCRBY is atomic: 8 processes (counter sets) sending 50 requests each at once against a rate of 100 are
    allowed exactly 100 times between them."""
    clock = Clock()

    def requests(_: int) -> list[bool]:
        counters = _Counters(clock=clock)
        return [counters.count([("s", "caller", 100, 60)])[0].allowed for _ in range(50)]

    with ThreadPoolExecutor(8) as pool:
        results = [ok for batch in pool.map(requests, range(8)) for ok in batch]
    assert results.count(True) == 100
    key = f"vcci:t:s:caller:{int(clock.now // 60)}"
    # Each process stops asking once it finds the window over its rate.
    assert 100 < int(get_redis_connection("default").get(key)) <= 108
    assert 0 < get_redis_connection("default").ttl(key) <= 21  # dies with its window (19.5 s left), plus a second


def test_a_process_takes_leases_and_never_grants_more_than_the_rate() -> None:
    """At 1,000 a window a process adds 10 at a time; two processes together still get 1,000 exactly."""
    assert lease_size(1000) == 10 and lease_size(150) == 1
    clock = Clock()
    first, second = _Counters(clock=clock), _Counters(clock=clock)
    redis = get_redis_connection("default")
    calls = []
    original = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    redis.pipeline = counting
    try:
        grants = [(first if i % 3 else second).count([("s", "caller", 1000, 60)])[0].allowed for i in range(1100)]
    finally:
        del redis.pipeline
    assert grants.count(True) == 1000
    assert len(calls) < 1100 / 5  # a round trip per lease, not per request; none once the window is over


def test_without_redis_each_process_counts_in_memory() -> None:
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        counters = _Counters(clock=Clock())
        assert allowed([counters.count([("s", "caller", 2, 60)])[0] for _ in range(3)]) == [True, True, False]


def test_exhausted_tells_a_refusal_ahead_without_counting() -> None:
    """``exhausted``: refused once the shared count reached the limit (whichever process counted), remembered in
    this process; it adds nothing to the count."""
    clock = Clock(120.0 + 45.25)
    first, second = _Counters(clock=clock), _Counters(clock=clock)
    assert allowed([first.count([("s", "caller", 2, 60)])[0]]) == [True]
    assert [second.exhausted("s", "caller", 2, 60).allowed for _ in range(3)] == [True] * 3  # counts nothing
    assert allowed([first.count([("s", "caller", 2, 60)])[0]]) == [True]
    refused = second.exhausted("s", "caller", 2, 60)
    assert (refused.allowed, refused.wait) == (False, pytest.approx(14.75))
    assert allowed(second.count([("s", "caller", 2, 60)])) == [False]  # refused without asking Redis again
    assert int(get_redis_connection("default").get("vcci:t:s:caller:2")) == 2
    assert second.exhausted("s", "another", 2, 60).allowed
    clock.now = 180.0
    assert second.exhausted("s", "caller", 2, 60).allowed  # the next window


def test_exhausted_fails_open_without_redis(monkeypatch) -> None:
    counters = _Counters(clock=Clock())
    down = Down()
    monkeypatch.setattr(counters, "_client", lambda: down)
    before = unavailable()
    assert counters.exhausted("s", "caller", 1, 60).allowed
    assert (down.calls, unavailable() - before) == (1, 1)


class Down:
    """A Redis client whose every round trip fails, counting them."""

    def __init__(self) -> None:
        self.calls = 0

    def pipeline(self, **kwargs: Any) -> Any:
        return self

    def incrby(self, *args: Any) -> None:
        pass

    def expire(self, *args: Any) -> None:
        pass

    def execute(self) -> None:
        self.calls += 1
        raise RedisConnectionError("Connection refused")

    def get(self, key: str) -> None:
        self.execute()


def unavailable() -> float:
    return UNAVAILABLE._value.get()


def test_with_redis_down_requests_are_served_and_counted_as_unthrottled(api, org, monkeypatch, settings) -> None:
    """The service keeps serving through a Redis outage (fail open), says so in a metric, and stops trying Redis
    for CACHE_RETRY_AFTER seconds instead of paying its timeout on every request."""
    EmissionFactory.create(organization=org)
    assert api.get(reverse("supplier-list")).status_code == 200  # the token's row cached: the only Redis used below
    throttle.counters.reset()  # and no lease of that request's counts left
    down = Down()
    monkeypatch.setattr(throttle.counters, "_client", lambda: down)
    monotonic = Clock(50.0)
    monkeypatch.setattr(throttle.counters, "monotonic", monotonic)
    before = unavailable()
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "1/min", "org": "1/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        statuses = [api.get(reverse("supplier-list")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        assert down.calls == 1  # then the circuit is open
        assert unavailable() - before == 3
        monotonic.now += settings.CACHE_RETRY_AFTER
        assert api.get(reverse("supplier-list")).status_code == 200
        assert down.calls == 2  # tried again after the pause
    throttle.counters.reset()


def test_a_request_is_counted_once_whoever_evaluates_it(api, org, monkeypatch, settings, drf_requests) -> None:
    """A cached GET the fast path refuses goes to DRF, which answers 429 from the outcome the path kept on the
    request: one count per request, all its scopes in one call."""
    EmissionFactory.create(organization=org)
    calls = []
    count = throttle.counters.count

    def counting(keys: Any) -> Any:
        calls.append(keys)
        return count(keys)

    monkeypatch.setattr(throttle.counters, "count", counting)
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        statuses = [api.get(reverse("emission-list")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert len(drf_requests) == 2  # the first (stores the page) and the refused one; the second was the path's
    assert len(calls) == 3
    assert all({scope for scope, *_ in keys} == {"user", "org"} for keys in calls)
