"""perf.cache: tiers, versioned invalidation, stampede protection, Redis failures."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from django_redis import get_redis_connection
from redis.exceptions import ConnectionError as RedisConnectionError

from perf import cache as perf_cache
from perf.cache import (
    AUTH,
    STATS_KEY,
    Namespace,
    TieredCache,
    invalidate,
    is_renewing,
    org_ns,
    register_resource,
    renewing,
    resources,
    tiered,
)
from tests.perf.conftest import RoundTrips


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Computations:
    """A compute function that counts its calls and returns the next value each time."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


NS = org_ns(1, "emissions")
GLOBAL = Namespace("factors")  # a namespace of no organization


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(clock: Clock) -> TieredCache:
    return TieredCache(l1_ttl=2.0, clock=clock)


@pytest.fixture
def other_worker() -> tuple[TieredCache, Clock]:
    """Another process: its own L1 and clock, the same Redis."""
    own_clock = Clock()
    return TieredCache(l1_ttl=2.0, clock=own_clock), own_clock


def test_read_through_computes_once_then_serves_l1(worker: TieredCache) -> None:
    compute = Computations({"total": 1})
    assert worker.get_or_compute([NS], "k", compute) == {"total": 1}
    assert worker.get_or_compute([NS], "k", compute) == {"total": 1}
    assert compute.calls == 1
    counts = worker.stats.counts
    assert counts[("l1", "emissions", "miss")] == 1
    assert counts[("l2", "emissions", "miss")] == 1
    assert counts[("db", "emissions", "compute")] == 1
    assert counts[("l1", "emissions", "hit")] == 1


def test_l2_hit_is_promoted_into_l1(worker: TieredCache, other_worker: tuple[TieredCache, Clock]) -> None:
    worker.get_or_compute([NS], "k", Computations("value"))
    other, _ = other_worker
    compute = Computations("never")
    assert other.get_or_compute([NS], "k", compute) == "value"  # from Redis
    assert other.get_or_compute([NS], "k", compute) == "value"  # from its L1
    assert compute.calls == 0
    assert other.stats.counts[("l2", "emissions", "hit")] == 1
    assert other.stats.counts[("l2", "emissions", "promotion")] == 1
    assert other.stats.counts[("l1", "emissions", "hit")] == 1


def test_a_value_stays_in_l1_past_the_versions_lifetime_while_its_versions_hold(
    worker: TieredCache, other_worker: tuple[TieredCache, Clock]
) -> None:
    """A value's key names its versions, so it never changes: only the versions are read again after l1_ttl."""
    worker.get_or_compute([NS], "k", Computations("value"))
    other, other_clock = other_worker
    assert other.get_or_compute([NS], "k", Computations("never")) == "value"  # from Redis, kept
    other_clock.advance(60)
    assert other.get_or_compute([NS], "k", Computations("never")) == "value"
    # The versions were read from Redis again (still the same); the value came from L1, not a second Redis read.
    assert other.stats.counts[("l2", "emissions", "hit")] == 1
    assert other.stats.counts[("l1", "emissions", "hit")] == 1
    # A value lives in L1 as long as in Redis (CACHE_L2_TTL), then it is read from Redis again.
    other_clock.advance(600)
    assert other.get_or_compute([NS], "k", Computations("never")) == "value"
    assert other.stats.counts[("l2", "emissions", "hit")] == 2


def test_not_found_values_keep_the_short_lifetime_in_l1(worker: TieredCache, clock: Clock) -> None:
    empty = Computations([])
    assert worker.get_or_compute([NS], "missing", empty, negative=lambda rows: not rows) == []
    assert worker.get_or_compute([NS], "found", Computations([1]), negative=lambda rows: not rows) == [1]
    clock.advance(2.1)
    assert worker.get_or_compute([NS], "missing", Computations("never"), negative=lambda rows: not rows) == []
    assert worker.get_or_compute([NS], "found", Computations("never"), negative=lambda rows: not rows) == [1]
    # The "not found" came from Redis again (its L1 copy had expired), the value from L1.
    assert worker.stats.counts[("l2", "emissions", "hit")] == 1
    assert worker.stats.counts[("l1", "emissions", "hit")] == 1


