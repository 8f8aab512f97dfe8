"""The serialization benchmark (``manage.py bench_serialization``): one 100-emission list page, side by side.

For each page (a next page deep in the organization's list, a filtered first page, the first page), in one
process, interleaved (``bench.measure.measure_interleaved``), medians of ``runs`` rounds:

- ``plain``: DRF's textbook way, a plain ``ModelSerializer`` declaring the same fields (nested supplier and
  factor, the tonnes property) over the page's rows loaded with ``select_related``, then ``JSONRenderer``.
  Timed twice: with the page's query (the keyset page query the view runs, as model instances), and on rows
  already loaded (serializing and rendering alone);
- ``serializer``: the same with the API's ``EmissionSerializer`` (the query included);
- ``drf request``: the whole request with ``LIST_ROWS`` off (DRF's serializer and renderer in the view);
- ``rows request``: the whole request as served (``perf.rows``: value rows written with orjson).

Requests go through the whole Django stack in-process, handed to Django's WSGI handler as gunicorn hands them
(``WsgiClient``: middleware, DRF, token authentication, filters, pagination, the view, the renderer; no network; not
through ``vcci.wsgi``'s bulk pool forwarding, which passes a list page's GET on to the same handler).
Not through Django's test client: its own bookkeeping (the request built by ``RequestFactory``, signal receivers
connected and disconnected per request, the response's ``json``, ``resolver_match`` and cookies) is work no server
does, 11-20 % of the value-rows request (docs/capacity/analysis.md, section 19).

Nothing of the page comes from the cache: the first three pages are requested with ``CACHE_ENABLED`` off (the token
is read from the database too: two queries a request); the last two are next pages, requested with the cache on but
``CACHE_DEEP_PAGES`` off (a next page asked for the first time, whose body is not stored), as a returning client
sends them: the token and the namespaces' versions from the cache, the page from the database (one query). Every
rows body and its headers are checked byte-identical to the DRF request's, else the run fails; so is every request
of every round answered 200 (a throttled request, 429 once the caller's rate is used up, would otherwise pass as a
fast page).

The database is only read. The requests need a member's API token: a user, membership and token are inserted
inside a transaction that is rolled back after the run, so nothing is ever committed. They are inserted with
``bulk_create``, which sends no signal: rows no other connection ever sees need no cache invalidation, and the
token can then be cached as a committed one would be.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO, TextIOBase
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer

from bench import measure
from bench.measure import BenchError, Measurement, _ms
from emissions.api.filters import EmissionFilter
from emissions.api.serializers import EmissionSerializer
from emissions.api.views import EmissionViewSet
from emissions.models import Emission, EmissionFactor, Membership, Organization, Supplier
from perf.pagination import KeysetPagination, KeysetPaginator

DEFAULT_OUT = "docs/benchmarks/serialization.md"
DEFAULT_ORG = "bench"
DEFAULT_RUNS = 100
# The deep page starts this many rows down the list ("a few hundred thousand"), or half-way down a shorter one.
DEFAULT_DEPTH = 300_000
PAGE_SIZE = KeysetPagination.default_limit
CLIENT_USERNAME = "bench-serialization-client"
SIDES = ("plain", "plain_render", "serializer", "drf_request", "rows_request")
SIDE_LABELS = {
    "plain": "(a) ModelSerializer + select_related",
    "plain_render": "(a) serialize + render only",
    "serializer": "(b) EmissionSerializer",
    "drf_request": "(b) whole request, DRF path",
    "rows_request": "(c) whole request, value rows",
}


class _PlainSupplier(serializers.ModelSerializer):
    class Meta:
        model = Supplier
        fields = ["id", "name"]


class _PlainFactor(serializers.ModelSerializer):
    source = serializers.CharField(source="dataset.source")  # type: ignore[assignment]  # a field named source

    class Meta:
        model = EmissionFactor
        fields = ["id", "source", "activity"]


class PlainEmissionSerializer(serializers.ModelSerializer):
    """The baseline: a plain ``ModelSerializer`` with ``EmissionSerializer``'s fields, JSON columns as they are."""

    co2e_t = serializers.DecimalField(max_digits=30, decimal_places=9, source="co2e_tonnes")
    supplier = _PlainSupplier(allow_null=True)
    factor = _PlainFactor()

    class Meta:
        model = Emission
        fields = EmissionSerializer.Meta.fields


@dataclass
class Page:
    """One benchmarked page: what it is, its query string, and whether it is requested with the cache on."""

    name: str
    params: dict[str, str]
    cache: bool = False


