"""The reports benchmark (``manage.py bench_reports``): the summaries and the inventory report read from the rollups
against summing the emissions, for a small and a large organization.

Each request goes through the whole Django stack in-process (``APIClient``: middleware, DRF, token
authentication, the view, the renderer; no network; the admin dashboard through Django's ``Client`` with a signed-in
staff member's session), uncached (``CACHE_ENABLED=False``), signed in with a
temporary member of the organization, from two sources:

- ``emissions``: ``ROLLUP_READS=False``, the summary sums every emission of the organization (as before the
  rollups; an index-only scan of the covering index ``emission_org_cat_period_idx``), the report every emission of
  its year (by PostgreSQL, grouped as the rollups are);
- ``rollups``: ``ROLLUP_READS=True``, it sums the rollup groups (``emissions.rollups``).

Every request, source and organization is measured in rounds, each in a shuffled order, so a drift of the machine
affects all alike. Every rollup body is checked byte for byte (a page's CSRF tokens aside) against the emissions body
of the same request: the run fails otherwise. Reported per request: medians and p95 at both sizes, large / small per
source (an O(rows) read grows with the data, an O(groups) read with the groups only), and emissions / rollups at the
large size.

Organizations without activities are seeded first (``seed_demo``), and the emissions and rollup tables get
``VACUUM (ANALYZE)`` before the run.
"""

from __future__ import annotations

import random
import re
import shlex
import time
from dataclasses import dataclass, field
from io import StringIO, TextIOBase
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from bench import measure
from bench.db import activity_inputs
from bench.measure import BenchError, Timing, _ms
from emissions.calculation import FactorResolver
from emissions.models import Emission, EmissionRollup, Organization, SupplierRollup, SupplierYearRollup
from emissions.rollups import ROLLUP_MODELS, rollups_maintained
from emissions.services.activities import activities_create
from emissions.services.organizations import org_user_create
from perf.db import refresh_statistics

DEFAULT_OUT = "docs/benchmarks/reports.md"
DEFAULT_SMALL = ("bench100k", 100_000)
DEFAULT_LARGE = ("bench", 1_000_000)  # bench_db's and bench_cache's organization
# A round sends every request once per source and organization: ~4 s at 1,000,000 rows, where the emissions side
# of one summary takes ~300 ms; 20 rounds give a p95 and keep the run near two minutes.
DEFAULT_ROUNDS = 20
CLIENT_USERNAME = "bench-reports-client"
# Activities per transaction for the write cost: one (an API edit or a single POST), a full POST, an import chunk.
WRITE_SIZES = (1, 1_000, 10_000)
ROLLUP_TRIGGERS = ("vcci_rollup_insert",)  # what an insert of emissions fires for the rollups
SOURCES = ("emissions", "rollups")
# The bars: large / small at most 1.2 from the rollups; organization-wide summaries at least 20x faster than summing
# the emissions at the large size.
GROWTH_BAR = 1.2
SPEEDUP_BAR = 20.0


@dataclass(frozen=True)
class Request:
    """One request: its name in the report, its query string and its URL's name (a summary unless said)."""

    name: str
    query: dict[str, str]
    one_supplier: bool = False  # filtered to one supplier: not an organization-wide summary
    url_name: str = "emission-summary"
    page: bool = False  # an admin page (a signed-in staff member's session), not an API request


@dataclass
class WriteCost:
    """Storing ``size`` activities (and their emissions) in one transaction, with and without the rollup trigger."""

    size: int
    without: Timing = field(default_factory=Timing)
    with_rollups: Timing = field(default_factory=Timing)

    @property
    def ratio(self) -> float:
        return self.with_rollups.median / self.without.median


PLAIN_STATIC = "django.contrib.staticfiles.storage.StaticFilesStorage"
CSRF_TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')


