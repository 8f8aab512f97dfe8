"""Filling the two-level cache (``perf.cache``) ahead of the first requests.

``warm(organizations, ...)`` runs, per organization, the steps every registered ``WarmUp`` lists
for it (``manage.py warm_cache`` and the gunicorn boot hook both call it). What to warm is the
domain's: an app registers a ``WarmUp`` at start-up (``emissions.warm``), the organizations come
from ``perf.tenants``. This module schedules the steps, times them, measures what each found
already cached and what it filled, and reports.

A step that warms a response runs the real view in-process (``Views``), so the response lands
under exactly the key a client request computes (``perf.conditional``): that key includes the
scheme, the Host header and the negotiated media type, so only clients that send the same Host
(``host``), scheme and ``Accept: application/json`` (or no Accept at all, which negotiates the same)
are served what was warmed. Others fill their own entries on first use.

What each step found already cached, and what it filled, is measured from this process's cache
counters (``tiered().stats``). In a serving worker, requests handled while the warm-up runs are
counted into the same deltas; the report is indicative there, exact in a management command.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import DisallowedHost
from django.db import connections
from django.http.response import HttpResponseBase
from django.urls import resolve, reverse
from redis.exceptions import RedisError
from rest_framework.test import APIRequestFactory, force_authenticate
from tqdm import tqdm

from perf import tenants
from perf.cache import TieredCache, tiered
from perf.registry import Registry
from perf.tenants import Tenant

logger = logging.getLogger("vcci.cache")

ACCEPT = "application/json"
SCHEMES = ("http", "https")


class WarmError(Exception):
    """The warm-up cannot run as asked (a Host the site would refuse), or one step failed."""


def default_host() -> str:
    """The first ``ALLOWED_HOSTS`` entry that names one host (not ``*``, not a ``.domain`` pattern), else localhost."""
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            return host
    return "localhost"


def check_host(host: str, scheme: str) -> None:
    """Raise ``WarmError`` unless requests to ``host`` would be accepted (``ALLOWED_HOSTS``)."""
    if scheme not in SCHEMES:
        raise WarmError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}.")
    request = APIRequestFactory().get("/", secure=scheme == "https", HTTP_HOST=host)
    try:
        request.get_host()
    except DisallowedHost as exc:
        raise WarmError(f"Host {host!r} is not in ALLOWED_HOSTS; warm with a host clients use.") from exc


# -- what an app registers -----------------------------------------------------------------------


@dataclass(frozen=True)
class WarmStep:
    """One item to warm: its ``kind`` (a row of the report), a label for the report and log, and the action."""

    kind: str
    label: str
    action: Callable[[], None]


class Views:
    """GET requests through the real views, in-process and without HTTP, as a client with ``host`` and ``scheme``."""

    def __init__(self, *, host: str, scheme: str) -> None:
        self.host = host
        self.secure = scheme == "https"
        self.factory = APIRequestFactory()

    def get(self, user: AbstractBaseUser, name: str, params: dict[str, str] | None = None) -> HttpResponseBase:
        """The response of the view named ``name`` (a URL name) to ``user`` (authenticated as it, no token)."""
        path = reverse(name)
        request = self.factory.get(path, params, secure=self.secure, HTTP_HOST=self.host, HTTP_ACCEPT=ACCEPT)
        force_authenticate(request, user=user)
        match = resolve(path)
        return match.func(request, *match.args, **match.kwargs)

    def step(self, kind: str, user: AbstractBaseUser, name: str, params: dict[str, str] | None = None) -> WarmStep:
        """A step that GETs the view named ``name`` as ``user``; any status but 200 fails it."""

        def get() -> None:
            response = self.get(user, name, params)
            if response.status_code != 200:
                raise WarmError(f"answered {response.status_code}")

        query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
        return WarmStep(kind, f"GET {reverse(name)}{query}", get)


@dataclass(frozen=True)
class WarmUp:
    """What one app warms (``register``).

    ``kinds``: the report's rows for its steps, in order. ``plan(organizations, views)``: the steps
    of each organization, one list per organization in the order given. It runs once per warm-up,
    before the first step, so what every organization shares is read once; a step's action runs
    later, in turn, and is what fills the cache.
    """

    name: str
    kinds: tuple[str, ...]
    plan: Callable[[Sequence[Any], Views], list[list[WarmStep]]]


_registry: Registry[WarmUp] = Registry("warm-up")


def register(warm_up: WarmUp) -> WarmUp:
    """Add ``warm_up`` (in an ``AppConfig.ready``); a different one under a taken name is a ``ValueError``."""
    return _registry.add(warm_up.name, warm_up)


def registry() -> list[WarmUp]:
    """Every registered warm-up, in registration order."""
    return list(_registry.items().values())


# -- the report --------------------------------------------------------------------------------


@dataclass
class Counts:
    """Cache lookups of one step (or a sum of steps), from the cache's counters.

    ``lookups``: keys looked up (each is one L1 hit or miss); ``l1_hits`` / ``l2_hits``: found in
    a tier; ``waits``: found after waiting for another caller that was computing it; ``computes``:
    loader calls that reached the database (a batch load is one call for many keys).
    """

    lookups: int = 0
    l1_hits: int = 0
    l2_hits: int = 0
    waits: int = 0
    computes: int = 0

    @property
    def hits(self) -> int:
        """Lookups that found the value already cached."""
        return self.l1_hits + self.l2_hits + self.waits

    @property
    def filled(self) -> int:
        """Lookups that were missing and have now been computed and stored."""
        return max(self.lookups - self.hits, 0)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.lookups + other.lookups,
            self.l1_hits + other.l1_hits,
            self.l2_hits + other.l2_hits,
            self.waits + other.waits,
            self.computes + other.computes,
        )

    @classmethod
    def between(cls, before: dict[tuple[str, str, str], int], after: dict[tuple[str, str, str], int]) -> Counts:
        """The lookups counted between two snapshots of ``Stats.counts`` (every resource)."""
        delta: dict[tuple[str, str], int] = {}
        for (tier, resource, event), n in after.items():
            diff = n - before.get((tier, resource, event), 0)
            if diff:
                delta[(tier, event)] = delta.get((tier, event), 0) + diff
        return cls(
            lookups=delta.get(("l1", "hit"), 0) + delta.get(("l1", "miss"), 0),
            l1_hits=delta.get(("l1", "hit"), 0),
            l2_hits=delta.get(("l2", "hit"), 0),
            waits=delta.get(("l1", "wait"), 0) + delta.get(("l2", "wait"), 0),
            computes=delta.get(("db", "compute"), 0),
        )


@dataclass
class Step:
    """One warmed item of one organization."""

    organization: str
    kind: str
    label: str
    counts: Counts = field(default_factory=Counts)
    error: str | None = None


@dataclass
class RedisUsage:
    """Redis as the report shows it: ``status`` is ``ok``, ``unreachable`` or ``absent`` (no Redis configured)."""

    status: str
    used_memory_human: str = ""
    keys: int = 0
    error: str = ""

    def describe(self) -> str:
        if self.status == "absent":
            return "Redis: not configured (L1 only; each worker caches for itself)"
        if self.status == "unreachable":
            return f"Redis unreachable ({self.error})"
        return f"Redis: used_memory {self.used_memory_human}, {self.keys} keys in this database (DBSIZE)"


@dataclass
class WarmReport:
    organizations: list[str]
    host: str
    scheme: str
    kinds: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    l1_size: int = 0
    redis: RedisUsage = field(default_factory=lambda: RedisUsage("absent"))
    seconds: float = 0.0

    def by_kind(self) -> dict[str, Counts]:
        """Counts summed per kind, in ``kinds`` order (then any other kind a step had, as first seen)."""
        totals = {kind: Counts() for kind in self.kinds}
        for step in self.steps:
            totals[step.kind] = totals.get(step.kind, Counts()) + step.counts
        return totals

    @property
    def errors(self) -> list[str]:
        return [f"{step.organization}: {step.label}: {step.error}" for step in self.steps if step.error]

    def lines(self) -> list[str]:
        """The human report: one row per kind, then the cache's size."""
        header = f"{'kind':<10} {'lookups':>8} {'hits':>8} {'L1 hits':>8} {'L2 hits':>8} {'filled':>8} {'computes':>9}"
        rows = [
            f"Warmed {len(self.organizations)} organization(s) ({', '.join(self.organizations)}) as "
            f"{self.scheme}://{self.host}, Accept: {ACCEPT}, in {self.seconds:.1f}s",
            header,
        ]
        for kind, c in self.by_kind().items():
            rows.append(
                f"{kind:<10} {c.lookups:>8} {c.hits:>8} {c.l1_hits:>8} {c.l2_hits:>8} {c.filled:>8} {c.computes:>9}"
            )
        rows.append(f"L1 entries (this process): {self.l1_size}")
        rows.append(self.redis.describe())
        if self.errors:
            rows.append(f"{len(self.errors)} step(s) failed:")
            rows.extend(f"  {error}" for error in self.errors)
        return rows

    def summary(self) -> str:
        """One line, for logs."""
        kinds = ", ".join(f"{kind} {c.hits} hit / {c.filled} filled" for kind, c in self.by_kind().items())
        return f"{len(self.organizations)} organization(s): {kinds}; {len(self.errors)} error(s)"


