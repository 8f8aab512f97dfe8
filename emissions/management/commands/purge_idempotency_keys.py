"""``manage.py purge_idempotency_keys [--older-than SECONDS]``: forget expired ``Idempotency-Key`` answers.

An expired key is already ignored by the API (a request reusing it runs afresh); this deletes the rows, so run it
daily (cron, a scheduler). Without ``--older-than`` it deletes what ``IDEMPOTENCY_KEY_TTL`` has expired.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from emissions.services.idempotency import idempotency_records_purge


class Command(BaseCommand):
    help = "Delete stored Idempotency-Key answers older than IDEMPOTENCY_KEY_TTL (or --older-than seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, metavar="SECONDS", help="default: IDEMPOTENCY_KEY_TTL")

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["older_than"]
        deleted = idempotency_records_purge(older_than=None if seconds is None else timedelta(seconds=seconds))
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} expired idempotency record(s)."))
