"""``manage.py export_report --org SLUG --table esrs-e1-6|cdp-scope-3 (--year YYYY | --from YYYY-MM --to YYYY-MM)
[--format csv|xlsx|json] [--output FILE]``: a Scope 3 table reporters file, from the inventory.

The same tables, figures and formats as ``GET /api/v1/reports/<table>/`` (``emissions.exports``). Without
``--output`` CSV and JSON go to standard output; XLSX needs ``--output``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emissions import exports
from emissions.inputs import InventoryQuerySerializer
from emissions.models import Organization
from emissions.reports import inventory


class Command(BaseCommand):
    help = "Write the ESRS E1-6 or the CDP Scope 3 table of an organization's inventory as CSV, XLSX or JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug")
        parser.add_argument("--table", required=True, choices=exports.TABLES)
        parser.add_argument("--year", help="A calendar year (or --from and --to)")
        parser.add_argument("--from", dest="month_from", help="YYYY-MM, the first month")
        parser.add_argument("--to", dest="month_to", help="YYYY-MM, the last month")
        parser.add_argument("--format", dest="file_format", default="csv", choices=exports.FORMATS)
        parser.add_argument("--output", help="File to write (default: standard output; required for xlsx)")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"--org: no organization with slug '{options['org']}'.")
        query = {key: options[key] for key in ("year", "month_from", "month_to") if options[key] is not None}
        period = InventoryQuerySerializer(data=query)
        if not period.is_valid():
            flags = {"month_from": "--from", "month_to": "--to", "year": "--year"}
            problems = "; ".join(f"{flags.get(k, k)}: {' '.join(map(str, v))}" for k, v in period.errors.items())
            raise CommandError(problems)
        file_format, output = options["file_format"], options["output"]
        if file_format == "xlsx" and not output:
            raise CommandError("--format xlsx writes a file: give --output.")
        report = inventory(organization, **period.validated_data)
        header, rows = exports.table(report, options["table"])
        body = exports.as_file(header, rows, file_format=file_format, title=options["table"])
        if output:
            Path(output).write_bytes(body)
            self.stdout.write(self.style.SUCCESS(f"Wrote {options['table']} ({len(rows)} rows) to {output}."))
        else:
            self.stdout.write(body.decode(), ending="")