@dataclass
class PageResult:
    """A page's measurements, side by side (``SIDES``), and the size of its body."""

    page: Page
    url: str
    results: dict[str, Measurement] = field(default_factory=dict)
    body_bytes: int = 0

    def ratio(self, side: str, over: str = "rows_request") -> float:
        """How many times longer ``side`` took than ``over`` (medians)."""
        return self.results[side].median / max(self.results[over].median, 1e-9)


@dataclass(frozen=True)
class Answer:
    """A response as the WSGI server receives it: the status, the headers in order, the body."""

    status_code: int
    headers: tuple[tuple[str, str], ...]
    content: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


class WsgiClient:
    """GET requests handed to Django's WSGI handler with the environ gunicorn builds for them (CGI variables, the
    headers as ``HTTP_*``, the ``wsgi.*`` keys), the body read as gunicorn reads it (the iterable, then ``close()``).

    Precondition: used inside ``connections_kept()``. The benchmark's member exists only in a transaction that is
    rolled back, and Django's handler recycles the database connection at each request's start and end
    (``close_old_connections``), which would close it mid-transaction; the test client goes without the recycling
    too."""

    def __init__(self, headers: dict[str, str], *, host: str = "testserver") -> None:
        self.handler = WSGIHandler()
        self.host = host
        self.headers = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}

    def get(self, url: str) -> Answer:
        path, _, query = url.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "RAW_URI": url,
            "SERVER_NAME": self.host,
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "HTTP_HOST": self.host,
            **self.headers,
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        head: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            head.append((status, headers))
            return _no_write

        body = self.handler(environ, start_response)
        try:
            content = b"".join(body)
        finally:
            body.close()
        status, headers = head[-1]
        return Answer(int(status.split(" ", 1)[0]), tuple(headers), content)


def _no_write(data: bytes) -> Any:
    """``start_response``'s legacy ``write`` callable, which Django never calls: it returns its body as an iterable."""
    raise NotImplementedError("the body comes back as an iterable")


@contextmanager
def connections_kept() -> Iterator[None]:
    """Django's handler without its connection recycling at each request's start and end (``WsgiClient``); the
    recycling is connected again after the block where it was connected before."""
    disconnected = [
        signal for signal in (request_started, request_finished) if signal.disconnect(close_old_connections)
    ]
    try:
        yield
    finally:
        for signal in disconnected:
            signal.connect(close_old_connections)


@contextmanager
def _member_token(org: Organization) -> Iterator[str]:
    """An API token of a member of ``org``, valid inside the block; nothing of it is ever committed."""
    with measure.rolled_back():
        # bulk_create: no signal, so the transaction is not marked as writing the cached auth rows (perf.cache
        # .writing), whose reads would then bypass the cache. Rows only this transaction sees change no cached value.
        (user,) = User.objects.bulk_create([User(username=CLIENT_USERNAME, password=make_password(None))])
        Membership.objects.bulk_create([Membership(user=user, organization=org, role=Membership.Role.ANALYST)])
        (token,) = Token.objects.bulk_create([Token(key=Token.generate_key(), user=user)])
        yield token.key


