"""The cache benchmark (``manage.py bench_cache``): two read endpoints uncached, from Redis (L2), from memory (L1), 304.

Endpoints, requested through the whole Django stack in-process (``APIClient``: middleware, DRF,
token authentication, the view, the renderer; no network), signed in with a temporary member of
the organization:

- the emissions summary, ``GET /api/v1/emissions/summary/?group_by=category``;
- the emissions list's first page, ``GET /api/v1/emissions/``.

States, each measured on every request of every round:

- ``uncached``: ``CACHE_ENABLED=False`` (``override_settings``; ``perf.cache`` rebuilds its cache on
  the change), so the token authentication and the view both query the database;
- ``L2``: caching on, this process's L1 emptied before each request, so the versions, the token's
  user and the response body come from Redis;
- ``L1``: the same request repeated right after an untimed identical one: everything from memory;
- ``304``: as ``L1``, with ``If-None-Match`` carrying the ETag of an earlier response.

The states are measured interleaved (one round sends one request per endpoint and state, in turn),
so a drift in the machine's state affects them alike. What prepares a state (the settings override,
emptying L1, the warming request) runs outside the timed part. Every response's status is checked,
and every 200 body against the uncached one, byte for byte; the run fails otherwise. One more
request per state, outside the timing, counts its SQL statements (``CaptureQueriesContext``) and
its Redis calls (the cache's own statistics).

When the organization has no activities it is seeded first (``seed_demo``), and the emissions and
activities tables get ``VACUUM (ANALYZE)`` before the run, as ``bench_db`` leaves them.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from io import StringIO, TextIOBase
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse
from django.utils import timezone
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from bench import measure
from bench.measure import (  # _ms: bench_db's time format, so the two reports read alike
    P95_MIN_SAMPLES,
    BenchError,
    Timing,
    _ms,
)
from emissions.models import ActivityRecord, Emission, EmissionRollup, Organization
from emissions.services.organizations import org_user_create
from perf.cache import TieredCache, tiered
from perf.db import refresh_statistics

DEFAULT_OUT = "docs/benchmarks/cache.md"
DEFAULT_ORG = "bench"
DEFAULT_ACTIVITIES = 1_000_000  # as bench_db (make bench-db), so both reports describe the same data
# One round is one request per endpoint and state: well under 0.3 s on a 1M-row organization (the uncached
# summary, which summed every emission in ~250 ms, reads the rollups since docs/reports.md); 200 rounds keep a
# whole run (with the VACUUM and the row counts) under 3 minutes and give enough samples for a 95th percentile.
DEFAULT_ROUNDS = 200
CLIENT_USERNAME = "bench-cache-client"
STATES = ("uncached", "L2", "L1", "304")
STATE_LABELS = {
    "uncached": "uncached (CACHE_ENABLED=False)",
    "L2": "L2: Redis (L1 emptied before each request)",
    "L1": "L1: process memory (warm)",
    "304": "304 Not Modified (If-None-Match, warm)",
}
# What the cache's design promises (docs/cache.md): one query for the token, one for the data, none once cached.
EXPECTED_QUERIES = {"uncached": 2, "L2": 0, "L1": 0, "304": 0}
TABLE_NAME = re.compile(r'\bFROM\s+"?(\w+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class Endpoint:
    """One URL the benchmark requests, with the name the report gives it."""

    name: str
    url: str


@dataclass
class State:
    """One way of sending an endpoint's request.

    ``setup()`` is entered before the clock starts and left after it stops (a settings override,
    emptying L1, a warming request); ``send()`` is the timed request itself.
    """

    endpoint: Endpoint
    name: str
    setup: Callable[[], AbstractContextManager[Any]]
    send: Callable[[], HttpResponse]


@dataclass
class Result(Timing):
    """A state's timings and what one of its requests cost in SQL statements and Redis calls."""

    state: str = ""
    queries: int = 0
    tables: list[str] = field(default_factory=list)
    redis_calls: int = 0