# -- warming -----------------------------------------------------------------------------------


def _snapshot(cache: TieredCache) -> dict[tuple[str, str, str], int]:
    # dict(Counter) copies in one C call while holding the GIL, so a request thread counting at the
    # same moment cannot make the copy fail; the copy may just miss that one event.
    return dict(cache.stats.counts)


def redis_usage(cache: TieredCache) -> RedisUsage:
    """Redis memory (``INFO memory``) and key count (``DBSIZE``) of the cache's database, cheaply."""
    if not cache.has_l2 or cache.alias is None:
        return RedisUsage("absent")
    from django_redis import get_redis_connection

    try:
        client = get_redis_connection(cache.alias)
        memory = client.info("memory")
        keys = int(client.dbsize())
    except (RedisError, OSError) as exc:
        return RedisUsage("unreachable", error=f"{type(exc).__name__}: {exc}")
    return RedisUsage("ok", used_memory_human=str(memory.get("used_memory_human", "?")), keys=keys)


def _plan(organizations: Sequence[Tenant], views: Views) -> list[list[WarmStep]]:
    """Each organization's steps: those of every registered warm-up, warm-up by warm-up."""
    plans = [warm_up.plan(organizations, views) for warm_up in registry()]
    return [[step for plan in plans for step in plan[i]] for i in range(len(organizations))]


