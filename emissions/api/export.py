"""CSV export of stored emissions, streamed row by row at constant memory.

The rows come from one query read through ``QuerySet.iterator(chunk_size=...)``: on
PostgreSQL that is a server-side cursor, so the process holds one chunk of rows at a time
however many the organization has (Django's "Streaming large CSV files" recipe). Rows are
``values_list`` tuples, not model instances, and lines are handed to the server in blocks of
``LINES_PER_BLOCK`` so the WSGI layer is not called once per row.

On PostgreSQL every column arrives as the very text the CSV shows (``text_values``: fixed-point decimals,
ISO dates, the fallback codes joined), so Python only quotes and joins, in C (``csv.writer.writerows``).
Decoding dates, timestamps, decimals and the fallbacks' JSON into Python objects only to format them back
into text took about three quarters of an export's CPU, and exports are most of the bulk work the server
does. Elsewhere (the embedded SQLite default) rows are formatted in Python (``_row``); on PostgreSQL the two
give byte-identical files (tests/emissions/api/test_export.py).

Text a spreadsheet would run as a formula (a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is neutralized with a leading single quote, OWASP's advice for CSV injection, in both paths and only in
the columns users write (``FORMULA_COLUMNS``); numbers, dates and the codes VCCI writes itself are never quoted.
The input refuses such text in those fields (``emissions.inputs.refuse_formula``); the quote covers what was
stored before that rule or by other means (the admin, a shell).

Behind PgBouncer in transaction mode server-side cursors need ``DISABLE_SERVER_SIDE_CURSORS``;
the export then still streams its output but the driver fetches the whole result first.

**Kept bodies and conditional GET** (the API's export, ``cached_csv_response``). Each response carries a strong
``ETag`` made of the request (organization, filters) and the versions of the namespaces its rows are read from
(``emissions.cache.emission_list_namespaces``: a one-month export reads that month's additions only), so a client
that sends it back in ``If-None-Match`` gets a ``304`` until the data changes. A body of at most
``EXPORT_CACHE_MAX_BYTES`` is also kept in the cache while it is streamed, and later requests for the same export
under the same versions are answered from it without a query: most exports are of months that no longer change,
and each took the bulk lane a second or more to produce. A larger one is streamed and not kept.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import DecimalField, ExpressionWrapper, F, Func, QuerySet, TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.db.models.sql.compiler import SQLCompiler
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.cache import get_conditional_response

from calculator.types import present_kg, present_t
from emissions.inputs import FORMULA_PREFIXES, neutralized
from emissions.models import Emission
from perf.admission import cooperate, untimed
from perf.cache import Namespace, digest, tiered, writing
from perf.conditional import PRECONDITION_HEADERS

CHUNK_SIZE = 2000
LINES_PER_BLOCK = 500

COLUMNS = (
    "id",
    "period_start",
    "period_end",
    "category",
    "method",
    "supplier_external_id",
    "supplier_name",
    "factor_source",
    "factor_dataset_version",
    "factor_activity",
    "co2e_kg",
    "co2e_t",
    "data_quality_score",
    "fallbacks",
    "calculated_at",
    # Added after the columns above, so a reader that takes columns by position keeps working.
    "biogenic_co2_kg",
)
# What each row is read from (one join each to supplier, factor and dataset; no model instances).
_VALUES = (
    "id",
    "period_start",
    "period_end",
    "category",
    "method",
    "supplier__external_id",
    "supplier__name",
    "factor__dataset__source",
    "factor__dataset__version",
    "factor__activity",
    "co2e_kg",
    "score",
    "fallbacks",
    "calculated_at",
    "biogenic_co2_kg",
)


# The columns whose text users write (suppliers; a supplier's own factor's key and dataset version): the ones a
# formula could reach the file through. The method and source are choices, the fallbacks VCCI's own codes.
FORMULA_COLUMNS = ("supplier_external_id", "supplier_name", "factor_dataset_version", "factor_activity")


class Neutralized(Func):
    """SQL of ``neutralized``: a text expression, quoted when its first character is one of ``FORMULA_PREFIXES``.

    NULL stays NULL (an empty field, as ``_row`` writes ""). The characters are one array parameter.
    """

    output_field = TextField()

    def as_sql(  # type: ignore[override]  # no template or function: the CASE is written here
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        quoted = f"CASE WHEN left({sql}, 1) = ANY(%s) THEN chr(39) || {sql} ELSE {sql} END"  # chr(39): the single quote
        return quoted, [*params, list(FORMULA_PREFIXES), *params, *params]


_TEXT = TextField()
# A timestamp as the JSON API writes it (``_timestamp``): UTC, "Z", microseconds only when there are any.
_ISO_TIMESTAMP = (
    "CASE WHEN to_char(%(expressions)s AT TIME ZONE 'UTC', 'US') = '000000' "
    "THEN to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
    "ELSE to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END"
)
# The fallbacks' codes in order, joined by ";" ("" for a note without one; notes that are not objects skipped).
_FALLBACK_CODES = (
    "COALESCE((SELECT string_agg(COALESCE(note ->> 'code', ''), ';' ORDER BY position) "
    "FROM jsonb_array_elements(CASE WHEN jsonb_typeof(%(expressions)s) = 'array' THEN %(expressions)s "
    "ELSE '[]'::jsonb END) WITH ORDINALITY AS notes(note, position) WHERE jsonb_typeof(note) = 'object'), '')"
)


def text_values() -> dict[str, Any]:
    """PostgreSQL expressions giving each column (in ``COLUMNS`` order) as the text ``_row`` makes of it.

    Decimals: a ``numeric`` column's text has exactly its scale's places, ``CO2E_PLACES`` here, as
    ``present_kg`` writes them; tonnes are kg x 0.001, an exact product with three more places, as
    ``present_t``. NULLs stay NULL: the csv module writes None as an empty field, as ``_row`` writes "".
    """
    return {
        "text_id": Cast("id", _TEXT),
        "text_period_start": Func(F("period_start"), Value("YYYY-MM-DD"), function="to_char", output_field=_TEXT),
        "text_period_end": Func(F("period_end"), Value("YYYY-MM-DD"), function="to_char", output_field=_TEXT),
        "text_category": Cast("category", _TEXT),
        "text_method": F("method"),
        "text_supplier_external_id": Neutralized(F("supplier__external_id")),
        "text_supplier_name": Neutralized(F("supplier__name")),
        "text_source": F("factor__dataset__source"),
        "text_version": Neutralized(F("factor__dataset__version")),
        "text_activity": Neutralized(F("factor__activity")),
        "text_co2e_kg": Cast("co2e_kg", _TEXT),
        "text_co2e_t": Cast(
            ExpressionWrapper(F("co2e_kg") * Value(Decimal("0.001")), output_field=DecimalField()), _TEXT
        ),
        "text_score": KT("data_quality__score"),
        "text_fallbacks": Func(F("fallbacks"), template=_FALLBACK_CODES, output_field=_TEXT),
        "text_calculated_at": Func(F("calculated_at"), template=_ISO_TIMESTAMP, output_field=_TEXT),
        "text_biogenic_co2_kg": Cast("biogenic_co2_kg", _TEXT),
    }


def export_queryset(queryset: QuerySet[Emission], *, as_text: bool = False) -> QuerySet:
    """The export's single query: ``queryset`` (already org-scoped and filtered) as value tuples, newest first.

    ``as_text`` (PostgreSQL only): each value the text of its CSV field (``text_values``).
    """
    ordered = queryset.order_by("-period_start", "-id")
    if as_text:
        texts = text_values()
        return ordered.annotate(**texts).values_list(*texts)
    # The score as text from the database: decoding every row's whole data_quality JSON cost ~10% of the export.
    return ordered.annotate(score=KT("data_quality__score")).values_list(*_VALUES)


def _timestamp(value: dt.datetime) -> str:
    # The same form the JSON API uses for datetimes.
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _row(values: tuple[Any, ...]) -> list[str]:
    (
        pk,
        period_start,
        period_end,
        category,
        method,
        supplier_external_id,
        supplier_name,
        source,
        version,
        activity,
        co2e_kg,
        score,
        fallbacks,
        calculated_at,
        biogenic_co2_kg,
    ) = values
    return [
        str(pk),
        period_start.isoformat(),
        period_end.isoformat(),
        str(category),
        method,
        neutralized(supplier_external_id or ""),
        neutralized(supplier_name or ""),
        source,
        neutralized(version),
        neutralized(activity),
        present_kg(co2e_kg),
        present_t(co2e_kg),
        score or "",
        ";".join(note.get("code", "") for note in fallbacks or () if isinstance(note, dict)),
        _timestamp(calculated_at),
        # Empty when the factor has no biogenic figure (as an absent score is), so it never reads as a zero.
        "" if biogenic_co2_kg is None else present_kg(biogenic_co2_kg),
    ]


class _Lines:
    """A write-only file-like object that keeps what ``csv.writer`` writes, to be taken as one string."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, value: str) -> None:
        self.parts.append(value)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


