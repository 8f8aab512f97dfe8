"""``manage.py bench_reports``: summaries from the rollups vs summing the emissions (``bench.reports``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.measure import run_for_command
from bench.reports import DEFAULT_LARGE, DEFAULT_OUT, DEFAULT_ROUNDS, DEFAULT_SMALL, ReportsBenchmark


def _org(text: str) -> tuple[str, int]:
    slug, _, activities = text.partition(":")
    if not slug or not activities.isdigit() or int(activities) < 1:
        raise CommandError(f"An organization is SLUG:ACTIVITIES, e.g. bench100k:100000; got '{text}'.")
    return slug, int(activities)


class Command(BaseCommand):
    help = (
        "Benchmark the emissions summaries uncached, from the rollups and by summing the emissions, for a small "
        "and a large organization, and write a Markdown report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        small, large = (f"{slug}:{n}" for slug, n in (DEFAULT_SMALL, DEFAULT_LARGE))
        parser.add_argument("--small", default=small, help=f"SLUG:ACTIVITIES, seeded when empty (default {small})")
        parser.add_argument("--large", default=large, help=f"SLUG:ACTIVITIES, seeded when empty (default {large})")
        parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"default {DEFAULT_ROUNDS}")
        parser.add_argument("--output", default=DEFAULT_OUT, help=f"Report file (default {DEFAULT_OUT})")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rounds"] < 1:
            raise CommandError(f"--rounds must be at least 1; got {options['rounds']}.")
        self.benchmark = ReportsBenchmark(
            small=_org(options["small"]), large=_org(options["large"]), rounds=options["rounds"], stdout=self.stdout
        )
        run_for_command(self, self.benchmark, Path(options["output"]))
