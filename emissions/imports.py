"""Activity CSV files: their columns, header checks, strict reading with physical line numbers, and row validation.

Shared by the import job (``emissions.jobs.imports``), the upload endpoint (which checks the header line itself) and
``manage.py import_activities``. Columns are the activity API's fields, with ``supplier_external_id`` (the supplier's
key in the organization's ERP) instead of a supplier id; an empty cell is a value not given (the API's defaults apply).

Line numbers are physical lines of the whole file (header = line 1), also when a file is read in parts: a part knows
the line its first row starts on. A quoted cell may span several lines, pushing later rows down. The reader is strict:
a quoted cell never closed, or text after a closing quote, is a ``FileProblem`` naming the line where the row begins
(a lenient reader would read the rest of the file into the open cell).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from calculator.engine import period_defaults
from emissions.calculation import FactorResolver
from emissions.inputs import ActivityInputSerializer, activity_input, validate_items
from emissions.models import Organization, Supplier
from emissions.services.activities import ActivityInput

COLUMNS = (
    "category",
    "method",
    "activity",
    "factor_id",
    "region",
    "year",
    "source",
    "dataset_version",
    "amount",
    "unit",
    "currency",
    "spend_year",
    "exchange_rate_set",
    "price_index_set",
    "mass",
    "mass_unit",
    "distance",
    "distance_unit",
    "supplier_external_id",
    "period_start",
    "period_end",
    "external_ref",
)
REQUIRED_COLUMNS = ("category", "method", "period_start", "period_end")
SUPPLIER_COLUMN = "supplier_external_id"
# A file's encoding: UTF-8, a byte-order mark allowed (spreadsheets write one).
ENCODING = "utf-8-sig"

Row = tuple[int, dict[str, str]]  # (file line number, cells)


class FileProblem(ValueError):
    """The file as a whole cannot be imported (header, encoding, CSV syntax); the message says why."""


@dataclass(frozen=True)
class RowError:
    """One problem in the file: its line number (header = line 1), the column and the messages."""

    line: int
    field: str
    messages: tuple[str, ...]

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {' '.join(self.messages)}"

    def as_dict(self) -> dict[str, Any]:
        """The job's error shape (``emissions.jobs.kinds``)."""
        return {"line": self.line, "field": self.field, "messages": list(self.messages)}


def _flatten(errors: Any) -> tuple[str, ...]:
    if isinstance(errors, dict):
        return tuple(f"{key}: {message}" for key, value in errors.items() for message in _flatten(value))
    if isinstance(errors, list):
        return tuple(message for value in errors for message in _flatten(value))
    return (str(errors),)


def header_check(fieldnames: Any) -> None:
    """Raise ``FileProblem`` naming what is wrong with a header's column names (``None``: an empty file)."""
    if not fieldnames:
        raise FileProblem("The file is empty; the first line must name the columns.")
    names = [name.strip() for name in fieldnames]
    if names != list(fieldnames):
        raise FileProblem(f"Column names must not have surrounding spaces: {list(fieldnames)}.")
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise FileProblem(f"Unknown column(s): {', '.join(unknown)}. Allowed columns: {', '.join(COLUMNS)}.")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise FileProblem(f"Duplicated column(s): {', '.join(duplicated)}.")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise FileProblem(f"Missing required column(s): {', '.join(missing)}.")


def header_line_check(head: bytes) -> None:
    """Check the header of a file from its first bytes (up to and including the first line break, or all of it).

    ``FileProblem`` when the header is not UTF-8, not CSV or names the wrong columns.
    """
    try:
        text = head.decode(ENCODING)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"The file is not UTF-8 text: {exc}.") from None
    try:
        fieldnames = next(csv.reader(io.StringIO(text, newline=""), strict=True), None)
    except csv.Error as exc:
        raise FileProblem(f"The file is not valid CSV: line 1: {_csv_reason(exc)}.") from None
    header_check(fieldnames)


def _csv_reason(exc: csv.Error) -> str:
    # The csv module's words for a quote opened and never closed (strict mode; it reads to the end).
    return "a quoted cell is not closed" if str(exc) == "unexpected end of data" else str(exc)


def text_reader(binary: IO[bytes]) -> io.TextIOWrapper:
    """``binary`` read as the file's text; line endings kept as they are (the csv module needs them)."""
    return io.TextIOWrapper(cast(Any, binary), encoding=ENCODING, newline="")


@dataclass(frozen=True)
class Part:
    """A run of consecutive rows of a file, as text: the header line, then the rows' lines exactly as in the file."""

    text: str
    first_line: int  # the file line the first row starts on
    rows: int