def csv_lines(
    queryset: QuerySet[Emission], *, chunk_size: int = CHUNK_SIZE, as_text: bool | None = None
) -> Iterator[str]:
    """The header, then every row of ``queryset`` as CSV text, in blocks of ``LINES_PER_BLOCK`` lines.

    Lazy: the query runs when the first block after the header is requested, and rows are
    fetched ``chunk_size`` at a time. ``as_text``: format the fields in the database (the default on
    PostgreSQL) or in Python (``_row``; the default elsewhere); both give the same bytes.
    """
    if as_text is None:
        as_text = connections[queryset.db].vendor == "postgresql"
    rows: Iterator[Any] = iter(export_queryset(queryset, as_text=as_text).iterator(chunk_size=chunk_size))
    if not as_text:
        rows = map(_cooperating_row, rows)
    lines = _Lines()
    writer = csv.writer(lines)
    writer.writerow(COLUMNS)
    yield lines.take()
    while True:
        # The csv module quotes and joins a whole block in C; a block of database-formatted rows is some 2 ms of
        # CPU, so yielding to the worker's other greenlets between blocks keeps them as responsive as before.
        cooperate()
        writer.writerows(islice(rows, LINES_PER_BLOCK))
        block = lines.take()
        if not block:
            return
        yield block


