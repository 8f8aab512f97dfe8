"""IPCC 100-year global warming potentials (openclimatedata/globalwarmingpotentials, CC0).

One dataset per assessment report (SAR, TAR, AR4, AR5, AR6). Each species becomes the factor
``gwp:<Species>``: kg CO2e per kg of the gas. The other importers convert per-gas masses to
CO2e with the AR5 set, so this source is imported first. For the same reason a calculation with a
gas factor uses AR5 unless ``dataset_version`` names another report (``calculator.rules.DATASET_GWP_SET``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from emissions.importers.base import DatasetSpec, Importer, ParsedDataset, read_csv

SOURCE = "ipcc_gwp"
FILE = "ipcc_gwp/globalwarmingpotentials.csv"
URL = "https://github.com/openclimatedata/globalwarmingpotentials"
ACTIVITY_PREFIX = "gwp:"
SPECIES = "Species"

# Report -> the year it was published, which is the basis year of its GWP values.
REPORTS: dict[str, int] = {"SAR": 1995, "TAR": 2001, "AR4": 2007, "AR5": 2013, "AR6": 2021}


def _dataset(report: str) -> DatasetSpec:
    return DatasetSpec(
        source=SOURCE,
        version=report,
        name=f"IPCC {report} GWP-100",
        publisher="IPCC, compiled by openclimatedata/globalwarmingpotentials",
        licence="CC0 1.0 (public domain dedication)",
        url=URL,
        basis_year=REPORTS[report],
        gwp_set=report,
    )


DATASETS = tuple(_dataset(report) for report in REPORTS)


def column(report: str) -> str:
    return f"{report}GWP100"


def parse(directory: Path, *, gwp: Mapping[str, Decimal] | None = None) -> list[ParsedDataset]:
    """One ParsedDataset per report; empty cells (GWP not assessed in that report) are skipped."""
    path = directory / FILE
    parsed = [ParsedDataset(dataset=spec) for spec in DATASETS]
    for row in read_csv(path, required=[SPECIES, *(column(r) for r in REPORTS)], comment_prefix="#"):
        species = row.text(SPECIES)
        if not species:
            raise row.error("the species name is empty", column=SPECIES)
        for result in parsed:
            report = result.dataset.version
            value = row.decimal(column(report))
            if value is None:
                result.skipped["empty GWP value"] += 1
                continue
            if value < 0:
                # Some short-lived species have negative GTPs; a negative GWP-100 would be a data error.
                raise row.error(f"negative GWP {value}", column=column(report))
            result.add_row(
                row,
                activity=f"{ACTIVITY_PREFIX}{species}",
                name=species,
                unit="kg",
                unit_label="kg CO2e per kg of gas",
                region="GLOBAL",
                co2e_per_unit=value,
            )
    return parsed


def gwp_table(parsed: ParsedDataset) -> dict[str, Decimal]:
    """Species -> GWP of one parsed report (what the service reads from the database)."""
    return {spec.name: spec.co2e_per_unit for spec in parsed.factors}


IMPORTER = Importer(source=SOURCE, files=(FILE,), datasets=DATASETS, parse=parse, url=URL)