def test_many_values_stay_in_l1_past_the_versions_lifetime(worker: TieredCache, clock: Clock) -> None:
    def load(keys: list[str]) -> dict[str, Any]:
        return {key: ([] if key == "none" else [key]) for key in keys}

    def lookup() -> dict[str, Any]:
        return worker.get_many_or_compute([NS], ["a", "none"], str, load, negative=lambda rows: not rows)

    assert lookup() == {"a": ["a"], "none": []}
    clock.advance(2.1)
    assert lookup() == {"a": ["a"], "none": []}
    # "a" from L1; the "not found" from Redis again.
    assert worker.stats.counts[("l1", "emissions", "hit")] == 1
    assert worker.stats.counts[("l2", "emissions", "hit")] == 1


def test_values_are_bytes_in_both_tiers_so_callers_never_share_an_object(worker: TieredCache) -> None:
    first = worker.get_or_compute([NS], "k", Computations({"rows": [1]}))
    first["rows"].append(2)
    assert worker.get_or_compute([NS], "k", Computations("never")) == {"rows": [1]}


def test_bump_makes_older_entries_unreachable_in_this_worker_at_once(worker: TieredCache) -> None:
    compute = Computations("old", "new")
    assert worker.get_or_compute([NS], "k", compute) == "old"
    worker.bump(NS)
    assert worker.get_or_compute([NS], "k", compute) == "new"


class CommandCounter:
    """Stands in for the Redis client: counts the commands sent (pipelines' too) and passes them on."""

    def __init__(self, client: Any, delay: float = 0.0) -> None:
        self.client, self.delay = client, delay
        self.sent: list[str] = []

    def mget(self, keys: list[str]) -> Any:
        self.sent.append("mget")
        time.sleep(self.delay)  # a reply that takes a while: other callers arrive meanwhile
        return self.client.mget(keys)

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(**kwargs)
        counter = self

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                command = getattr(pipe, name)
                if name == "execute":
                    return command

                def queued(*args: Any, **kw: Any) -> Any:
                    counter.sent.append(name)
                    return command(*args, **kw)

                return queued

        return Pipe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_known_version_is_read_with_one_mget_and_nothing_set(worker: TieredCache, clock: Clock) -> None:
    first = worker.versions([NS, GLOBAL])  # new namespaces: created (SET NX), then read
    clock.advance(2.1)  # their L1 copies expire
    counter = CommandCounter(worker._redis())
    worker._client = counter
    assert worker.versions([NS, GLOBAL]) == first
    assert counter.sent == ["mget"]


def test_a_missing_version_is_created_once_and_read_back(worker: TieredCache) -> None:
    counter = CommandCounter(worker._redis())
    worker._client = counter
    version = worker.versions([org_ns(99, "emissions")])[0]
    assert counter.sent == ["mget", "set", "set", "mget"]
    assert version.value.isdigit()


