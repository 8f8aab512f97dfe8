"""UK DESNZ greenhouse gas reporting conversion factors 2025, flat file (OGL v3.0).

DESNZ publishes each factor as a group of rows sharing an ID prefix: ``<key>_1`` is the total
in kg CO2e, ``<key>_2..4`` the CO2 / CH4 / N2O parts in kg CO2e, and ``_5`` / ``_6`` are energy
(``kWh (Net CV)``) conversions, which are not emission factors. One group becomes the factor
``desnz:<key>`` (e.g. ``desnz:7_400_4000_5``).

Skipped, and counted in the summary: rows with an empty factor, rows whose output is not
kg CO2e, per-gas rows without a total (the "outside of scopes" biogenic CO2), and groups
whose UOM has no mapping in ``calculator.units.PUBLISHER_UNITS``.
"""

from __future__ import annotations

import re
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
SKIP_NO_TOTAL = "per-gas rows without a kg CO2e total (outside of scopes)"

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


def parse(directory: Path, *, gwp: Mapping[str, Decimal] | None = None) -> list[ParsedDataset]:
    path = directory / FILE
    result = ParsedDataset(dataset=DATASET)
    # key -> rows, in file order; dicts keep insertion order, so factors come out in file order.
    groups: dict[str, list[tuple[CsvRow, Decimal | None]]] = {}
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
        )
    return [result]


IMPORTER = Importer(source=SOURCE, files=(FILE,), datasets=(DATASET,), parse=parse, url=URL)
