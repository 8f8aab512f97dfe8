"""``manage.py import_activities FILE.csv --org SLUG``: load activity lines and their emissions, all or nothing.

The file is read once, streamed through ``csv.DictReader`` in batches of ``--batch-size`` rows,
inside ONE transaction, so memory stays flat whatever the file's size and every row is
calculated exactly once:

- each row is checked with ``emissions.inputs.ActivityInputSerializer``, the validation
  ``POST /api/v1/activities/`` uses too (the same shapes and rules);
- while no error has been seen, each batch is written with ``activities_create`` (calculated on
  the way; COPY of the activities and their emissions on PostgreSQL, bulk inserts elsewhere);
- from the first error on nothing more is written: the remaining rows are only calculated
  (``activities_calculate``) so that every error of the file is reported, and at the end a
  ``CommandError`` rolls back the batches already written.

Errors carry their physical file line and field; the first ``MAX_PRINTED_ERRORS`` are printed
with the total count. A row with more or fewer cells than the header has columns is an error of that row. A file
that is not CSV (a quoted cell never closed, text after a closing quote) stops the import at once, naming the line
where the row begins: the reader is strict, as a lenient one would read the rest of the file into the open cell.
``--dry-run`` only calculates and never writes.

One ``FactorResolver`` is shared by every batch and primed per batch, so a batch costs a fixed
handful of queries (suppliers by ``external_id``, supplier check, new factor selectors, the
inserts) however many rows it has. Columns are the activity API's fields, with
``supplier_external_id`` (the supplier's key in the organization's ERP) instead of a supplier id.
An empty cell is a value not given (the API's defaults apply).
"""

from __future__ import annotations

import csv
import io
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from tqdm import tqdm

from calculator.engine import period_defaults
from calculator.types import CalculationResult, present_kg, present_t
from emissions.calculation import FactorResolver
from emissions.inputs import ActivityInputSerializer, activity_input, validate_items
from emissions.metrics import record_import
from emissions.models import Organization, Supplier
from emissions.services.activities import (
    ActivitiesInvalidError,
    ActivityInput,
    activities_calculate,
    activities_create,
)

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
DEFAULT_BATCH_SIZE = 5000
MAX_PRINTED_ERRORS = 50

Row = tuple[int, dict[str, str]]  # (file line number, cells)


@dataclass(frozen=True)
class RowError:
    """One problem in the file: its line number (header = line 1), the column and the messages."""

    line: int
    field: str
    messages: tuple[str, ...]

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {' '.join(self.messages)}"


@dataclass
class Tally:
    """Rows and kg CO2e seen, and the errors (only the first ``MAX_PRINTED_ERRORS`` kept: memory stays flat)."""

    rows: int = 0
    co2e_kg: Decimal = Decimal(0)
    error_count: int = 0
    error_rows: int = 0
    errors: list[RowError] = field(default_factory=list)

    def add_errors(self, errors: list[RowError]) -> None:
        self.error_count += len(errors)
        self.error_rows += len({error.line for error in errors})
        self.errors.extend(errors[: max(0, MAX_PRINTED_ERRORS - len(self.errors))])


def _flatten(errors: Any) -> tuple[str, ...]:
    if isinstance(errors, dict):
        return tuple(f"{key}: {message}" for key, value in errors.items() for message in _flatten(value))
    if isinstance(errors, list):
        return tuple(message for value in errors for message in _flatten(value))
    return (str(errors),)


class ActivityFile:
    """A CSV file of activities, read once as batches of ``(line, cells)`` with header checks.

    ``bytes_read`` is how far into the file the reader is (for a progress bar over the file's size).
    """

    def __init__(self, path: Path, batch_size: int) -> None:
        self.path = path
        self.batch_size = batch_size
        self.bytes_read = 0

    def batches(self) -> Iterator[list[Row]]:
        """Yield batches of rows; raise ``CommandError`` on a bad header, encoding or CSV syntax."""
        line = 1  # where the row being read begins
        try:
            with self.path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle, strict=True)
                self._check_header(reader.fieldnames)
                batch: list[Row] = []
                line = 2
                for cells in reader:
                    batch.append((line, cells))
                    # line_num is the last physical line read: a quoted cell may span several.
                    line = reader.line_num + 1
                    if len(batch) >= self.batch_size:
                        # The binary buffer's position: the text layer's tell() is disabled while iterating.
                        self.bytes_read = raw.tell()
                        yield batch
                        batch = []
                self.bytes_read = raw.tell()
                if batch:
                    yield batch
        except UnicodeDecodeError as exc:
            raise CommandError(f"{self.path} is not UTF-8 text: {exc}. Nothing was written.") from exc
        except csv.Error as exc:
            # The csv module's words for a quote opened and never closed (strict mode; it reads to the file's end).
            reason = "a quoted cell is not closed" if str(exc) == "unexpected end of data" else str(exc)
            raise CommandError(f"{self.path} is not valid CSV: line {line}: {reason}. Nothing was written.") from exc

    def _check_header(self, fieldnames: Any) -> None:
        if not fieldnames:
            raise CommandError(f"{self.path} is empty; the first line must name the columns.")
        names = [name.strip() for name in fieldnames]
        if names != list(fieldnames):
            raise CommandError(f"Column names must not have surrounding spaces: {list(fieldnames)}.")
        unknown = [name for name in names if name not in COLUMNS]
        if unknown:
            raise CommandError(f"Unknown column(s): {', '.join(unknown)}. Allowed columns: {', '.join(COLUMNS)}.")
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise CommandError(f"Duplicated column(s): {', '.join(duplicated)}.")
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if missing:
            raise CommandError(f"Missing required column(s): {', '.join(missing)}.")


