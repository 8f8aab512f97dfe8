"""EPA GHG Emission Factors Hub 2024 parser on the published CSV tables and on malformed copies."""

from __future__ import annotations

import csv
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils.text import slugify

from calculator.units import convert
from emissions.importers import epa_hub, ipcc_gwp
from emissions.importers.base import FactorFileError, FactorImportError, ParsedDataset

DATA = Path(settings.FACTOR_DATA_DIR)


@pytest.fixture(scope="module")
def ar5() -> dict[str, Decimal]:
    parsed = {result.dataset.version: result for result in ipcc_gwp.parse(DATA)}
    return ipcc_gwp.gwp_table(parsed["AR5"])


@pytest.fixture(scope="module")
def parsed(ar5: dict[str, Decimal]) -> ParsedDataset:
    (result,) = epa_hub.parse(DATA, gwp=ar5)
    return result


@pytest.fixture(scope="module")
def factors(parsed):
    return {f.activity: f for f in parsed.factors}


def _co2e(co2_kg: str, ch4_g: str, n2o_g: str, ar5) -> Decimal:
    return (
        Decimal(co2_kg)
        + convert(Decimal(ch4_g), "g", "kg") * ar5["CH4"]
        + convert(Decimal(n2o_g), "g", "kg") * ar5["N2O"]
    )


def test_table_counts(parsed: ParsedDataset) -> None:
    groups: dict[str, int] = {}
    for factor in parsed.factors:
        group = factor.activity.split(":")[1]
        groups[group] = groups.get(group, 0) + 1
    # T1: 63 fuels, 5 kraft liquors without physical-unit factors; T9: 61 materials x 6 treatments, 183 blank.
    assert groups == {"stationary": 58, "mobile-co2": 10, "transport": 7, "waste": 183, "travel": 12}
    assert parsed.skipped["stationary fuel without CO2, CH4 and N2O per physical unit"] == 5
    assert parsed.skipped["treatment not applicable (empty cell)"] == 183


def test_transport_truck_and_footnotes_cleaned(factors, ar5):
    truck = factors["epa_hub:transport:medium-and-heavy-duty-truck:ton-mile"]
    assert truck.unit == "short_ton*mile"
    expected = _co2e("0.16804260183413908", "0.001471682563530259", "0.004664956050435538", ar5)
    assert truck.co2e_per_unit == expected.quantize(Decimal("1e-15"))
    assert Decimal(truck.gases["CO2"]) == Decimal("0.16804260183413908")
    car = factors["epa_hub:transport:passenger-car:vehicle-mile"]
    assert car.name == "Passenger Car (vehicle-mile)"
    assert car.unit == "vehicle*mile"


def test_travel_passenger_mile(factors):
    rail = factors["epa_hub:travel:intercity-rail-national-average:passenger-mile"]
    # 0.113 kg CO2 + 0.0092 g CH4 x 28 + 0.0026 g N2O x 265
    assert rail.co2e_per_unit == Decimal("0.1139466")
    assert rail.unit == "passenger*mile"
    assert "epa_hub:travel:air-travel-long-haul-2300-miles:passenger-mile" in factors


def test_waste_is_kg_co2e_per_short_ton(factors):
    cans = factors["epa_hub:waste:aluminum-cans:recycled"]
    assert cans.co2e_per_unit == Decimal("60")
    assert (cans.unit, cans.gwp_set, cans.gases) == ("short_ton", "AR4", {})
    assert factors["epa_hub:waste:food-waste-non-meat:anaerobically-digested-wet"].co2e_per_unit == Decimal("110")
    assert "epa_hub:waste:ldpe:recycled" not in factors


def test_stationary_and_mobile_combustion(factors):
    anthracite = factors["epa_hub:stationary:anthracite:short-ton"]
    # 2602 kg CO2 + 276 g CH4 x 28 + 40 g N2O x 265
    assert anthracite.co2e_per_unit == Decimal("2620.328")
    assert anthracite.gases == {"CO2": "2602", "CH4": "7.728", "N2O": "10.6"}
    assert factors["epa_hub:stationary:natural-gas:scf"].unit == "ft**3"
    diesel = factors["epa_hub:mobile-co2:diesel-fuel:gallon"]
    assert (diesel.co2e_per_unit, diesel.unit, diesel.extra["gases_included"]) == (
        Decimal("10.21"),
        "gallon",
        "CO2 only",
    )


