"""``manage.py check_rollups [--org SLUG] [--rebuild] [--json]``: compare the rollup tables with the emissions.

Every group of every rollup table (``EmissionRollup``, ``SupplierRollup``, ``SupplierYearRollup``) is compared, in
one statement per table, with the same group summed from the stored emissions: count, kg CO2e, the sum of squares,
biogenic CO2 and its count, to the last digit. Exit status 0 when they are equal, 1 otherwise (the first differences are
printed). ``--rebuild`` then recomputes the organization's rollups from its emissions (writers wait meanwhile)
and checks again: exit 0 when that made them equal. PostgreSQL only: elsewhere there are no rollups to check.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emissions.models import Organization
from emissions.rollups import RollupDifference, rollup_differences, rollups_maintained
from emissions.services.rollups import rollups_rebuild


class Command(BaseCommand):
    help = "Compare the rollup tables with the stored emissions; exit 1 on any difference (--rebuild repairs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Organization slug (default: every organization)")
        parser.add_argument("--rebuild", action="store_true", help="Recompute the rollups when they differ")
        parser.add_argument("--limit", type=int, default=20, help="Differences to print (default 20)")
        parser.add_argument("--json", action="store_true", help="Print one JSON document")

    def handle(self, *args: Any, **options: Any) -> None:
        if not rollups_maintained():
            raise CommandError("check_rollups needs PostgreSQL: the rollups are kept by its triggers.")
        if options["limit"] < 0:
            raise CommandError(f"--limit must be 0 or more; got {options['limit']}.")
        organization_id = None
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"--org: no organization with slug '{options['org']}'.")
            organization_id = organization.pk
        count, differences = rollup_differences(organization_id=organization_id, limit=options["limit"])
        report: dict[str, Any] = {"differences": count, "first": [_as_json(d) for d in differences]}
        if count and options["rebuild"]:
            report["rebuilt_groups"] = rollups_rebuild(organization_id=organization_id)
            report["differences_after_rebuild"], _ = rollup_differences(organization_id=organization_id, limit=0)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self._print(report, differences, scope=options["org"] or "every organization")
        remaining = report.get("differences_after_rebuild", count)
        if remaining:
            raise CommandError(f"check_rollups: {remaining} group(s) differ from the emissions.", returncode=1)

    def _print(self, report: dict[str, Any], differences: list[RollupDifference], *, scope: str) -> None:
        if not report["differences"]:
            self.stdout.write(self.style.SUCCESS(f"Rollups of {scope} equal the emissions: 0 differences."))
            return
        self.stdout.write(self.style.ERROR(f"{report['differences']} group(s) of {scope} differ from the emissions:"))
        for difference in differences:
            self.stdout.write(
                f"  {difference.table} {_text(difference.key)}: emissions {_text(difference.expected)}, "
                f"rollup {_text(difference.found)}"
            )
        if "rebuilt_groups" in report:
            self.stdout.write(
                f"Rebuilt {report['rebuilt_groups']} group(s); "
                f"{report['differences_after_rebuild']} difference(s) after the rebuild."
            )


def _as_json(difference: RollupDifference) -> dict[str, Any]:
    return {
        "table": difference.table,
        "key": difference.key,
        "expected": difference.expected,
        "found": difference.found,
    }


def _text(values: dict[str, Any] | None) -> str:
    return "none" if values is None else ", ".join(f"{name} {value}" for name, value in values.items())
