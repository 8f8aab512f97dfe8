"""DESNZ 2025 flat-file parser on the published file and on malformed copies."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from emissions.importers import desnz
from emissions.importers.base import FactorFileError

HEADER = "\ufeffID,Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2025\n"


@pytest.fixture(scope="module")
def parsed():
    (result,) = desnz.parse(Path(settings.FACTOR_DATA_DIR))
    return result


@pytest.fixture(scope="module")
def factors(parsed):
    return {f.activity: f for f in parsed.factors}


def test_uk_grid_electricity(factors):
    grid = factors["desnz:7_400_4000_5"]
    assert grid.co2e_per_unit == Decimal("0.17700")
    assert (grid.unit, grid.unit_label, grid.region, grid.year, grid.gwp_set) == ("kWh", "kWh", "GB", 2025, "AR5")
    assert grid.gases == {"CO2": "0.17489", "CH4": "0.0009", "N2O": "0.00122"}
    assert grid.name == "UK electricity / Electricity generated / Electricity: UK / kWh"
    assert grid.category == "Scope 2 / UK electricity"


def test_diesel_per_litre(factors):
    diesel = factors["desnz:1_101_1011_8"]
    assert diesel.co2e_per_unit == Decimal("2.57082")
    assert (diesel.unit, diesel.unit_label) == ("L", "litres")
    assert diesel.name == "Fuels / Liquid fuels / Diesel (average biofuel blend)"


def test_counts_and_skip_reasons(parsed):
    # 8,740 rows: every row is either part of a factor (its total, its gases, its outside-of-scopes CO2)
    # or skipped with a reason.
    rows_in_factors = sum(1 + len(f.gases) + (f.biogenic_co2_per_unit is not None) for f in parsed.factors)
    assert rows_in_factors + sum(parsed.skipped.values()) == 8740
    assert len(parsed.factors) == 2616
    assert parsed.skipped["output unit 'kWh (Net CV)' is not kg CO2e"] == 438
    # Every publisher unit of the 2025 file has a mapping, so no factor is lost to one.
    assert not [reason for reason in parsed.skipped if reason.startswith("no unit mapping")]
    units = {f.unit_label: f.unit for f in parsed.factors}
    assert units["million litres"] == "megaliter"
    assert units["per FTE Working Hour"] == "FTE*hour"
    assert parsed.skipped[desnz.SKIP_EMPTY] > 0


def _outside_of_scopes_rows() -> list[dict[str, str]]:
    with (Path(settings.FACTOR_DATA_DIR) / desnz.FILE).open(encoding="utf-8-sig", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["Scope"] == "Outside of Scopes"]


def test_outside_of_scopes_co2_is_the_biogenic_co2_of_its_scope_1_or_2_factor(parsed, factors):
    outside = _outside_of_scopes_rows()
    assert len(outside) == 58
    with_biogenic = {f.activity: f for f in parsed.factors if f.biogenic_co2_per_unit is not None}
    # 58 rows: 2 empty (compressed/liquefied biomethane per litre), 2 forecourt-fuel rows per plain kWh (the
    # factors are per kWh Net CV or Gross CV, so which one is ambiguous), 54 matched.
    assert len(with_biogenic) == 54
    assert parsed.skipped[desnz.SKIP_BIOGENIC_UNMATCHED] == 2
    assert {f.category for f in with_biogenic.values()} == {
        "Scope 1 / Bioenergy",
        "Scope 1 / Fuels",
        "Scope 2 / UK electricity",
    }
    # Each matched row is the factor's own fuel and UOM, and its value is the published one.
    by_fuel = {(row["Level 3"].casefold(), row["UOM"]): row["GHG Conversion Factor 2025"] for row in outside}
    for factor in with_biogenic.values():
        fuel = factor.name.split(" / ")[2].casefold()
        assert factor.biogenic_co2_per_unit == Decimal(by_fuel[(fuel, factor.unit_label)])


def test_bioenergy_co2e_already_excludes_the_biogenic_co2(factors):
    biodiesel = factors["desnz:2_103_1032_8"]  # Biodiesel ME, per litre
    assert (biodiesel.co2e_per_unit, biodiesel.biogenic_co2_per_unit) == (Decimal("0.16751"), Decimal("2.39"))
    tallow = factors["desnz:2_103_1035_8"]  # "Biodiesel ME (from tallow)"; its outside row says "Tallow"
    assert tallow.biogenic_co2_per_unit == Decimal("2.39")
    wood = factors["desnz:2_104_1045_15"]  # wood pellets per tonne
    assert (wood.co2e_per_unit, wood.biogenic_co2_per_unit) == (Decimal("55.19389"), Decimal("1677.18"))
    # A fuel with a biofuel blend: its fossil CO2e with the blend's biogenic CO2 beside it.
    assert factors["desnz:1_101_1011_8"].biogenic_co2_per_unit == Decimal("0.14")
    assert factors["desnz:7_400_4000_5"].biogenic_co2_per_unit == Decimal("0.11507")
    # Not combustion: well-to-tank factors of the same fuel carry none.
    assert factors["desnz:12_900_1032_8"].biogenic_co2_per_unit is None


def test_an_outside_of_scopes_row_matching_two_factors_is_skipped(tmp_path):
    body = (
        "1_1_9_8_1,Scope 1,Fuels,Liquid fuels,Blend,,,litres,kg CO2e,2.0\n"
        "2_1_9_8_1,Scope 2,Other,Liquid fuels,Blend,,,litres,kg CO2e,2.5\n"
        "99_1_9_8_2,Outside of Scopes,Outside of scopes,Biofuel,Blend,,,litres,kg CO2e of CO2 per unit,0.3\n"
    )
    (result,) = desnz.parse(_write(tmp_path, body))
    assert [f.biogenic_co2_per_unit for f in result.factors] == [None, None]
    assert dict(result.skipped) == {desnz.SKIP_BIOGENIC_UNMATCHED: 1}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / desnz.FILE
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + body, encoding="utf-8")
    return tmp_path


GOOD = (
    "7_400_4000_5_1,Scope 2,UK electricity,Electricity generated,Electricity: UK,kWh,,kWh,kg CO2e,0.17700\n"
    "7_400_4000_5_2,Scope 2,UK electricity,Electricity generated,Electricity: UK,kWh,,kWh,kg CO2e of CO2 per unit,"
    "0.17489\n"
)


def test_small_file_groups_rows_and_skips_energy_rows(tmp_path):
    body = GOOD + "1_2_3_4_5,Scope 1,Fuels,Gas,,,,kWh (Net CV),kWh (Net CV),10.5\n"
    (result,) = desnz.parse(_write(tmp_path, body))
    assert [(f.activity, f.co2e_per_unit, dict(f.gases)) for f in result.factors] == [
        ("desnz:7_400_4000_5", Decimal("0.177"), {"CO2": "0.17489"})
    ]
    assert dict(result.skipped) == {"output unit 'kWh (Net CV)' is not kg CO2e": 1}


def test_bad_number_names_line_and_column(tmp_path):
    body = GOOD + "1_2_3_4_1,Scope 1,Fuels,Gas,,,,litres,kg CO2e,2,5\n"
    with pytest.raises(FactorFileError, match="line 4: expected 10 fields, found 11"):
        desnz.parse(_write(tmp_path, body))


def test_non_numeric_factor(tmp_path):
    body = GOOD + "1_2_3_4_1,Scope 1,Fuels,Gas,,,,litres,kg CO2e,n/a\n"
    with pytest.raises(FactorFileError, match="line 4, column 'GHG Conversion Factor 2025': 'n/a' is not a number"):
        desnz.parse(_write(tmp_path, body))


def test_missing_column(tmp_path):
    path = tmp_path / desnz.FILE
    path.parent.mkdir(parents=True)
    path.write_text(HEADER.replace(",UOM", ""), encoding="utf-8")
    with pytest.raises(FactorFileError, match="line 1, column 'UOM': missing column"):
        desnz.parse(tmp_path)


def test_bad_id(tmp_path):
    body = "abc,Scope 1,Fuels,Gas,,,,litres,kg CO2e,2\n"
    with pytest.raises(FactorFileError, match="line 2, column 'ID': 'abc' is not a DESNZ ID"):
        desnz.parse(_write(tmp_path, body))
