"""``manage.py load_reference_data --exchange-rates FILE.csv --price-index FILE.csv``.

Loads the tables the spend method needs, each into a named set (default: the shipped sets'
names, so a corrected shipped file replaces them; a user's own table, e.g. budget rates, under
its own name). Both files load in one transaction: a bad row in either file writes nothing and
the error names the file, line and column.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from calculator import rules
from emissions.models import Organization
from emissions.services.reference import LoadResult, ReferenceDataError, exchange_rates_load, price_index_load


class Command(BaseCommand):
    help = "Load exchange rates and/or price indexes from CSV into a named set (upsert by their unique keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--exchange-rates", metavar="FILE.csv", help="columns currency,quote_currency,year,rate[,source]"
        )
        parser.add_argument("--price-index", metavar="FILE.csv", help="columns currency,year,value[,source]")
        parser.add_argument(
            "--exchange-rate-set",
            metavar="NAME",
            default=rules.DEFAULT_EXCHANGE_RATE_SET,
            help=f"set the exchange rates load into (default {rules.DEFAULT_EXCHANGE_RATE_SET})",
        )
        parser.add_argument(
            "--price-index-set",
            metavar="NAME",
            default=rules.DEFAULT_PRICE_INDEX_SET,
            help=f"set the price index loads into (default {rules.DEFAULT_PRICE_INDEX_SET})",
        )
        parser.add_argument(
            "--org",
            metavar="SLUG",
            help="load the sets as this organization's own (only it sees them); default: public sets",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rates_path, index_path = options["exchange_rates"], options["price_index"]
        if not rates_path and not index_path:
            raise CommandError("Give --exchange-rates FILE.csv and/or --price-index FILE.csv.")
        organization = None
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"Unknown organization '{options['org']}'.")
        results: list[LoadResult] = []
        try:
            with transaction.atomic():
                if rates_path:
                    results.append(
                        exchange_rates_load(
                            path=rates_path, set_name=options["exchange_rate_set"], organization=organization
                        )
                    )
                if index_path:
                    results.append(
                        price_index_load(
                            path=index_path, set_name=options["price_index_set"], organization=organization
                        )
                    )
        except ReferenceDataError as exc:
            raise CommandError(f"{exc}. Nothing was written.") from exc
        for result in results:
            self.stdout.write(self.style.SUCCESS(result.summary()))
