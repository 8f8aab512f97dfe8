"""Request limits: DRF throttle classes over one shared, atomic counter per scope, caller and window.

**Why not DRF's storage.** ``SimpleRateThrottle`` keeps a list of timestamps per caller in Django's cache and
writes it back after each request (a get, then a set): two workers reading the same list at once both write back
one request, so concurrent requests go uncounted (not atomic); the list is as long as the rate (a 1,200/min scope
reads and writes 1,200 floats per request); and a cache with a per-process tier (``perf.cache``'s L1) would count
per worker. Here a scope counts in one Redis integer per caller and window, moved by ``INCRBY`` (atomic, so every
worker counts into the same number) with ``EXPIRE`` (the key dies with its window), pipelined: one round trip
for all the scopes of a request, 2 commands per scope whatever the rate.

**Fixed windows.** A window is the rate's period (``100/min``: 60 s), aligned on the clock, so a key is
``vcci:t:<scope>:<caller>:<window number>`` and ``Retry-After`` is the time left in the window. A caller may
send up to twice the rate across a window boundary: the price of one key and one round trip (a sliding window
needs the previous window's count too); rates are set with that in mind.

**Leases: a round trip per 1 % of the rate, not per request.** A Redis round trip is a large part of a cached
read (measured on a loaded 2-core machine: 170 us of wall time, 80 us of CPU, against about 430 us for the whole
cached request through the test client), so a process takes a caller's count in leases: it adds
``lease_size(rate)`` (1 % of the rate; 1 below 200 per window) to the shared count and spends the lease's
requests itself until it is used up. The requests granted in a window never exceed the rate, since each lease is
cut to what the shared count leaves; what a process leased and did not use is lost with the window, so a caller
may be refused up to ``processes x lease`` requests early (2 % of the rate with two workers). Rates below 200 per
window are counted request by request. A window found over its rate is refused in this process until it ends,
with no further round trip: a throttled client costs nothing, and one that does not wait ``Retry-After`` is
refused until the window ends.

**One round trip per request at most.** The first counted throttle a request meets counts for every counted
throttle its view declares (``throttle_classes``), in one pipeline, and keeps the outcomes on the request; the
others, and a second evaluation of the same request (the fast path's, then DRF's), read them: a request is
counted once per scope whoever evaluates it.

**Redis down: fail open.** The service keeps serving through a Redis outage: a failed round trip lets the
request through, is counted (``vcci_throttle_unavailable_total``) and logged once per outage, and Redis is not
tried again for ``CACHE_RETRY_AFTER`` seconds (each failure would otherwise cost the socket timeout). Without
Redis at all (the embedded default) each process counts in its own memory.

**Failed authentications** are counted by the authentication where it fails (``failed_authentication``), and
``failures_exhausted`` tells it, without counting, that an address has used up its limit (this process's refusal,
else one GET of the shared count): it then refuses a token it would have to look up, before the query.

**The fast path.** ``allow_request`` of a ``CountedThrottle`` is marked ``caller_only``: it reads nothing of
the request but the caller (``user``, ``auth``), the method, ``META`` (the client address, ``Content-Length``)
and headers, and of the view only its class's declarations; its state is the shared counter. ``perf.fastpath``
evaluates it on cached GETs and hands a refusal to DRF, which answers 429 from the outcome kept on the request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from perf.fastpath import caller_only

# From perf.metrics, which checks PROMETHEUS_MULTIPROC_DIR before any metric is made (this module is imported early).
from perf.metrics import THROTTLE_UNAVAILABLE as UNAVAILABLE
from perf.metrics import THROTTLED
from perf.rates import parse_rate

logger = logging.getLogger("vcci.throttle")

T = TypeVar("T")

PREFIX = "vcci:t"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scope's decision for one request, and the seconds until its window ends (``Retry-After``)."""

    allowed: bool
    wait: float


ALLOWED = Outcome(True, 0.0)  # not counted (no rate, no caller in the scope, Redis down)