def file_parts(handle: Iterable[str], rows_per_part: int) -> Iterator[Part]:
    """Split a file (its text lines, line endings kept) into parts of ``rows_per_part`` data rows each.

    Every row is parsed (strictly) once, so that a file which is not CSV fails here naming the line; the parts are the
    rows' original lines, so reading a part gives the same cells. Blank lines are not rows (``csv.DictReader`` skips
    them) and stay in their part, so line numbers stay right. ``FileProblem`` for a bad header, encoding or syntax.
    """
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in handle:
            consumed.append(line)
            yield line

    # The reader takes exactly the lines of one record at a time: it never reads ahead.
    reader = csv.reader(lines(), strict=True)
    line = 1  # where the record being read begins
    try:
        fieldnames = next(reader, None)
        header_check(fieldnames)
        header = "".join(consumed)
        if not header.endswith(("\n", "\r")):
            header += "\r\n"
        consumed.clear()
        line = reader.line_num + 1
        first, rows = line, 0
        for record in reader:
            rows += bool(record)
            line = reader.line_num + 1
            if rows >= rows_per_part:
                yield Part(header + "".join(consumed), first, rows)
                consumed.clear()
                first, rows = line, 0
        if rows or consumed:
            yield Part(header + "".join(consumed), first, rows)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"The file is not UTF-8 text: {exc}.") from None
    except csv.Error as exc:
        raise FileProblem(f"The file is not valid CSV: line {line}: {_csv_reason(exc)}.") from None


def part_rows(text: str, first_line: int) -> list[Row]:
    """The rows of a part (``Part.text``) with their file line numbers; the header was checked when it was split.

    Cells as ``csv.DictReader`` gives them (a short row's missing cells ``None``, surplus cells as a list under the key
    ``None``), but a row after blank lines is numbered by the line it is on, not the first blank one.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    fieldnames = next(reader)
    # The part's first line after the header is the file's ``first_line``.
    offset = first_line - reader.line_num - 1
    line = reader.line_num + 1  # where the record being read begins, in the part
    rows: list[Row] = []
    for record in reader:
        if record:  # a blank line is no row
            cells: dict[str | None, Any] = dict(zip(fieldnames, record, strict=False))
            if len(record) > len(fieldnames):
                cells[None] = record[len(fieldnames) :]
            for name in fieldnames[len(record) :]:
                cells[name] = None
            rows.append((line + offset, cast("dict[str, str]", cells)))
        # line_num is the last physical line read: a quoted cell may span several.
        line = reader.line_num + 1
    return rows


class BatchValidator:
    """Turns batches of CSV rows into service inputs with the API's serializer; one instance per import or chunk."""

    def __init__(self, organization: Organization, resolver: FactorResolver) -> None:
        self.organization = organization
        self.resolver = resolver
        # One serializer for every row (DRF builds a serializer's fields once per instance). supplier_ids
        # holds the ids mapped from external ids, so validating a supplier costs no query.
        self.serializer = ActivityInputSerializer(
            context={"organization_id": organization.pk, "supplier_ids": set[int]()}
        )

    def inputs(self, batch: list[Row]) -> tuple[list[tuple[int, ActivityInput]], list[RowError]]:
        """``([(line, input)], [RowError])`` for a batch; one query maps its supplier external ids."""
        # A short row has None for its missing cells (DictReader's restval).
        wanted = {(cells.get(SUPPLIER_COLUMN) or "").strip() for _, cells in batch} - {""}
        by_external_id = dict(
            Supplier.objects.for_org(self.organization).filter(external_id__in=wanted).values_list("external_id", "pk")
        )
        self.serializer.context["supplier_ids"].update(by_external_id.values())
        errors: list[RowError] = []
        items: list[tuple[int, dict[str, str | int]]] = []
        for line, cells in batch:
            # DictReader files the cells beyond the header's columns under the key None.
            extra = cast("dict[str | None, Any]", cells).get(None)
            if extra is not None:
                message = f"{len(extra)} more cell(s) than the header has columns."
                errors.append(RowError(line, "(row)", (message,)))
                continue
            missing = sum(value is None for value in cells.values())
            if missing:
                # Not taken as empty cells: a row cut short is more likely a broken line than values left out.
                message = f"{missing} fewer cell(s) than the header has columns."
                errors.append(RowError(line, "(row)", (message,)))
                continue
            item: dict[str, str | int] = {
                name: value.strip() for name, value in cells.items() if value is not None and value.strip()
            }
            external_id = item.pop(SUPPLIER_COLUMN, None)
            if external_id is not None:
                if external_id not in by_external_id:
                    message = (
                        f"No supplier with external_id '{external_id}' in organization '{self.organization.slug}'."
                    )
                    errors.append(RowError(line, SUPPLIER_COLUMN, (message,)))
                    continue
                item["supplier"] = by_external_id[str(external_id)]
            items.append((line, item))
        inputs: list[tuple[int, ActivityInput]] = []
        outcomes = validate_items(self.serializer, [item for _, item in items])
        for (line, _), (data, item_errors) in zip(items, outcomes, strict=True):
            if item_errors is not None:
                errors.extend(self.row_errors(line, item_errors))
            else:
                inputs.append((line, activity_input(data)))  # type: ignore[arg-type]  # data is set without errors
        # Everything the batch will look up (factors, candidates, suppliers, rates), in a handful of queries.
        self.resolver.prime(
            period_defaults(item.calculation, period_year=item.period_start.year)[0] for _, item in inputs
        )
        return inputs, errors

    @staticmethod
    def row_errors(line: int, errors: dict[str, Any]) -> list[RowError]:
        # The file names the supplier by external id; the serializer and calculator call it "supplier".
        return [
            RowError(line, SUPPLIER_COLUMN if name == "supplier" else name, _flatten(messages))
            for name, messages in errors.items()
        ]
