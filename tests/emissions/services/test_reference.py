"""calculator.reference: CSV loaders for exchange rates and price indexes."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emissions.models import ExchangeRate, PriceIndex
from emissions.services.reference import (
    SHIPPED_EXCHANGE_RATES,
    SHIPPED_PRICE_INDEX,
    ReferenceDataError,
    _digits,
    exchange_rates_load,
    price_index_load,
    reference_sets_load_shipped,
)
from tests.factories import ExchangeRateFactory, PriceIndexFactory

DATA = Path(settings.FACTOR_DATA_DIR)

pytestmark = pytest.mark.django_db

RATES = """currency,quote_currency,year,rate,source
EUR,USD,2022,1.0530,ECB annual average
GBP,USD,2022,1.2369,BoE
EUR,USD,2024,1.0824,ECB annual average
"""

INDEX = """currency,year,value,source
USD,2022,292.655,BLS CPI-U
USD,2024,313.689,BLS CPI-U
"""


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_exchange_rates_load(tmp_path):
    result = exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    assert (result.created, result.updated, result.unchanged) == (3, 0, 0)
    assert (result.rows, result.currencies, result.first_year, result.last_year) == (3, 2, 2022, 2024)
    assert result.summary() == (
        "Exchange rates (set 'ecb'): 3 rows, 2 currencies, 2022-2024: 3 created, 0 updated, 0 unchanged."
    )
    rate = ExchangeRate.objects.get(currency="EUR", quote_currency="USD", year=2024)
    assert rate.rate == Decimal("1.0824")
    assert rate.source == "ECB annual average"


def test_exchange_rates_upsert_by_key(tmp_path):
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("9"))
    result = exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    assert (result.created, result.updated, result.unchanged) == (2, 1, 0)
    assert ExchangeRate.objects.count() == 3
    assert ExchangeRate.objects.get(currency="EUR", year=2022).rate == Decimal("1.053")


def test_price_index_load_and_upsert(tmp_path):
    PriceIndexFactory(currency="USD", year=2022, value=Decimal("1"))
    result = price_index_load(path=write(tmp_path, INDEX), set_name="cpi-u")
    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    assert PriceIndex.objects.get(currency="USD", year=2022).value == Decimal("292.655")


def test_bom_and_missing_source_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffcurrency,year,value\r\nUSD,2023,304.702\r\n", encoding="utf-8")
    price_index_load(path=path, set_name="cpi-u")
    assert PriceIndex.objects.get(year=2023).source == ""


@pytest.mark.parametrize(
    ("row", "line", "column"),
    [
        ("eur,USD,2023,1.1,x", 3, "currency"),
        ("EUR,US,2023,1.1,x", 3, "quote_currency"),
        ("EUR,EUR,2023,1.1,x", 3, "quote_currency"),
        ("EUR,USD,23,1.1,x", 3, "year"),
        ("EUR,USD,2023,abc,x", 3, "rate"),
        ("EUR,USD,2023,-1,x", 3, "rate"),
        ("EUR,USD,2023,0,x", 3, "rate"),
        ("EUR,USD,2023,NaN,x", 3, "rate"),
        ("EUR,USD,2023,1.12345678901,x", 3, "rate"),
        ("EUR,USD,2022,1.1,x", 3, "currency"),  # duplicate of line 2
    ],
)
def test_bad_exchange_rate_row_names_line_and_column_and_writes_nothing(tmp_path, row, line, column):
    text = f"currency,quote_currency,year,rate,source\nEUR,USD,2022,1.05,ok\n{row}\n"
    with pytest.raises(ReferenceDataError) as exc:
        exchange_rates_load(path=write(tmp_path, text), set_name="ecb")
    assert (exc.value.line, exc.value.column) == (line, column)
    assert f"line {line}, column '{column}'" in str(exc.value)
    assert ExchangeRate.objects.count() == 0


def test_missing_column_is_reported_on_the_header(tmp_path):
    with pytest.raises(ReferenceDataError) as exc:
        price_index_load(path=write(tmp_path, "currency,value\nUSD,1\n"), set_name="cpi-u")
    assert (exc.value.line, exc.value.column) == (1, "year")


def test_bad_price_index_value(tmp_path):
    with pytest.raises(ReferenceDataError) as exc:
        price_index_load(path=write(tmp_path, INDEX + "USD,2025,Infinity,x\n"), set_name="cpi-u")
    assert (exc.value.line, exc.value.column) == (4, "value")
    assert PriceIndex.objects.count() == 0


def test_missing_file(tmp_path):
    with pytest.raises(ReferenceDataError, match="cannot open"):
        price_index_load(path=tmp_path / "absent.csv", set_name="cpi-u")


def test_digits_come_from_the_model_field():
    assert _digits(ExchangeRate, "rate") == {"max_digits": 20, "decimal_places": 10}
    assert _digits(PriceIndex, "value") == {"max_digits": 20, "decimal_places": 6}
    with pytest.raises(TypeError, match=r"ExchangeRate\.currency is not a DecimalField"):
        _digits(ExchangeRate, "currency")


@pytest.mark.parametrize("year", ["1899", "2101", "24", "20x4"])
def test_a_year_outside_the_calculators_range_is_refused(tmp_path, year):
    path = write(tmp_path, f"currency,quote_currency,year,rate\nEUR,USD,{year},1.08\n")
    with pytest.raises(ReferenceDataError) as exc:
        exchange_rates_load(path=path, set_name="ecb")
    assert (exc.value.line, exc.value.column) == (2, "year")
    assert "from 1900 to 2100" in str(exc.value)


# -- sets ------------------------------------------------------------------------------------


def test_two_sets_keep_the_same_currency_and_year_apart(tmp_path):
    exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    budget = write(tmp_path, "currency,quote_currency,year,rate,source\nEUR,USD,2024,1.10,Budget\n", "budget.csv")
    result = exchange_rates_load(path=budget, set_name="budget")
    assert (result.created, result.updated, result.unchanged) == (1, 0, 0)
    rates = dict(ExchangeRate.objects.filter(currency="EUR", year=2024).values_list("set_name", "rate"))
    assert rates == {"ecb": Decimal("1.0824"), "budget": Decimal("1.10")}
    # Reloading one set leaves the other alone.
    exchange_rates_load(path=write(tmp_path, RATES.replace("1.0824", "1.09")), set_name="ecb")
    assert ExchangeRate.objects.get(set_name="budget").rate == Decimal("1.10")

    price_index_load(path=write(tmp_path, INDEX), set_name="cpi-u")
    price_index_load(path=write(tmp_path, "currency,year,value\nUSD,2024,120\n", "ppi.csv"), set_name="ppi.331110")
    assert dict(PriceIndex.objects.filter(year=2024).values_list("set_name", "value")) == {
        "cpi-u": Decimal("313.689"),
        "ppi.331110": Decimal("120"),
    }


def test_an_organizations_own_set_is_kept_apart_from_the_public_one_of_the_same_name(tmp_path, org, other_org):
    budget = "currency,quote_currency,year,rate,source\nEUR,USD,2024,{rate},Budget\n"
    exchange_rates_load(path=write(tmp_path, budget.format(rate="1.10"), "public.csv"), set_name="budget")
    ours = exchange_rates_load(
        path=write(tmp_path, budget.format(rate="1.25"), "ours.csv"), set_name="budget", organization=org
    )
    theirs = exchange_rates_load(
        path=write(tmp_path, budget.format(rate="1.30"), "theirs.csv"), set_name="budget", organization=other_org
    )
    assert (ours.created, theirs.created) == (1, 1)
    rates = dict(ExchangeRate.objects.filter(set_name="budget").values_list("organization", "rate"))
    assert rates == {None: Decimal("1.10"), org.pk: Decimal("1.25"), other_org.pk: Decimal("1.30")}
    again = exchange_rates_load(
        path=write(tmp_path, budget.format(rate="1.26"), "ours.csv"), set_name="budget", organization=org
    )
    assert (again.created, again.updated) == (0, 1)
    rates = dict(ExchangeRate.objects.filter(set_name="budget").values_list("organization", "rate"))
    assert rates == {None: Decimal("1.10"), org.pk: Decimal("1.26"), other_org.pk: Decimal("1.30")}


@pytest.mark.parametrize("name", ["ecb", "cpi-u"])
def test_an_organizations_set_may_not_take_a_shipped_sets_name(tmp_path, org, name):
    with pytest.raises(ReferenceDataError, match=f"'{name}' is the name of a shipped public set"):
        exchange_rates_load(path=write(tmp_path, RATES), set_name=name, organization=org)
    with pytest.raises(ReferenceDataError, match=f"'{name}' is the name of a shipped public set"):
        price_index_load(path=write(tmp_path, INDEX), set_name=name, organization=org)
    assert not ExchangeRate.objects.exists() and not PriceIndex.objects.exists()


def test_rows_the_file_does_not_list_are_kept(tmp_path):
    ExchangeRateFactory(currency="JPY", year=2020, rate=Decimal("0.0094"))
    exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    assert ExchangeRate.objects.filter(set_name="ecb").count() == 4


def test_reload_is_idempotent_and_writes_nothing(tmp_path):
    rates, index = write(tmp_path, RATES, "rates.csv"), write(tmp_path, INDEX, "index.csv")
    exchange_rates_load(path=rates, set_name="ecb")
    price_index_load(path=index, set_name="cpi-u")
    with (
        mock.patch("emissions.services.reference.catalogue_changed") as changed,
        CaptureQueriesContext(connection) as queries,
    ):
        again = exchange_rates_load(path=rates, set_name="ecb")
        index_again = price_index_load(path=index, set_name="cpi-u")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert (index_again.created, index_again.updated, index_again.unchanged) == (0, 0, 2)
    # One read of each set and no write (the rest are the loaders' savepoints).
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 2
    assert all(sql.startswith("SELECT") for sql in statements)
    changed.assert_not_called()


def test_a_changed_value_or_source_counts_as_updated(tmp_path):
    exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    changed = RATES.replace("1.2369,BoE", "1.2370,BoE").replace("1.0824,ECB annual average", "1.0824,ECB revised")
    with mock.patch("emissions.services.reference.catalogue_changed") as bumped:
        result = exchange_rates_load(path=write(tmp_path, changed), set_name="ecb")
    assert (result.created, result.updated, result.unchanged) == (0, 2, 1)
    bumped.assert_called_once()
    assert ExchangeRate.objects.get(currency="GBP").rate == Decimal("1.237")
    assert ExchangeRate.objects.get(currency="EUR", year=2024).source == "ECB revised"


def test_an_equal_number_written_differently_is_unchanged(tmp_path):
    exchange_rates_load(path=write(tmp_path, RATES), set_name="ecb")
    result = exchange_rates_load(path=write(tmp_path, RATES.replace("1.0530", "1.053000")), set_name="ecb")
    assert (result.updated, result.unchanged) == (0, 3)


@pytest.mark.parametrize("name", ["", "ECB", "Budget rates", "-ecb", ".x", "a" * 33, "büdget"])
def test_a_bad_set_name_is_refused_before_anything_is_written(tmp_path, name):
    with pytest.raises(ReferenceDataError, match=r"^data\.csv: '.*' is not a set name: use lower-case letters"):
        exchange_rates_load(path=write(tmp_path, RATES), set_name=name)
    with pytest.raises(ReferenceDataError, match="is not a set name"):
        price_index_load(path=write(tmp_path, INDEX), set_name=name)
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0


def test_an_empty_file_loads_nothing(tmp_path):
    result = price_index_load(path=write(tmp_path, "currency,year,value\n"), set_name="cpi-u")
    assert (result.rows, result.first_year, result.last_year) == (0, None, None)
    assert result.summary() == "Price indexes (set 'cpi-u'): 0 rows, 0 currencies: 0 created, 0 updated, 0 unchanged."


# -- the shipped tables ------------------------------------------------------------------------


def test_shipped_tables_load_into_the_default_sets_then_are_unchanged():
    loaded = reference_sets_load_shipped(directory=DATA)
    assert loaded.notes == []
    rates, index = loaded.results
    assert rates.summary() == (
        "Exchange rates (set 'ecb'): 835 rows, 41 currencies, 1999-2025: 835 created, 0 updated, 0 unchanged."
    )
    assert index.summary() == (
        "Price indexes (set 'cpi-u'): 113 rows, 1 currency, 1913-2025: 113 created, 0 updated, 0 unchanged."
    )
    assert ExchangeRate.objects.filter(set_name="ecb").count() == 835
    assert PriceIndex.objects.filter(set_name="cpi-u").count() == 113
    # The SOURCES.md worked example: 1 EUR in 2024, and the CPI-U of 2022 and 2024.
    assert ExchangeRate.objects.get(currency="EUR", year=2024).rate == Decimal("1.0823804688")
    assert PriceIndex.objects.get(year=2022).value == Decimal("292.655")

    again = reference_sets_load_shipped(directory=DATA)
    assert [(r.created, r.updated, r.unchanged) for r in again.results] == [(0, 0, 835), (0, 0, 113)]


def shipped_copy(directory: Path) -> tuple[Path, Path]:
    rates, index = directory / SHIPPED_EXCHANGE_RATES, directory / SHIPPED_PRICE_INDEX
    rates.parent.mkdir(parents=True)
    shutil.copyfile(DATA / SHIPPED_EXCHANGE_RATES, rates)
    shutil.copyfile(DATA / SHIPPED_PRICE_INDEX, index)
    return rates, index


@pytest.mark.parametrize(("which", "column", "bad"), [(0, "rate", "-1"), (1, "value", "n/a")])
def test_a_bad_row_in_the_middle_of_either_shipped_file_writes_nothing_of_either(tmp_path, which, column, bad):
    files = shipped_copy(tmp_path)
    lines = files[which].read_text(encoding="utf-8").splitlines(keepends=True)
    middle = len(lines) // 2
    header = lines[0].rstrip().split(",")
    cells = lines[middle].split(",", len(header) - 1)
    cells[header.index(column)] = bad
    lines[middle] = ",".join(cells)
    files[which].write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ReferenceDataError) as exc:
        reference_sets_load_shipped(directory=tmp_path)
    assert str(exc.value).startswith(f"{files[which].name}: line {middle + 1}, column '{column}': '{bad}'")
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0


def test_a_missing_shipped_file_is_a_note_and_the_other_still_loads(tmp_path):
    _, index = shipped_copy(tmp_path)
    index.unlink()
    loaded = reference_sets_load_shipped(directory=tmp_path)
    assert [result.set_name for result in loaded.results] == ["ecb"]
    assert len(loaded.notes) == 1
    assert "reference/bls_cpi_u_annual.csv not found" in loaded.notes[0]
    assert "CUUR0000SA0" in loaded.notes[0]
    assert "section 6 of the factor data's SOURCES.md" in loaded.notes[0]
    assert PriceIndex.objects.count() == 0

    nothing = reference_sets_load_shipped(directory=tmp_path / "empty")
    assert nothing.results == []
    assert len(nothing.notes) == 2
    assert '"Source: ECB"' in nothing.notes[0]