def scope_rate(scope: str) -> tuple[int, int] | None:
    """The ``(requests, seconds)`` of ``scope`` in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, read at each call
    (DRF's ``api_settings`` follows ``override_settings``; ``SimpleRateThrottle.THROTTLE_RATES`` would not)."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    if scope not in rates:
        raise ImproperlyConfigured(f"No throttle rate for scope '{scope}' in REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'].")
    try:
        return parse_rate(rates[scope])
    except ValueError as exc:
        raise ImproperlyConfigured(f"Throttle scope '{scope}': {exc}") from None


# A process takes 1/LEASE_SHARE of a window's rate at a time (module docstring, "Leases"): rates below 2 x LEASE_SHARE
# per window are counted request by request.
LEASE_SHARE = 100


def lease_size(limit: int) -> int:
    return max(1, limit // LEASE_SHARE)


def _window(scope: str, caller: str, seconds: int, now: float) -> tuple[str, float]:
    """The key of ``caller``'s count in ``scope`` in the window of ``seconds`` holding ``now``, and its end."""
    window = now // seconds
    return f"{PREFIX}:{scope}:{caller}:{int(window)}", (window + 1) * seconds


class _Counters:
    """Fixed-window counters in Redis (the default cache's, through django-redis) or, without it, in memory, taken
    by each process in leases (module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self._down_until: float | None = None
        # Window key -> (requests left of this process's lease, window end, refused). A window found over its rate is
        # refused here until it ends, without asking Redis again: the shared count only grows.
        self._leases: dict[str, tuple[int, float, bool]] = {}
        self._local: dict[str, tuple[int, float]] = {}  # without Redis: key -> (count, window end)
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def _client(self) -> Any:
        if not settings.CACHES.get("default", {}).get("BACKEND", "").startswith("django_redis"):
            return None
        from django_redis import get_redis_connection

        return get_redis_connection("default")

    def count(self, keys: list[tuple[str, str, int, int]]) -> list[Outcome]:
        """Count one request in each ``(scope, caller, limit, seconds)``: the outcomes in order (``ALLOWED``
        for those Redis did not answer for)."""
        now = self.clock()
        outcomes: list[Outcome | None] = []
        wanted: list[tuple[int, str, int, int, float]] = []  # index, key, limit, lease, window end
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            for index, (scope, caller, limit, seconds) in enumerate(keys):
                key, end = _window(scope, caller, seconds, now)
                left, _, refused = self._leases.get(key, (0, end, False))
                if refused:
                    outcomes.append(Outcome(False, end - now))
                elif left > 0:
                    self._leases[key] = (left - 1, end, False)
                    outcomes.append(Outcome(True, end - now))
                else:
                    outcomes.append(None)
                    wanted.append((index, key, limit, lease_size(limit), end))
        if wanted:
            added = self._add([(key, lease, end) for _, key, _, lease, end in wanted], now)
            totals: list[int | None] = [None] * len(wanted) if added is None else list(added)
            with self._lock:
                for (index, key, limit, lease, end), total in zip(wanted, totals, strict=True):
                    if total is None:
                        outcomes[index] = ALLOWED
                        continue
                    # The lease's requests that fall within the rate: all of them, some, or none.
                    granted = max(0, min(lease, limit - (total - lease)))
                    self._leases[key] = (max(0, granted - 1), end, granted == 0)
                    outcomes[index] = Outcome(granted > 0, end - now)
        return [outcome or ALLOWED for outcome in outcomes]

    def _add(self, leases: list[tuple[str, int, float]], now: float) -> list[int] | None:
        """Each key's count after adding its lease (the window end's key expires with it); None when Redis fails."""
        client = self._client()
        if client is None:
            with self._lock:
                totals = []
                for key, lease, end in leases:
                    total = self._local.get(key, (0, end))[0] + lease
                    self._local[key] = (total, end)
                    totals.append(total)
                return totals

        def add() -> list[int]:
            pipe = client.pipeline(transaction=False)
            for key, lease, end in leases:
                pipe.incrby(key, lease)
                pipe.expire(key, math.ceil(end - now) + 1)  # past its window's end: a late request still finds it
            return [int(total) for total in pipe.execute()[::2]]

        return self._round_trip(add)

    def exhausted(self, scope: str, caller: str, limit: int, seconds: int) -> Outcome:
        """Whether a request of ``caller`` counted now in ``scope`` would be refused, without counting one: when
        this process already refuses the window, or the shared count has reached ``limit`` (one GET, remembered
        as a refusal: the count only grows). Allowed when Redis does not answer (fail open)."""
        now = self.clock()
        key, end = _window(scope, caller, seconds, now)
        with self._lock:
            left, _, refused = self._leases.get(key, (0, end, False))
        if refused or left > 0:
            return Outcome(not refused, end - now)
        client = self._client()
        if client is None:
            with self._lock:
                total: int | None = self._local.get(key, (0, end))[0]
        else:
            total = self._round_trip(lambda: int(client.get(key) or 0))
        if total is None or total < limit:
            return Outcome(True, end - now)
        with self._lock:
            self._leases[key] = (0, end, True)
        return Outcome(False, end - now)

    def _round_trip(self, call: Callable[[], T]) -> T | None:
        """``call()``, a Redis round trip; None when it fails, or when Redis failed less than ``CACHE_RETRY_AFTER``
        seconds ago (not tried: each failure would cost the socket timeout)."""
        if self._down_until is not None and self.monotonic() < self._down_until:
            UNAVAILABLE.inc()
            return None
        try:
            result = call()
        except (RedisError, OSError) as exc:
            UNAVAILABLE.inc()
            if self._down_until is None:
                logger.warning(
                    "Redis unreachable (%s: %s); requests are not throttled meanwhile", type(exc).__name__, exc
                )
            self._down_until = self.monotonic() + settings.CACHE_RETRY_AFTER
            return None
        if self._down_until is not None:
            logger.warning("Redis reachable again; requests are throttled again")
            self._down_until = None
        return result

    def _prune(self, now: float) -> None:
        """Drop the leases and local counts of ended windows (precondition: the lock is held)."""
        for key in [key for key, (_, end, _) in self._leases.items() if end <= now]:
            del self._leases[key]
        for key in [key for key, (_, end) in self._local.items() if end <= now]:
            del self._local[key]
        self._next_prune = now + 1.0

    def reset(self) -> None:
        """Forget the leases, the in-memory counts and the circuit state (tests; a process after fork)."""
        with self._lock:
            self._leases.clear()
            self._local.clear()
        self._down_until = None


counters = _Counters()

_OUTCOMES = "_vcci_throttle_outcomes"  # on the HttpRequest: the outcome of each counted throttle class


def _raw(request: Any) -> HttpRequest:
    """The Django request under DRF's ``Request`` (or the fast path's caller, which names it the same way)."""
    return getattr(request, "_request", request)


class CountedThrottle(BaseThrottle):
    """A DRF throttle counting in ``scope`` per ``caller(request, view)`` (None: not counted), at the scope's rate.

    Subclasses set ``scope`` and define ``caller``, which must read only what ``caller_only`` allows (module
    docstring) and be cheap: it runs for every request of every view declaring the class.
    """

    scope: str = ""
    _wait: float | None = None  # this request's, set by allow_request: DRF reads it on the same instance

    @property
    def rate(self) -> tuple[int, int] | None:
        """``(requests, seconds)`` of the scope, as configured now; None: not limited."""
        return scope_rate(self.scope)

    def caller(self, request: Any, view: Any) -> str | None:
        raise NotImplementedError

    @caller_only
    def allow_request(self, request: Any, view: Any) -> bool:
        raw = _raw(request)
        outcomes: dict[type, Outcome] | None = getattr(raw, _OUTCOMES, None)
        if outcomes is None or type(self) not in outcomes:
            outcomes = {**(outcomes or {}), **self._count_all(request, view)}
            setattr(raw, _OUTCOMES, outcomes)
        outcome = outcomes[type(self)]
        self._wait = outcome.wait
        return outcome.allowed

    def _count_all(self, request: Any, view: Any) -> dict[type, Outcome]:
        """This class's outcome and that of every other counted throttle ``view`` declares, in one round trip."""
        outcomes: dict[type, Outcome] = {}
        keys, scopes = [], []
        for throttle, rate in _plan(type(self), tuple(getattr(view, "throttle_classes", ()))):
            caller = None if rate is None else throttle.caller(request, view)
            if rate is None or caller is None:
                outcomes[type(throttle)] = ALLOWED
                continue
            keys.append((throttle.scope, caller, *rate))
            scopes.append(type(throttle))
        if keys:
            for cls, outcome in zip(scopes, counters.count(keys), strict=True):
                outcomes[cls] = outcome
                if not outcome.allowed:  # counted here, once per request, whoever evaluates it again
                    THROTTLED.labels(scope=cls.scope).inc()
        return outcomes

    def wait(self) -> float | None:
        return None if self._wait is None else float(math.ceil(self._wait))