@dataclass(frozen=True)
class Clients:
    """A temporary member's two ways in: the API (token) and the admin (a signed-in session)."""

    api: APIClient
    page: Client

    def get(self, request: Request, url: str) -> Any:
        if request.page:
            return self.page.get(url)
        return self.api.get(url, HTTP_ACCEPT="application/json")

    @staticmethod
    def comparable(request: Request, body: bytes) -> bytes:
        """``body`` less what differs between two answers of the same figures: a page's CSRF tokens (the admin's
        log-out form), masked anew for every response."""
        return CSRF_TOKEN.sub(b"", body) if request.page else body


@dataclass
class Side:
    """One organization: its size, rollup group counts and the timings of every (request, source)."""

    slug: str
    emissions: int
    groups: int
    supplier_groups: int
    supplier_year_groups: int
    year: int = 0
    timings: dict[tuple[str, str], Timing] = field(default_factory=dict)


class ReportsBenchmark:
    """One run on a small and a large organization; ``run()`` measures and writes the report (``markdown``, and
    ``sides`` for callers that inspect the figures)."""

    def __init__(
        self,
        *,
        small: tuple[str, int] = DEFAULT_SMALL,
        large: tuple[str, int] = DEFAULT_LARGE,
        rounds: int = DEFAULT_ROUNDS,
        stdout: TextIOBase | None = None,
    ) -> None:
        """Precondition: ``rounds >= 1``; each organization is (slug, activities ``seed_demo`` creates when it has
        none, at least 1)."""
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1; got {rounds}.")
        for slug, activities in (small, large):
            if activities < 1:
                raise ValueError(f"{slug}: activities must be at least 1; got {activities}.")
        self.small, self.large, self.rounds = small, large, rounds
        self.writes: list[WriteCost] = []
        self.stdout = stdout if stdout is not None else StringIO()

    def run(self, out: Path) -> list[Side]:
        """Seed when needed, measure, write the report to ``out``; BenchError when the run cannot be made or trusted."""
        if not rollups_maintained():
            raise BenchError("bench_reports needs PostgreSQL: the rollups are kept by its triggers.")
        orgs = []
        for slug, activities in (self.small, self.large):
            with measure.own_unit_of_work():  # each organization's seed is a command run of its own
                orgs.append(self._organization(slug, activities))
        tables = [Emission._meta.db_table, *(model._meta.db_table for model in ROLLUP_MODELS)]
        statement = refresh_statistics(tables, vacuum=True)
        # The calendar year before the large organization's newest month: the last whole year of the demo's data.
        newest = Emission.objects.for_org(orgs[1]).aggregate(newest=Max("period_start"))["newest"]
        if newest is None:
            raise BenchError(f"organization '{orgs[1].slug}' has activities but no emissions; nothing to read.")
        year = newest.year - 1
        sides, clients, requests = [], [], {}
        users = []
        try:
            for org in orgs:
                with measure.own_unit_of_work():
                    # Staff, for the dashboard: the admin's pages are for signed-in staff (the API needs the token).
                    user, key = org_user_create(organization=org, username=f"{CLIENT_USERNAME}-{org.pk}", staff=True)
                users.append(user)
                session = Client()
                with measure.n_plus_one_allowed():  # Django's login reads the new session twice: no N+1 of ours
                    session.force_login(user)
                clients.append(Clients(api=APIClient(HTTP_AUTHORIZATION=f"Token {key}"), page=session))
                requests[org.slug] = self._requests(org, year)
                sides.append(
                    Side(
                        org.slug,
                        emissions=Emission.objects.for_org(org).count(),
                        groups=EmissionRollup.objects.for_org(org).count(),
                        supplier_groups=SupplierRollup.objects.for_org(org).count(),
                        supplier_year_groups=SupplierYearRollup.objects.for_org(org).count(),
                        year=year,
                    )
                )
            # Static URLs without collectstatic's manifest (the admin's page names its files; the API does not): what
            # the page costs is its figures and template, not a manifest lookup.
            plain_static = {**settings.STORAGES, "staticfiles": {"BACKEND": PLAIN_STATIC}}
            with override_settings(ALLOWED_HOSTS=["testserver"], CACHE_ENABLED=False, STORAGES=plain_static):
                self._measure(sides, clients, requests)
            with measure.own_unit_of_work():
                self.writes = self._write_cost(orgs[1])
        finally:
            for user in users:
                user.delete()
        self.sides = sides
        self.markdown = self._markdown(sides, requests, out, statement)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.markdown, encoding="utf-8")
        return sides

    def _organization(self, slug: str, activities: int) -> Organization:
        """The organization, seeded with ``activities`` activities when it has none."""
        return measure.seeded_organization(slug, activities, self.stdout)

    @staticmethod
    def _requests(org: Organization, year: int) -> list[Request]:
        """The requests measured: each grouping, calendar year ``year`` by category (the inventory's window), one
        supplier's months (the per-supplier table with a filter), and the inventory report of ``year``."""
        # Any supplier with emissions; sliced, not first(): ordering a million rows by id to pick one is slow.
        supplier = Emission.objects.for_org(org).filter(supplier__isnull=False).values_list("supplier_id", flat=True)
        if not supplier:
            raise BenchError(f"organization '{org.slug}' has no emission with a supplier; nothing to filter by.")
        groups = ("category", "supplier", "month", "method")
        requests = [Request(f"by {group}", {"group_by": group}) for group in groups]
        requests.append(
            Request(
                f"by category, year {year}",
                {"group_by": "category", "period_from": f"{year}-01-01", "period_to": f"{year}-12-31"},
            )
        )
        requests.append(
            Request("one supplier by month", {"group_by": "month", "supplier": str(supplier[0])}, one_supplier=True)
        )
        requests.append(Request(f"inventory report, year {year}", {"year": str(year)}, url_name="report-inventory"))
        requests.append(Request(f"admin dashboard, year {year}", {"year": str(year)}, url_name="dashboard", page=True))
        return requests

    def _measure(self, sides: list[Side], clients: list[Clients], requests: dict[str, list[Request]]) -> None:
        calls = []
        for side, client in zip(sides, clients, strict=True):
            for request in requests[side.slug]:
                full = f"{reverse(request.url_name)}?{urlencode(request.query)}"
                bodies = {}
                for source in SOURCES:
                    with override_settings(ROLLUP_READS=source == "rollups"):
                        response = client.get(request, full)
                    if response.status_code != 200:
                        raise BenchError(f"GET {full} ({source}) answered {response.status_code}: {response.content!r}")
                    bodies[source] = client.comparable(request, response.content)
                    side.timings[(request.name, source)] = Timing()
                    calls.append((side, request, source, client, full))
                if bodies["rollups"] != bodies["emissions"]:
                    raise BenchError(f"GET {full}: the rollups' body differs from the emissions' body.")
        # The checks above were the warm-up round. Each round in its own (seeded) order: a request right after the
        # large organization's 300 ms sum of every emission meets colder caches than one after a 5 ms request.
        rng = random.Random(0)
        for _ in range(self.rounds):
            for side, request, source, client, full in rng.sample(calls, len(calls)):
                with override_settings(ROLLUP_READS=source == "rollups"):
                    started = time.perf_counter()
                    response = client.get(request, full)
                    elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise BenchError(f"GET {full} ({source}) answered {response.status_code}.")
                side.timings[(request.name, source)].samples.append(elapsed)

    def _write_cost(self, org: Organization) -> list[WriteCost]:
        """What the rollups add to a write: ``activities_create`` (COPY, as the API and the seed) of the large
        organization's newest lines again, then ``SET CONSTRAINTS ALL IMMEDIATE`` (the work a commit does: the
        deferred foreign-key checks, and with the trigger the rollups' update), each in a rolled-back transaction;
        without the trigger, it is disabled in that transaction first (outside the timing). In rounds, alternating."""
        costs = []
        for size in WRITE_SIZES:
            items = activity_inputs(org, size)
            if len(items) < size:
                continue
            cost = WriteCost(size)
            for i in range(self.rounds + 1):  # the first round warms up (the session's temporary tables)
                for with_rollups in (True, False) if i % 2 else (False, True):
                    with measure.rolled_back():
                        if not with_rollups:
                            with connection.cursor() as cursor:
                                for trigger in ROLLUP_TRIGGERS:
                                    cursor.execute(f"ALTER TABLE emissions_emission DISABLE TRIGGER {trigger}")
                        started = time.perf_counter()
                        activities_create(organization=org, items=items, resolver=FactorResolver(org), method="copy")
                        with connection.cursor() as cursor:
                            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                        elapsed = time.perf_counter() - started
                    if i:
                        (cost.with_rollups if with_rollups else cost.without).samples.append(elapsed)
            costs.append(cost)
        return costs

    # -- report ----------------------------------------------------------------------------------

    def _markdown(self, sides: list[Side], requests: dict[str, list[Request]], out: Path, statement: str | None) -> str:
        small, large = sides
        names = [request.name for request in requests[large.slug]]
        lines = [
            "# Reports benchmark: summaries and the inventory from the rollups vs summing the emissions",
            "",
            "Generated by `manage.py bench_reports`; do not edit by hand. Each summary or report request goes through",
            "the whole Django stack in-process (test client, token authentication, view, renderer; no network; the",
            "admin dashboard with a signed-in staff member's session, the admin's view and template),",
            "uncached (`CACHE_ENABLED=False`), from two sources: *emissions* (`ROLLUP_READS=False`: the sum of every",
            "emission, as before the rollups) and *rollups* (`ROLLUP_READS=True`). Times are medians (p95) of "
            f"{self.rounds:,} rounds",
            "after a warm-up round; every request, source and organization is sent once per round, in a shuffled",
            "order. Every rollup body was checked byte-identical to the emissions body of the same request (the",
            "dashboard's less its log-out form's CSRF token, masked anew for every response).",
            "",
            *(
                f"- {size}: organization `{side.slug}`, {side.emissions:,} emissions; rollup groups: {side.groups:,}, "
                f"{side.supplier_groups:,} per supplier and month, {side.supplier_year_groups:,} per supplier and year"
                for size, side in (("small", small), ("large", large))
            ),
            "",
            "| summary | emissions, small | emissions, large | rollups, small | rollups, large "
            "| large / small, emissions | large / small, rollups | emissions / rollups, large |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            cells = [_cell(side.timings[(name, source)]) for source in SOURCES for side in (small, large)]
            growth = [_ratio(large.timings[(name, s)].median, small.timings[(name, s)].median) for s in SOURCES]
            speedup = _ratio(large.timings[(name, "emissions")].median, large.timings[(name, "rollups")].median)
            lines.append(f"| {name} | {' | '.join(cells)} | {growth[0]} | {growth[1]} | {speedup} |")
        lines += ["", "## What the numbers show", ""]
        lines += [f"- {finding}" for finding in self.findings(sides, requests[large.slug])]
        lines += [
            "",
            "## What the rollups cost a write",
            "",
            f"Storing activities in organization `{large.slug}` (`activities_create`, COPY, its newest lines again)",
            "and the work of the commit (`SET CONSTRAINTS ALL IMMEDIATE`: the deferred foreign-key checks and, with",
            "the rollups, their update), in rolled-back transactions, with the rollup trigger and with it disabled,",
            f"alternating; medians (p95) of {self.rounds:,} rounds. The audit trigger runs in both.",
            "",
            "| activities per transaction | without rollups | with rollups | with / without |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {cost.size:,} | {_cell(cost.without)} | {_cell(cost.with_rollups)} | {cost.ratio:.2f}x |"
            for cost in self.writes
        ]
        counts = {f"organization '{side.slug}' emissions": side.emissions for side in sides}
        lines += ["", "## Machine", ""]
        lines += [f"- **{key}**: {value}" for key, value in measure.machine_description(counts).items()]
        lines += ["", "## Reproduce", "", "```sh", self._command(out), "```", ""]
        lines += [f"Run on {timezone.now().strftime('%Y-%m-%d %H:%M UTC')}."]
        lines += [
            "",
            "## Notes",
            "",
            f"- Before the run: `{statement}` of the emissions and the rollup tables.",
            "- A period window that is not whole months (`period_from` not a first day, `period_to` not a last day)",
            "  sums the emissions whatever `ROLLUP_READS` says; it is not measured here (its time is the emissions",
            "  column).",
        ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def findings(sides: list[Side], requests: list[Request]) -> list[str]:
        """The bars (``GROWTH_BAR`` over every request, ``SPEEDUP_BAR`` over the organization-wide ones) against the
        worst request, met or not; the one-supplier request's speed-up beside them."""
        small, large = sides
        names = [request.name for request in requests]
        wide = [request.name for request in requests if not (request.one_supplier or request.page)]
        growth = {n: large.timings[(n, "rollups")].median / small.timings[(n, "rollups")].median for n in names}
        speedup = {n: large.timings[(n, "emissions")].median / large.timings[(n, "rollups")].median for n in names}
        worst_growth = max(growth, key=lambda n: growth[n])
        worst_speedup = min(wide, key=lambda n: speedup[n])
        raw_growth = [large.timings[(n, "emissions")].median / small.timings[(n, "emissions")].median for n in names]
        findings = [
            f"From the rollups, the worst large / small ratio is {growth[worst_growth]:.2f} ({worst_growth}); the bar "
            f"is at most {GROWTH_BAR}: {'met' if growth[worst_growth] <= GROWTH_BAR else 'not met'}. Summing the "
            f"emissions it is {min(raw_growth):.1f}-{max(raw_growth):.1f} for "
            f"{large.emissions / max(small.emissions, 1):.0f}x the rows.",
            f"At {large.emissions:,} emissions the smallest speed-up of an organization-wide summary or report is "
            f"{speedup[worst_speedup]:.1f}x ({worst_speedup}); the bar is at least {SPEEDUP_BAR:.0f}x: "
            f"{'met' if speedup[worst_speedup] >= SPEEDUP_BAR else 'not met'}.",
        ]
        for name in (request.name for request in requests if request.page):
            findings.append(
                f"{name[0].upper()}{name[1:]}: {_ms(large.timings[(name, 'rollups')].median)} from the rollups at "
                f"{large.emissions:,} emissions, {growth[name]:.2f}x its time at {small.emissions:,}. Without rollups "
                "the page sums the emissions in Python (its fallback for the embedded SQLite default), so its "
                f"{speedup[name]:.0f}x measures that fallback, not a GROUP BY in PostgreSQL: not held to the bar."
            )
        for name in (request.name for request in requests if request.one_supplier):
            rollups = large.timings[(name, "rollups")].median
            findings.append(
                f"{name[0].upper()}{name[1:]}: {speedup[name]:.1f}x. Summing the emissions already reads only that "
                f"supplier's rows, by index ({_ms(large.timings[(name, 'emissions')].median)}); from the rollups the "
                f"whole request takes {_ms(rollups)}, about what any request costs here (by category: "
                f"{_ms(large.timings[(names[0], 'rollups')].median)}), so {SPEEDUP_BAR:.0f}x would need a request "
                f"of {_ms(large.timings[(name, 'emissions')].median / SPEEDUP_BAR)}. Not held to the bar."
            )
        return findings

    def _command(self, out: Path) -> str:
        """The command line that reproduces this run, without machine paths or credentials."""
        parts = ["python", "manage.py", "bench_reports"]
        parts += ["--small", f"{self.small[0]}:{self.small[1]}", "--large", f"{self.large[0]}:{self.large[1]}"]
        parts += ["--rounds", str(self.rounds)]
        if out != Path(DEFAULT_OUT) and not out.is_absolute():
            parts += ["--output", str(out)]
        return (
            "make bench-reports   # the defaults; seeds the organizations if they have no activities. This run:\n"
            "DATABASE_URL=postgres://USER@HOST:5432/DBNAME "
            f"DJANGO_SETTINGS_MODULE={measure.SETTINGS_MODULE} {shlex.join(parts)}"
        )


def _cell(timing: Timing) -> str:
    p95 = timing.p95
    return _ms(timing.median) + ("" if p95 is None else f" ({_ms(p95)})")


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / max(denominator, 1e-9):,.2f}x"
