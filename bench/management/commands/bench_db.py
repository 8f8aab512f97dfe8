"""``manage.py bench_db``: the database benchmark (``bench.db``), naive vs optimized, written as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.db import DEFAULT_OUT, DatabaseBenchmark
from bench.measure import run_for_command
from emissions.models import Organization


class Command(BaseCommand):
    help = "Benchmark hot database paths, naive vs optimized, and write a Markdown report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="demo", help="Slug of the organization whose data is benchmarked")
        parser.add_argument("--runs", type=int, default=5, help="Timed runs per measurement (after one warm-up)")
        parser.add_argument("--out", default=DEFAULT_OUT, help=f"Report file (default {DEFAULT_OUT})")
        parser.add_argument(
            "--quick", action="store_true", help="Tiny pages and write batches, for tests and smoke runs"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        runs = options["runs"]
        if runs < 1:
            raise CommandError(f"--runs must be at least 1; got {runs}.")
        try:
            org = Organization.objects.get(slug=options["org"])
        except Organization.DoesNotExist:
            raise CommandError(f"--org: no organization with slug '{options['org']}'.") from None
        out = Path(options["out"])
        self.benchmark = DatabaseBenchmark(org, runs=runs, quick=options["quick"])
        run_for_command(self, self.benchmark, out)
