"""``manage.py load_reference_data --exchange-rates FILE.csv --price-index FILE.csv``.

Loads the tables the spend method needs. Both files load in one transaction: a bad row in
either file writes nothing and the error names the file, line and column.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from emissions.services.reference import ReferenceDataError, exchange_rates_load, price_index_load


class Command(BaseCommand):
    help = "Load exchange rates and/or price indexes from CSV (upsert by their unique keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--exchange-rates", metavar="FILE.csv", help="columns currency,quote_currency,year,rate[,source]"
        )
        parser.add_argument("--price-index", metavar="FILE.csv", help="columns currency,year,value[,source]")

    def handle(self, *args: Any, **options: Any) -> None:
        rates_path, index_path = options["exchange_rates"], options["price_index"]
        if not rates_path and not index_path:
            raise CommandError("Give --exchange-rates FILE.csv and/or --price-index FILE.csv.")
        messages = []
        try:
            with transaction.atomic():
                if rates_path:
                    result = exchange_rates_load(path=rates_path)
                    messages.append(f"Exchange rates: {result.created} created, {result.updated} updated.")
                if index_path:
                    result = price_index_load(path=index_path)
                    messages.append(f"Price indexes: {result.created} created, {result.updated} updated.")
        except ReferenceDataError as exc:
            raise CommandError(f"{exc} Nothing was written.") from exc
        for message in messages:
            self.stdout.write(self.style.SUCCESS(message))