def _hub_rows(name: str) -> list[dict[str, str]]:
    with (DATA / epa_hub.FOLDER / name).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_biomass_fuel_has_its_co2_as_biogenic_not_co2e(parsed, factors, ar5):
    """The fuels the Hub files under a "Biomass Fuels" heading, read from the file, not from a list kept here."""
    stationary = _hub_rows("stationary-combustion.csv")
    headed = {row["Fuel Type"] for row in stationary if row["Fuel Category"].startswith("Biomass Fuels")}
    assert "Peat" in headed  # the Hub's heading; fossil for the GHG Protocol (test below)
    biomass = headed - {"Peat"}
    with_units = [row for row in stationary if row["Fuel Type"] in biomass and row["CO2 Factor"]]
    mobile = [row for row in _hub_rows("mobile-combustion-co2.csv") if row["Fuel Type"] in biomass]
    assert len(with_units) == 9 and {row["Fuel Type"] for row in mobile} == {"Biodiesel (100%)", "Ethanol (100%)"}

    separated = {f.activity: f for f in parsed.factors if f.biogenic_co2_per_unit is not None}
    assert len(separated) == 11 == len(with_units) + len(mobile)
    for row in with_units:
        unit = row["CO2 Factor Unit"].removeprefix("kg CO2 per ")
        factor = factors[f"epa_hub:stationary:{slugify(row['Fuel Type'])}:{slugify(unit)}"]
        assert factor.activity in separated
        assert factor.biogenic_co2_per_unit == Decimal(row["CO2 Factor"])
        ch4_and_n2o = _co2e("0", row["CH4 Factor"], row["N2O Factor"], ar5)
        assert factor.co2e_per_unit == ch4_and_n2o.quantize(Decimal("1e-15"))
        assert set(factor.gases) == {"CH4", "N2O"}
    for row in mobile:
        factor = factors[f"epa_hub:mobile-co2:{slugify(row['Fuel Type'])}:{slugify(row['Unit'])}"]
        # Table 2 has CO2 only, all of it biogenic: nothing of these rows counts as CO2e.
        assert (factor.co2e_per_unit, factor.biogenic_co2_per_unit) == (0, Decimal(row["kg CO2 per unit"]))
        assert factor.gases == {}
    # Fossil fuels keep their CO2 in CO2e.
    assert all(f.biogenic_co2_per_unit is None for f in parsed.factors if f.activity not in separated)


def test_peat_is_fossil_though_filed_under_biomass(factors, ar5):
    """Peat: the Hub files it under "Biomass Fuels - Solid"; the GHG Protocol and the IPCC count it as fossil."""
    (row,) = [row for row in _hub_rows("stationary-combustion.csv") if row["Fuel Type"] == "Peat"]
    assert row["Fuel Category"].startswith("Biomass Fuels")
    unit = row["CO2 Factor Unit"].removeprefix("kg CO2 per ")
    peat = factors[f"epa_hub:stationary:peat:{slugify(unit)}"]
    assert peat.biogenic_co2_per_unit is None
    assert peat.co2e_per_unit == _co2e(row["CO2 Factor"], row["CH4 Factor"], row["N2O Factor"], ar5).quantize(
        Decimal("1e-15")
    )
    assert set(peat.gases) == {"CO2", "CH4", "N2O"}


def test_biodiesel_by_hand(factors):
    """Hub 2024 biodiesel (100 %), per US gallon: 9.45 kg CO2, 0.14 g CH4, 0.01 g N2O; AR5 CH4 28, N2O 265."""
    biodiesel = factors["epa_hub:stationary:biodiesel-100:gallon"]
    # CO2e = 0.14 g x 28 + 0.01 g x 265 = 3.92 g + 2.65 g = 0.00657 kg; the 9.45 kg of CO2 are biogenic.
    assert biodiesel.co2e_per_unit == Decimal("0.00657")
    assert biodiesel.biogenic_co2_per_unit == Decimal("9.45")
    assert biodiesel.gases == {"CH4": "0.00392", "N2O": "0.00265"}
    # Per litre (1 US gallon = 3.785411784 L): 2.4964 kg biogenic CO2, the ~2.50 kg once counted as CO2e.
    per_litre = biodiesel.biogenic_co2_per_unit / Decimal("3.785411784")
    assert per_litre.quantize(Decimal("0.0001")) == Decimal("2.4964")
    assert factors["epa_hub:mobile-co2:biodiesel-100:gallon"].biogenic_co2_per_unit == Decimal("9.45")


def test_needs_ch4_and_n2o_gwps():
    with pytest.raises(FactorImportError, match="import ipcc_gwp first"):
        epa_hub.parse(DATA, gwp={"CH4": Decimal("28")})


@pytest.fixture
def hub_copy(tmp_path):
    shutil.copytree(DATA / epa_hub.FOLDER, tmp_path / epa_hub.FOLDER)
    for path in (tmp_path / epa_hub.FOLDER).iterdir():
        path.chmod(0o644)
    return tmp_path


def test_stationary_units_must_agree(hub_copy, ar5):
    path = hub_copy / epa_hub.STATIONARY_FILE
    path.write_text(path.read_text(encoding="utf-8-sig").replace("g CH4 per short ton", "g CH4 per gallon", 1))
    with pytest.raises(FactorFileError, match=r"stationary-combustion\.csv, line 2: the gas factors are per different"):
        epa_hub.parse(hub_copy, gwp=ar5)


def test_waste_bad_number_and_missing_treatment(hub_copy, ar5):
    path = hub_copy / epa_hub.WASTE_FILE
    original = path.read_text(encoding="utf-8-sig")
    path.write_text(original.replace("Glass,0.05,", "Glass,five,", 1))
    with pytest.raises(
        FactorFileError,
        match=r"line 6, column 'Recycled \(Metric Tons CO2e / Short Ton Material\)': "
        r"'five' is not a number",
    ):
        epa_hub.parse(hub_copy, gwp=ar5)
    path.write_text(original.replace("Composted (", "Compost (", 1))
    with pytest.raises(FactorFileError, match="expected one 'composted"):
        epa_hub.parse(hub_copy, gwp=ar5)
