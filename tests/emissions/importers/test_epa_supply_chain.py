"""EPA supply chain parser on the published v1.3.0 files and on malformed copies."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from emissions.importers import epa_supply_chain, ipcc_gwp
from emissions.importers.base import FactorFileError, FactorImportError

DATA = Path(settings.FACTOR_DATA_DIR)


@pytest.fixture(scope="module")
def ar5():
    parsed = {result.dataset.version: result for result in ipcc_gwp.parse(DATA)}
    return ipcc_gwp.gwp_table(parsed["AR5"])


@pytest.fixture(scope="module")
def factors(ar5):
    (result,) = epa_supply_chain.parse(DATA, gwp=ar5)
    return {f.activity: f for f in result.factors}


def test_one_factor_per_naics_commodity(factors):
    assert len(factors) == 1016
    assert all(
        f.unit == "USD" and f.currency == "USD" and f.region == "US" and f.year == 2022 for f in factors.values()
    )


def test_iron_and_steel_mills_published_values(factors):
    steel = factors["naics:331110"]
    assert steel.name == "Iron and Steel Mills and Ferroalloy Manufacturing"
    assert steel.co2e_per_unit == Decimal("0.787")
    assert steel.gwp_set == "AR5"
    assert steel.extra == {
        "without_margins": "0.769",
        "margins": "0.018",
        "useeio_code": "331110",
        "price_basis": "purchaser",
    }


def test_gases_are_with_margins_masses_times_ar5_gwp(factors, ar5):
    gases = factors["naics:331110"].gases
    assert len(gases) == 18
    assert gases["CO2"] == "0.738"
    # byGHG: Methane with margins = 1.30e-03 kg/USD; HFC-134a = 2.50e-07 kg/USD.
    assert Decimal(gases["CH4"]) == Decimal("1.30e-03") * ar5["CH4"]
    assert Decimal(gases["HFC-134a"]) == Decimal("2.50e-07") * ar5["HFC134a"]
    assert gases["HFCs and PFCs, unspecified"] == "0.0012"
    # EPA's published total is AR5-based: the components add up to it within rounding.
    assert abs(sum(Decimal(v) for v in gases.values()) - Decimal("0.787")) < Decimal("0.001")


def test_needs_the_gwp_table():
    with pytest.raises(FactorImportError, match="import ipcc_gwp first"):
        epa_supply_chain.parse(DATA)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / epa_supply_chain.FOLDER
    shutil.copytree(DATA / epa_supply_chain.FOLDER, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_bad_number_in_co2e_file(tmp_path, ar5):
    folder = _copy(tmp_path)
    path = tmp_path / epa_supply_chain.CO2E_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",0.848,", ",zero,")
    path.write_text("".join(lines))
    assert folder.is_dir()
    with pytest.raises(
        FactorFileError,
        match=r"CO2e_USD2022\.csv, line 4, column 'Supply Chain Emission Factors "
        r"with Margins': 'zero' is not a number",
    ):
        epa_supply_chain.parse(tmp_path, gwp=ar5)


def test_missing_column_and_unknown_gas_in_by_ghg_file(tmp_path, ar5):
    _copy(tmp_path)
    path = tmp_path / epa_supply_chain.BY_GHG_FILE
    original = path.read_text()
    path.write_text(original.replace('"Unit",', '"Units",', 1))
    with pytest.raises(FactorFileError, match="line 1, column 'Unit': missing column"):
        epa_supply_chain.parse(tmp_path, gwp=ar5)
    path.write_text(original.replace('"Carbon dioxide"', '"Carbon monoxide"', 1))
    with pytest.raises(FactorFileError, match="line 3, column 'GHG': unknown gas 'Carbon monoxide'"):
        epa_supply_chain.parse(tmp_path, gwp=ar5)