# (throttle class, a view's throttle classes) -> its counted throttles with their rates; emptied when settings change.
_PLANS: dict[tuple[type, tuple[type, ...]], list[tuple[CountedThrottle, tuple[int, int] | None]]] = {}


def _plan(
    first: type[CountedThrottle], declared: tuple[type, ...]
) -> list[tuple[CountedThrottle, tuple[int, int] | None]]:
    """``first`` and the other counted throttles in ``declared``, each once, with its scope's rate. The instances
    are shared: ``caller`` and ``scope`` hold no per-request state."""
    try:
        return _PLANS[first, declared]
    except KeyError:
        pass
    classes = dict.fromkeys([first, *(cls for cls in declared if issubclass(cls, CountedThrottle))])
    plan = [(throttle, throttle.rate) for throttle in (cls() for cls in classes)]
    _PLANS[first, declared] = plan
    return plan


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "REST_FRAMEWORK":
        _PLANS.clear()


setting_changed.connect(_on_setting_changed)


def client_address(request: Any) -> str:
    """The client's address as DRF's throttles read it (``REST_FRAMEWORK["NUM_PROXIES"]`` trusted proxies in
    ``X-Forwarded-For``, else ``REMOTE_ADDR``)."""
    return BaseThrottle().get_ident(request) or "-"


