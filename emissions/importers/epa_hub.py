"""US EPA GHG Emission Factors Hub, 2024 edition (CSV extraction of EPA's workbook; public domain).

Imported tables (activity keys in brackets):

- Table 1 stationary combustion per physical unit, fuels with CO2, CH4 and N2O factors
  [``epa_hub:stationary:<fuel>:<unit>``];
- Table 2 mobile combustion, CO2 only [``epa_hub:mobile-co2:<fuel>:<unit>``];
- Table 8 Scope 3 categories 4/9 transport [``epa_hub:transport:<vehicle>:<vehicle-mile|ton-mile>``];
- Table 9 Scope 3 categories 5/12 waste [``epa_hub:waste:<material>:<treatment>``];
- Table 10 Scope 3 categories 6/7 travel [``epa_hub:travel:<vehicle>:<vehicle-mile|passenger-mile>``].

CO2e = CO2 + CH4 x GWP + N2O x GWP with the AR5 GWP-100 table (the Hub's basis), the gram
values converted to kg through ``calculator.units``. The waste table is published in metric
tons CO2e (EPA states AR4 GWPs for it), so those factors carry ``gwp_set="AR4"``.

Biogenic CO2: the Hub files biomass fuels under Table 1 headings that start "Biomass Fuels" (solid,
gaseous, liquid, kraft pulping liquor) and, as the GHG Protocol does, reports their CO2 separately.
Peat, filed there too, is fossil for the GHG Protocol and the IPCC, so its CO2 stays in CO2e. The
others' CO2 becomes ``biogenic_co2_per_unit`` and is left out of ``co2e_per_unit`` and ``gases``, which
then hold CH4 and N2O only. Table 2 (mobile, CO2 only) has no headings: a mobile fuel is biomass when
Table 1 files the same fuel under a biomass heading (biodiesel and ethanol), and its CO2e is then 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from django.utils.text import slugify

from calculator.units import UnitError, convert, publisher_unit
from emissions.importers.base import (
    CsvRow,
    DatasetSpec,
    FactorFileError,
    FactorImportError,
    Importer,
    ParsedDataset,
    clean_name,
    decimal_str,
    read_csv,
)

SOURCE = "epa_hub"
FOLDER = "epa_ghg_emission_factors_hub_2024"
STATIONARY_FILE = f"{FOLDER}/stationary-combustion.csv"
MOBILE_CO2_FILE = f"{FOLDER}/mobile-combustion-co2.csv"
TRANSPORT_FILE = (
    f"{FOLDER}/scope-3-category-4-upstream-transportation-and-distribution-and-category-9-downstream-"
    "transportation-and-distribution.csv"
)
WASTE_FILE = (
    f"{FOLDER}/scope-3-category-5-waste-generated-in-operations-and-category-12-end-of-life-treatment-of-"
    "sold-products.csv"
)
TRAVEL_FILE = f"{FOLDER}/scope-3-category-6-business-travel-and-category-7-employee-commuting.csv"
URL = "https://www.epa.gov/climateleadership/ghg-emission-factors-hub"

DATASET = DatasetSpec(
    source=SOURCE,
    version="2024",
    name="US EPA GHG Emission Factors Hub 2024",
    publisher="US EPA Center for Corporate Climate Leadership",
    licence="US federal government work, public domain in the US",
    url=URL,
    basis_year=2024,
    gwp_set="AR5",
)
WASTE_GWP_SET = "AR4"

NOTES = (
    "epa_ghg_emission_factors_hub_2025 (XLSX) skipped: only the 2024 CSV tables are imported.",
    "Hub tables 3-7, 11 and 12 (CH4/N2O by vehicle model year, eGRID electricity, steam, GWPs) are not imported.",
)

# Vehicle/transport tables (8 and 10): same layout.
VEHICLE = "Vehicle Type"
CO2_PER_UNIT = "CO2 Factor (kg CO2 / unit)"
CH4_PER_UNIT = "CH4 Factor (g CH4 / unit)"
N2O_PER_UNIT = "N2O Factor (g N2O / unit)"
UNITS = "Units"
VEHICLE_COLUMNS = [VEHICLE, CO2_PER_UNIT, CH4_PER_UNIT, N2O_PER_UNIT, UNITS]

# Table 9: treatment slug -> how its column header starts (lower-case, spaces collapsed). The
# extracted headers have irregular parentheses and double spaces, so match on the start.
MATERIAL = "Material"
WASTE_UNIT_TEXT = "metric tons co2e / short ton material"
TREATMENTS: dict[str, str] = {
    "recycled": "recycled",
    "landfilled": "landfilled",
    "combusted": "combusted",
    "composted": "composted",
    "anaerobically-digested-dry": "anaerobically digested (dry",
    "anaerobically-digested-wet": "anaerobically digested (wet",
}

FUEL_CATEGORY = "Fuel Category"
# Table 1 headings of the fuels whose CO2 is biogenic ("Biomass Fuels - Solid", "... - Liquid", ...).
BIOMASS_CATEGORY_PREFIX = "Biomass Fuels"
# Filed under a biomass heading, but fossil for the GHG Protocol and the IPCC (peat renews over millennia):
# its CO2 stays in CO2e.
FOSSIL_UNDER_BIOMASS_HEADING = frozenset({"Peat"})
FUEL_TYPE = "Fuel Type"
STATIONARY_GASES = {
    "CO2": ("CO2 Factor", "CO2 Factor Unit", "kg"),
    "CH4": ("CH4 Factor", "CH4 Factor Unit", "g"),
    "N2O": ("N2O Factor", "N2O Factor Unit", "g"),
}
MOBILE_CO2 = "kg CO2 per unit"
MOBILE_UNIT = "Unit"


def _unit(row: CsvRow, label: str, column: str) -> str:
    try:
        return publisher_unit(label)
    except UnitError as exc:
        raise row.error(str(exc), column=column) from None


def _co2e(
    gwp: Mapping[str, Decimal], *, co2_kg: Decimal, ch4_g: Decimal, n2o_g: Decimal, biogenic: bool = False
) -> tuple[Decimal, dict[str, str]]:
    """Total kg CO2e and the per-gas kg CO2e components of one row; without the CO2 when it is ``biogenic``."""
    ch4 = convert(ch4_g, "g", "kg") * gwp["CH4"]
    n2o = convert(n2o_g, "g", "kg") * gwp["N2O"]
    gases = {"CH4": decimal_str(ch4), "N2O": decimal_str(n2o)}
    if biogenic:
        return ch4 + n2o, gases
    return co2_kg + ch4 + n2o, {"CO2": decimal_str(co2_kg), **gases}


def _vehicle_table(
    directory: Path, result: ParsedDataset, gwp: Mapping[str, Decimal], *, file: str, group: str, category: str
) -> None:
    path = directory / file
    for row in read_csv(path, required=VEHICLE_COLUMNS):
        name = clean_name(row.text(VEHICLE))
        if not name:
            raise row.error("the vehicle type is empty", column=VEHICLE)
        label = row.text(UNITS)
        unit = _unit(row, label, UNITS)
        co2e, gases = _co2e(
            gwp,
            co2_kg=row.required_decimal(CO2_PER_UNIT),
            ch4_g=row.required_decimal(CH4_PER_UNIT),
            n2o_g=row.required_decimal(N2O_PER_UNIT),
        )
        if result.skip_negative(co2e):
            continue
        result.add_row(
            row,
            activity=f"epa_hub:{group}:{slugify(name)}:{slugify(label)}",
            name=f"{name} ({label})",
            category=category,
            unit=unit,
            unit_label=label,
            region="US",
            co2e_per_unit=co2e,
            gases=gases,
        )


def _waste_table(directory: Path, result: ParsedDataset) -> None:
    path = directory / WASTE_FILE
    rows = read_csv(path, required=[MATERIAL])
    columns: dict[str, str] | None = None
    unit = publisher_unit("short ton")
    for row in rows:
        if columns is None:
            columns = _waste_columns(row)
        material = clean_name(row.text(MATERIAL))
        if not material:
            raise row.error("the material is empty", column=MATERIAL)
        for treatment, column in columns.items():
            tonnes = row.decimal(column)
            if tonnes is None:
                result.skipped["treatment not applicable (empty cell)"] += 1
                continue
            if result.skip_negative(tonnes):
                continue
            result.add_row(
                row,
                activity=f"epa_hub:waste:{slugify(material)}:{treatment}",
                name=f"{material}, {treatment.replace('-', ' ')}",
                category="Scope 3 categories 5/12: waste",
                unit=unit,
                unit_label="short ton material",
                region="US",
                # Published in metric tons CO2e per short ton of material.
                co2e_per_unit=convert(tonnes, "t", "kg"),
                gwp_set=WASTE_GWP_SET,
            )


def _waste_columns(row: CsvRow) -> dict[str, str]:
    """Treatment slug -> header of its column; FactorFileError when one is missing or in other units."""
    normalized = {" ".join(name.lower().split()): name for name in row.values}
    columns: dict[str, str] = {}
    for treatment, prefix in TREATMENTS.items():
        found = [original for text, original in normalized.items() if text.startswith(prefix)]
        if len(found) != 1:
            raise FactorFileError(
                row.path, f"expected one '{prefix} (...)' column, found {len(found)}", line=1, column=prefix
            )
        if WASTE_UNIT_TEXT not in " ".join(found[0].lower().split()):
            raise FactorFileError(row.path, f"expected values in '{WASTE_UNIT_TEXT}'", line=1, column=found[0])
        columns[treatment] = found[0]
    return columns


def _stationary_table(directory: Path, result: ParsedDataset, gwp: Mapping[str, Decimal]) -> set[str]:
    """Add Table 1's factors; return the names of the fuels it files under a biomass heading."""
    path = directory / STATIONARY_FILE
    required = [FUEL_CATEGORY, FUEL_TYPE, *(c for pair in STATIONARY_GASES.values() for c in pair[:2])]
    biomass: set[str] = set()
    for row in read_csv(path, required=required):
        fuel = clean_name(row.text(FUEL_TYPE))
        is_biomass = (
            row.text(FUEL_CATEGORY).startswith(BIOMASS_CATEGORY_PREFIX) and fuel not in FOSSIL_UNDER_BIOMASS_HEADING
        )
        if is_biomass:
            biomass.add(fuel)
        co2, ch4, n2o = (row.decimal(column) for column, _, _ in STATIONARY_GASES.values())
        if co2 is None or ch4 is None or n2o is None:
            result.skipped["stationary fuel without CO2, CH4 and N2O per physical unit"] += 1
            continue
        # Each unit column reads "<kg|g> <gas> per <physical unit>"; all three must name the same unit.
        physical: set[str] = set()
        for gas, (_, unit_column, mass) in STATIONARY_GASES.items():
            text = row.text(unit_column)
            prefix = f"{mass} {gas} per "
            if not text.startswith(prefix):
                raise row.error(f"expected '{prefix}<unit>', found '{text}'", column=unit_column)
            physical.add(text.removeprefix(prefix).strip())
        if len(physical) != 1:
            raise row.error(f"the gas factors are per different units: {sorted(physical)}")
        label = physical.pop()
        unit = _unit(row, label, STATIONARY_GASES["CO2"][1])
        co2e, gases = _co2e(gwp, co2_kg=co2, ch4_g=ch4, n2o_g=n2o, biogenic=is_biomass)
        if result.skip_negative(co2e) or (is_biomass and result.skip_negative(co2)):
            continue
        result.add_row(
            row,
            activity=f"epa_hub:stationary:{slugify(fuel)}:{slugify(label)}",
            name=f"{fuel} (stationary combustion, per {label})",
            category=f"Stationary combustion: {clean_name(row.text(FUEL_CATEGORY))}",
            unit=unit,
            unit_label=label,
            region="US",
            co2e_per_unit=co2e,
            gases=gases,
            biogenic_co2_per_unit=co2 if is_biomass else None,
        )
    return biomass


