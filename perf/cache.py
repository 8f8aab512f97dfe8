"""Two-level cache: per-process memory (L1), Redis (L2), PostgreSQL as the truth.

Domain code uses a small API:

- ``tiered().get_or_compute(namespaces, key, compute)``: read-through. L1, then L2 (a hit is
  promoted into L1), then ``compute()`` once per key across every worker (stampede protection),
  whose result is stored in both tiers. ``get_many_or_compute`` does the same for a batch.
- ``invalidate(*namespaces)``: called by every write service. Bumps each namespace's version now
  and again after the surrounding transaction commits (``transaction.on_commit``).
- ``tiered().versions(namespaces)``: the current versions, for ETags (``perf.conditional``).

**Invalidation by version.** Each cached value lives in one or more namespaces (``Namespace``:
a resource, per organization or global). A namespace's version lives in Redis and is part of
every key stored under it, so bumping it makes every older entry unreachable at once: nothing
is ever deleted or matched by pattern. Each worker keeps the versions it read in L1 for
``CACHE_L1_TTL`` seconds, so another worker sees a write at most that long after it commits; the
writing worker sees it at once (its bump updates its own L1, where versions only move forward).
The bump after commit is the one correctness rests on: a reader that recomputed while the
write was still uncommitted read the old rows and stored them under the first bump's version,
which the second bump leaves behind. Until then the writing transaction's own reads of those
namespaces bypass the cache (``writing``): they see rows no one else can.

**Redis down or slow.** Every Redis call has short socket timeouts (settings) and no client
retries. A failure is logged once per outage, counted (tier ``l2``, event ``error``) and opens a
circuit for ``CACHE_RETRY_AFTER`` seconds, during which L2 is not tried at all; then one caller
probes while the others keep skipping it. Meanwhile a namespace's version is a process-local one
that lives for the L1 TTL: each worker serves from its L1 and the database, and its own writes are
seen at once. A failed bump is retried twice at once (a blip), then kept and sent when Redis
answers again or at exit. If a process never reaches Redis again, entries of the namespace it
bumped stay reachable for others until ``CACHE_L2_TTL``: the worst case, in docs/cache.md.

Without Redis (the embedded default) there is no L2: versions are process-local as above, so
each worker caches for at most the L1 TTL.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cachetools import TLRUCache
from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.db import transaction
from redis.exceptions import RedisError

from perf import codec
from perf.registry import Registry

logger = logging.getLogger("vcci.cache")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

PREFIX = "vcci:c"
STATS_KEY = f"{PREFIX}:stats"
TIERS = ("l1", "l2", "db")
# Seconds between the immediate retries of a failed version bump (a blip should not cost a stale cache).
BUMP_RETRY_PAUSES = (0.05, 0.2)


# The stampede lock's two scripts (EVAL, not a registered script: in a pipeline redis-py would first ask SCRIPT
# EXISTS, a round trip of its own; Redis keeps them compiled by their text's hash). A lock is a key holding its
# holder's random token, set with NX and an expiry (``lock_timeout``), released only by the holder that set it: the
# scheme of redis-py's ``Lock``, whose calls take a round trip for each step.
#
# _GET_OR_LOCK: KEYS value, lock; ARGV token, lock lifetime in ms. The value if there is one, else 1 when this caller
# now holds the lock, else 0 (another holds it).
_GET_OR_LOCK = """
local value = redis.call('GET', KEYS[1])
if value then return value end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# _RELEASE: KEYS lock; ARGV token. Deletes the lock if it still holds the token. A computed value is stored by a plain
# SET in the same pipeline, not through the script: Redis took 104 us a call to store an 88 KB page through a script,
# and 3 us for the release alone (Redis's own command statistics, 2,000 calls each).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# How often a caller waiting for another worker's computation asks again, in seconds.
_LOCK_POLL = 0.01


@dataclass(frozen=True, slots=True)
class Namespace:
    """A set of cached values invalidated together: one resource of one organization, or a global one.

    ``part`` narrows it (a part of the resource that writes can invalidate on its own, such as one year of an
    organization's emissions); counters and metrics still name the resource.
    """

    resource: str
    organization_id: int | None = None
    part: str = ""
    # Derived, computed once: read several times per request.
    key: str = field(init=False, repr=False, compare=False)
    l1_version_key: str = field(init=False, repr=False, compare=False)  # where L1 keeps its version

    def __post_init__(self) -> None:
        key = self.resource if self.organization_id is None else f"org{self.organization_id}:{self.resource}"
        if self.part:
            key = f"{key}:{self.part}"
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "l1_version_key", f"v|{key}")


# Resources, by name: what each holds. Each app registers its own as it defines them (the domain's are in
# emissions.cache); a write bumps every namespace whose cached values it can change.
_resources: Registry[str] = Registry("cache resource")


def register_resource(name: str, description: str) -> str:
    """Register the cache resource ``name`` (``description``: what it holds) and return it, to be kept as the
    one constant naming it. The name is part of every key, counter and metric label of its namespaces;
    a second, different description of it (two meanings for one name) is a ``ValueError``."""
    _resources.add(name, description)
    return name