class AnonymousThrottle(CountedThrottle):
    """Unauthenticated requests, per client address (scope ``anon``)."""

    scope = "anon"

    def caller(self, request: Any, view: Any) -> str | None:
        user = request.user
        return None if user and user.is_authenticated else client_address(request)


class _FailedAuthentication(CountedThrottle):
    scope = "auth_failures"

    def caller(self, request: Any, view: Any) -> str | None:
        return client_address(request)


def failed_authentication(request: Any) -> float | None:
    """Count a failed authentication of ``request``'s client address (scope ``auth_failures``); the seconds it
    must wait when it is now over the limit, else None.

    DRF authenticates before it runs throttles, so a wrong token is answered 401 before any throttle could count
    it: the authentication class calls this where it fails, and answers 429 instead once the address is over.
    """
    throttle = _FailedAuthentication()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait()


def failures_exhausted(request: Any) -> float | None:
    """The seconds ``request``'s client address must wait when it has used up its failed authentications (scope
    ``auth_failures``) in this window, else None; counts nothing (``failed_authentication`` counts).

    For the authentication, before it looks a token up in the database: past the limit it answers 429 instead,
    so a guess costs no query (``emissions.api.authentication``).
    """
    scope = _FailedAuthentication.scope
    rate = scope_rate(scope)
    if rate is None:
        return None
    outcome = counters.exhausted(scope, client_address(request), *rate)
    if outcome.allowed:
        return None
    THROTTLED.labels(scope=scope).inc()
    return float(math.ceil(outcome.wait))
