"""``manage.py bench_validation``: validating calculation and activity inputs, and the whole ``POST /calculate/``,
with DRF's deep copies of the serializers' fields and with ``CopiedFieldsMixin`` (``bench.validation``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.measure import run_for_command
from bench.validation import DEFAULT_ORG, DEFAULT_OUT, DEFAULT_RUNS, ValidationBenchmark


class Command(BaseCommand):
    help = (
        "Time input validation side by side: DRF's deep copy of a serializer's fields per instance against copied "
        "fields (perf.serializer_fields), for one calculation input, one activity input and POST /calculate/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default=DEFAULT_ORG, help=f"Slug of the organization (default {DEFAULT_ORG})")
        parser.add_argument(
            "--runs", type=int, default=DEFAULT_RUNS, help=f"Timed rounds after one warm-up (default {DEFAULT_RUNS})"
        )
        parser.add_argument("--output", default=DEFAULT_OUT, help=f"Markdown report (default {DEFAULT_OUT})")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = options["runs"]
        if runs < 1:
            raise CommandError(f"--runs must be at least 1; got {runs}.")
        self.benchmark = ValidationBenchmark(options["org"], runs=runs, stdout=self.stdout)
        run_for_command(self, self.benchmark, Path(options["output"]))