def test_callers_needing_an_expired_version_at_once_read_it_once(worker: TieredCache, clock: Clock) -> None:
    first = worker.versions([NS])
    clock.advance(2.1)
    counter = CommandCounter(worker._redis(), delay=0.2)
    worker._client = counter
    seen: list[tuple[Any, ...]] = []
    threads = [threading.Thread(target=lambda: seen.append(worker.versions([NS]))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [first] * 5
    assert counter.sent == ["mget"]  # the four others waited for the first one's read, then found it in L1


def test_another_worker_sees_a_bump_within_its_l1_ttl(
    worker: TieredCache, other_worker: tuple[TieredCache, Clock]
) -> None:
    other, other_clock = other_worker
    assert other.get_or_compute([NS], "k", Computations("old")) == "old"
    worker.bump(NS)
    # Until its L1 copy of the version expires the other worker still serves what it had: the documented bound.
    other_clock.advance(1.9)
    assert other.get_or_compute([NS], "k", Computations("new")) == "old"
    other_clock.advance(0.2)
    assert other.get_or_compute([NS], "k", Computations("new")) == "new"


def test_a_bump_of_one_namespace_leaves_the_others(worker: TieredCache) -> None:
    other_ns = org_ns(2, "emissions")
    worker.get_or_compute([other_ns], "k", Computations("theirs"))
    worker.bump(NS)
    assert worker.get_or_compute([other_ns], "k", Computations("never")) == "theirs"


def test_a_value_in_several_namespaces_follows_each_of_them(worker: TieredCache) -> None:
    namespaces = [NS, GLOBAL]
    compute = Computations(1, 2, 3)
    assert worker.get_or_compute(namespaces, "k", compute) == 1
    worker.bump(GLOBAL)
    assert worker.get_or_compute(namespaces, "k", compute) == 2
    worker.bump(NS)
    assert worker.get_or_compute(namespaces, "k", compute) == 3


def test_versions_survive_a_redis_restart_without_reusing_an_old_one(worker: TieredCache) -> None:
    (before,) = worker.versions([NS])
    get_redis_connection("default").flushdb()  # what a restart of a Redis that keeps nothing does
    worker.clear_local()
    (after,) = worker.versions([NS])
    assert int(after.value) > int(before.value)


def test_negative_results_live_only_the_negative_ttl_in_redis(worker: TieredCache) -> None:
    worker.get_or_compute([NS], "missing", Computations(None), negative=lambda v: v is None)
    worker.get_or_compute([NS], "present", Computations("x"), negative=lambda v: v is None)
    redis = get_redis_connection("default")
    ttls = {key.decode().rsplit(":", 1)[-1]: redis.ttl(key) for key in redis.keys(f"{perf_cache.PREFIX}:*:missing")}
    ttls |= {key.decode().rsplit(":", 1)[-1]: redis.ttl(key) for key in redis.keys(f"{perf_cache.PREFIX}:*:present")}
    assert 0 < ttls["missing"] <= worker.negative_ttl
    assert worker.negative_ttl < ttls["present"] <= worker.l2_ttl


def test_get_many_reads_each_tier_once_and_computes_only_the_missing(
    worker: TieredCache, other_worker: tuple[TieredCache, Clock]
) -> None:
    asked: list[list[int]] = []

    def load(missing: list[int]) -> dict[int, str]:
        asked.append(missing)
        return {k: f"v{k}" for k in missing}

    assert worker.get_many_or_compute([NS], [1, 2], str, load) == {1: "v1", 2: "v2"}
    other, _ = other_worker
    assert other.get_many_or_compute([NS], [1, 2, 3], str, load) == {1: "v1", 2: "v2", 3: "v3"}
    assert asked == [[1, 2], [3]]
    assert other.stats.counts[("l2", "emissions", "hit")] == 2
    assert other.get_many_or_compute([NS], [3, 1], str, load) == {3: "v3", 1: "v1"}
    assert asked == [[1, 2], [3]]
    assert other.stats.counts[("l1", "emissions", "hit")] == 2


def test_a_batch_can_leave_negative_values_out_of_the_cache(worker: TieredCache) -> None:
    asked: list[list[int]] = []

    def load(missing: list[int]) -> dict[int, str]:
        asked.append(missing)
        return {k: "" if k == 2 else f"v{k}" for k in missing}

    def is_empty(value: str) -> bool:
        return not value

    for _ in range(2):
        assert worker.get_many_or_compute([NS], [1, 2], str, load, negative=is_empty, keep_negative=False) == {
            1: "v1",
            2: "",
        }
    assert asked == [[1, 2], [2]]  # the positive value was kept, the negative one asked for again


def test_renewing_batch_lookups_give_found_entries_a_full_lifetime(worker: TieredCache) -> None:
    def load(missing: list[int]) -> dict[int, str]:
        return {k: "" if k == 2 else f"v{k}" for k in missing}

    def ttls() -> list[int]:
        versions = worker.versions([NS])
        return [worker._client.ttl(worker._value_key([NS], versions, str(k))) for k in (1, 2)]

    def is_empty(value: str) -> bool:
        return not value

    worker.get_many_or_compute([NS], [1, 2], str, load, negative=is_empty)
    versions = worker.versions([NS])
    for k in (1, 2):
        worker._client.expire(worker._value_key([NS], versions, str(k)), 3)
    worker.get_many_or_compute([NS], [1, 2], str, load, negative=is_empty)  # an ordinary read: L1, no renewal
    assert ttls() == [3, 3]
    with renewing():  # read from L2 even though L1 has them, and renewed with the TTL each would be stored with
        assert worker.get_many_or_compute([NS], [1, 2], str, load, negative=is_empty) == {1: "v1", 2: ""}
    positive, negative = ttls()
    assert worker.l2_ttl - 2 <= positive <= worker.l2_ttl
    assert worker.negative_ttl - 2 <= negative <= worker.negative_ttl


def test_is_renewing_says_whether_the_caller_runs_inside_renewing() -> None:
    assert not is_renewing()
    with renewing():
        assert is_renewing()
        with renewing():
            assert is_renewing()
        assert is_renewing()
    assert not is_renewing()


def test_only_one_worker_computes_a_missing_key_the_others_wait_for_it() -> None:
    workers = [TieredCache(lock_wait=5.0) for _ in range(4)]
    calls = 0
    started = threading.Event()

    def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        time.sleep(0.3)  # long enough for every other worker to arrive while it runs
        return "value"

    results: list[str] = []

    def read(cache: TieredCache) -> None:
        results.append(cache.get_or_compute([NS], "hot", slow))

    first = threading.Thread(target=read, args=(workers[0],))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=read, args=(w,)) for w in workers[1:]]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert results == ["value"] * 4
    assert calls == 1
    assert sum(w.stats.counts[("l2", "emissions", "wait")] for w in workers[1:]) == 3


