"""``manage.py import_activities FILE.csv --org SLUG``: load activity lines and their emissions, all or nothing.

A thin client of the import job (``emissions.jobs.imports``), the code ``POST /api/v1/imports/`` runs: the file is
stored in the ``imports`` storage, split into chunks of ``--batch-size`` rows, each chunk validated with the activity
API's serializer, calculated once and staged; the job's finish makes every row visible at once, or none (any error).
By default the job runs here, in this process, through the same runner steps a worker takes (no worker needed);
``--async`` hands it to the workers and prints its id, ``--wait`` then follows it to the end.

Errors carry their physical file line and field; the first ``MAX_PRINTED_ERRORS`` are printed with the total count.
A row with more or fewer cells than the header has columns is an error of that row. A file that is not CSV (a quoted
cell never closed, text after a closing quote) fails the import naming the line where the row begins (the reader is
strict: a lenient one would read the rest of the file into the open cell). ``--dry-run`` only calculates and never
writes. Columns: ``emissions.imports.COLUMNS``.
"""

from __future__ import annotations

import stat
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from calculator.types import present_kg, present_t
from emissions.imports import COLUMNS
from emissions.jobs.imports import error_counts, imports_storage, job_run_here
from emissions.metrics import record_import
from emissions.models import Job, Organization
from emissions.services.imports import import_start

DEFAULT_BATCH_SIZE = 5000
MAX_PRINTED_ERRORS = 50
WAIT_POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = (
        "Import activities (and calculate their emissions) from a CSV file into one organization, all or nothing. "
        f"Columns: {', '.join(COLUMNS)}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="CSV file, UTF-8, header line with column names.")
        parser.add_argument("--org", required=True, help="Slug of the organization the activities belong to.")
        parser.add_argument("--dry-run", action="store_true", help="Validate and calculate only; write nothing.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per chunk of the job (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show the progress bar.")
        parser.add_argument(
            "--async", dest="run_async", action="store_true", help="Have the workers run the import; print its job id."
        )
        parser.add_argument("--wait", action="store_true", help="With --async: follow the job until it ends.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            file_stat = path.stat()
        except FileNotFoundError:
            file_stat = None
        if file_stat is None or not stat.S_ISREG(file_stat.st_mode):
            raise CommandError(f"No such file: {path}.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{options['org']}'.")
        dry_run: bool = options["dry_run"]
        started = time.perf_counter()
        with path.open("rb") as handle:
            upload = imports_storage().save(f"uploads/{organization.pk}/{path.name}", File(handle, name=path.name))
        job = import_start(
            organization=organization,
            upload=upload,
            dry_run=dry_run,
            chunk_rows=options["batch_size"],
            submit=options["run_async"],
        )
        if options["run_async"] and not options["wait"]:
            self.stdout.write(f"Submitted import job {job.pk}.")
            return
        bar = tqdm(
            desc="checking" if dry_run else "importing",
            unit=" rows",
            file=sys.stderr,
            disable=options["no_progress"],
            leave=False,
        )
        with bar:
            if options["run_async"]:
                self.stdout.write(f"Submitted import job {job.pk}; waiting for it.")
                while not job.finished:
                    self._progress(bar, job)
                    time.sleep(WAIT_POLL_SECONDS)
                    job.refresh_from_db()
            else:
                job = job_run_here(job.pk, lambda step: self._progress(bar, step))
            self._progress(bar, job)
        elapsed = time.perf_counter() - started
        self._report(path, organization, job, elapsed)

    @staticmethod
    def _progress(bar: tqdm[Any], job: Job) -> None:
        if job.rows_total is not None and bar.total != job.rows_total:
            bar.reset(total=job.rows_total)
        bar.update(job.rows_done - bar.n)

    def _report(self, path: Path, organization: Organization, job: Job, elapsed: float) -> None:
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(self._error_report(path, job))
        rows: int = job.result["rows"]
        co2e_kg = Decimal(job.result["co2e_kg"])
        rate = rows / elapsed
        if job.params["dry_run"]:
            self.stdout.write(
                f"Dry run: {rows} rows valid for '{organization.slug}'; they would add "
                f"{self._kg(co2e_kg)} kg CO2e ({self._t(co2e_kg)} t). "
                f"Nothing was written. {rate:,.0f} rows/s."
            )
            return
        # Committed: vcci_import_rows_total / vcci_import_seconds_total give rows/s. This process's samples reach
        # /metrics only when it runs with the server's PROMETHEUS_MULTIPROC_DIR (docs/serving.md).
        record_import(rows, elapsed)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {rows} rows into '{organization.slug}': {self._kg(co2e_kg)} kg CO2e "
                f"({self._t(co2e_kg)} t). {rate:,.0f} rows/s."
            )
        )

    @staticmethod
    def _error_report(path: Path, job: Job) -> str:
        errors, error_rows = error_counts(job)
        if not errors:  # the file as a whole (header, encoding, syntax), or the job itself
            details = [error["detail"] for error in job.errors if "detail" in error]
            return f"{path}: {' '.join(details) or job.state}"
        lines = [f"{errors} error(s) in {error_rows} row(s) of {path}; nothing was written."]
        row_errors = [error for error in job.errors if "line" in error][:MAX_PRINTED_ERRORS]
        lines.extend(f"line {e['line']}: {e['field']}: {' '.join(e['messages'])}" for e in row_errors)
        if errors > len(row_errors):
            lines.append(f"... and {errors - len(row_errors)} more.")
        return "\n".join(lines)

    @staticmethod
    def _kg(value: Decimal) -> str:
        return f"{Decimal(present_kg(value)):,f}"

    @staticmethod
    def _t(value_kg: Decimal) -> str:
        return f"{Decimal(present_t(value_kg)):,f}"