@dataclass
class EndpointReport:
    """An endpoint's results in ``STATES`` order and the size of its response body."""

    endpoint: Endpoint
    results: dict[str, Result]
    body_bytes: int

    def ratio(self, state: str) -> float:
        """How many times faster ``state`` answered than the uncached request (medians)."""
        return self.results["uncached"].median / max(self.results[state].median, 1e-9)


def _redis_calls(cache: TieredCache) -> int:
    """L2 round trips the cache has made so far, without its periodic statistics flushes."""
    return sum(
        int(entry[0]) for (tier, resource), entry in cache.stats.latency.items() if tier == "l2" and resource != "stats"
    )


class CacheBenchmark:
    """One run of the cache benchmark on organization ``org_slug``; ``run()`` measures and writes the report.

    After ``run()``, for callers that inspect the structure (tests, ``bench.report``): ``reports`` (per
    endpoint, every state's timings and costs) and ``markdown`` (the report as written).
    """

    def __init__(
        self,
        org_slug: str,
        *,
        rounds: int = DEFAULT_ROUNDS,
        activities: int = DEFAULT_ACTIVITIES,
        stdout: TextIOBase | None = None,
    ) -> None:
        """Precondition: ``rounds >= 1`` and ``activities >= 1`` (what ``seed_demo`` creates when the organization
        has none). Progress (the seeding, and seed_demo's own output) goes to ``stdout``; None discards it."""
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1; got {rounds}.")
        if activities < 1:
            raise ValueError(f"activities must be at least 1; got {activities}.")
        self.org_slug = org_slug
        self.rounds = rounds
        self.activities = activities
        self.stdout = stdout if stdout is not None else StringIO()

    def run(self, out: Path) -> list[EndpointReport]:
        """Seed when needed, measure, write the report to ``out``; BenchError when the run cannot be made or trusted.

        Needs PostgreSQL, the cache on (``CACHE_ENABLED``) and Redis behind it (the L2 state).
        """
        if connection.vendor != "postgresql":
            raise BenchError(f"bench_cache needs PostgreSQL; this database is {connection.vendor}.")
        if not settings.CACHE_ENABLED:
            raise BenchError("bench_cache measures the cache, and CACHE_ENABLED is off; turn it on.")
        if not tiered().has_l2:
            raise BenchError("bench_cache needs Redis for the L2 state (REDIS_URL); the cache has no L2.")

        org = self._organization(self.org_slug, self.activities)
        tables = [ActivityRecord._meta.db_table, Emission._meta.db_table, EmissionRollup._meta.db_table]
        # The uncached requests should meet the tables as bench_db leaves them: fresh statistics and the
        # visibility map set, for index-only scans. Cheap when nothing changed since.
        statement = refresh_statistics(tables, vacuum=True)
        emissions = Emission.objects.for_org(org).count()
        if not emissions:
            raise BenchError(f"organization '{org.slug}' has activities but no emissions; nothing to read.")

        endpoints = [
            Endpoint("Emissions summary by category", f"{reverse('emission-summary')}?group_by=category"),
            Endpoint("Emissions list, first page", reverse("emission-list")),
        ]
        # A committed API user for the run, deleted afterwards with its token and membership (as bench_db's POST
        # benchmark does): the token is what every request authenticates with, from the database or the cache.
        user, key = org_user_create(organization=org, username=CLIENT_USERNAME, staff=False)
        try:
            # The test client's host is "testserver".
            with override_settings(ALLOWED_HOSTS=["testserver"]):
                reports = self._run(APIClient(HTTP_AUTHORIZATION=f"Token {key}"), endpoints, self.rounds)
        finally:
            user.delete()

        counts = {
            f"organization '{org.slug}' activities": ActivityRecord.objects.for_org(org).count(),
            f"organization '{org.slug}' emissions": emissions,
            "all activities": ActivityRecord.objects.count(),
            "all emissions": Emission.objects.count(),
        }
        self.reports = reports
        self.markdown = self._markdown(reports, counts, out, statement)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.markdown, encoding="utf-8")
        return reports

    def _organization(self, slug: str, activities: int) -> Organization:
        """The organization, seeded with ``activities`` activities when it has none."""
        return measure.seeded_organization(slug, activities, self.stdout)

    # -- measurement ---------------------------------------------------------------------------

    def _states(self, client: APIClient, endpoint: Endpoint, etag: str) -> list[State]:
        """The four states of ``endpoint``, in ``STATES`` order."""

        def get() -> HttpResponse:
            return client.get(endpoint.url, HTTP_ACCEPT="application/json")

        def conditional() -> HttpResponse:
            return client.get(endpoint.url, HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=etag)

        def uncached() -> AbstractContextManager[Any]:
            return override_settings(CACHE_ENABLED=False)

        @contextmanager
        def l1_emptied() -> Iterator[None]:
            tiered().clear_local()
            yield

        def warmed(send: Callable[[], HttpResponse]) -> Callable[[], AbstractContextManager[Any]]:
            # The untimed request just before makes the timed one a repeat: body, token and versions are in L1,
            # whatever the previous state did to this process's cache (the uncached state rebuilds it).
            @contextmanager
            def setup() -> Iterator[None]:
                send()
                yield

            return setup

        return [
            State(endpoint, "uncached", uncached, get),
            State(endpoint, "L2", l1_emptied, get),
            State(endpoint, "L1", warmed(get), get),
            State(endpoint, "304", warmed(conditional), conditional),
        ]

    def _run(self, client: APIClient, endpoints: list[Endpoint], rounds: int) -> list[EndpointReport]:
        references: dict[Endpoint, bytes] = {}
        states: list[State] = []
        for endpoint in endpoints:
            with override_settings(CACHE_ENABLED=False):
                reference = client.get(endpoint.url, HTTP_ACCEPT="application/json")
            self._check_status(endpoint, "uncached", reference, 200)
            references[endpoint] = reference.content
            cached = client.get(endpoint.url, HTTP_ACCEPT="application/json")
            self._check_status(endpoint, "L2", cached, 200)
            if "ETag" not in cached:
                raise BenchError(f"GET {endpoint.url} answered without an ETag: is its view cached?")
            states += self._states(client, endpoint, cached["ETag"])

        def check(state: State, response: HttpResponse) -> None:
            endpoint = state.endpoint
            if state.name == "304":
                if response.status_code == 200:
                    # The ETag is the namespaces' versions: a write to the organization's data (or a factor import)
                    # during the run made it stale, and every later measurement would mix states.
                    raise BenchError(f"GET {endpoint.url} answered 200 to a current ETag: did the data change?")
                self._check_status(endpoint, state.name, response, 304)
                if response.content:
                    raise BenchError(f"GET {endpoint.url} answered 304 with a body.")
                return
            self._check_status(endpoint, state.name, response, 200)
            if response.content != references[endpoint]:
                raise BenchError(
                    f"GET {endpoint.url}: the {state.name} body differs from the uncached one "
                    f"({len(response.content):,} vs {len(references[endpoint]):,} bytes); the cache served other data."
                )

        results = [Result(state=state.name) for state in states]
        # Round 0 warms up (PostgreSQL's buffers, Django's compiled queries, the L2 entries); it is not recorded.
        for i in range(rounds + 1):
            for state, result in zip(states, results, strict=True):
                with state.setup():
                    started = time.perf_counter()
                    response = state.send()
                    elapsed = time.perf_counter() - started
                check(state, response)
                if i:
                    result.samples.append(elapsed)

        for state, result in zip(states, results, strict=True):
            with state.setup():
                cache = tiered()  # inside the setup: the uncached state's override builds its own
                redis_before = _redis_calls(cache)
                with CaptureQueriesContext(connection) as captured:
                    response = state.send()
                result.redis_calls = _redis_calls(cache) - redis_before
            check(state, response)
            result.queries = len(captured.captured_queries)
            result.tables = [m.group(1) for q in captured.captured_queries if (m := TABLE_NAME.search(q["sql"]))]

        reports = []
        for i, endpoint in enumerate(endpoints):
            mine = results[i * len(STATES) : (i + 1) * len(STATES)]
            reports.append(EndpointReport(endpoint, {r.state: r for r in mine}, len(references[endpoint])))
        return reports

    @staticmethod
    def _check_status(endpoint: Endpoint, state: str, response: HttpResponse, expected: int) -> None:
        if response.status_code != expected:
            body = response.content[:500]
            raise BenchError(
                f"GET {endpoint.url} ({state}) answered {response.status_code}, expected {expected}: {body!r}"
            )

    # -- report --------------------------------------------------------------------------------

    def _findings(self, reports: list[EndpointReport]) -> list[str]:
        findings = []
        for report in reports:
            r = report.results
            uncached = r["uncached"]
            tables = ", ".join(uncached.tables) or "no table"
            findings.append(
                f"{report.endpoint.name}: uncached {_ms(uncached.median)} ({uncached.queries} SQL statements: "
                f"{tables}); from L1 {_ms(r['L1'].median)} ({report.ratio('L1'):,.1f}x faster), from Redis "
                f"{_ms(r['L2'].median)} ({report.ratio('L2'):,.1f}x, {r['L2'].redis_calls} Redis calls), "
                f"a 304 {_ms(r['304'].median)} ({report.ratio('304'):,.1f}x)."
            )
        for report in reports:
            r = report.results
            extra = r["L2"].median - r["L1"].median
            share = extra / max(r["L2"].median, 1e-9)
            findings.append(
                f"{report.endpoint.name}: a miss in this worker's memory that Redis answers adds {_ms(extra)} to the "
                f"L1 time ({share:.0%} of the L2 request), for {r['L2'].redis_calls} Redis calls and a "
                f"{report.body_bytes:,}-byte body: what a worker pays for a response it has not served within "
                f"CACHE_L1_TTL ({settings.CACHE_L1_TTL:g} s)."
            )
            saved = r["L1"].median - r["304"].median
            verdict = f"{_ms(saved)} faster" if saved >= 0 else f"{_ms(-saved)} slower"
            findings.append(
                f"{report.endpoint.name}: a 304 is {verdict} than the L1 200 in-process; over a network it also "
                f"spares sending the {report.body_bytes:,}-byte body."
            )
        off = [
            f"{report.endpoint.name} {state}: {report.results[state].queries}"
            for report in reports
            for state in STATES
            if report.results[state].queries != EXPECTED_QUERIES[state]
        ]
        expected = ", ".join(f"{state} {n}" for state, n in EXPECTED_QUERIES.items())
        if off:
            findings.append(f"SQL statements differ from the design's ({expected}): {'; '.join(off)}.")
        else:
            findings.append(f"SQL statements per request are as designed ({expected}) for both endpoints.")
        return findings

    def _markdown(self, reports: list[EndpointReport], counts: dict[str, int], out: Path, statement: str | None) -> str:
        rounds = self.rounds
        lines = [
            "# Cache benchmark: uncached vs Redis (L2) vs process memory (L1) vs 304",
            "",
            "Generated by `manage.py bench_cache`; do not edit by hand. Each request goes through the whole Django",
            "stack in-process (test client: middleware, DRF, token authentication, view, renderer; no network, one",
            f"thread), signed in with a member's API token. Times are medians of {rounds:,} rounds after one warm-up",
            "round; in each round every endpoint and state is requested once, in turn (interleaved). *req/s* is",
            "1 / median (one client, one after another); *vs uncached* is uncached median / state median; *SQL*",
            "and *Redis calls* are those of one request of the state. Every 200 body was checked byte-identical to",
            "the uncached one, every 304 bodiless.",
        ]
        for report in reports:
            lines += [
                "",
                f"## {report.endpoint.name}: `GET {report.endpoint.url}`",
                "",
                f"Response body: {report.body_bytes:,} bytes of JSON.",
                "",
                "| state | median | p95 | req/s | SQL | Redis calls | vs uncached |",
                "|---|---|---|---|---|---|---|",
            ]
            for state in STATES:
                result = report.results[state]
                p95 = "—" if result.p95 is None else _ms(result.p95)
                lines.append(
                    f"| {STATE_LABELS[state]} | {_ms(result.median)} | {p95} | {1 / max(result.median, 1e-9):,.0f} "
                    f"| {result.queries} | {result.redis_calls} | {report.ratio(state):,.1f}x |"
                )
        lines += ["", "## What the numbers show", ""]
        lines += [f"- {finding}" for finding in self._findings(reports)]
        machine = measure.machine_description(counts)
        lines += ["", "## Machine", ""]
        lines += [f"- **{key}**: {value}" for key, value in self._machine(machine).items()]
        lines += ["", "## Reproduce", "", "```sh", self._command(out), "```", ""]
        lines += [f"Run on {timezone.now().strftime('%Y-%m-%d %H:%M UTC')}."]
        lines += ["", "## Notes", ""]
        notes = [
            f"Rounds: {rounds:,} after one warm-up round"
            + ("" if rounds >= P95_MIN_SAMPLES else f"; p95 needs at least {P95_MIN_SAMPLES} samples")
            + ". What prepares a state ran outside the timing: the settings override (uncached), emptying "
            "this process's L1 (L2), the identical request just before (L1 and 304).",
            "uncached: CACHE_ENABLED=False through override_settings; the token authentication then reads the "
            "token, user, membership and organization from the database on every request, as the view its data.",
            "L2: the versions, the token's user and the body come from Redis and are promoted into L1, as in a "
            "worker that has not served this response within CACHE_L1_TTL.",
            "304: If-None-Match carries the ETag of a cached 200 response taken before the run; no write "
            "happened during the run, so it stayed current.",
            f"The run starts with {statement or 'no statistics refresh'} of the activities, emissions and rollup "
            "tables (seed_demo ends with the same after seeding); it writes nothing else but its temporary API user "
            f"('{CLIENT_USERNAME}'), created before the run and deleted after it with its token and membership.",
        ]
        lines += [f"- {note}" for note in notes]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _machine(machine: dict[str, str]) -> dict[str, str]:
        """bench_db's machine description with the Redis version and the cache settings after the database."""
        redis_version = get_redis_connection("default").info("server").get("redis_version", "unknown")
        cache_settings = ", ".join(
            f"{name}={getattr(settings, name)}"
            for name in (
                "CACHE_L1_TTL",
                "CACHE_L1_MAX_BYTES",
                "CACHE_L2_TTL",
                "CACHE_NEGATIVE_TTL",
                "CACHE_LOCK_WAIT",
                "CACHE_VERSION",
                "DEBUG",
            )
        )
        described: dict[str, str] = {}
        for key, value in machine.items():
            described[key] = value
            if key == "Database":
                described["Redis"] = f"Redis {redis_version}"
                described["Settings"] = cache_settings
        return described

    def _command(self, out: Path) -> str:
        """The command line that reproduces this run, without machine paths or credentials."""
        slug = self.org_slug
        parts = ["python", "manage.py", "bench_cache", "--org", slug]
        if self.rounds != DEFAULT_ROUNDS:
            parts += ["--rounds", str(self.rounds)]
        if self.activities != DEFAULT_ACTIVITIES:
            parts += ["--activities", str(self.activities)]
        if out != Path(DEFAULT_OUT) and not out.is_absolute():
            parts += ["--output", str(out)]
        command = " ".join(shlex.quote(p) for p in parts)
        make = f"make bench-cache BENCH_ORG={shlex.quote(slug)}"
        return (
            f"{make}   # default rounds; seeds it ({DEFAULT_ACTIVITIES:,} activities) if it has none. This run:\n"
            f"DATABASE_URL=postgres://USER@HOST:5432/DBNAME REDIS_URL=redis://HOST:6379/DB "
            f"DJANGO_SETTINGS_MODULE={measure.SETTINGS_MODULE} {command}"
        )
