"""CSV export of stored emissions, streamed row by row at constant memory.

The rows come from one query read through ``QuerySet.iterator(chunk_size=...)``: on
PostgreSQL that is a server-side cursor, so the process holds one chunk of rows at a time
however many the organization has (Django's "Streaming large CSV files" recipe). Rows are
``values_list`` tuples, not model instances, and lines are handed to the server in blocks of
``LINES_PER_BLOCK`` so the WSGI layer is not called once per row.

Behind PgBouncer in transaction mode server-side cursors need ``DISABLE_SERVER_SIDE_CURSORS``;
the export then still streams its output but the driver fetches the whole result first.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KT

from calculator.types import present_kg, present_t
from emissions.models import Emission
from perf.admission import cooperate

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


class Echo:
    """A write-only file-like object whose ``write`` returns what it was given, for ``csv.writer``."""

    def write(self, value: str) -> str:
        return value


def export_queryset(queryset: QuerySet[Emission]) -> QuerySet:
    """The export's single query: ``queryset`` (already org-scoped and filtered) as value tuples, newest first."""
    # The score as text from the database: decoding every row's whole data_quality JSON cost ~10% of the export.
    return queryset.annotate(score=KT("data_quality__score")).order_by("-period_start", "-id").values_list(*_VALUES)


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
        supplier_external_id or "",
        supplier_name or "",
        source,
        version,
        activity,
        present_kg(co2e_kg),
        present_t(co2e_kg),
        score or "",
        ";".join(note.get("code", "") for note in fallbacks or () if isinstance(note, dict)),
        _timestamp(calculated_at),
        # Empty when the factor has no biogenic figure (as an absent score is), so it never reads as a zero.
        "" if biogenic_co2_kg is None else present_kg(biogenic_co2_kg),
    ]


def csv_lines(queryset: QuerySet[Emission], *, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The header, then every row of ``queryset`` as CSV text, in blocks of ``LINES_PER_BLOCK`` lines.

    Lazy: the query runs when the first block after the header is requested, and rows are
    fetched ``chunk_size`` at a time.
    """
    writer = csv.writer(Echo())
    yield writer.writerow(COLUMNS)
    block: list[str] = []
    for values in export_queryset(queryset).iterator(chunk_size=chunk_size):
        # An export of a million rows runs for many seconds: let the worker's other requests run meanwhile.
        cooperate()
        block.append(writer.writerow(_row(values)))
        if len(block) >= LINES_PER_BLOCK:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)