class SerializationBenchmark:
    """One run on organization ``org_slug``; ``run()`` measures, checks and writes the report (and the raw figures).

    After ``run()``: ``results`` (per page, every side's measurement) and ``markdown`` (the report as written).
    """

    def __init__(
        self, org_slug: str, *, runs: int = DEFAULT_RUNS, depth: int = DEFAULT_DEPTH, stdout: TextIOBase | None = None
    ) -> None:
        """Precondition: ``runs >= 1`` and ``depth >= 1``."""
        if runs < 1:
            raise ValueError(f"runs must be at least 1; got {runs}.")
        if depth < 1:
            raise ValueError(f"depth must be at least 1; got {depth}.")
        self.org_slug, self.runs, self.depth = org_slug, runs, depth
        self.stdout = stdout if stdout is not None else StringIO()
        self.json_out: Path | None = None

    def run(self, out: Path) -> list[PageResult]:
        org = Organization.objects.filter(slug=self.org_slug).first()
        if org is None:
            raise BenchError(f"No organization '{self.org_slug}'; seed it first (manage.py seed_demo).")
        count = Emission.objects.for_org(org).count()
        if count < 2:
            raise BenchError(f"Organization '{org.slug}' has {count} emissions; the benchmark needs some pages.")
        pages = self._pages(org, count)
        with _member_token(org) as key, override_settings(ALLOWED_HOSTS=["testserver"]), connections_kept():
            # One request id for every request: each response echoes its request's X-Request-ID, and the two paths'
            # responses are compared header for header.
            client = WsgiClient(
                {"Authorization": f"Token {key}", "X-Request-ID": "bench-serialization", "Accept": "application/json"}
            )
            results = []
            for page in pages:
                with override_settings(CACHE_ENABLED=page.cache, CACHE_DEEP_PAGES=False):
                    results.append(self._measure(org, client, page))
        self.results = results
        self.markdown = self._markdown(results, org, count)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.markdown, encoding="utf-8")
        if self.json_out is not None:
            self.json_out.parent.mkdir(parents=True, exist_ok=True)
            self.json_out.write_text(json.dumps(self._figures(results, org, count), indent=2) + "\n", encoding="utf-8")
        return results

    # -- pages ---------------------------------------------------------------------------------

    def _pages(self, org: Organization, count: int) -> list[Page]:
        ordering = tuple(EmissionViewSet.keyset_ordering)
        depth = min(self.depth, count // 2)
        # The row before the deep page, found once with OFFSET; the page is the one its next link leads to.
        columns = [key.lstrip("-") for key in ordering]
        values = Emission.objects.for_org(org).order_by(*ordering).values_list(*columns)[max(depth - 1, 0)]
        row = Emission(**dict(zip(columns, values, strict=True)))
        cursor = KeysetPaginator(Emission.objects.for_org(org), ordering).cursor(row)
        category = Emission.objects.for_org(org).order_by("category").values_list("category", flat=True).first() or 1
        # The filtered list's second page (its first when it has one): after the cursor of its 100th row.
        filtered = Emission.objects.for_org(org).filter(category=category).order_by(*ordering).values_list(*columns)
        last = list(filtered[:PAGE_SIZE])[-1]
        second = KeysetPaginator(Emission.objects.for_org(org), ordering).cursor(
            Emission(**dict(zip(columns, last, strict=True)))
        )
        deep = f"next page, {depth:,} rows down"
        cached = "; cache on: token and versions from the cache"
        return [
            Page(deep, {"after": cursor}),
            Page(f"filtered first page (category={category})", {"category": str(category)}),
            Page("first page", {}),
            Page(deep + cached, {"after": cursor}, cache=True),
            Page(
                f"filtered next page (category={category}){cached}", {"category": str(category), "after": second}, True
            ),
        ]

    # -- measurement ---------------------------------------------------------------------------

    def _measure(self, org: Organization, client: WsgiClient, page: Page) -> PageResult:
        url = reverse("emission-list") + (f"?{urlencode(page.params)}" if page.params else "")
        queryset = EmissionFilter(data=page.params, queryset=Emission.objects.for_org(org)).qs
        paginator = KeysetPaginator(
            queryset.select_related("supplier", "factor", "factor__dataset"), EmissionViewSet.keyset_ordering
        )
        page_query = paginator.page_queryset(first=PAGE_SIZE, after=page.params.get("after"))
        loaded = list(page_query)[:PAGE_SIZE]

        def plain() -> bytes:
            return JSONRenderer().render(PlainEmissionSerializer(list(page_query.all())[:PAGE_SIZE], many=True).data)

        def plain_render() -> bytes:
            return JSONRenderer().render(PlainEmissionSerializer(loaded, many=True).data)

        def serializer() -> bytes:
            return JSONRenderer().render(EmissionSerializer(list(page_query.all())[:PAGE_SIZE], many=True).data)

        # Every round's status, not only the last response's: a refusal (a 429 once the caller's rate is used up)
        # costs a fraction of a page, and medians over a mix of both would flatter whichever side met it.
        statuses: Counter[tuple[str, int]] = Counter()

        def drf_request() -> Answer:
            with override_settings(LIST_ROWS=False):
                response = client.get(url)
            statuses["DRF", response.status_code] += 1
            return response

        def rows_request() -> Answer:
            response = client.get(url)
            statuses["rows", response.status_code] += 1
            return response

        sides: list[Callable[[], Any]] = [plain, plain_render, serializer, drf_request, rows_request]
        self.stdout.write(f"Measuring {page.name}: {self.runs} rounds of {len(sides)} ...\n")
        measurements = measure.measure_interleaved(sides, runs=self.runs)
        result = PageResult(page, url, dict(zip(SIDES, measurements, strict=True)))
        drf, rows = result.results["drf_request"].result, result.results["rows_request"].result
        for name, response in (("DRF", drf), ("rows", rows)):
            if response.status_code != 200:
                raise BenchError(f"GET {url} ({name} path) answered {response.status_code}: {response.content[:300]!r}")
        refused = {f"{name} {status}": count for (name, status), count in sorted(statuses.items()) if status != 200}
        if refused:
            raise BenchError(
                f"GET {url} was not answered 200 in every round ({refused}): its medians would mix in refusals. "
                "Fewer --runs, or raise the throttle rates (THROTTLE_RATE_USER, THROTTLE_RATE_ORG) for the run."
            )
        if rows.content != drf.content or rows.headers != drf.headers:
            raise BenchError(f"GET {url}: the value-row page differs from DRF's ({len(rows.content):,} bytes vs "
                             f"{len(drf.content):,}); the benchmark would compare different work.")  # fmt: skip
        if len(json.loads(rows.content)["results"]) != len(loaded):
            raise BenchError(f"GET {url} answered another number of rows than the page query loads.")
        if page.cache and rows.header("ETag") is None:
            raise BenchError(f"GET {url} answered without an ETag with the cache on: is its view cached?")
        result.body_bytes = len(rows.content)
        return result

    # -- report --------------------------------------------------------------------------------

    def _command(self) -> str:
        args = ["manage.py", "bench_serialization", "--org", self.org_slug, "--runs", str(self.runs)]
        if self.depth != DEFAULT_DEPTH:
            args += ["--depth", str(self.depth)]
        return f"DJANGO_SETTINGS_MODULE={measure.SETTINGS_MODULE} python {shlex.join(args)}"

    def _markdown(self, results: list[PageResult], org: Organization, count: int) -> str:
        lines = [
            "# Serialization benchmark: a 100-emission list page, DRF vs value rows",
            "",
            "Generated by `manage.py bench_serialization`; do not edit by hand. One process, side by side: each round",
            f"runs every column once, in turn; times are medians of {self.runs:,} rounds after one warm-up round.",
            "(a) is a plain DRF `ModelSerializer` declaring the same fields over the page's rows with",
            "`select_related`, then `JSONRenderer` (with the page's query, and on rows already loaded); (b) the API's",
            "`EmissionSerializer` the same way, and the whole request with `LIST_ROWS` off; (c) the whole request as",
            "served, written from value rows (`perf.rows`). Requests go through the whole Django stack in-process",
            "(middleware, DRF, token authentication, filters, keyset pagination, the view), handed to Django's WSGI",
            "handler as gunicorn hands them (not through Django's test client, whose own bookkeeping no server does).",
            "Nothing of the page comes from the cache: the first three pages with `CACHE_ENABLED` off (the token read",
            "from the database too); the *cache on* ones are next pages with `CACHE_DEEP_PAGES` off (as when asked",
            "for the first time: no body stored), requested as a returning client sends them (the token and the",
            "namespaces' versions from the cache, the page from the database). Every (c) body and its headers were",
            "checked byte-identical to (b)'s whole request. *x* columns are that column's median / (c)'s median.",
            "",
            "| page | " + " | ".join(SIDE_LABELS[side] for side in SIDES) + " | (a) / (c) | (a) render / (c) "
            "| (b) request / (c) |",
            "|---|" + "---|" * (len(SIDES) + 3),
        ]
        for result in results:
            times = " | ".join(_ms(result.results[side].median) for side in SIDES)
            lines.append(
                f"| {result.page.name} | {times} | {result.ratio('plain'):.1f}x | {result.ratio('plain_render'):.1f}x "
                f"| {result.ratio('drf_request'):.1f}x |"
            )
        lines += ["", "SQL statements per run (with the cache off, the requests' include the token's):", ""]
        lines += [
            f"- {result.page.name} (`GET {result.url}`, {result.body_bytes:,} bytes): "
            + ", ".join(f"{SIDE_LABELS[side]} {result.results[side].queries}" for side in SIDES)
            for result in results
        ]
        machine = measure.machine_description({f"organization '{org.slug}' emissions": count})
        lines += ["", "## Machine", ""]
        lines += [f"- **{key}**: {value}" for key, value in machine.items()]
        lines += ["", "## Reproduce", "", "```sh", self._command(), "```", ""]
        lines += [f"Run on {timezone.now():%Y-%m-%d %H:%M} UTC with Python {sys.version.split()[0]}."]
        return "\n".join(lines) + "\n"

    def _figures(self, results: list[PageResult], org: Organization, count: int) -> dict[str, Any]:
        return {
            "organization": org.slug,
            "emissions": count,
            "runs": self.runs,
            "page_size": PAGE_SIZE,
            "database": connection.vendor,
            "command": self._command(),
            "pages": [
                {
                    "page": result.page.name,
                    "url": result.url,
                    "body_bytes": result.body_bytes,
                    "median_seconds": {side: result.results[side].median for side in SIDES},
                    "queries": {side: result.results[side].queries for side in SIDES},
                    "ratios_over_rows_request": {side: result.ratio(side) for side in SIDES},
                    "samples_seconds": {side: result.results[side].samples for side in SIDES},
                }
                for result in results
            ],
        }