def _mobile_co2_table(directory: Path, result: ParsedDataset, biomass: set[str]) -> None:
    """Add Table 2's factors; the CO2 of a fuel in ``biomass`` (Table 1's biomass fuels) is biogenic."""
    path = directory / MOBILE_CO2_FILE
    for row in read_csv(path, required=[FUEL_TYPE, MOBILE_CO2, MOBILE_UNIT]):
        fuel = clean_name(row.text(FUEL_TYPE))
        label = row.text(MOBILE_UNIT)
        unit = _unit(row, label, MOBILE_UNIT)
        co2 = row.required_decimal(MOBILE_CO2)
        if result.skip_negative(co2):
            continue
        is_biomass = fuel in biomass
        result.add_row(
            row,
            activity=f"epa_hub:mobile-co2:{slugify(fuel)}:{slugify(label)}",
            name=f"{fuel} (mobile combustion, CO2 only, per {label})",
            category="Mobile combustion (CO2)",
            unit=unit,
            unit_label=label,
            region="US",
            # A biomass fuel's CO2 is biogenic, and this table has no CH4 or N2O: its CO2e here is 0.
            co2e_per_unit=Decimal(0) if is_biomass else co2,
            gases={} if is_biomass else {"CO2": decimal_str(co2)},
            # CH4 and N2O of vehicles depend on vehicle type and model year (Hub tables 3-5).
            extra={"gases_included": "CO2 only"},
            biogenic_co2_per_unit=co2 if is_biomass else None,
        )


