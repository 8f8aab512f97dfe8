"""``manage.py recalculate --org SLUG --dataset SOURCE:VERSION``: recalculate stored emissions against a factor
dataset version, and print the restatement.

By default the job runs here, step by step through the job runner (what a worker does: plan, each chunk in its
own transaction, the finish that applies everything in one), so no worker is needed; ``--async`` queues it for
the workers instead and prints its id. The scope: ``--from`` / ``--to`` (periods within those days),
``--category`` and ``--supplier`` (the supplier's external id), each repeatable; none: every emission of the
organization. The dataset is a public one or the organization's own (``supplier:current``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emissions.models import Job, Organization, Restatement, Supplier
from emissions.services.recalculations import (
    recalculation_params,
    recalculation_run,
    recalculation_submit,
    target_datasets,
)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"'{text}' is not a date (YYYY-MM-DD).") from None


class Command(BaseCommand):
    help = "Recalculate an organization's stored emissions against a factor dataset version (a restatement)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug")
        parser.add_argument("--dataset", required=True, help="Target dataset as SOURCE:VERSION, e.g. desnz:2025")
        parser.add_argument("--from", dest="period_from", type=_date, help="Periods starting on or after (YYYY-MM-DD)")
        parser.add_argument("--to", dest="period_to", type=_date, help="Periods ending on or before (YYYY-MM-DD)")
        parser.add_argument("--category", type=int, action="append", default=[], help="Scope 3 category (repeatable)")
        parser.add_argument("--supplier", action="append", default=[], help="Supplier external id (repeatable)")
        parser.add_argument("--chunk-rows", type=int, help="Emissions per chunk (default: JOB_CHUNK_ROWS)")
        parser.add_argument("--async", dest="queue", action="store_true", help="Queue the job for the workers")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"Unknown organization '{options['org']}'.")
        source, _, version = options["dataset"].partition(":")
        datasets = target_datasets(organization).filter(source=source, version=version)
        dataset = datasets.order_by("organization_id").first()  # the organization's own before a public one
        if dataset is None:
            raise CommandError(f"No dataset '{options['dataset']}' for {organization.slug}; give SOURCE:VERSION.")
        external_ids = options["supplier"]
        suppliers = dict(
            Supplier.objects.for_org(organization).filter(external_id__in=external_ids).values_list("external_id", "pk")
        )
        if unknown := [external_id for external_id in external_ids if external_id not in suppliers]:
            raise CommandError(f"Unknown supplier external id(s): {', '.join(unknown)}.")
        scope: dict[str, Any] = {
            "period_from": options["period_from"],
            "period_to": options["period_to"],
            "categories": options["category"],
            "supplier_ids": list(suppliers.values()),
            "chunk_rows": options["chunk_rows"],
        }
        try:
            if options["queue"]:
                job = recalculation_submit(
                    organization=organization, requested_by=None, target_dataset_id=dataset.pk, **scope
                )
                self.stdout.write(f"Queued recalculation job {job.pk} against {dataset}.")
                return
            params = recalculation_params(organization=organization, target_dataset_id=dataset.pk, **scope)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        started = time.perf_counter()
        job = recalculation_run(organization=organization, params=params)
        seconds = time.perf_counter() - started
        if job.state != Job.State.SUCCEEDED:
            shown = "\n".join(f"  {error}" for error in job.errors[:20])
            raise CommandError(f"Recalculation job {job.pk} {job.state} ({job.error_count} error(s)):\n{shown}")
        restatement = Restatement.objects.get(pk=job.pk)
        rate = restatement.emissions_recalculated / seconds if seconds else 0
        self.stdout.write(
            f"Restatement {restatement.pk} against {dataset}: {restatement.emissions_in_scope} emission(s) in scope, "
            f"{restatement.emissions_recalculated} recalculated, {restatement.emissions_not_applicable} of another "
            f"source, {restatement.emissions_changed} changed.\n"
            f"Total {restatement.total_before_kg} -> {restatement.total_after_kg} kg CO2e "
            f"({'n/a' if restatement.change_pct is None else f'{restatement.change_pct} %'}; threshold "
            f"{restatement.threshold_pct} %: {'significant' if restatement.significant else 'not significant'}).\n"
            f"{seconds:.1f} s, {rate:,.0f} emissions recalculated/s."
        )