CONTENT_TYPE = "text/csv; charset=utf-8"
# Part of every kept export's key and ETag, with COLUMNS: change it with anything else that changes the file's bytes
# (how a field is written, the quoting), so that no kept body or ETag of the old format is served after a deploy.
EXPORT_FORMAT = 1


def _attachment(response: HttpResponseBase, slug: str) -> HttpResponseBase:
    filename = f"emissions-{slug}-{timezone.localdate().isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_response(queryset: QuerySet[Emission], *, slug: str) -> StreamingHttpResponse:
    """``queryset`` (scoped and filtered by the caller) as a streamed CSV download named after organization ``slug``
    and today: the API's export and the admin's "Export CSV" alike."""
    response = StreamingHttpResponse(csv_lines(queryset), content_type=CONTENT_TYPE)
    _attachment(response, slug)
    return response


def cached_csv_response(
    request: HttpRequest,
    queryset: QuerySet[Emission],
    *,
    slug: str,
    namespaces: list[Namespace],
    keep: bool,
) -> HttpResponseBase:
    """``csv_response`` with an ``ETag`` (a ``304`` when ``If-None-Match`` holds it), answered from the cache when
    the same export was kept under the namespaces' current versions, else streamed and kept when it turns out small
    enough (``EXPORT_CACHE_MAX_BYTES``; ``keep``: whether this request's body may be stored at all).

    Preconditions: ``queryset`` is scoped to the caller's organization and filtered by ``request``'s query, which
    has been validated; ``namespaces`` are every namespace a value read by ``queryset`` is invalidated through (they
    name the organization).
    """
    cache = tiered()
    if not settings.CACHE_ENABLED or writing(namespaces):
        return csv_response(queryset, slug=slug)
    versions = cache.versions(namespaces)
    key = digest(
        cache.key_version,
        "export",
        EXPORT_FORMAT,
        COLUMNS,
        [ns.key for ns in namespaces],
        sorted(request.GET.lists()),
        [version.value for version in versions],
    )
    etag = f'"{key}"'
    if any(header in request.META for header in PRECONDITION_HEADERS):
        not_modified = get_conditional_response(request, etag=etag)
        if not_modified is not None:
            return untimed(_cache_headers(not_modified, etag))
    # With Redis down the versions are this process's own, renewed every CACHE_L1_TTL: nothing kept would be read.
    limit = settings.EXPORT_CACHE_MAX_BYTES if keep and not cache.is_down() else 0
    body: bytes | None = cache.get(namespaces, f"export:{key}", versions=versions) if limit else None
    response: HttpResponseBase
    if body is not None:
        # No bulk work: the heavy slot it took is freed untimed (a kept answer's millisecond is no measure of exports).
        response = untimed(HttpResponse(body, content_type=CONTENT_TYPE))
    else:
        blocks: Iterator[bytes] = (block.encode() for block in csv_lines(queryset))
        if limit:

            def store(whole: bytes) -> None:
                cache.set(namespaces, f"export:{key}", whole, versions=versions)

            blocks = _keeping(blocks, limit, store)
        response = StreamingHttpResponse(blocks, content_type=CONTENT_TYPE)
    return _cache_headers(_attachment(response, slug), etag)


def _cache_headers(response: HttpResponseBase, etag: str) -> HttpResponseBase:
    # As perf.conditional's responses, revalidated with the ETag; one representation per caller (the CSV does not
    # vary by Accept or Accept-Encoding).
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = f"private, max-age={settings.CACHE_MAX_AGE.get('emissions', 0)}"
    response.headers["Vary"] = "Authorization"
    return response


def _keeping(blocks: Iterator[bytes], limit: int, store: Callable[[bytes], None]) -> Iterator[bytes]:
    """``blocks``, passed on as they come, and then, once all of them have been sent, ``store(the whole body)`` when
    it has at most ``limit`` bytes. Nothing is stored when the client leaves early (the generator is closed before
    its end) or the query fails: only a body sent whole is kept."""
    kept: list[bytes] | None = []
    size = 0
    for block in blocks:
        if kept is not None:
            size += len(block)
            if size <= limit:
                kept.append(block)
            else:
                kept = None  # too large to keep: passed on, not held
        yield block
    if kept is not None:
        store(b"".join(kept))


def _cooperating_row(values: tuple[Any, ...]) -> list[str]:
    # Formatting in Python costs some 20 us a row: a block of them is long enough to yield between rows too.
    cooperate()
    return _row(values)
