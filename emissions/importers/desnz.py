"""UK DESNZ greenhouse gas reporting conversion factors 2025, flat file (OGL v3.0).

DESNZ publishes each factor as a group of rows sharing an ID prefix: ``<key>_1`` is the total
in kg CO2e, ``<key>_2..4`` the CO2 / CH4 / N2O parts in kg CO2e, and ``_5`` / ``_6`` are energy
(``kWh (Net CV)``) conversions, which are not emission factors. One group becomes the factor
``desnz:<key>`` (e.g. ``desnz:7_400_4000_5``).

Biogenic CO2: DESNZ's CO2e factors for bioenergy (and for fuels and electricity with a biomass
share) leave the CO2 of burning biomass out, and it publishes that CO2 in its "Outside of Scopes"
rows (``99_<...>_2``, kg CO2 per unit). Each such row becomes the ``biogenic_co2_per_unit`` of the
Scope 1 or Scope 2 factor it describes: the one with the same fuel (``Level 3``, ignoring case:
the file spells "Tallow" and "tallow") and the same ``UOM``. A row that matches no factor, or
several, is skipped and counted (the forecourt fuels' plain ``kWh`` rows: the factors are per
``kWh (Net CV)`` and ``kWh (Gross CV)``).

Skipped, and counted in the summary: rows with an empty factor, rows whose output is not
kg CO2e, per-gas rows without a total, outside-of-scopes rows without exactly one factor, and
groups whose UOM has no mapping in ``calculator.units.PUBLISHER_UNITS``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from calculator.units import UnitError, publisher_unit
from emissions.importers.base import (
    CsvRow,
    DatasetSpec,
    Importer,
    ParsedDataset,
    decimal_str,
    read_csv,
)

SOURCE = "desnz"
FILE = "desnz_ghg_conversion_factors_2025/ghg-conversion-factors-2025-flat-format.csv"
URL = "https://www.gov.uk/government/publications/greenhouse-gas-reporting-conversion-factors-2025"

ID = "ID"
SCOPE = "Scope"
LEVELS = ["Level 1", "Level 2", "Level 3", "Level 4"]
COLUMN_TEXT = "Column Text"
UOM = "UOM"
GHG_UNIT = "GHG/Unit"
FACTOR = "GHG Conversion Factor 2025"
COLUMNS = [ID, SCOPE, *LEVELS, COLUMN_TEXT, UOM, GHG_UNIT, FACTOR]

TOTAL = "kg CO2e"
GAS_UNIT = re.compile(r"^kg CO2e of (?P<gas>\S+) per unit$")
ID_PATTERN = re.compile(r"^(?P<key>\d+(?:_\d+)*)_\d+$")

SKIP_EMPTY = "empty factor"
SKIP_NO_TOTAL = "per-gas rows without a kg CO2e total"
SKIP_BIOGENIC_UNMATCHED = "outside-of-scopes biogenic CO2 without exactly one Scope 1/2 factor of that fuel and UOM"

OUTSIDE_OF_SCOPES = "Outside of Scopes"
# The scopes of the factors whose combustion the outside-of-scopes CO2 comes from (fuels, bioenergy, electricity).
COMBUSTION_SCOPES = frozenset({"Scope 1", "Scope 2"})
FUEL = LEVELS[2]

DATASET = DatasetSpec(
    source=SOURCE,
    version="2025",
    name="UK DESNZ GHG Conversion Factors 2025",
    publisher="UK Department for Energy Security and Net Zero (DESNZ)",
    licence="Open Government Licence v3.0. Contains public sector information licensed under the "
    "Open Government Licence v3.0.",
    url=URL,
    basis_year=2025,
    gwp_set="AR5",
)


def _skip_not_co2e(unit: str) -> str:
    return f"output unit '{unit}' is not kg CO2e"


def _skip_no_unit(uom: str) -> str:
    return f"no unit mapping for UOM '{uom}'"


def _fuel_key(row: CsvRow) -> tuple[str, str]:
    """What ties an outside-of-scopes row to its factor: the fuel (``Level 3``, case-folded) and the UOM."""
    return row.text(FUEL).casefold(), row.text(UOM)


Group = list[tuple[CsvRow, Decimal | None]]


def _biogenic_co2(groups: dict[str, Group], result: ParsedDataset) -> dict[tuple[str, str], Decimal]:
    """Outside-of-scopes CO2 per fuel key, for the keys that name exactly one Scope 1/2 factor.

    Removes the outside-of-scopes groups from ``groups``; counts what it leaves out in ``result.skipped``.
    """
    factors = Counter(
        _fuel_key(row)
        for rows in groups.values()
        for row, value in rows
        if row.text(SCOPE) in COMBUSTION_SCOPES and row.text(GHG_UNIT) == TOTAL and value is not None
    )
    biogenic: dict[tuple[str, str], Decimal] = {}
    for key in [key for key, rows in groups.items() if rows[0][0].text(SCOPE) == OUTSIDE_OF_SCOPES]:
        for row, value in groups.pop(key):
            gas = GAS_UNIT.match(row.text(GHG_UNIT))
            if gas is None or gas["gas"] != "CO2":
                result.skipped[_skip_not_co2e(row.text(GHG_UNIT))] += 1
            elif value is None:
                result.skipped[SKIP_EMPTY] += 1
            elif factors[_fuel_key(row)] != 1:
                result.skipped[SKIP_BIOGENIC_UNMATCHED] += 1
            elif not result.skip_negative(value):
                biogenic[_fuel_key(row)] = value
    return biogenic


def parse(directory: Path, *, gwp: Mapping[str, Decimal] | None = None) -> list[ParsedDataset]:
    path = directory / FILE
    result = ParsedDataset(dataset=DATASET)
    # key -> rows, in file order; dicts keep insertion order, so factors come out in file order.
    groups: dict[str, Group] = {}
    seen_ids: set[str] = set()
    for row in read_csv(path, required=COLUMNS):
        row_id = row.text(ID)
        match = ID_PATTERN.match(row_id)
        if match is None:
            raise row.error(f"'{row_id}' is not a DESNZ ID like 1_100_1000_15_1", column=ID)
        if row_id in seen_ids:
            raise row.error(f"duplicate ID '{row_id}'", column=ID)
        seen_ids.add(row_id)
        # Parse every value, even in rows that are skipped later, so a corrupt number is never silent.
        groups.setdefault(match["key"], []).append((row, row.decimal(FACTOR)))

    biogenic = _biogenic_co2(groups, result)
    for key, rows in groups.items():
        total: tuple[CsvRow, Decimal] | None = None
        gases: dict[str, str] = {}
        gas_rows = 0
        for row, value in rows:
            unit = row.text(GHG_UNIT)
            gas = GAS_UNIT.match(unit)
            if unit != TOTAL and gas is None:
                result.skipped[_skip_not_co2e(unit)] += 1
            elif value is None:
                result.skipped[SKIP_EMPTY] += 1
            elif gas is not None:
                gas_rows += 1
                gases[gas["gas"]] = decimal_str(value)
            else:
                total = (row, value)
        if total is None:
            if gas_rows:
                result.skipped[SKIP_NO_TOTAL] += gas_rows
            continue
        row, value = total
        uom = row.text(UOM)
        try:
            unit = publisher_unit(uom)
        except UnitError:
            result.skipped[_skip_no_unit(uom)] += 1 + gas_rows
            continue
        if result.skip_negative(value, rows=1 + gas_rows):
            continue
        result.add_row(
            row,
            activity=f"desnz:{key}",
            name=" / ".join(part for part in (row.text(c) for c in [*LEVELS, COLUMN_TEXT]) if part),
            category=" / ".join(part for part in (row.text(SCOPE), row.text(LEVELS[0])) if part),
            unit=unit,
            unit_label=uom,
            region="GB",
            co2e_per_unit=value,
            gases=gases,
            biogenic_co2_per_unit=biogenic.get(_fuel_key(row)) if row.text(SCOPE) in COMBUSTION_SCOPES else None,
        )
    return [result]


IMPORTER = Importer(source=SOURCE, files=(FILE,), datasets=(DATASET,), parse=parse, url=URL)
