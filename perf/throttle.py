"""Request limits: DRF throttle classes over one shared, atomic counter per scope, caller and window.

**Why not DRF's storage.** ``SimpleRateThrottle`` keeps a list of timestamps per caller in Django's cache and
writes it back after each request (a get, then a set): two workers reading the same list at once both write back
one request, so concurrent requests go uncounted (not atomic); the list is as long as the rate (a 1,200/min scope
reads and writes 1,200 floats per request); and a cache with a per-process tier (``perf.cache``'s L1) would count
per worker. Here a scope counts in one Redis integer per caller and window: ``INCR`` (atomic, so every worker
counts into the same number) and ``EXPIRE`` (the key dies with its window) in one pipelined round trip, 2 commands
whatever the rate.

**Fixed windows.** A window is the rate's period (``100/min``: 60 s), aligned on the clock, so a key is
``vcci:t:<scope>:<caller>:<window number>`` and ``Retry-After`` is the time left in the window. A caller may
send up to twice the rate across a window boundary: the price of one key and one round trip (a sliding window
needs the previous window's count too); rates are set with that in mind. Every request counts, refused ones
too: a client that does not wait ``Retry-After`` stays refused until the window ends.

**One round trip per request.** The first counted throttle a request meets counts for every counted throttle
its view declares (``throttle_classes``), in one pipeline, and keeps the outcomes on the request; the others,
and a second evaluation of the same request (the fast path's, then DRF's), read them: a request is counted once
per scope whoever evaluates it.

**Redis down: fail open.** The service keeps serving through a Redis outage: a failed round trip lets the
request through, is counted (``vcci_throttle_unavailable_total``) and logged once per outage, and Redis is not
tried again for ``CACHE_RETRY_AFTER`` seconds (each failure would otherwise cost the socket timeout). Without
Redis at all (the embedded default) each process counts in its own memory.

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
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from prometheus_client import Counter
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from perf.fastpath import caller_only

logger = logging.getLogger("vcci.throttle")

PREFIX = "vcci:t"

THROTTLED = Counter("vcci_throttled_total", "Requests refused with 429 (perf.throttle), by scope.", ["scope"])
UNAVAILABLE = Counter(
    "vcci_throttle_unavailable_total",
    "Requests let through without being counted because Redis did not answer (perf.throttle fails open).",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scope's count for one request: allowed while ``count <= limit``; ``wait`` seconds until the window ends."""

    count: int
    limit: int
    wait: float

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit


ALLOWED = Outcome(0, 0, 0.0)  # not counted (no rate, no caller in the scope, Redis down)


PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"100/min"`` -> ``(100, 60)``, DRF's rate syntax (the period by its first letter: ``s``, ``m``, ``h``,
    ``d``, as ``SimpleRateThrottle.parse_rate``); None (or ``"off"``) for no limit."""
    if rate is None or rate.strip().lower() in ("", "off", "none"):
        return None
    number, _, period = rate.strip().partition("/")
    try:
        requests, seconds = int(number), PERIODS[period.strip()[:1]]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"A throttle rate is <requests>/<s|min|hour|day> (100/min) or off; got {rate!r}."
        ) from None
    if requests < 0:
        raise ImproperlyConfigured(f"A throttle rate's number of requests cannot be negative; got {rate!r}.")
    return requests, seconds


def scope_rate(scope: str) -> tuple[int, int] | None:
    """The ``(requests, seconds)`` of ``scope`` in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, read at each call
    (DRF's ``api_settings`` follows ``override_settings``; ``SimpleRateThrottle.THROTTLE_RATES`` would not)."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    if scope not in rates:
        raise ImproperlyConfigured(f"No throttle rate for scope '{scope}' in REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'].")
    return parse_rate(rates[scope])


class _Counters:
    """Fixed-window counters in Redis (the default cache's, through django-redis) or, without it, in memory."""

    def __init__(self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self._down_until: float | None = None
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if not settings.CACHES.get("default", {}).get("BACKEND", "").startswith("django_redis"):
            return None
        from django_redis import get_redis_connection

        return get_redis_connection("default")

    def count(self, keys: list[tuple[str, str, int, int]]) -> list[Outcome]:
        """Count one request in each ``(scope, caller, limit, seconds)``; the outcomes in order (``ALLOWED``
        for each while Redis is unreachable)."""
        now = self.clock()
        windows = [(f"{PREFIX}:{scope}:{caller}:{int(now // seconds)}", seconds) for scope, caller, _, seconds in keys]
        client = self._client()
        if client is None:
            counts = self._count_locally(windows, now)
        else:
            found = self._count_in_redis(client, windows)
            if found is None:
                return [ALLOWED for _ in keys]
            counts = found
        return [
            Outcome(count, limit, seconds - now % seconds)
            for count, (_, _, limit, seconds) in zip(counts, keys, strict=True)
        ]

    def _count_in_redis(self, client: Any, windows: list[tuple[str, int]]) -> list[int] | None:
        if self._down_until is not None and self.monotonic() < self._down_until:
            UNAVAILABLE.inc()
            return None
        pipe = client.pipeline(transaction=False)
        for key, seconds in windows:
            pipe.incr(key)
            pipe.expire(key, seconds + 1)  # past its window's end: a late request of the window still finds it
        try:
            replies = pipe.execute()
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
        return [int(count) for count in replies[::2]]

    def _count_locally(self, windows: list[tuple[str, int]], now: float) -> list[int]:
        counts = []
        with self._lock:
            for key in [k for k, (_, expires) in self._local.items() if expires <= now]:
                del self._local[key]
            for key, seconds in windows:
                count = self._local.get(key, (0, 0.0))[0] + 1
                self._local[key] = (count, (now // seconds + 1) * seconds)
                counts.append(count)
        return counts

    def reset(self) -> None:
        """Forget the circuit state and the in-memory counters (tests)."""
        with self._lock:
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

    def __init__(self) -> None:
        self.rate = scope_rate(self.scope)
        self._wait: float | None = None

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
        self._wait = outcome.wait  # read by DRF's check_throttles on this request's own instance only
        if not outcome.allowed:
            THROTTLED.labels(scope=self.scope).inc()
        return outcome.allowed

    def _count_all(self, request: Any, view: Any) -> dict[type, Outcome]:
        """This class's outcome and that of every other counted throttle ``view`` declares, in one round trip."""
        declared = [cls for cls in getattr(view, "throttle_classes", ()) if issubclass(cls, CountedThrottle)]
        throttles = [self, *(cls() for cls in dict.fromkeys(declared) if cls is not type(self))]
        outcomes: dict[type, Outcome] = {}
        keys, counted = [], []
        for throttle in throttles:
            caller = throttle.caller(request, view) if throttle.rate is not None else None
            if caller is None or throttle.rate is None:
                outcomes[type(throttle)] = ALLOWED
                continue
            keys.append((throttle.scope, caller, *throttle.rate))
            counted.append(type(throttle))
        if keys:
            outcomes.update(zip(counted, counters.count(keys), strict=True))
        return outcomes

    def wait(self) -> float | None:
        return None if self._wait is None else float(math.ceil(self._wait))


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
