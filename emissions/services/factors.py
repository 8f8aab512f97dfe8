"""Writes for emission-factor datasets: importing the official published files.

Each source is imported in one transaction. A dataset is identified by (source, version,
no organization); its ``checksum`` is the sha256 of the file(s) it was read from. Importing
the same files again changes nothing; a file that changed under the same version is refused,
because results may already reference the factors that were imported from the old one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from django.db import transaction
from tqdm import tqdm

from calculator.rules import DATASET_GWP_SET
from emissions.cache import catalogue_changed
from emissions.importers import desnz, epa_hub, epa_supply_chain, ipcc_gwp
from emissions.importers.base import DatasetSpec, FactorImportError, FactorSpec, Importer, files_checksum
from emissions.models import EmissionFactor, FactorDataset

# In dependency order: the GWP table is needed by the EPA importers.
IMPORTERS: dict[str, Importer] = {
    importer.source: importer
    for importer in (ipcc_gwp.IMPORTER, epa_supply_chain.IMPORTER, desnz.IMPORTER, epa_hub.IMPORTER)
}
BATCH_SIZE = 1000


@dataclass(frozen=True)
class DatasetOutcome:
    """What happened to one dataset of a source."""

    name: str
    version: str
    status: Literal["imported", "unchanged"]
    factors_created: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportSummary:
    source: str
    datasets: tuple[DatasetOutcome, ...]
    notes: tuple[str, ...] = ()

    @property
    def factors_created(self) -> int:
        return sum(outcome.factors_created for outcome in self.datasets)


def _gwp_table() -> dict[str, Decimal]:
    """Species -> AR5 GWP-100 from the imported public ``ipcc_gwp`` dataset."""
    rows = EmissionFactor.objects.filter(
        dataset__source=FactorDataset.Source.IPCC_GWP,
        dataset__version=DATASET_GWP_SET,
        dataset__organization__isnull=True,
    ).values_list("name", "co2e_per_unit")
    table = dict(rows)
    if not table:
        raise FactorImportError(
            f"The IPCC {DATASET_GWP_SET} GWP table is not in the database; import it first "
            "(manage.py import_factors --source ipcc_gwp)."
        )
    return table


def _create_dataset(spec: DatasetSpec, *, checksum: str) -> FactorDataset:
    return FactorDataset.objects.create(
        source=spec.source,
        version=spec.version,
        name=spec.name,
        publisher=spec.publisher,
        licence=spec.licence,
        url=spec.url,
        basis_year=spec.basis_year,
        gwp_set=spec.gwp_set,
        checksum=checksum,
        organization=None,
    )


def _factor(dataset: FactorDataset, spec: FactorSpec) -> EmissionFactor:
    return EmissionFactor(
        dataset=dataset,
        activity=spec.activity,
        name=spec.name,
        category=spec.category,
        region=spec.region,
        year=spec.year,
        unit=spec.unit,
        unit_label=spec.unit_label,
        currency=spec.currency,
        co2e_per_unit=spec.co2e_per_unit,
        biogenic_co2_per_unit=spec.biogenic_co2_per_unit,
        gwp_set=spec.gwp_set,
        gases=dict(spec.gases),
        extra=dict(spec.extra),
    )


@transaction.atomic
def factor_dataset_import(*, source: str, directory: Path, progress: bool = False) -> ImportSummary:
    """Import the published files of ``source`` found under ``directory``.

    Preconditions: ``source`` is a key of ``IMPORTERS``; for sources that need GWPs the
    ``ipcc_gwp`` AR5 dataset has been imported. Raises FactorImportError (files missing,
    malformed file, changed checksum for an existing version, GWP table missing); nothing is
    written then. ``progress`` shows a tqdm bar on stderr while factors are written.
    """
    importer = IMPORTERS.get(source)
    if importer is None:
        raise FactorImportError(f"Unknown factor source '{source}'; choose from {', '.join(IMPORTERS)}.")
    checksum = files_checksum(importer.paths(directory))

    existing = {
        dataset.version: dataset
        for dataset in FactorDataset.objects.filter(
            source=source, organization__isnull=True, version__in=[spec.version for spec in importer.datasets]
        )
    }
    for version, dataset in existing.items():
        if dataset.checksum != checksum:
            raise FactorImportError(
                f"{source} {version} is already imported from different files (checksum {dataset.checksum[:12]}, "
                f"now {checksum[:12]}). Published files must not change under the same version: import the new "
                f"files as a new version; the factors of {version} stay as they are because results may use them."
            )

    pending = {spec.version for spec in importer.datasets if spec.version not in existing}
    outcomes: dict[str, DatasetOutcome] = {
        version: DatasetOutcome(name=dataset.name, version=version, status="unchanged")
        for version, dataset in existing.items()
    }
    if pending:
        gwp = _gwp_table() if importer.needs_gwp else None
        for parsed in importer.parse(directory, gwp=gwp):
            spec = parsed.dataset
            if spec.version not in pending:
                continue
            dataset = _create_dataset(spec, checksum=checksum)
            with tqdm(
                total=len(parsed.factors),
                desc=f"{source} {spec.version}",
                unit="factor",
                file=sys.stderr,
                disable=not progress,
            ) as bar:
                for start in range(0, len(parsed.factors), BATCH_SIZE):
                    batch = [_factor(dataset, f) for f in parsed.factors[start : start + BATCH_SIZE]]
                    EmissionFactor.objects.bulk_create(batch, batch_size=BATCH_SIZE)
                    bar.update(len(batch))
            outcomes[spec.version] = DatasetOutcome(
                name=spec.name,
                version=spec.version,
                status="imported",
                factors_created=len(parsed.factors),
                skipped=dict(sorted(parsed.skipped.items())),
            )
    missing = pending - {v for v, o in outcomes.items() if o.status == "imported"}
    if missing:
        # A parser that does not return every dataset it declares is a programming error.
        raise FactorImportError(f"{source}: the parser returned no data for version(s) {', '.join(sorted(missing))}.")
    if pending:
        catalogue_changed()
    return ImportSummary(
        source=source,
        datasets=tuple(outcomes[spec.version] for spec in importer.datasets),
        notes=importer.notes,
    )
