"""``manage.py bench_cache``: the cache benchmark (``bench.cache``): uncached, L2, L1 and 304, as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.cache import DEFAULT_ACTIVITIES, DEFAULT_ORG, DEFAULT_OUT, DEFAULT_ROUNDS, CacheBenchmark
from bench.measure import run_for_command


class Command(BaseCommand):
    help = (
        "Benchmark the emissions summary and list page uncached, from Redis (L2), from process memory (L1) "
        "and as 304s, and write a Markdown report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--org", default=DEFAULT_ORG, help=f"Slug of the organization (default {DEFAULT_ORG}; seeded if empty)"
        )
        parser.add_argument(
            "--rounds",
            type=int,
            default=DEFAULT_ROUNDS,
            help=f"Timed rounds after one warm-up round; a round sends each request once (default {DEFAULT_ROUNDS})",
        )
        parser.add_argument(
            "--activities",
            type=int,
            default=DEFAULT_ACTIVITIES,
            help=f"Activities seed_demo creates when the organization has none (default {DEFAULT_ACTIVITIES:,})",
        )
        parser.add_argument("--output", default=DEFAULT_OUT, help=f"Report file (default {DEFAULT_OUT})")

    def handle(self, *args: Any, **options: Any) -> None:
        rounds, activities = options["rounds"], options["activities"]
        if rounds < 1:
            raise CommandError(f"--rounds must be at least 1; got {rounds}.")
        if activities < 1:
            raise CommandError(f"--activities must be at least 1; got {activities}.")
        out = Path(options["output"])
        self.benchmark = CacheBenchmark(options["org"], rounds=rounds, activities=activities, stdout=self.stdout)
        run_for_command(self, self.benchmark, out)
