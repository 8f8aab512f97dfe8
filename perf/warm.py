"""Filling the two-level cache (``perf.cache``) ahead of the first requests.

``warm(organizations, ...)`` fills, per organization, what its first requests would otherwise
compute (``manage.py warm_cache`` and the gunicorn boot hook both call it):

- ``factors``: the calculator's factor resolution (``OrganizationFactors.prime_activities`` for every
  average-data activity the organization can see, ``prime_suppliers`` for all its suppliers,
  ``prime_rates`` for every year of ``ExchangeRate``), and the first page of ``/api/v1/factors/``;
- ``suppliers``: the first page of ``/api/v1/suppliers/``;
- ``summaries``: ``/api/v1/emissions/summary/`` for every ``group_by`` key, and the first pages
  of ``/api/v1/emissions/`` and ``/api/v1/activities/``.

Responses are warmed by running the real views in-process, so each lands under exactly the key a
client request computes (``perf.conditional``): that key includes the scheme, the Host header and
the negotiated media type, so only clients that send the same Host (``host``), scheme and
``Accept: application/json`` (or no Accept at all, which negotiates the same) are served what was
warmed. Others fill their own entries on first use.

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
from django.contrib.auth.models import User
from django.core.exceptions import DisallowedHost
from django.db import connections
from django.db.models import Exists, OuterRef, QuerySet
from django.http.response import HttpResponseBase
from django.urls import resolve, reverse
from redis.exceptions import RedisError
from rest_framework.test import APIRequestFactory, force_authenticate
from tqdm import tqdm

from emissions.calculation import OrganizationFactors
from emissions.models import (
    SUMMARY_KEYS,
    ActivityRecord,
    EmissionFactor,
    ExchangeRate,
    Membership,
    Organization,
    Supplier,
)
from perf.cache import TieredCache, renewing, tiered

logger = logging.getLogger("vcci.cache")

KINDS = ("factors", "suppliers", "summaries")
ACCEPT = "application/json"
SCHEMES = ("http", "https")
WARM_USERNAME = "warm_cache"


class WarmError(Exception):
    """The warm-up cannot run as asked (a Host the site would refuse)."""


# -- what to warm ------------------------------------------------------------------------------


def active_organizations() -> QuerySet[Organization]:
    """Organizations with at least one activity record, by slug: the ones worth warming by default."""
    has_activity = ActivityRecord.objects.filter(organization_id=OuterRef("pk"))
    return Organization.objects.filter(Exists(has_activity)).order_by("slug")


def default_host() -> str:
    """The first ``ALLOWED_HOSTS`` entry that names one host (not ``*``, not a ``.domain`` pattern), else localhost."""
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            return host
    return "localhost"


def member_user(organization: Organization) -> User:
    """A user that the API views see as a member of ``organization``, its membership already loaded.

    A real active member when there is one (one query), else an unsaved ``warm_cache`` user with an
    unsaved membership: views only read ``user.membership.organization(_id)``, and the reverse
    one-to-one cache is set as ``OrgTokenAuthentication`` does, so ``HasOrganization`` costs no query.
    """
    membership = (
        Membership.objects.filter(organization=organization, user__is_active=True)
        .select_related("user")
        .order_by("pk")
        .first()
    )
    if membership is None:
        user = User(username=WARM_USERNAME)
        membership = Membership(organization=organization, user=user)
    else:
        user = membership.user
    membership.organization = organization
    Membership._meta.get_field("user").remote_field.set_cached_value(user, membership)
    return user


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
    steps: list[Step] = field(default_factory=list)
    l1_size: int = 0
    redis: RedisUsage = field(default_factory=lambda: RedisUsage("absent"))
    seconds: float = 0.0

    def by_kind(self) -> dict[str, Counts]:
        """Counts summed per kind, in ``KINDS`` order."""
        totals = {kind: Counts() for kind in KINDS}
        for step in self.steps:
            totals[step.kind] = totals[step.kind] + step.counts
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


class _Client:
    """Runs GET requests through the real views as one member of one organization, without HTTP."""

    def __init__(self, user: User, *, host: str, scheme: str) -> None:
        self.user = user
        self.host = host
        self.secure = scheme == "https"
        self.factory = APIRequestFactory()

    def get(self, name: str, params: dict[str, str] | None = None) -> HttpResponseBase:
        path = reverse(name)
        request = self.factory.get(path, params, secure=self.secure, HTTP_HOST=self.host, HTTP_ACCEPT=ACCEPT)
        force_authenticate(request, user=self.user)
        match = resolve(path)
        return match.func(request, *match.args, **match.kwargs)


def check_host(host: str, scheme: str) -> None:
    """Raise ``WarmError`` unless requests to ``host`` would be accepted (``ALLOWED_HOSTS``)."""
    if scheme not in SCHEMES:
        raise WarmError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}.")
    request = APIRequestFactory().get("/", secure=scheme == "https", HTTP_HOST=host)
    try:
        request.get_host()
    except DisallowedHost as exc:
        raise WarmError(f"Host {host!r} is not in ALLOWED_HOSTS; warm with a host clients use.") from exc


def _steps(
    organization: Organization, client: _Client, years: Sequence[int]
) -> list[tuple[str, str, Callable[[], None]]]:
    """(kind, label, action) for every item of one organization, in the order they are warmed."""

    def prime_factors() -> None:
        factors = OrganizationFactors(organization)
        # Average-data activities only: prime_activities caches average-data candidates, and an activity that
        # only a supplier's own factor has would be cached as "no candidates" (supplier factors are primed below).
        activities = (
            EmissionFactor.objects.visible_to(organization)
            .filter(supplier__isnull=True)
            .order_by("activity")
            .values_list("activity", flat=True)
            .distinct()
        )
        # Entries found already cached get a full lifetime too (perf.cache.renewing): otherwise all those an
        # earlier warm-up stored would expire together, in the middle of the traffic this one prepares for.
        with renewing():
            factors.prime_activities(activities)
            factors.prime_suppliers(Supplier.objects.for_org(organization).values_list("pk", flat=True))
            factors.prime_rates(years)

    def view(name: str, params: dict[str, str] | None = None) -> Callable[[], None]:
        def get() -> None:
            response = client.get(name, params)
            if response.status_code != 200:
                raise WarmError(f"answered {response.status_code}")

        return get

    def label(name: str, params: dict[str, str] | None = None) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
        return f"GET {reverse(name)}{query}"

    steps: list[tuple[str, str, Callable[[], None]]] = [
        ("factors", "factor resolution (activities, suppliers, exchange rates)", prime_factors),
        ("factors", label("factor-list"), view("factor-list")),
        ("suppliers", label("supplier-list"), view("supplier-list")),
    ]
    for key in SUMMARY_KEYS:
        params = {"group_by": key}
        steps.append(("summaries", label("emission-summary", params), view("emission-summary", params)))
    steps.append(("summaries", label("emission-list"), view("emission-list")))
    steps.append(("summaries", label("activity-list"), view("activity-list")))
    return steps


STEPS_PER_ORGANIZATION = 3 + len(SUMMARY_KEYS) + 2


def warm(
    organizations: Iterable[Organization], *, host: str, scheme: str = "http", progress: IO[str] | None = None
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
    report = WarmReport([org.slug for org in orgs], host=host, scheme=scheme)
    cache = tiered()
    started = time.perf_counter()
    years = list(ExchangeRate.objects.order_by("year").values_list("year", flat=True).distinct())
    bar = tqdm(
        total=len(orgs) * STEPS_PER_ORGANIZATION, unit="item", desc="warm_cache", file=progress,
        disable=progress is None,
    )  # fmt: skip
    with bar:
        for org in orgs:
            client = _Client(member_user(org), host=host, scheme=scheme)
            for kind, label, action in _steps(org, client, years):
                bar.set_postfix_str(f"{org.slug}: {kind}", refresh=False)
                step = Step(org.slug, kind, label)
                before = _snapshot(cache)
                try:
                    action()
                except Exception as exc:
                    # One failing item must not keep the others cold; the traceback goes to the log.
                    logger.exception("Cache warm-up of %s failed for organization %s", label, org.slug)
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
    """The background job: warm every active organization, log how it went, never raise."""
    # Connections opened before (a greenlet of an unpatched hub shares its thread's) are not this job's to close.
    already_open = {conn.alias for conn in connections.all(initialized_only=True) if conn.connection is not None}
    started = time.perf_counter()
    log.info("Cache warm-up started (pid %s)", os.getpid())
    try:
        report = warm(active_organizations(), host=default_host(), scheme="http", progress=None)
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