def resources() -> dict[str, str]:
    """Every registered resource name and what it holds, in registration order."""
    return _resources.items()


AUTH = register_resource("auth", "global: token -> user, membership, organization")


def org_ns(organization_id: int, resource: str, part: str = "") -> Namespace:
    return Namespace(resource, organization_id, part)


GLOBAL_AUTH = Namespace(AUTH)


@dataclass(frozen=True, slots=True)
class Version:
    """A namespace's version and the wall-clock time (epoch seconds) it was set."""

    value: str
    changed_at: float


class StatsListener(Protocol):
    """Receives every cache event as it is counted (e.g. Prometheus counters, which sum across workers)."""

    def count(self, tier: str, resource: str, event: str, n: int) -> None: ...

    def observe(self, tier: str, resource: str, seconds: float) -> None: ...


# Every TieredCache's Stats reports to these too; append once at startup (no lock: read-only afterwards).
STATS_LISTENERS: list[StatsListener] = []


class Stats:
    """Counters per (tier, namespace resource, event) and latency per (tier, resource).

    Events: ``hit``, ``miss``, ``promotion`` (an L2 hit copied into L1), ``store``, ``error``,
    ``wait`` (a miss that found the value another caller computed or looked up: in L1, a greenlet of this worker
    that waited for another one on the same key; in L2, a worker that waited for another worker's lock). Totals
    are flushed to a Redis hash every few seconds so ``manage.py cache_stats`` sums every worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.latency: defaultdict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        # Keyed (tier, resource, event); joined into the Redis hash's "tier|resource|event" fields only at flush.
        self._unflushed: Counter[tuple[str, str, str]] = Counter()
        self._unflushed_seconds: defaultdict[tuple[str, str, str], float] = defaultdict(float)

    def count(self, tier: str, resource: str, event: str, n: int = 1) -> None:
        if not n:
            return
        key = (tier, resource, event)
        with self._lock:
            self.counts[key] += n
            self._unflushed[key] += n
        for listener in STATS_LISTENERS:
            listener.count(tier, resource, event, n)

    def observe(self, tier: str, resource: str, seconds: float) -> None:
        with self._lock:
            entry = self.latency[(tier, resource)]
            entry[0] += 1
            entry[1] += seconds
            self._unflushed[(tier, resource, "calls")] += 1
            self._unflushed_seconds[(tier, resource, "seconds")] += seconds
        for listener in STATS_LISTENERS:
            listener.observe(tier, resource, seconds)

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        """A copy of the counts, taken under the lock."""
        with self._lock:
            return dict(self.counts)

    def take_unflushed(self) -> tuple[Counter[tuple[str, str, str]], dict[tuple[str, str, str], float]]:
        with self._lock:
            counts, seconds = self._unflushed, self._unflushed_seconds
            self._unflushed, self._unflushed_seconds = Counter(), defaultdict(float)
            return counts, seconds

    def give_back(self, counts: Counter[tuple[str, str, str]], seconds: dict[tuple[str, str, str], float]) -> None:
        """Counters a failed flush took: added back so the next flush sends them."""
        with self._lock:
            self._unflushed.update(counts)
            for field, value in seconds.items():
                self._unflushed_seconds[field] += value


@dataclass(frozen=True, slots=True)
class _Local:
    """A process-local value in L1 (``TieredCache.set_local``; never sent to Redis) and the bytes it holds."""

    value: Any
    nbytes: int


def _l1_size(entry: tuple[Any, float]) -> int:
    payload = entry[0]
    # Key, tuple and bookkeeping are roughly 200 bytes; versions are small objects.
    if isinstance(payload, bytes):
        return 200 + len(payload)
    return 200 + (payload.nbytes if isinstance(payload, _Local) else 0)


class _Flight:
    """One key's in-process single-flight lock; dropped (weakly referenced) once nobody waits on it."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class TieredCache:
    """L1 (this process) + L2 (Redis) read-through cache with versioned namespaces.

    One instance per process (``tiered()``); tests build a second one to play another worker.
    ``clock`` drives L1 expiry and the circuit breaker, ``wall`` the versions' timestamps.
    """

    def __init__(
        self,
        *,
        alias: str | None = "default",
        l1_ttl: float = 2.0,
        l1_max_bytes: int = 64 * 1024 * 1024,
        l2_ttl: int = 600,
        negative_ttl: int = 30,
        lock_timeout: float = 10.0,
        lock_wait: float = 2.0,
        retry_after: float = 5.0,
        stats_flush: float = 5.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.alias = alias
        self.l1_ttl = l1_ttl
        # A value's key holds its namespaces' versions, so what a key names never changes: a worker may keep it as
        # long as Redis does. What bounds staleness is how long a worker trusts the versions it read (l1_ttl):
        # after a bump, the new versions name new keys. Kept for 2 s like the versions, each worker read the same
        # values from Redis again every 2 s (most of the cache's hits were Redis round trips: docs/cache.md).
        # "Not found" values keep the short lifetime, as they do in Redis.
        self.l1_value_ttl = max(float(l2_ttl), l1_ttl)
        self.l2_ttl = l2_ttl
        self.negative_ttl = negative_ttl
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self.retry_after = retry_after
        self.stats_flush = stats_flush
        self.enabled = enabled
        self.clock = clock
        self.wall = wall
        self.stats = Stats()
        # Part of every value key and ETag: CACHE_VERSION (set by hand on a deploy that changes a response) and
        # the models' fields, so a deploy that changes a cached model never rebuilds it from an old row.
        self.key_version = digest(settings.CACHE_VERSION, schema_fingerprint())[:12]
        # Entries are (payload, ttl). Bounded by bytes, not entries: one first page of 1,000 rows weighs as much as
        # ten thousand factor lookups. Least recently used entries go first once it is full.
        self.l1_max_bytes = l1_max_bytes
        self._l1: TLRUCache[Hashable, tuple[Any, float]] = TLRUCache(
            maxsize=l1_max_bytes, ttu=lambda _key, value, now: now + value[1], timer=clock, getsizeof=_l1_size
        )
        self._l1_lock = threading.Lock()  # never held across a call out of this class: no re-entry
        self._flights: weakref.WeakValueDictionary[str, _Flight] = weakref.WeakValueDictionary()
        self._flights_lock = threading.Lock()
        self._client: Any = None
        self._down_until: float | None = None
        self._pending_bumps: set[Namespace] = set()
        self._local_versions = itertools.count(1)
        self._last_flush = clock()

    # -- L2 plumbing -------------------------------------------------------------------------

    def _redis(self) -> Any:
        """The django-redis client of ``alias``, or None without Redis or while the circuit is open."""
        if self.alias is None:
            return None
        if self._down_until is not None:
            now = self.clock()
            if now < self._down_until:
                return None
            # Half-open: this caller probes; the others keep skipping Redis until it has answered or failed,
            # so a stalled Redis costs one timeout per retry window, not one per request in flight.
            self._down_until = now + self.retry_after
        if self._client is None:
            backend = settings.CACHES.get(self.alias, {}).get("BACKEND", "")
            if not backend.startswith("django_redis"):
                self.alias = None  # the embedded default: no L2 at all
                return None
            from django_redis import get_redis_connection

            self._client = get_redis_connection(self.alias)
        return self._client

    @property
    def has_l2(self) -> bool:
        return self.alias is not None and settings.CACHES.get(self.alias, {}).get("BACKEND", "").startswith(
            "django_redis"
        )

    def _l2(self, resource: str, operation: Callable[[Any], T]) -> T | None:
        """``operation(redis)``, timed; None (and the circuit opened) when Redis fails."""
        client = self._redis()
        if client is None:
            return None
        started = time.perf_counter()
        try:
            result = operation(client)
        except (RedisError, OSError) as exc:
            self._failed(resource, exc)
            return None
        finally:
            self.stats.observe("l2", resource, time.perf_counter() - started)
        if self._down_until is not None:
            self._recovered()
        return result

    def _failed(self, resource: str, exc: Exception) -> None:
        self.stats.count("l2", resource, "error")
        if self._down_until is None:
            logger.warning(
                "Redis unreachable (%s: %s); serving from L1 and the database, retrying in %ss",
                type(exc).__name__,
                exc,
                self.retry_after,
            )
        self._down_until = self.clock() + self.retry_after

    def _recovered(self) -> None:
        if self._down_until is None:
            return
        self._down_until = None
        pending, self._pending_bumps = self._pending_bumps, set()
        logger.warning("Redis reachable again; sending %d pending invalidation(s)", len(pending))
        if pending:
            self.bump(*pending)

    def is_down(self) -> bool:
        return self._down_until is not None

    # -- L1 plumbing -------------------------------------------------------------------------

    def _l1_get(self, key: Hashable) -> Any:
        # One lookup (Cache.get would check expiry twice: __contains__, then __getitem__); it runs several
        # times per request. An expired entry raises KeyError too (TLRUCache.__missing__).
        with self._l1_lock:
            try:
                entry = self._l1[key]
            except KeyError:
                return None
        return entry[0]

    def _l1_set(self, key: Hashable, payload: Any, ttl: float) -> None:
        if _l1_size((payload, ttl)) > self.l1_max_bytes // 16:
            return  # one value may not take more than a sixteenth of L1; Redis still holds it
        with self._l1_lock:
            self._l1[key] = (payload, ttl)

    def _l1_pop(self, key: str) -> None:
        with self._l1_lock:
            self._l1.pop(key, None)

    def clear_local(self) -> None:
        """Forget L1 and the circuit state (tests; a worker after fork)."""
        with self._l1_lock:
            self._l1.clear()
        self._down_until = None
        self._pending_bumps.clear()

    # -- process-local values ------------------------------------------------------------------

    def get_local(self, key: Hashable) -> Any:
        """The value ``set_local`` kept under ``key``; None once it expired, was evicted or ``clear_local`` ran."""
        if not self.enabled:
            return None
        payload = self._l1_get(key)
        return payload.value if isinstance(payload, _Local) else None

    def set_local(self, key: Hashable, value: Any, *, nbytes: int, ttl: float | None = None) -> None:
        """Keep ``value`` in this process only, as L1 keeps its copies: ``ttl`` seconds (``l1_ttl`` by default),
        within ``l1_max_bytes`` (``nbytes``: what it holds), forgotten by ``clear_local``.

        For values derived from cached ones (decoded, assembled) that the caller checks against the
        namespaces' versions before each use: nothing here knows when they go stale. ``key`` is any
        hashable but a string (strings are L1's own keys).
        """
        if self.enabled:
            self._l1_set(key, _Local(value, nbytes), self.l1_ttl if ttl is None else ttl)

    def count_local_hit(self, namespaces: Sequence[Namespace]) -> None:
        """Count an answer served from a ``get_local`` value as the L1 hit it stands for."""
        self.stats.count("l1", namespaces[0].resource, "hit")
        self._maybe_flush()

    @property
    def l1_size(self) -> int:
        with self._l1_lock:
            self._l1.expire()
            return len(self._l1)

    # -- versions ------------------------------------------------------------------------------

    @staticmethod
    def _version_keys(ns: Namespace) -> tuple[str, str]:
        return f"{PREFIX}:v:{ns.key}", f"{PREFIX}:t:{ns.key}"

    def _initial_version(self) -> str:
        # Microseconds since the epoch: larger than any version an earlier Redis (which keeps nothing
        # on disk) handed out, so a restart cannot make an old key reachable again.
        return str(time.time_ns() // 1000)

    def _local_version(self) -> Version:
        return Version(f"p{os.getpid()}.{next(self._local_versions)}.{time.time_ns()}", self.wall())

    def versions(self, namespaces: Sequence[Namespace]) -> tuple[Version, ...]:
        """The current version of each namespace: L1, else Redis (one round trip), else process-local."""
        hits = []
        with self._l1_lock:  # once for all of them: the common case, once per request or more, is every one in L1
            for ns in namespaces:
                try:
                    hits.append(self._l1[ns.l1_version_key][0])
                except KeyError:  # absent or expired (TLRUCache.__missing__)
                    break
            else:
                return tuple(hits)
        found: dict[Namespace, Version] = {}
        missing = self._l1_versions(namespaces, found)
        if missing:
            # One read per set of namespaces at a time in this worker: when a version expires from L1, every request
            # in flight that needs it would otherwise read it from Redis at once (each waits for its reply, the
            # others find it missing meanwhile). The later ones find what the first one kept.
            with self._flight("versions:" + "|".join(sorted(ns.l1_version_key for ns in missing))):
                missing = self._l1_versions(missing, found)
                if missing:
                    self._read_versions(missing, found)
        return tuple(found[ns] for ns in namespaces)

    def _l1_versions(self, namespaces: Sequence[Namespace], found: dict[Namespace, Version]) -> list[Namespace]:
        """Put the versions L1 holds into ``found``; the namespaces it does not hold."""
        missing = []
        for ns in namespaces:
            version = self._l1_get(ns.l1_version_key)
            if version is None:
                missing.append(ns)
            else:
                found[ns] = version
        return missing

    def _read_versions(self, missing: Sequence[Namespace], found: dict[Namespace, Version]) -> None:
        """Read ``missing``'s versions from Redis (a process-local one when it fails) into L1 and ``found``.

        One MGET; only namespaces Redis has no version for yet (a new one, or evicted) take a second round trip
        that creates it (SET NX: whoever comes first sets it, everyone reads the same).
        """
        resource = missing[0].resource
        now = self.wall()
        keys = [key for ns in missing for key in self._version_keys(ns)]

        def read(client: Any) -> list[Any]:
            values: list[Any] = client.mget(keys)
            unset = [i for i in range(0, len(keys), 2) if values[i] is None]
            if unset:
                pipe = client.pipeline(transaction=False)
                for i in unset:
                    pipe.set(keys[i], self._initial_version(), nx=True)
                    pipe.set(keys[i + 1], repr(self.wall()), nx=True)
                pipe.mget([key for i in unset for key in (keys[i], keys[i + 1])])
                for n, value in enumerate(pipe.execute()[-1]):
                    values[unset[n // 2] + n % 2] = value
            return values

        values = self._l2(resource, read)
        for i, ns in enumerate(missing):
            if values is not None and values[2 * i] is not None:
                version = Version(values[2 * i].decode(), float(values[2 * i + 1] or now))
            else:
                version = self._local_version()
            found[ns] = self._keep_version(ns, version)

    def _keep_version(self, ns: Namespace, version: Version) -> Version:
        """Store ``version`` as this worker's view of ``ns`` unless it already holds a newer one; return the kept one.

        Versions only move forward in L1: a read that left Redis before this worker's own bump (another
        greenlet's, or the pending bumps sent on recovery) must not put the older version back, or the
        writer would serve what it cached before its write. A process-local version (Redis down) is
        replaced by a Redis one, except while this worker still owes Redis a bump of ``ns``.
        """
        key = ns.l1_version_key
        with self._l1_lock:
            entry = self._l1.get(key)
            current: Version | None = None if entry is None else entry[0]
            if current is not None:
                if current.value.isdigit() and version.value.isdigit() and int(current.value) >= int(version.value):
                    return current
                if not current.value.isdigit() and version.value.isdigit() and ns in self._pending_bumps:
                    return current
            self._l1[key] = (version, self.l1_ttl)
        return version

    def bump(self, *namespaces: Namespace) -> None:
        """Give each namespace a new version now: in Redis, and in this worker's L1 at once.

        When Redis fails the bump is kept and sent on recovery; meanwhile this worker uses a
        process-local version, so it never serves what it cached before its own write.
        """
        if not namespaces:
            return
        unique = list(dict.fromkeys(namespaces))
        now = self.wall()

        def incr(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for ns in unique:
                vkey, tkey = self._version_keys(ns)
                pipe.set(vkey, self._initial_version(), nx=True)
                pipe.incr(vkey)
                pipe.set(tkey, repr(now))
            return pipe.execute()

        was_up = self._down_until is None
        results = self._l2(unique[0].resource, incr) if self.has_l2 else None
        if results is None and self.has_l2 and was_up and self._client is not None:
            # A blip (one timeout, a pool wait) must not leave the other workers on the old version until this
            # worker happens to reach Redis again: retry at once, twice, before keeping the bump for later.
            for pause in BUMP_RETRY_PAUSES:
                time.sleep(pause)
                try:
                    results = incr(self._client)
                except (RedisError, OSError) as exc:
                    self._failed(unique[0].resource, exc)
                    continue
                self._recovered()
                break
        for i, ns in enumerate(unique):
            if results is not None:
                self._pending_bumps.discard(ns)
                version = Version(str(results[3 * i + 1]), now)
            else:
                if self.has_l2:
                    self._pending_bumps.add(ns)
                version = self._local_version()
            # Unconditional: this worker's own bump is the newest version it knows of.
            self._l1_set(ns.l1_version_key, version, self.l1_ttl)

    def flush_pending(self) -> None:
        """Send the bumps Redis missed, now, whatever the circuit says (at process exit, after an outage)."""
        if self._pending_bumps and self.has_l2:
            pending = list(self._pending_bumps)
            self._down_until = None
            self.bump(*pending)

    # -- values --------------------------------------------------------------------------------

    def _value_key(self, namespaces: Sequence[Namespace], versions: Sequence[Version], key: str) -> str:
        scope = "+".join(f"{ns.key}@{v.value}" for ns, v in zip(namespaces, versions, strict=True))
        return f"{PREFIX}:{self.key_version}:{scope}:{key}"

    def get_or_compute(
        self,
        namespaces: Sequence[Namespace],
        key: str,
        compute: Callable[[], T],
        *,
        encode: Callable[[T], Any] = codec.pack,
        decode: Callable[[Any], T] = codec.unpack,
        negative: Callable[[T], bool] | None = None,
        keep_negative: bool = True,
        versions: tuple[Version, ...] | None = None,
    ) -> T:
        """The value cached under ``key`` in ``namespaces``, computing and storing it on a miss.

        ``encode`` turns the value into bytes for L2 and L1 (L1 keeps the bytes too, so callers
        never share a mutable object); ``negative(value)`` marks a "not found" result, kept only
        ``CACHE_NEGATIVE_TTL`` seconds in L2 (not at all with ``keep_negative=False``, where a flood
        of distinct unknown keys is the likely abuse, e.g. random tokens). Only one caller per key
        computes at a time: in this
        process (a lock per key) and across workers (a Redis lock, waited on for at most
        ``CACHE_LOCK_WAIT`` seconds, after which the waiter computes anyway). ``versions``: the
        namespaces' versions when the caller has just read them (``versions(namespaces)``), so the
        value is looked up under the same ones (e.g. those in an ETag).
        """
        resource = namespaces[0].resource
        if not self.enabled or writing(namespaces):
            return self._compute(resource, compute)
        full = self._value_key(namespaces, self.versions(namespaces) if versions is None else versions, key)
        raw = self._l1_lookup(resource, full)
        if raw is not None:
            self._maybe_flush()
            return decode(raw)
        with self._flight(full):
            # Another greenlet of this worker may have filled it while this one waited.
            raw = self._l1_get(full)
            if raw is not None:
                self.stats.count("l1", resource, "wait")
                return decode(raw)
            raw, token = self._l2_get_or_lock(resource, full)
            if raw is not None:
                self._maybe_flush()
                return decode(raw)
            stored = False
            try:
                value = self._compute(resource, compute)
                is_negative = negative is not None and negative(value)
                if keep_negative or not is_negative:
                    self._store(resource, full, encode(value), is_negative, token=token)
                    stored = True
                return value
            finally:
                if token is not None and not stored:
                    self._release(resource, full, token)
                self._maybe_flush()

    def get(
        self,
        namespaces: Sequence[Namespace],
        key: str,
        *,
        versions: tuple[Version, ...] | None = None,
        decode: Callable[[Any], T] = codec.unpack,
        count_misses: bool = True,
    ) -> T | None:
        """The value ``get_or_compute`` keeps under ``key`` if a tier has it, else None; never computes.

        Lookups are counted like ``get_or_compute``'s, and an L2 hit is promoted into L1. A caller that
        follows a miss (of both tiers) with ``get_or_compute`` for the same key passes
        ``count_misses=False``: that lookup counts the miss, once.
        """
        if not self.enabled:
            return None
        resource = namespaces[0].resource
        full = self._value_key(namespaces, self.versions(namespaces) if versions is None else versions, key)
        raw = self._l1_get(full)  # not timed: see _l1_lookup
        if raw is not None:
            self.stats.count("l1", resource, "hit")
        else:
            raw = self._l2_lookup(resource, full)
            if raw is not None:
                self.stats.count("l1", resource, "miss")
                self.stats.count("l2", resource, "hit")
            elif count_misses:
                self.stats.count("l1", resource, "miss")
                self.stats.count("l2", resource, "miss")
        if raw is None:
            return None
        self._maybe_flush()
        return decode(raw)

    def set(
        self,
        namespaces: Sequence[Namespace],
        key: str,
        value: T,
        *,
        versions: tuple[Version, ...],
        encode: Callable[[T], Any] = codec.pack,
    ) -> None:
        """Store ``value`` as ``get_or_compute`` would have, for a caller that computed it itself (e.g. a body it
        streamed to its client while keeping a copy).

        Precondition: ``versions`` are the namespaces' versions read *before* the value was computed, so a write
        that committed meanwhile has moved the namespaces past them and leaves the value unreachable. Nothing is
        stored inside a transaction that wrote the namespaces.
        """
        if not self.enabled or writing(namespaces):
            return
        resource = namespaces[0].resource
        self._store(resource, self._value_key(namespaces, versions, key), encode(value), False)
        self._maybe_flush()

    def get_many_or_compute(
        self,
        namespaces: Sequence[Namespace],
        keys: Iterable[K],
        key_str: Callable[[K], str],
        compute_missing: Callable[[list[K]], Mapping[K, T]],
        *,
        encode: Callable[[T], Any] = codec.pack,
        decode: Callable[[Any], T] = codec.unpack,
        negative: Callable[[T], bool] | None = None,
        keep_negative: bool = True,
    ) -> dict[K, T]:
        """``get_or_compute`` for a batch: one L2 round trip for the lookups, one ``compute_missing``
        call for every key neither tier had (it must return a value for each key it is given), one
        pipelined L2 write (negative values left out with ``keep_negative=False``). Batches take no
        stampede lock: a batch is one caller's bulk load."""
        resource = namespaces[0].resource
        wanted = list(dict.fromkeys(keys))
        if not self.enabled or writing(namespaces):
            return dict(self._compute(resource, lambda: compute_missing(wanted)))
        versions = self.versions(namespaces)
        full = {k: self._value_key(namespaces, versions, key_str(k)) for k in wanted}
        found: dict[K, T] = {}
        renew = _RENEW.get()
        l2_wanted = []
        for k in wanted:
            raw = None if renew else self._l1_get(full[k])
            if raw is None:
                l2_wanted.append(k)
            else:
                found[k] = decode(raw)
        self.stats.count("l1", resource, "hit", len(found))
        self.stats.count("l1", resource, "miss", len(l2_wanted))
        missing = []
        renewed: list[tuple[str, int]] = []  # (key, TTL) of L2 hits to renew (``renewing``)
        if l2_wanted:
            raws = self._l2(resource, lambda client: client.mget([full[k] for k in l2_wanted]))
            for k, raw in zip(l2_wanted, raws or [None] * len(l2_wanted), strict=True):
                if raw is None:
                    missing.append(k)
                else:
                    self._l1_set(full[k], raw, self.l1_value_ttl)
                    found[k] = decode(raw)
                    if renew:
                        renewed.append((full[k], self._ttl(negative is not None and negative(found[k]))))
            hits = len(l2_wanted) - len(missing)
            self.stats.count("l2", resource, "hit", hits)
            self.stats.count("l2", resource, "promotion", hits)
            self.stats.count("l2", resource, "miss", len(missing))
        entries: list[tuple[str, Any, int]] = []  # (key, value, TTL) to store
        if missing:
            computed = self._compute(resource, lambda: compute_missing(missing))
            for k in missing:
                value = computed[k]
                found[k] = value
                is_negative = negative is not None and negative(value)
                if is_negative and not keep_negative:
                    continue
                raw = encode(value)
                self._l1_set(full[k], raw, self.l1_ttl if is_negative else self.l1_value_ttl)
                entries.append((full[k], raw, self._ttl(is_negative)))
            self.stats.count("l2", resource, "store", len(entries))
        if renewed or entries:

            def write(client: Any) -> None:
                # One round trip for the renewals and the stores.
                pipe = client.pipeline(transaction=False)
                for name, ttl in renewed:
                    pipe.expire(name, ttl)
                for name, raw, ttl in entries:
                    pipe.set(name, raw, ex=ttl)
                pipe.execute()

            self._l2(resource, write)
        self._maybe_flush()
        return found

    def _l1_lookup(self, resource: str, full: str) -> Any:
        # Counted, not timed: an L1 read is a dictionary lookup of about a microsecond, and timing it (two clock
        # reads, the statistics, a Prometheus histogram) cost several times that on every cached request.
        raw = self._l1_get(full)
        self.stats.count("l1", resource, "miss" if raw is None else "hit")
        return raw

    def _l2_lookup(self, resource: str, full: str) -> Any:
        """The value under ``full`` from Redis (promoted into L1), else None; the caller counts the hit or miss."""
        raw = self._l2(resource, lambda client: client.get(full))
        if raw is not None:
            self._promote(resource, full, raw)
        return raw

    def _promote(self, resource: str, full: str, raw: Any) -> None:
        """Copy a value found in Redis into L1."""
        self._l1_set(full, raw, self.l1_value_ttl)
        self.stats.count("l2", resource, "promotion")

    @staticmethod
    def _lock_key(full: str) -> str:
        """The stampede lock's key of the value under ``full``."""
        return f"{full}:lock"

    def _l2_get_or_lock(self, resource: str, full: str) -> tuple[Any, str | None]:
        """The value under ``full`` from Redis, else the key's lock: ``(raw, None)`` when found (promoted into L1),
        ``(None, token)`` when this caller holds the lock and computes, ``(None, None)`` when it computes without
        it (Redis down, or the lock still held by another worker after ``lock_wait`` seconds).

        Each attempt is one round trip (``_GET_OR_LOCK``): a miss takes the lock in the same trip that found
        nothing, and a waiter polling the lock sees the value as soon as its holder stores it.
        """
        token = uuid.uuid4().hex
        stop_at = time.monotonic() + self.lock_wait
        lock_ms = max(1, int(self.lock_timeout * 1000))
        first = True
        while True:
            reply = self._l2(
                resource,
                lambda client: client.eval(_GET_OR_LOCK, 2, full, self._lock_key(full), token, lock_ms),
            )
            if isinstance(reply, bytes):
                self.stats.count("l2", resource, "hit" if first else "wait")
                self._promote(resource, full, reply)
                return reply, None
            if first:
                self.stats.count("l2", resource, "miss")
            if reply is None:  # no answer (no Redis configured, the circuit open, or this call failed): no lock
                return None, None
            if reply == 1:
                return None, token
            if time.monotonic() + _LOCK_POLL > stop_at:
                return None, None  # a slow database must not turn into an outage: compute anyway
            first = False
            time.sleep(_LOCK_POLL)

    def _compute(self, resource: str, compute: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return compute()
        finally:
            self.stats.observe("db", resource, time.perf_counter() - started)
            self.stats.count("db", resource, "compute")

    def _ttl(self, is_negative: bool) -> int:
        """How long L2 keeps a value: briefly when it says "not found"."""
        return self.negative_ttl if is_negative else self.l2_ttl

    def _store(self, resource: str, full: str, raw: Any, is_negative: bool, *, token: str | None = None) -> None:
        """Keep ``raw`` in both tiers; with ``token`` (the key's lock, held), release it in the same round trip."""
        self._l1_set(full, raw, self.l1_ttl if is_negative else self.l1_value_ttl)
        ttl = self._ttl(is_negative)
        if token is None:
            sent = self._l2(resource, lambda client: client.set(full, raw, ex=ttl))
        else:

            def store_and_release(client: Any) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                pipe.set(full, raw, ex=ttl)
                pipe.eval(_RELEASE, 1, self._lock_key(full), token)
                return list(pipe.execute())

            sent = self._l2(resource, store_and_release)
        if sent is not None:
            self.stats.count("l2", resource, "store")

    def _release(self, resource: str, full: str, token: str) -> None:
        """Release the lock of ``full`` if this caller still holds it (``token``); one that expired while computing
        (``lock_timeout``) may be another worker's now and is left alone."""
        if self._down_until is not None:
            return  # Redis failed meanwhile: do not pay a second timeout; the lock expires by itself (lock_timeout)
        self._l2(resource, lambda client: client.eval(_RELEASE, 1, self._lock_key(full), token))

    def _flight(self, full: str) -> _Flight:
        with self._flights_lock:
            flight = self._flights.get(full)
            if flight is None:
                flight = _Flight()
                self._flights[full] = flight
            return flight

    # -- statistics ----------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if self.clock() - self._last_flush >= self.stats_flush:
            self.flush_stats()

    def flush_stats(self) -> None:
        """Add this process's counters since the last flush to the shared Redis hash."""
        self._last_flush = self.clock()
        counts, seconds = self.stats.take_unflushed()
        if not counts and not seconds:
            return

        def write(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(STATS_KEY, "|".join(name), n)
            for name, s in seconds.items():
                pipe.hincrbyfloat(STATS_KEY, "|".join(name), s)
            pipe.execute()
            return True

        if self._l2("stats", write) is None and self.has_l2:
            self.stats.give_back(counts, seconds)


@functools.cache
def schema_fingerprint() -> str:
    """A hash of every installed model's concrete fields (names, columns, types)."""
    fields = sorted(
        (model._meta.label, f.attname, f.get_internal_type())
        for model in apps.get_models()
        for f in model._meta.concrete_fields
    )
    return digest(fields)


def cache_from_settings() -> TieredCache:
    return TieredCache(
        l1_ttl=settings.CACHE_L1_TTL,
        l1_max_bytes=settings.CACHE_L1_MAX_BYTES,
        l2_ttl=settings.CACHE_L2_TTL,
        negative_ttl=settings.CACHE_NEGATIVE_TTL,
        lock_wait=settings.CACHE_LOCK_WAIT,
        retry_after=settings.CACHE_RETRY_AFTER,
        enabled=settings.CACHE_ENABLED,
    )


_instance: TieredCache | None = None
_instance_lock = threading.Lock()


def tiered() -> TieredCache:
    """This process's cache (built from settings on first use)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = cache_from_settings()
    return _instance


@atexit.register
def _flush_at_exit() -> None:
    # A command (import_factors, seed_demo) that wrote during a Redis blip would otherwise take its bumps with it.
    if _instance is not None:
        _instance.flush_pending()
        _instance.flush_stats()


def reset() -> None:
    """Drop this process's cache; the next ``tiered()`` builds a new one from settings."""
    global _instance
    _instance = None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES" or setting.startswith("CACHE_"):
        reset()


setting_changed.connect(_on_setting_changed)


_WRITES = "vcci_cache_writes"

# Set by ``renewing()``: batch lookups renew the L2 lifetime of what they find.
_RENEW: ContextVar[bool] = ContextVar("vcci_cache_renew", default=False)


@contextmanager
def renewing() -> Iterator[None]:
    """Within the block, ``get_many_or_compute`` reads every key from L2 (not L1) and renews the TTL
    of each entry it finds, as if it had just been stored.

    For warming: an entry that is already cached when the warm-up runs would otherwise keep its old
    expiry, and every entry an earlier warm-up stored would expire in the same second, a burst of
    misses in the middle of the traffic the warm-up was meant to serve.
    """
    token = _RENEW.set(True)
    try:
        yield
    finally:
        _RENEW.reset(token)


def is_renewing() -> bool:
    """Whether the caller runs inside ``renewing()``: values it derives from cached ones must then be read through
    ``get_many_or_compute`` (which renews them in L2), not from what it kept in this process."""
    return _RENEW.get()


def _real_blocks(connection: Any) -> list[Any]:
    # The test runner wraps each test in atomic blocks of its own; they are not the application's transactions.
    return [block for block in connection.atomic_blocks if not getattr(block, "_from_testcase", False)]


def invalidate(*namespaces: Namespace) -> None:
    """Bump ``namespaces`` now, and again after the current transaction commits.

    Call it from the write path itself, inside its transaction. Outside one (autocommit) the write
    is already committed and one bump is enough. Inside one:

    - the bump after commit (``transaction.on_commit``) is what other workers rely on: anything
      they computed before the commit read the old rows, and stays behind under the older version;
    - the bump now keeps other workers from serving what was cached before the write for longer
      than necessary, and is harmless if the transaction rolls back (they recompute the old rows);
    - until the transaction ends, this connection's own reads of ``namespaces`` bypass the cache
      (``writing``): they see rows no one else can, which must never be stored or served.
    """
    if not namespaces:
        return
    connection = transaction.get_connection()
    blocks = _real_blocks(connection)
    tiered().bump(*namespaces)
    if not blocks:
        return
    writes: dict[Namespace, Any] = connection.__dict__.setdefault(_WRITES, {})
    for ns in namespaces:
        writes[ns] = blocks[0]
    transaction.on_commit(lambda: tiered().bump(*namespaces))


def writing(namespaces: Sequence[Namespace]) -> bool:
    """Whether the current transaction has written to any of ``namespaces`` (its reads must bypass the cache)."""
    connection = transaction.get_connection()
    writes = connection.__dict__.get(_WRITES)
    if not writes or not connection.in_atomic_block:
        return False
    for ns in namespaces:
        block = writes.get(ns)
        if block is not None and any(open_block is block for open_block in connection.atomic_blocks):
            return True
    return False


def digest(*parts: object) -> str:
    """A short stable hash of ``parts`` for cache keys and ETags."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()
