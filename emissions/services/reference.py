"""Services that load the calculator's reference tables (exchange rates, price indexes) from CSV.

Both loaders validate the whole file first and write nothing when any row is bad; the
error names the line (1 = header) and the column. Rows are upserted by the table's unique
key, so reloading a corrected file replaces the old values.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import models, transaction

from calculator import rules
from emissions.cache import catalogue_changed
from emissions.models import DecimalDigits, ExchangeRate, PriceIndex

# Required columns; ``source`` is optional (blank when absent).
EXCHANGE_RATE_COLUMNS = ("currency", "quote_currency", "year", "rate")
PRICE_INDEX_COLUMNS = ("currency", "year", "value")
SOURCE_MAX_LENGTH = 200


class ReferenceDataError(ValueError):
    """A reference file that cannot be loaded; ``line`` and ``column`` point at the problem."""

    def __init__(self, path: Path | str, line: int, column: str, message: str) -> None:
        self.path, self.line, self.column = str(path), line, column
        where = f"line {line}, column '{column}'" if column else f"line {line}"
        super().__init__(f"{Path(path).name}: {where}: {message}")


@dataclass(frozen=True)
class LoadResult:
    created: int
    updated: int

    @property
    def total(self) -> int:
        return self.created + self.updated


# -- parsing -------------------------------------------------------------------------------


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; checks the header names every expected column."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ReferenceDataError(path, 0, "", f"cannot open file ({exc.strerror})") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ReferenceDataError(path, 1, missing[0], f"missing column; expected {', '.join(columns)}")
        reader.fieldnames = header
        for row in reader:
            if row.get(None):
                raise ReferenceDataError(path, reader.line_num, "", "more fields than the header has columns")
            values = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(values.values()):
                continue  # blank line
            yield reader.line_num, values


def _currency(path: Path, line: int, column: str, value: str) -> str:
    if not rules.is_currency_code(value):
        raise ReferenceDataError(path, line, column, f"'{value}' is not an ISO 4217 code such as USD")
    return value


def _year(path: Path, line: int, value: str) -> int:
    if not re.fullmatch(r"\d{4}", value) or not rules.is_year(int(value)):
        raise ReferenceDataError(
            path, line, "year", f"'{value}' is not a year from {rules.YEAR_MIN} to {rules.YEAR_MAX}"
        )
    return int(value)


def _positive(path: Path, line: int, column: str, value: str, *, max_digits: int, decimal_places: int) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ReferenceDataError(path, line, column, f"'{value}' is not a number") from None
    if not number.is_finite() or number <= 0:
        raise ReferenceDataError(path, line, column, f"'{value}' must be a positive number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > decimal_places:
        raise ReferenceDataError(path, line, column, f"'{value}' has more than {decimal_places} decimal places")
    if number.adjusted() + 1 > max_digits - decimal_places:
        raise ReferenceDataError(path, line, column, f"'{value}' is too large")
    return number


def _digits(model: type[models.Model], name: str) -> DecimalDigits:
    """The precision of ``model.name``, read from the field so the check cannot drift from the column."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.DecimalField):
        raise TypeError(f"{model.__name__}.{name} is not a DecimalField")
    return {"max_digits": field.max_digits, "decimal_places": field.decimal_places}


def _source(path: Path, line: int, value: str) -> str:
    if len(value) > SOURCE_MAX_LENGTH:
        raise ReferenceDataError(path, line, "source", f"longer than {SOURCE_MAX_LENGTH} characters")
    return value


def _parse(
    path: Path,
    columns: tuple[str, ...],
    parse_row: Callable[[int, dict[str, str]], tuple[tuple, dict[str, Any]]],
) -> dict[tuple, dict[str, Any]]:
    """Every row parsed and keyed by its unique key; duplicates within the file are errors."""
    parsed: dict[tuple, dict[str, Any]] = {}
    seen_at: dict[tuple, int] = {}
    for line, row in _rows(path, columns):
        key, values = parse_row(line, row)
        if key in seen_at:
            raise ReferenceDataError(path, line, columns[0], f"duplicate of line {seen_at[key]} {key}")
        seen_at[key] = line
        parsed[key] = values
    return parsed


# -- services ------------------------------------------------------------------------------


@transaction.atomic
def exchange_rates_load(*, path: Path | str) -> LoadResult:
    """Upsert ``ExchangeRate`` rows from a CSV with columns currency,quote_currency,year,rate,source.

    ``rate`` is 1 ``currency`` in ``quote_currency`` (annual average). Raises
    ``ReferenceDataError`` (nothing written) on the first bad row.
    """
    path = Path(path)
    digits = _digits(ExchangeRate, "rate")

    def parse_row(line: int, row: dict[str, str]) -> tuple[tuple, dict[str, Any]]:
        currency = _currency(path, line, "currency", row["currency"])
        quote = _currency(path, line, "quote_currency", row["quote_currency"])
        if currency == quote:
            raise ReferenceDataError(path, line, "quote_currency", "must differ from currency")
        year = _year(path, line, row["year"])
        values = {
            "currency": currency,
            "quote_currency": quote,
            "year": year,
            "rate": _positive(path, line, "rate", row["rate"], **digits),
            "source": _source(path, line, row.get("source", "")),
        }
        return (currency, quote, year), values

    parsed = _parse(path, EXCHANGE_RATE_COLUMNS, parse_row)
    existing = {
        (c, q, y)
        for c, q, y in ExchangeRate.objects.filter(year__in={k[2] for k in parsed}).values_list(
            "currency", "quote_currency", "year"
        )
    }
    ExchangeRate.objects.bulk_create(
        [ExchangeRate(**values) for values in parsed.values()],
        update_conflicts=True,
        unique_fields=["currency", "quote_currency", "year"],
        update_fields=["rate", "source"],
    )
    updated = len(existing & parsed.keys())
    catalogue_changed()
    return LoadResult(created=len(parsed) - updated, updated=updated)


@transaction.atomic
def price_index_load(*, path: Path | str) -> LoadResult:
    """Upsert ``PriceIndex`` rows from a CSV with columns currency,year,value,source.

    Raises ``ReferenceDataError`` (nothing written) on the first bad row.
    """
    path = Path(path)
    digits = _digits(PriceIndex, "value")

    def parse_row(line: int, row: dict[str, str]) -> tuple[tuple, dict[str, Any]]:
        currency = _currency(path, line, "currency", row["currency"])
        year = _year(path, line, row["year"])
        values = {
            "currency": currency,
            "year": year,
            "value": _positive(path, line, "value", row["value"], **digits),
            "source": _source(path, line, row.get("source", "")),
        }
        return (currency, year), values

    parsed = _parse(path, PRICE_INDEX_COLUMNS, parse_row)
    existing = set(PriceIndex.objects.filter(currency__in={k[0] for k in parsed}).values_list("currency", "year"))
    PriceIndex.objects.bulk_create(
        [PriceIndex(**values) for values in parsed.values()],
        update_conflicts=True,
        unique_fields=["currency", "year"],
        update_fields=["value", "source"],
    )
    updated = len(existing & parsed.keys())
    catalogue_changed()
    return LoadResult(created=len(parsed) - updated, updated=updated)