def test_greenlets_of_one_worker_share_one_computation(worker: TieredCache) -> None:
    calls = 0
    gate = threading.Event()

    def slow() -> str:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return "value"

    threads = [threading.Thread(target=worker.get_or_compute, args=([NS], "hot", slow)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # let all three queue on the key before the computation ends
    gate.set()
    for t in threads:
        t.join(10)
    assert calls == 1


def test_a_miss_takes_the_lock_in_the_trip_that_found_nothing_and_releases_it_with_the_store(
    worker: TieredCache, round_trips: RoundTrips
) -> None:
    worker.versions([NS])  # the version is read (or created) before: not what this test counts
    round_trips.trips.clear()
    assert worker.get_or_compute([NS], "k", Computations("value")) == "value"
    assert round_trips.trips == [["eval"], ["set", "eval"]]  # get-or-lock; store and release
    lock = f"{worker._value_key([NS], worker.versions([NS]), 'k')}:lock"
    assert get_redis_connection("default").exists(lock) == 0


def test_an_l2_hit_is_one_trip_and_takes_no_lock(
    worker: TieredCache, other_worker: tuple[TieredCache, Clock], round_trips: RoundTrips
) -> None:
    other, _ = other_worker
    other.get_or_compute([NS], "k", Computations("value"))
    worker.versions([NS])
    round_trips.trips.clear()
    assert worker.get_or_compute([NS], "k", Computations("other")) == "value"
    assert round_trips.trips == [["eval"]]
    assert worker.stats.counts[("l2", "emissions", "hit")] == 1
    assert worker.stats.counts[("l2", "emissions", "promotion")] == 1
    assert get_redis_connection("default").keys(f"{perf_cache.PREFIX}:*:k:lock") == []


def test_a_failed_computation_releases_the_lock_for_the_next_caller(
    worker: TieredCache, other_worker: tuple[TieredCache, Clock], round_trips: RoundTrips
) -> None:
    def failing() -> str:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        worker.get_or_compute([NS], "k", failing)
    assert get_redis_connection("default").keys(f"{perf_cache.PREFIX}:*:k:lock") == []
    other, _ = other_worker
    other.versions([NS])
    round_trips.trips.clear()
    assert other.get_or_compute([NS], "k", Computations("value")) == "value"
    assert round_trips.trips == [["eval"], ["set", "eval"]]  # the lock taken at the first try, then released


def test_a_lock_that_expired_while_computing_is_not_released_by_its_first_holder(worker: TieredCache) -> None:
    client = get_redis_connection("default")
    worker.lock_timeout = 0.05
    lock = f"{worker._value_key([NS], worker.versions([NS]), 'k')}:lock"

    def slow() -> str:
        time.sleep(0.1)  # the lock expires meanwhile, and another worker takes it
        assert client.set(lock, "another worker's token", nx=True, px=10_000)
        return "value"

    assert worker.get_or_compute([NS], "k", slow) == "value"
    assert client.get(lock) == b"another worker's token"
    client.delete(lock)


def test_a_waiter_computes_after_lock_wait_and_leaves_the_other_holders_lock(
    worker: TieredCache, round_trips: RoundTrips
) -> None:
    client = get_redis_connection("default")
    worker.lock_wait = 0.05
    full = worker._value_key([NS], worker.versions([NS]), "k")
    client.set(f"{full}:lock", "another worker's token", px=10_000)  # its holder computes and never stores in time
    compute = Computations("value")
    round_trips.trips.clear()
    assert worker.get_or_compute([NS], "k", compute) == "value"
    assert compute.calls == 1
    *asked, stored = round_trips.trips
    assert len(asked) >= 2 and all(trip == ["eval"] for trip in asked)  # it asked again while it waited
    assert stored == ["set"]  # stored without the lock
    assert client.get(full) is not None
    assert client.get(f"{full}:lock") == b"another worker's token"
    assert worker.stats.counts[("l2", "emissions", "miss")] == 1
    assert worker.stats.counts[("l2", "emissions", "wait")] == 0
    client.delete(f"{full}:lock")


def test_redis_failing_after_the_lock_was_taken_still_answers_and_sends_nothing_more(worker: TieredCache) -> None:
    worker.versions([NS])
    client = worker._redis()
    calls: list[str] = []

    class FailsAfterTheLock:
        """The first call (get-or-lock) reaches Redis; everything after it fails as a dropped connection would."""

        def eval(self, *args: Any) -> Any:
            calls.append("eval")
            if len(calls) > 1:
                raise RedisConnectionError("connection lost")
            return client.eval(*args)

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            raise RedisConnectionError("connection lost")

    worker._client = FailsAfterTheLock()
    assert worker.get_or_compute([NS], "k", Computations("value")) == "value"
    assert calls == ["eval", "pipeline"]  # get-or-lock, then the store that failed; no release tried after it
    assert worker.is_down()
    assert worker.stats.counts[("l2", "emissions", "error")] == 1
    worker._client = client
    lock = f"{worker._value_key([NS], worker.versions([NS]), 'k')}:lock"
    assert client.pttl(lock) > 0  # left to expire by itself (lock_timeout)
    client.delete(lock)


def test_a_value_not_kept_still_releases_the_lock(worker: TieredCache, round_trips: RoundTrips) -> None:
    worker.versions([NS])
    round_trips.trips.clear()
    worker.get_or_compute([NS], "gone", Computations(None), negative=lambda v: v is None, keep_negative=False)
    assert round_trips.trips == [["eval"], ["eval"]]
    assert get_redis_connection("default").keys(f"{perf_cache.PREFIX}:*:gone*") == []


# -- Redis unreachable ----------------------------------------------------------------------------

UNREACHABLE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connection refused
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
}


@override_settings(CACHES=UNREACHABLE)
def test_redis_down_serves_from_l1_and_compute_and_pays_the_failure_once(clock: Clock, caplog) -> None:
    cache = TieredCache(clock=clock, retry_after=5.0)
    compute = Computations("a", "b")
    with caplog.at_level("WARNING", logger="vcci.cache"):
        assert cache.get_or_compute([NS], "k", compute) == "a"
        assert cache.get_or_compute([NS], "k", compute) == "a"  # L1, under a process-local version
    assert compute.calls == 1
    assert cache.is_down()
    assert cache.stats.counts[("l2", "emissions", "error")] == 1  # the circuit stayed open after the first failure
    assert [r.message for r in caplog.records if "unreachable" in r.message]
    # L1 alone is bounded by its TTL: afterwards the value is recomputed from the database.
    clock.advance(2.1)
    assert cache.get_or_compute([NS], "k", compute) == "b"


@override_settings(CACHES=UNREACHABLE)
def test_redis_down_a_write_is_seen_at_once_by_its_worker(clock: Clock) -> None:
    cache = TieredCache(clock=clock)
    compute = Computations("old", "new")
    assert cache.get_or_compute([NS], "k", compute) == "old"
    cache.bump(NS)
    assert cache.get_or_compute([NS], "k", compute) == "new"


class FlakyRedis:
    """Wraps the real client; raises ConnectionError while ``down``."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if self.down:
            raise RedisConnectionError("simulated outage")
        return getattr(self.real, name)


def test_bumps_made_during_an_outage_are_sent_on_recovery(clock: Clock) -> None:
    cache = TieredCache(clock=clock, retry_after=5.0)
    flaky = FlakyRedis(get_redis_connection("default"))
    cache._client = flaky
    other = TieredCache()  # a worker that never lost Redis
    assert other.get_or_compute([NS], "k", Computations("old")) == "old"

    flaky.down = True
    cache.bump(NS)  # fails: kept for later
    assert other.get_or_compute([NS], "k", Computations("new")) == "old"

    flaky.down = False
    clock.advance(5.1)  # the circuit half-opens; the next call succeeds and flushes the pending bump
    cache.versions([org_ns(99, "emissions")])
    assert not cache.is_down()
    other.clear_local()
    assert other.get_or_compute([NS], "k", Computations("new")) == "new"


def test_without_redis_versions_are_local_and_live_for_the_l1_ttl(clock: Clock) -> None:
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        cache = TieredCache(clock=clock)
        compute = Computations("old", "new")
        assert cache.get_or_compute([NS], "k", compute) == "old"
        assert cache.get_or_compute([NS], "k", compute) == "old"
        clock.advance(2.1)
        assert cache.get_or_compute([NS], "k", compute) == "new"
        assert not cache.stats.counts[("l2", "emissions", "error")]


def test_disabled_cache_always_computes() -> None:
    cache = TieredCache(enabled=False)
    compute = Computations(1, 2)
    assert cache.get_or_compute([NS], "k", compute) == 1
    assert cache.get_or_compute([NS], "k", compute) == 2


# -- invalidate() and transactions ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_invalidate_bumps_again_after_commit_so_a_read_during_the_write_cannot_stick() -> None:
    reader = TieredCache()  # another worker, reading while the write is uncommitted
    compute = Computations("before", "after")
    with transaction.atomic():
        invalidate(NS)
        assert reader.get_or_compute([NS], "k", compute) == "before"  # stored under the first bump's version
    reader.clear_local()  # its L1 copy of the version has expired
    assert reader.get_or_compute([NS], "k", compute) == "after"


@pytest.mark.django_db(transaction=True)
def test_invalidate_in_a_rolled_back_transaction_bumps_only_once() -> None:
    (before,) = tiered().versions([NS])
    with pytest.raises(RuntimeError), transaction.atomic():
        invalidate(NS)
        raise RuntimeError("rolled back")
    tiered().clear_local()
    (after,) = tiered().versions([NS])
    assert int(after.value) == int(before.value) + 1  # the after-commit bump never ran; the extra one is harmless


def test_settings_changes_rebuild_the_process_cache() -> None:
    first = tiered()
    with override_settings(CACHE_L1_TTL=7.0):
        assert tiered() is not first
        assert tiered().l1_ttl == 7.0


def test_counters_are_flushed_to_redis_for_every_worker_to_sum(worker: TieredCache) -> None:
    worker.get_or_compute([NS], "k", Computations(1))
    worker.get_or_compute([NS], "k", Computations(1))
    worker.flush_stats()
    stats = {k.decode(): v.decode() for k, v in get_redis_connection("default").hgetall(STATS_KEY).items()}
    assert stats["l1|emissions|hit"] == "1"
    assert stats["db|emissions|compute"] == "1"
    assert float(stats["l2|emissions|seconds"]) > 0
    worker.flush_stats()  # nothing new: nothing added
    again = {k.decode(): v.decode() for k, v in get_redis_connection("default").hgetall(STATS_KEY).items()}
    assert again["l1|emissions|hit"] == "1"


def test_namespace_keys() -> None:
    assert Namespace("factors").key == "factors"
    assert org_ns(12, "emissions").key == "org12:emissions"


# -- review findings: each one a test ---------------------------------------------------------------


def test_a_version_read_that_left_before_a_bump_cannot_undo_it(worker: TieredCache) -> None:
    (old,) = worker.versions([NS])
    worker.bump(NS)  # another greenlet's write, while the read above was still in flight
    (new,) = worker.versions([NS])
    assert worker._keep_version(NS, old) == new
    assert worker.versions([NS]) == (new,)


def test_after_an_outage_the_writer_serves_its_own_write(clock: Clock) -> None:
    cache = TieredCache(clock=clock, retry_after=5.0)
    flaky = FlakyRedis(get_redis_connection("default"))
    cache._client = flaky
    compute = Computations("old", "new")
    assert cache.get_or_compute([NS], "k", compute) == "old"
    flaky.down = True
    cache.bump(NS)  # retried at once, still failing: kept for later
    assert NS in cache._pending_bumps
    flaky.down = False
    clock.advance(5.1)
    assert cache.get_or_compute([NS], "k", compute) == "new"
    (version,) = cache.versions([NS])
    assert version.value == get_redis_connection("default").get(f"{perf_cache.PREFIX}:v:{NS.key}").decode()


class BlipRedis(FlakyRedis):
    """Fails the next ``failures`` calls, then works."""

    def __init__(self, real: Any, failures: int) -> None:
        super().__init__(real)
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise RedisConnectionError("blip")
        return getattr(self.real, name)


def test_a_blip_does_not_leave_other_workers_stale(worker: TieredCache) -> None:
    other = TieredCache()
    assert other.get_or_compute([NS], "k", Computations("old")) == "old"
    worker.versions([NS])
    worker._client = BlipRedis(get_redis_connection("default"), failures=1)
    worker.bump(NS)
    assert not worker._pending_bumps  # the immediate retry got through
    other.clear_local()  # its L1 copy of the version has expired
    assert other.get_or_compute([NS], "k", Computations("new")) == "new"


def test_pending_bumps_are_sent_at_exit(clock: Clock) -> None:
    cache = TieredCache(clock=clock)
    cache.versions([NS])
    flaky = FlakyRedis(get_redis_connection("default"))
    cache._client = flaky
    flaky.down = True
    cache.bump(NS)
    before = get_redis_connection("default").get(f"{perf_cache.PREFIX}:v:{NS.key}")
    flaky.down = False
    cache.flush_pending()  # what the atexit hook calls, whatever the circuit says
    after = get_redis_connection("default").get(f"{perf_cache.PREFIX}:v:{NS.key}")
    assert int(after) == int(before) + 1
    assert not cache._pending_bumps


@pytest.mark.django_db(transaction=True)
def test_a_transaction_never_caches_what_it_wrote_and_a_rollback_leaves_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        invalidate(NS)
        # Its own reads see uncommitted rows: computed every time, stored nowhere.
        assert tiered().get_or_compute([NS], "k", Computations("uncommitted")) == "uncommitted"
        assert tiered().get_or_compute([NS], "k", Computations("uncommitted 2")) == "uncommitted 2"
        raise RuntimeError("rolled back")
    other = TieredCache()
    assert other.get_or_compute([NS], "k", Computations("committed")) == "committed"
    # After the transaction, this connection caches again.
    assert tiered().get_or_compute([NS], "k", Computations("never")) == "committed"


def test_l1_is_bounded_by_bytes_and_big_values_stay_in_redis_only(clock: Clock) -> None:
    cache = TieredCache(clock=clock, l1_max_bytes=64 * 1024)
    for i in range(50):
        cache.get_or_compute([NS], f"k{i}", Computations(b"x" * 2000))
    assert sum(200 + len(p) for p, _ in cache._l1.values() if isinstance(p, bytes)) <= 64 * 1024
    big = Computations(b"y" * 10_000)  # over a sixteenth of L1
    cache.get_or_compute([NS], "big", big)
    assert cache.get_or_compute([NS], "big", Computations("never")) == b"y" * 10_000  # from Redis
    assert cache.stats.counts[("l2", "emissions", "hit")] >= 1


def test_local_values_live_as_l1_copies_do_and_never_reach_redis(clock: Clock) -> None:
    cache = TieredCache(clock=clock, l1_ttl=2.0, l1_max_bytes=64 * 1024)
    redis = get_redis_connection("default")
    keys_before = set(redis.keys("*"))
    cache.set_local(("answer", 1), ["decoded"], nbytes=1000)
    assert cache.get_local(("answer", 1)) == ["decoded"]
    assert cache.get_local(("answer", 2)) is None
    assert set(redis.keys("*")) == keys_before  # this process only
    clock.advance(2.1)
    assert cache.get_local(("answer", 1)) is None  # expired with L1's lifetime
    cache.set_local(("answer", 1), ["decoded"], nbytes=1000)
    cache.clear_local()
    assert cache.get_local(("answer", 1)) is None  # forgotten with L1
    cache.set_local(("answer", 3), ["too big"], nbytes=10_000)  # over a sixteenth of L1: not kept
    assert cache.get_local(("answer", 3)) is None
    for i in range(100):  # their bytes count against L1's budget, like cached values
        cache.set_local(("answer", i), i, nbytes=2000)
    assert sum(200 + payload.nbytes for payload, _ in cache._l1.values()) <= 64 * 1024
    cache.count_local_hit([NS])
    assert cache.stats.counts[("l1", "emissions", "hit")] == 1


def test_keep_negative_false_stores_nothing(worker: TieredCache) -> None:
    compute = Computations(None, None)
    worker.get_or_compute([NS], "gone", compute, negative=lambda v: v is None, keep_negative=False)
    worker.get_or_compute([NS], "gone", compute, negative=lambda v: v is None, keep_negative=False)
    assert compute.calls == 2
    assert not get_redis_connection("default").keys(f"{perf_cache.PREFIX}:*:gone")


@override_settings(CACHES=UNREACHABLE)
def test_after_the_retry_window_one_caller_probes_the_others_skip(clock: Clock) -> None:
    cache = TieredCache(clock=clock, retry_after=5.0)
    cache.get_or_compute([NS], "k", Computations(1))
    errors = cache.stats.counts[("l2", "emissions", "error")]
    clock.advance(5.1)
    cache._redis()  # the probe takes the window...
    assert cache._redis() is None  # ...and the next caller does not try too
    assert cache.stats.counts[("l2", "emissions", "error")] == errors


def test_redis_connections_never_retry_on_their_own() -> None:
    pool = get_redis_connection("default").connection_pool
    retry = pool.connection_kwargs["retry"]
    assert retry.get_retries() == 0


def test_a_schema_change_is_a_new_keyspace(worker: TieredCache) -> None:
    assert worker.key_version == TieredCache().key_version
    perf_cache.schema_fingerprint.cache_clear()
    with override_settings(CACHE_VERSION="2"):
        assert TieredCache().key_version != worker.key_version


# -- resources, by name ------------------------------------------------------------------------------


def test_a_resource_name_has_one_meaning() -> None:
    assert resources()[AUTH].startswith("global: token")
    assert register_resource("auth", resources()[AUTH]) == AUTH  # the same registration again (a re-import)
    with pytest.raises(ValueError, match="'auth' is already registered"):
        register_resource("auth", "something else")
    assert resources()[AUTH].startswith("global: token")
