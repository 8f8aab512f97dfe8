"""calculator.reference: CSV loaders for exchange rates and price indexes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.models import ExchangeRate, PriceIndex
from emissions.services.reference import ReferenceDataError, _digits, exchange_rates_load, price_index_load
from tests.factories import ExchangeRateFactory, PriceIndexFactory

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
    result = exchange_rates_load(path=write(tmp_path, RATES))
    assert (result.created, result.updated) == (3, 0)
    rate = ExchangeRate.objects.get(currency="EUR", quote_currency="USD", year=2024)
    assert rate.rate == Decimal("1.0824")
    assert rate.source == "ECB annual average"


def test_exchange_rates_upsert_by_key(tmp_path):
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("9"))
    result = exchange_rates_load(path=write(tmp_path, RATES))
    assert (result.created, result.updated) == (2, 1)
    assert ExchangeRate.objects.count() == 3
    assert ExchangeRate.objects.get(currency="EUR", year=2022).rate == Decimal("1.053")


def test_price_index_load_and_upsert(tmp_path):
    PriceIndexFactory(currency="USD", year=2022, value=Decimal("1"))
    result = price_index_load(path=write(tmp_path, INDEX))
    assert (result.created, result.updated) == (1, 1)
    assert PriceIndex.objects.get(currency="USD", year=2022).value == Decimal("292.655")


def test_bom_and_missing_source_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffcurrency,year,value\r\nUSD,2023,304.702\r\n", encoding="utf-8")
    price_index_load(path=path)
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
        exchange_rates_load(path=write(tmp_path, text))
    assert (exc.value.line, exc.value.column) == (line, column)
    assert f"line {line}, column '{column}'" in str(exc.value)
    assert ExchangeRate.objects.count() == 0


def test_missing_column_is_reported_on_the_header(tmp_path):
    with pytest.raises(ReferenceDataError) as exc:
        price_index_load(path=write(tmp_path, "currency,value\nUSD,1\n"))
    assert (exc.value.line, exc.value.column) == (1, "year")


def test_bad_price_index_value(tmp_path):
    with pytest.raises(ReferenceDataError) as exc:
        price_index_load(path=write(tmp_path, INDEX + "USD,2025,Infinity,x\n"))
    assert (exc.value.line, exc.value.column) == (4, "value")
    assert PriceIndex.objects.count() == 0


def test_missing_file(tmp_path):
    with pytest.raises(ReferenceDataError, match="cannot open"):
        price_index_load(path=tmp_path / "absent.csv")


def test_digits_come_from_the_model_field():
    assert _digits(ExchangeRate, "rate") == {"max_digits": 20, "decimal_places": 10}
    assert _digits(PriceIndex, "value") == {"max_digits": 20, "decimal_places": 6}
    with pytest.raises(TypeError, match=r"ExchangeRate\.currency is not a DecimalField"):
        _digits(ExchangeRate, "currency")


@pytest.mark.parametrize("year", ["1899", "2101", "24", "20x4"])
def test_a_year_outside_the_calculators_range_is_refused(tmp_path, year):
    path = write(tmp_path, f"currency,quote_currency,year,rate\nEUR,USD,{year},1.08\n")
    with pytest.raises(ReferenceDataError) as exc:
        exchange_rates_load(path=path)
    assert (exc.value.line, exc.value.column) == (2, "year")
    assert "from 1900 to 2100" in str(exc.value)
