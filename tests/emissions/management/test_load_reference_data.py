"""manage.py load_reference_data."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from io import StringIO

import pytest
from django.core.management import CommandError

from emissions.calculation import calculate
from emissions.models import ExchangeRate, FactorDataset, PriceIndex
from tests.calculator.helpers import make_input
from tests.factories import EmissionFactorFactory, FactorDatasetFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def files(tmp_path):
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,quote_currency,year,rate,source\nEUR,USD,2024,1.0824,ECB\n", encoding="utf-8")
    index = tmp_path / "cpi.csv"
    index.write_text("currency,year,value,source\nUSD,2022,292.655,BLS\nUSD,2024,313.689,BLS\n", encoding="utf-8")
    return rates, index


def test_loads_both_files_and_the_spend_method_uses_them(org, files):
    rates, index = files
    out = StringIO()
    call_command("load_reference_data", "--exchange-rates", str(rates), "--price-index", str(index), stdout=out)
    assert "Exchange rates (set 'ecb'): 1 row, 1 currency, 2024: 1 created, 0 updated, 0 unchanged." in out.getvalue()
    assert (
        "Price indexes (set 'cpi-u'): 2 rows, 1 currency, 2022-2024: 2 created, 0 updated, 0 unchanged."
        in out.getvalue()
    )
    dataset = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, basis_year=2022)
    factor = EmissionFactorFactory(
        dataset=dataset, region="US", year=2022, unit="USD", currency="USD", co2e_per_unit=Decimal("0.787")
    )
    inp = make_input(
        method="spend", activity=factor.activity, amount=Decimal("100"), unit="EUR", currency="EUR", spend_year=2024
    )
    result = calculate(inp, organization=org)
    # Exact: the engine keeps the conversion as a fraction and rounds only co2e_kg.
    assert result.converted_amount == Fraction("108.24") * Fraction("292.655") / Fraction("313.689")


def test_rerun_reports_unchanged_and_a_changed_value_as_updated(tmp_path, files):
    rates, _ = files
    call_command("load_reference_data", "--exchange-rates", str(rates), stdout=StringIO())
    out = StringIO()
    call_command("load_reference_data", "--exchange-rates", str(rates), stdout=out)
    assert "0 created, 0 updated, 1 unchanged." in out.getvalue()
    revised = tmp_path / "revised.csv"
    revised.write_text("currency,quote_currency,year,rate,source\nEUR,USD,2024,1.09,ECB\n", encoding="utf-8")
    out = StringIO()
    call_command("load_reference_data", "--exchange-rates", str(revised), stdout=out)
    assert "0 created, 1 updated, 0 unchanged." in out.getvalue()
    assert ExchangeRate.objects.get().rate == Decimal("1.09")


def test_named_sets(tmp_path, files):
    rates, index = files
    call_command("load_reference_data", "--exchange-rates", str(rates), "--price-index", str(index), stdout=StringIO())
    out = StringIO()
    call_command(
        "load_reference_data",
        "--exchange-rates",
        str(rates),
        "--exchange-rate-set",
        "budget",
        "--price-index",
        str(index),
        "--price-index-set",
        "ppi",
        stdout=out,
    )
    assert "Exchange rates (set 'budget'): 1 row" in out.getvalue()
    assert "Price indexes (set 'ppi'): 2 rows" in out.getvalue()
    assert sorted(ExchangeRate.objects.values_list("set_name", flat=True)) == ["budget", "ecb"]
    assert sorted(PriceIndex.objects.values_list("set_name", flat=True)) == ["cpi-u", "cpi-u", "ppi", "ppi"]


def test_an_organizations_own_sets(org, files):
    rates, index = files
    out = StringIO()
    args = ["--exchange-rates", str(rates), "--exchange-rate-set", "budget", "--price-index", str(index)]
    call_command("load_reference_data", *args, "--price-index-set", "ppi", "--org", org.slug, stdout=out)
    assert f"Exchange rates (set 'budget', {org.slug} only): 1 row, 1 currency, 2024: 1 created" in out.getvalue()
    assert f"Price indexes (set 'ppi', {org.slug} only): 2 rows" in out.getvalue()
    assert set(ExchangeRate.objects.values_list("organization", "set_name")) == {(org.pk, "budget")}
    assert set(PriceIndex.objects.values_list("organization", "set_name")) == {(org.pk, "ppi")}
    with pytest.raises(CommandError, match="Unknown organization 'nope'"):
        call_command("load_reference_data", *args, "--org", "nope")
    with pytest.raises(CommandError, match="'cpi-u' is the name of a shipped public set"):
        call_command("load_reference_data", "--price-index", str(index), "--org", org.slug)


def test_a_bad_set_name_is_command_error_and_nothing_written(files):
    rates, index = files
    with pytest.raises(CommandError, match=r"rates\.csv: 'Budget' is not a set name.*Nothing was written\."):
        call_command(
            "load_reference_data",
            "--price-index",
            str(index),
            "--exchange-rates",
            str(rates),
            "--exchange-rate-set",
            "Budget",
        )
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0


def test_bad_row_is_command_error_naming_line_and_column_and_nothing_written(tmp_path, files):
    rates, _ = files
    bad_index = tmp_path / "bad.csv"
    bad_index.write_text("currency,year,value,source\nUSD,2022,292.655,BLS\nUSD,2024,-3,BLS\n", encoding="utf-8")
    with pytest.raises(CommandError) as exc:
        call_command("load_reference_data", "--exchange-rates", str(rates), "--price-index", str(bad_index))
    assert "bad.csv: line 3, column 'value'" in str(exc.value)
    assert str(exc.value).endswith("Nothing was written.")
    # The good exchange-rate file was rolled back with the bad index file.
    assert ExchangeRate.objects.count() == 0
    assert PriceIndex.objects.count() == 0


def test_needs_a_file():
    with pytest.raises(CommandError, match="--exchange-rates"):
        call_command("load_reference_data")
