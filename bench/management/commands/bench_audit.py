"""``manage.py bench_audit``: what the audit trail costs the COPY write path (docs/audit.md).

Writes the same N prepared activities with their emissions through ``activity_pairs_copy`` (the COPY of
``activities_create``) three ways, each in a transaction that is rolled back:

- ``none``: the audit triggers disabled (``ALTER TABLE ... DISABLE TRIGGER``, undone by the rollback);
- ``statement``: the installed statement-level triggers (one ``INSERT ... SELECT`` per COPY);
- ``row``: the statement-level triggers disabled and row-level ones in their place, each writing the same
  event for its row (what a row-trigger library such as django-pghistory installs: a call and an INSERT per row).

Rounds interleave the three, so a drift of the machine affects each alike, and each run is followed by a
VACUUM of the tables it wrote, so that no run pays for the dead rows of the one before; the report is each
side's median and its ratio to ``none``. The calculation (``activities_prepare``) runs once, before, and is not
timed: it is the same for all three and would only dilute the difference.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from bench.db import activity_inputs
from bench.measure import rolled_back
from emissions.audit import AUDITED_TABLES, audit_context
from emissions.calculation import FactorResolver
from emissions.models import ActivityRecord, AuditEvent, Emission, Organization
from emissions.services.activities import activities_prepare
from emissions.services.bulk import activity_pairs_copy

MODES = ("none", "statement", "row")
COPIED_TABLES = (ActivityRecord._meta.db_table, Emission._meta.db_table)
# The row-level equivalent of the installed statement-level triggers' INSERT (migration 0009_audit_trail).
ROW_FUNCTION = f"""
CREATE FUNCTION vcci_bench_row_audit() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {AuditEvent._meta.db_table}
        (occurred_at, table_name, object_id, organization_id, action, "row", changed, actor_id, request_id, job_id)
    VALUES (now(), TG_TABLE_NAME, NEW.id, NEW.organization_id, 'insert', to_jsonb(NEW), NULL,
            nullif(current_setting('vcci.audit_actor', true), '')::bigint,
            coalesce(current_setting('vcci.audit_request', true), ''),
            nullif(current_setting('vcci.audit_job', true), '')::bigint);
    RETURN NULL;
END
$fn$
"""


def _set_up(mode: str) -> None:
    """Put ``mode``'s triggers in place, inside the current transaction (its rollback undoes it)."""
    if mode == "statement":
        return
    with connection.cursor() as cursor:
        for table in COPIED_TABLES:
            cursor.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER vcci_audit_insert')
        if mode == "row":
            cursor.execute(ROW_FUNCTION)
            for table in COPIED_TABLES:
                cursor.execute(
                    f'CREATE TRIGGER vcci_bench_row AFTER INSERT ON "{table}" '
                    "FOR EACH ROW EXECUTE FUNCTION vcci_bench_row_audit()"
                )


def _vacuum() -> None:
    """VACUUM the tables a run wrote (outside any transaction, as VACUUM must be)."""
    with connection.cursor() as cursor:
        for table in (*COPIED_TABLES, AuditEvent._meta.db_table):
            cursor.execute(f'VACUUM "{table}"')


class Command(BaseCommand):
    help = "Time COPY of N activities+emissions without audit, with the statement-level triggers, with row-level ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="demo", help="Organization whose stored activities are rewritten")
        parser.add_argument("--rows", type=int, default=100_000, help="Activities written per run (100,000)")
        parser.add_argument("--runs", type=int, default=3, help="Timed rounds (3); the median is reported")

    def handle(self, *args: Any, **options: Any) -> None:
        rows, runs = options["rows"], options["runs"]
        if rows < 1 or runs < 1:
            raise CommandError("--rows and --runs must be at least 1.")
        if connection.vendor != "postgresql" or not AUDITED_TABLES:
            raise CommandError("The audit triggers (and COPY) need PostgreSQL.")
        try:
            org = Organization.objects.get(slug=options["org"])
        except Organization.DoesNotExist:
            raise CommandError(f"--org: no organization with slug '{options['org']}'.") from None
        stored = activity_inputs(org, rows)
        if not stored:
            raise CommandError(f"--org: '{org.slug}' has no activities to rewrite (seed it with seed_demo).")
        # Fewer stored activities than --rows: their inputs repeated.
        items = list(itertools.islice(itertools.cycle(stored), rows))
        started = time.perf_counter()
        pairs = activities_prepare(organization=org, items=items, resolver=FactorResolver(org))
        self.stdout.write(f"prepared {rows:,} activities in {time.perf_counter() - started:.1f} s (not timed below)")

        samples: dict[str, list[float]] = {mode: [] for mode in MODES}
        events: dict[str, int] = {}
        with audit_context(actor_id=None, request_id="bench_audit"):
            for round_ in range(runs + 1):  # round 0 warms up
                for mode in MODES:
                    with rolled_back():
                        _set_up(mode)
                        before = AuditEvent.objects.count()
                        start = time.perf_counter()
                        activity_pairs_copy(pairs)
                        elapsed = time.perf_counter() - start
                        events[mode] = AuditEvent.objects.count() - before
                    if round_:
                        samples[mode].append(elapsed)
                    # A rolled-back write leaves its rows and index entries dead; the next run's inserts would
                    # step over them (slower each time, and the log's tables grow only in the audited runs).
                    _vacuum()
        base = statistics.median(samples["none"])
        self.stdout.write(f"COPY of {rows:,} activities + {rows:,} emissions, median of {runs} (rolled back):")
        for mode in MODES:
            median = statistics.median(samples[mode])
            runs_text = ", ".join(f"{s:.2f}" for s in samples[mode])
            self.stdout.write(
                f"  {mode:<9} {median:7.2f} s  x{median / base:.2f}  audit events {events[mode]:,}  runs: {runs_text}"
            )
