"""``manage.py import_factors``: load the official emission-factor files into FactorDataset/EmissionFactor.

All requested sources run in one outer transaction (each source is a savepoint inside it), so
a failing source leaves the database exactly as it was before the command started. The shipped
reference tables (exchange rates, price index; the data folder's ``reference/``) load in the same
transaction, into the default sets, unless ``--no-reference``: spend in any currency and year
then works out of the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from emissions.importers.base import FactorImportError
from emissions.models import EmissionFactor, FactorDataset
from emissions.services.factors import IMPORTERS, ImportSummary, factor_dataset_import
from emissions.services.reference import ReferenceDataError, ShippedLoad, reference_sets_load_shipped
from perf.db import refresh_statistics

DOWNLOAD_HELP = (
    "The official factor files are not shipped with VCCI. Download them (the README's "
    "'Emission-factor data' section lists every file, its publisher URL and licence): IPCC GWPs from "
    "https://github.com/openclimatedata/globalwarmingpotentials, US EPA Supply Chain GHG Emission Factors v1.3.0 "
    "from https://doi.org/10.23719/1531143, UK DESNZ conversion factors 2025 from "
    "https://www.gov.uk/government/publications/greenhouse-gas-reporting-conversion-factors-2025 and the US EPA "
    "GHG Emission Factors Hub from https://www.epa.gov/climateleadership/ghg-emission-factors-hub. "
    "Then set FACTOR_DATA_DIR or pass --dir."
)


class Command(BaseCommand):
    help = "Import the official emission-factor datasets (IPCC GWPs first, then EPA supply chain, DESNZ, EPA Hub)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", dest="directory", help="Folder holding the data files (default FACTOR_DATA_DIR).")
        parser.add_argument(
            "--source",
            dest="sources",
            nargs="+",
            choices=list(IMPORTERS),
            metavar="SOURCE",
            help=f"Sources to import (default all): {', '.join(IMPORTERS)}.",
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
        parser.add_argument(
            "--no-reference",
            action="store_true",
            help="Do not load the shipped exchange rates and price index (the data folder's reference/).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory = self._directory(options["directory"])
        requested = set(options["sources"] or IMPORTERS)
        # Always in dependency order, whatever order the user typed.
        sources = [source for source in IMPORTERS if source in requested]
        progress = not options["no_progress"]
        summaries: list[ImportSummary] = []
        reference: ShippedLoad | None = None
        try:
            with transaction.atomic():
                for source in sources:
                    summaries.append(factor_dataset_import(source=source, directory=directory, progress=progress))
                if not options["no_reference"]:
                    reference = reference_sets_load_shipped(directory=directory)
        except (FactorImportError, ReferenceDataError) as exc:
            raise CommandError(f"{exc}\nNothing was written.") from exc
        if any(summary.factors_created for summary in summaries):
            # Factor lookups and search plan from these statistics; autovacuum may be off or late.
            refresh_statistics([FactorDataset._meta.db_table, EmissionFactor._meta.db_table])
        self._print_summary(summaries, reference)

    def _directory(self, option: str | None) -> Path:
        text = option or settings.FACTOR_DATA_DIR
        if not text:
            raise CommandError(f"No factor data directory is configured. {DOWNLOAD_HELP}")
        directory = Path(text)
        if not directory.is_dir() or not any(directory.iterdir()):
            raise CommandError(f"The factor data directory {directory} is missing or empty. {DOWNLOAD_HELP}")
        return directory

    def _print_summary(self, summaries: list[ImportSummary], reference: ShippedLoad | None) -> None:
        rows = [("Source", "Dataset", "Version", "Status", "Factors created", "Rows skipped")]
        for summary in summaries:
            for outcome in summary.datasets:
                skipped = "; ".join(f"{reason}: {count}" for reason, count in outcome.skipped.items()) or "-"
                rows.append(
                    (
                        summary.source,
                        outcome.name,
                        outcome.version,
                        outcome.status,
                        str(outcome.factors_created),
                        skipped,
                    )
                )
        # The last column is free text and can be long: pad only the others.
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for index, row in enumerate(rows):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
            if index == 0:
                self.stdout.write("  ".join("-" * width for width in [*widths, len(row[-1])]))
        notes = [note for summary in summaries for note in summary.notes]
        for note in notes:
            self.stdout.write(f"Note: {note}")
        if reference is not None:
            for result in reference.results:
                self.stdout.write(result.summary())
            for note in reference.notes:
                self.stdout.write(f"Note: {note}")
        total = sum(summary.factors_created for summary in summaries)
        self.stdout.write(self.style.SUCCESS(f"Done: {total} factors created."))
