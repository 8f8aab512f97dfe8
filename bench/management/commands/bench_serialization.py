"""``manage.py bench_serialization``: a 100-emission list page by DRF's ModelSerializer, EmissionSerializer and the
whole uncached request written from value rows (``bench.serialization``), as Markdown and raw figures (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.measure import run_for_command
from bench.serialization import DEFAULT_DEPTH, DEFAULT_ORG, DEFAULT_OUT, DEFAULT_RUNS, SerializationBenchmark


class Command(BaseCommand):
    help = (
        "Time a 100-emission list page side by side: a plain DRF ModelSerializer (select_related) and the API's "
        "EmissionSerializer with JSONRenderer, and the whole uncached request as served; write a Markdown table."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default=DEFAULT_ORG, help=f"Slug of the organization (default {DEFAULT_ORG})")
        parser.add_argument(
            "--runs", type=int, default=DEFAULT_RUNS, help=f"Timed rounds after one warm-up (default {DEFAULT_RUNS})"
        )
        parser.add_argument(
            "--depth",
            type=int,
            default=DEFAULT_DEPTH,
            help=f"Rows down the list where the deep page starts (default {DEFAULT_DEPTH:,}; at most half the list)",
        )
        parser.add_argument("--output", default=DEFAULT_OUT, help=f"Markdown report (default {DEFAULT_OUT})")
        parser.add_argument("--json", default=None, help="Also write the raw figures (medians, samples) as JSON here")

    def handle(self, *args: Any, **options: Any) -> None:
        runs, depth = options["runs"], options["depth"]
        if runs < 1:
            raise CommandError(f"--runs must be at least 1; got {runs}.")
        if depth < 1:
            raise CommandError(f"--depth must be at least 1; got {depth}.")
        self.benchmark = SerializationBenchmark(options["org"], runs=runs, depth=depth, stdout=self.stdout)
        if options["json"]:
            self.benchmark.json_out = Path(options["json"])
        run_for_command(self, self.benchmark, Path(options["output"]))