class BatchValidator:
    """Turns batches of CSV rows into service inputs with the API's serializer; one instance per import."""

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


class Command(BaseCommand):
    help = (
        "Import activities (and calculate their emissions) from a CSV file into one organization, all or nothing. "
        f"Columns: {', '.join(COLUMNS)}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="CSV file, UTF-8, header line with column names.")
        parser.add_argument("--org", required=True, help="Slug of the organization the activities belong to.")
        parser.add_argument("--dry-run", action="store_true", help="Validate and calculate only; write nothing.")
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"Rows per batch (default {DEFAULT_BATCH_SIZE})."
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show the progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            file_stat = path.stat()  # the only stat: existence, kind and the progress bar's total
        except FileNotFoundError:
            file_stat = None
        if file_stat is None or not stat.S_ISREG(file_stat.st_mode):
            raise CommandError(f"No such file: {path}.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{options['org']}'.")
        dry_run: bool = options["dry_run"]
        source = ActivityFile(path, options["batch_size"])
        validator = BatchValidator(organization, FactorResolver(organization))

        started = time.perf_counter()
        bar = tqdm(
            total=file_stat.st_size,
            desc="checking" if dry_run else "importing",
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=options["no_progress"],
            leave=False,
        )
        # Raising CommandError inside the block rolls back every batch already written.
        with bar, transaction.atomic():
            tally = Tally()
            for batch in source.batches():
                self._import_batch(batch, validator, tally, write=not dry_run and not tally.error_count)
                bar.update(source.bytes_read - bar.n)
            if tally.error_count:
                raise CommandError(self._error_report(path, tally))
            if not tally.rows:
                raise CommandError(f"{path} has no data rows.")
        elapsed = time.perf_counter() - started
        rate = tally.rows / elapsed
        if dry_run:
            self.stdout.write(
                f"Dry run: {tally.rows} rows valid for '{organization.slug}'; they would add "
                f"{self._kg(tally.co2e_kg)} kg CO2e ({self._t(tally.co2e_kg)} t). "
                f"Nothing was written. {rate:,.0f} rows/s."
            )
            return
        # Committed: vcci_import_rows_total / vcci_import_seconds_total give rows/s. This process's samples reach
        # /metrics only when it runs with the server's PROMETHEUS_MULTIPROC_DIR (docs/serving.md).
        record_import(tally.rows, elapsed)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {tally.rows} rows into '{organization.slug}': {self._kg(tally.co2e_kg)} kg CO2e "
                f"({self._t(tally.co2e_kg)} t). {rate:,.0f} rows/s."
            )
        )

    @staticmethod
    def _import_batch(batch: list[Row], validator: BatchValidator, tally: Tally, *, write: bool) -> None:
        """Validate and calculate ``batch`` once, into ``tally``; with ``write``, store it if it has no error.

        Precondition: ``write`` only while no earlier batch had an error (the import is then
        going to fail, so writing more would be wasted work).
        """
        inputs, errors = validator.inputs(batch)
        items = [inp for _, inp in inputs]
        organization, resolver = validator.organization, validator.resolver
        if write and not errors:
            try:
                records = activities_create(organization=organization, items=items, resolver=resolver)
            except ActivitiesInvalidError as exc:
                # Nothing of this batch was written, and the import now fails: only the errors matter.
                for item_error in exc.errors:
                    errors.extend(validator.row_errors(inputs[item_error.index][0], item_error.errors))
            else:
                tally.co2e_kg += sum((record.emission.co2e_kg for record in records), Decimal(0))
        else:
            outcomes = activities_calculate(organization=organization, items=items, resolver=resolver)
            for (line, _), outcome in zip(inputs, outcomes, strict=True):
                if isinstance(outcome, CalculationResult):
                    tally.co2e_kg += outcome.co2e_kg
                else:
                    errors.extend(validator.row_errors(line, outcome))
        tally.rows += len(batch)
        tally.add_errors(sorted(errors, key=lambda error: error.line))

    @staticmethod
    def _error_report(path: Path, tally: Tally) -> str:
        lines = [f"{tally.error_count} error(s) in {tally.error_rows} row(s) of {path}; nothing was written."]
        lines.extend(str(error) for error in tally.errors)
        if tally.error_count > len(tally.errors):
            lines.append(f"... and {tally.error_count - len(tally.errors)} more.")
        return "\n".join(lines)

    @staticmethod
    def _kg(value: Decimal) -> str:
        return f"{Decimal(present_kg(value)):,f}"

    @staticmethod
    def _t(value_kg: Decimal) -> str:
        return f"{Decimal(present_t(value_kg)):,f}"
