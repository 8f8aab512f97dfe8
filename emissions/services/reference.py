"""Services that load the calculator's reference tables (exchange rates, price indexes) from CSV.

Each file loads into one named *reference set* (``rules.DEFAULT_EXCHANGE_RATE_SET``, a user's
budget rates, ...); other sets are never touched. Both loaders validate the whole file first
and write nothing when any row is bad; the error names the file, the line (1 = header) and the
column. Rows are upserted by the set's unique key, so reloading a corrected file replaces the
old values, and reloading the same file writes nothing.
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
from emissions.models import DecimalDigits, ExchangeRate, Organization, PriceIndex

# Required columns; ``source`` is optional (blank when absent).
EXCHANGE_RATE_COLUMNS = ("currency", "quote_currency", "year", "rate")
PRICE_INDEX_COLUMNS = ("currency", "year", "value")
SOURCE_MAX_LENGTH = 200

# The tables shipped in the factor data folder (its SOURCES.md, section 6), loaded by ``import_factors``.
SHIPPED_EXCHANGE_RATES = "reference/ecb_fx_annual_usd.csv"
SHIPPED_PRICE_INDEX = "reference/bls_cpi_u_annual.csv"
SHIPPED_EXCHANGE_RATES_HELP = (
    "spend in a currency other than USD needs exchange rates: annual averages of the ECB euro foreign exchange "
    'reference rates ("Source: ECB"), described in section 6 of the factor data\'s SOURCES.md'
)
SHIPPED_PRICE_INDEX_HELP = (
    "spend in a year other than a factor's price year needs a price index: the US BLS CPI-U annual averages "
    "(series CUUR0000SA0), described in section 6 of the factor data's SOURCES.md"
)


class ReferenceDataError(ValueError):
    """A reference file that cannot be loaded; ``line`` and ``column`` point at the problem."""

    def __init__(self, path: Path | str, line: int, column: str, message: str) -> None:
        self.path, self.line, self.column = str(path), line, column
        # Line 0: the problem is the file as a whole (cannot open it, bad set name), not one of its lines.
        where = f"line {line}, column '{column}'" if column else f"line {line}" if line else ""
        super().__init__(f"{Path(path).name}: {where + ': ' if where else ''}{message}")


@dataclass(frozen=True)
class LoadResult:
    """What one file did to its set: every row of the file is exactly one of created, updated, unchanged."""

    table: str  # "Exchange rates" / "Price indexes", for reports
    set_name: str
    created: int
    updated: int  # value or source changed
    unchanged: int  # already stored identically: not written
    currencies: int  # distinct ``currency`` values in the file
    first_year: int | None  # None for a file without data rows
    last_year: int | None
    owner: str = ""  # the slug of the organization whose own set it is; empty for a public set

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def written(self) -> int:
        return self.created + self.updated

    def summary(self) -> str:
        """One report line, e.g. ``Exchange rates (set 'ecb'): 835 rows, 41 currencies, 1999-2025: 0 created, ...``."""
        if self.first_year is None:
            years = ""
        elif self.first_year == self.last_year:
            years = f", {self.first_year}"
        else:
            years = f", {self.first_year}-{self.last_year}"
        rows = f"{self.rows} {'row' if self.rows == 1 else 'rows'}"
        currencies = f"{self.currencies} {'currency' if self.currencies == 1 else 'currencies'}"
        return (
            f"{self.table} (set '{self.set_name}'{f', {self.owner} only' if self.owner else ''}): {rows}, "
            f"{currencies}{years}: "
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged."
        )


@dataclass(frozen=True)
class ShippedLoad:
    """``reference_sets_load_shipped``: a result per shipped file found, a note per file missing."""

    results: list[LoadResult]
    notes: list[str]


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


# The shipped sets' names are public: an organization's own set of that name would silently replace them for it.
RESERVED_SET_NAMES = frozenset({rules.DEFAULT_EXCHANGE_RATE_SET, rules.DEFAULT_PRICE_INDEX_SET})


def _set_name(path: Path, set_name: str, organization: Organization | None) -> str:
    if not rules.is_set_name(set_name):
        raise ReferenceDataError(
            path,
            0,
            "",
            f"'{set_name}' is not a set name: use lower-case letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, at most {rules.SET_NAME_MAX_LENGTH} characters (e.g. ecb, budget-2025)",
        )
    if organization is not None and set_name in RESERVED_SET_NAMES:
        raise ReferenceDataError(
            path, 0, "", f"'{set_name}' is the name of a shipped public set: give the organization's set its own name"
        )
    return set_name


def _upsert(
    model: type[models.Model],
    *,
    table: str,
    set_name: str,
    organization: Organization | None,
    key_fields: tuple[str, ...],
    value_fields: tuple[str, ...],
    parsed: dict[tuple, dict[str, Any]],
) -> LoadResult:
    """Write the rows of ``parsed`` (keyed by ``key_fields``) that are new or differ, into ``set_name`` of
    ``organization`` (None: the public set) only.

    Precondition: ``parsed`` is fully validated, so the insert and the update cannot fail on a row.
    """
    # One query for the whole set: a set is at most a few thousand rows, and comparing here is what
    # lets an unchanged reload write nothing (an upsert of every row would rewrite them all). Rows are
    # inserted and updated apart, by id: the set keys are partial unique indexes (a public set's and an
    # organization's), which ON CONFLICT cannot name. A concurrent load of the same set fails on them.
    stored: dict[tuple, tuple] = {}
    ids: dict[tuple, int] = {}
    for pk, *row in model._default_manager.filter(set_name=set_name, organization=organization).values_list(
        "pk", *key_fields, *value_fields
    ):
        key = tuple(row[: len(key_fields)])
        stored[key], ids[key] = tuple(row[len(key_fields) :]), pk
    created: list[models.Model] = []
    updated: list[models.Model] = []
    for key, values in parsed.items():
        current = stored.get(key)
        # Decimal equality is numeric, so 1.053 read from the file equals the stored 1.0530000000.
        if current == tuple(values[name] for name in value_fields):
            continue
        row = model(set_name=set_name, organization=organization, **values)
        if current is None:
            created.append(row)
        else:
            row.pk = ids[key]
            updated.append(row)
    if created or updated:
        model._default_manager.bulk_create(created)
        model._default_manager.bulk_update(updated, list(value_fields))
        catalogue_changed()
    years = [values["year"] for values in parsed.values()]
    return LoadResult(
        table=table,
        set_name=set_name,
        created=len(created),
        updated=len(updated),
        unchanged=len(parsed) - len(created) - len(updated),
        currencies=len({values["currency"] for values in parsed.values()}),
        first_year=min(years, default=None),
        last_year=max(years, default=None),
        owner="" if organization is None else organization.slug,
    )


# -- services ------------------------------------------------------------------------------


@transaction.atomic
def exchange_rates_load(*, path: Path | str, set_name: str, organization: Organization | None = None) -> LoadResult:
    """Upsert the ``ExchangeRate`` rows of the set ``set_name`` (``organization``'s own, or public when None)
    from a CSV with columns currency,quote_currency,year,rate,source.

    ``rate`` is 1 ``currency`` in ``quote_currency`` (annual average). Rows of the set that the
    file does not list are kept; other sets are untouched. Raises ``ReferenceDataError``
    (nothing written) for a bad set name (a shipped set's name for an organization's set) or on the first bad row.
    """
    path = Path(path)
    _set_name(path, set_name, organization)
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

    return _upsert(
        ExchangeRate,
        table="Exchange rates",
        set_name=set_name,
        organization=organization,
        key_fields=("currency", "quote_currency", "year"),
        value_fields=("rate", "source"),
        parsed=_parse(path, EXCHANGE_RATE_COLUMNS, parse_row),
    )


@transaction.atomic
def price_index_load(*, path: Path | str, set_name: str, organization: Organization | None = None) -> LoadResult:
    """Upsert the ``PriceIndex`` rows of the set ``set_name`` (``organization``'s own, or public when None) from a
    CSV with columns currency,year,value,source.

    Rows of the set that the file does not list are kept; other sets are untouched. Raises
    ``ReferenceDataError`` (nothing written) for a bad set name (a shipped set's name for an organization's set) or
    on the first bad row.
    """
    path = Path(path)
    _set_name(path, set_name, organization)
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

    return _upsert(
        PriceIndex,
        table="Price indexes",
        set_name=set_name,
        organization=organization,
        key_fields=("currency", "year"),
        value_fields=("value", "source"),
        parsed=_parse(path, PRICE_INDEX_COLUMNS, parse_row),
    )


@transaction.atomic
def reference_sets_load_shipped(*, directory: Path) -> ShippedLoad:
    """Load the shipped reference tables of the factor data folder ``directory`` into the default sets.

    Exchange rates go to ``rules.DEFAULT_EXCHANGE_RATE_SET``, the price index to
    ``rules.DEFAULT_PRICE_INDEX_SET``. A missing file is a note, not an error: a user may keep
    only factor files (spend in USD of the factor's price year works without them). A bad row
    in either file raises ``ReferenceDataError`` and writes nothing of either.
    """
    results: list[LoadResult] = []
    notes: list[str] = []
    shipped: list[tuple[str, str, Callable[..., LoadResult], str]] = [
        (SHIPPED_EXCHANGE_RATES, SHIPPED_EXCHANGE_RATES_HELP, exchange_rates_load, rules.DEFAULT_EXCHANGE_RATE_SET),
        (SHIPPED_PRICE_INDEX, SHIPPED_PRICE_INDEX_HELP, price_index_load, rules.DEFAULT_PRICE_INDEX_SET),
    ]
    for name, help_text, load, set_name in shipped:
        path = directory / name
        if path.is_file():
            results.append(load(path=path, set_name=set_name))
        else:
            notes.append(f"{name} not found in the data folder, so set '{set_name}' was not loaded: {help_text}.")
    return ShippedLoad(results=results, notes=notes)