def parse(directory: Path, *, gwp: Mapping[str, Decimal] | None = None) -> list[ParsedDataset]:
    """Precondition: ``gwp`` is the AR5 GWP-100 table and holds CH4 and N2O."""
    if gwp is None or "CH4" not in gwp or "N2O" not in gwp:
        raise FactorImportError("epa_hub needs the AR5 GWPs of CH4 and N2O: import ipcc_gwp first.")
    result = ParsedDataset(dataset=DATASET)
    biomass = _stationary_table(directory, result, gwp)
    _mobile_co2_table(directory, result, biomass)
    _vehicle_table(
        directory,
        result,
        gwp,
        file=TRANSPORT_FILE,
        group="transport",
        category="Scope 3 categories 4/9: transportation and distribution",
    )
    _waste_table(directory, result)
    _vehicle_table(
        directory,
        result,
        gwp,
        file=TRAVEL_FILE,
        group="travel",
        category="Scope 3 categories 6/7: business travel and commuting",
    )
    return [result]


IMPORTER = Importer(
    source=SOURCE,
    files=(STATIONARY_FILE, MOBILE_CO2_FILE, TRANSPORT_FILE, WASTE_FILE, TRAVEL_FILE),
    datasets=(DATASET,),
    parse=parse,
    url=URL,
    needs_gwp=True,
    notes=NOTES,
)