def warm(
    organizations: Iterable[Tenant], *, host: str, scheme: str = "http", progress: IO[str] | None = None
) -> WarmReport:
    """Fill the cache for ``organizations``; return what was found and what was filled.

    ``host`` and ``scheme`` are those of the client requests to be served (the response cache key
    includes them); ``progress``: a stream for a tqdm progress bar (one step per organization and
    item), or None for none. A failing step is logged and reported (``WarmReport.errors``), and the
    others still run. Raises ``WarmError`` before warming anything when ``host`` is not allowed.
    Ends by flushing this process's counters to Redis (``TieredCache.flush_stats``).
    """
    check_host(host, scheme)
    orgs = list(organizations)
    kinds = tuple(dict.fromkeys(kind for warm_up in registry() for kind in warm_up.kinds))
    report = WarmReport([org.slug for org in orgs], host=host, scheme=scheme, kinds=kinds)
    cache = tiered()
    started = time.perf_counter()
    plan = _plan(orgs, Views(host=host, scheme=scheme))
    bar = tqdm(
        total=sum(map(len, plan)), unit="item", desc="warm_cache", file=progress, disable=progress is None
    )  # fmt: skip
    with bar:
        for org, steps in zip(orgs, plan, strict=True):
            for item in steps:
                bar.set_postfix_str(f"{org.slug}: {item.kind}", refresh=False)
                step = Step(org.slug, item.kind, item.label)
                before = _snapshot(cache)
                try:
                    item.action()
                except Exception as exc:
                    # One failing item must not keep the others cold; the traceback goes to the log.
                    logger.exception("Cache warm-up of %s failed for organization %s", item.label, org.slug)
                    step.error = f"{type(exc).__name__}: {exc}"
                step.counts = Counts.between(before, _snapshot(cache))
                report.steps.append(step)
                bar.update(1)
    report.seconds = time.perf_counter() - started
    report.l1_size = cache.l1_size
    report.redis = redis_usage(cache)
    cache.flush_stats()
    return report


# -- warm-up when a gunicorn worker boots ------------------------------------------------------


def _is_gevent_worker(worker: Any) -> bool:
    # By class name along the MRO, so that deciding imports nothing (gunicorn's gevent module imports gevent).
    return any(
        f"{cls.__module__}.{cls.__qualname__}" == "gunicorn.workers.ggevent.GeventWorker"
        for cls in type(worker).__mro__
    )


def _warm_logged(log: Any) -> None:
    """The background job: warm every active organization (``perf.tenants``), log how it went, never raise."""
    # Connections opened before (a greenlet of an unpatched hub shares its thread's) are not this job's to close.
    already_open = {conn.alias for conn in connections.all(initialized_only=True) if conn.connection is not None}
    started = time.perf_counter()
    log.info("Cache warm-up started (pid %s)", os.getpid())
    try:
        report = warm(tenants.registered().active(), host=default_host(), scheme="http", progress=None)
    except Exception:
        log.exception("Cache warm-up failed; the worker serves on and fills its cache on demand")
    else:
        for error in report.errors:
            log.warning("Cache warm-up: %s", error)
        log.info("Cache warm-up done in %.1fs: %s", time.perf_counter() - started, report.summary())
    finally:
        for conn in connections.all(initialized_only=True):
            if conn.alias not in already_open:
                conn.close()


def warm_on_boot(worker: Any) -> Any:
    """Start warming this worker's cache in the background when ``settings.CACHE_WARM_ON_BOOT`` is on.

    Called from gunicorn's ``post_worker_init`` (``vcci/gunicorn.conf.py``), i.e. in the worker after
    the application (Django) is loaded. The job is a greenlet in a gevent worker, else a daemon thread,
    so the worker starts serving at once; it logs through ``worker.log`` and never raises. Returns the
    greenlet or thread started, or None when warming on boot (or the cache) is off.
    """
    if not settings.CACHE_WARM_ON_BOOT:
        return None
    log = getattr(worker, "log", logger)
    if not settings.CACHE_ENABLED:
        log.info("CACHE_WARM_ON_BOOT is on but CACHE_ENABLED is off: no cache to warm")
        return None
    if _is_gevent_worker(worker):
        import gevent

        return gevent.spawn(_warm_logged, log)
    thread = threading.Thread(target=_warm_logged, args=(log,), name="vcci-cache-warm", daemon=True)
    thread.start()
    return thread
