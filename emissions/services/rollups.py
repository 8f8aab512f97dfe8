"""Rollup writes: rebuild the rollup tables from the emissions (the triggers keep them otherwise)."""

from __future__ import annotations

from django.db import connection, transaction

from emissions.cache import emissions_changed
from emissions.models import Organization


@transaction.atomic
def rollups_rebuild(*, organization_id: int | None = None) -> int:
    """Recompute every rollup table of ``organization_id`` (None: every organization) from its emissions; returns
    the number of per-supplier monthly groups written.

    Precondition: PostgreSQL with migration 0015 applied (its function ``vcci_rollups_rebuild`` does the work, as
    it did the backfill). Takes a SHARE lock on the emissions table for the transaction: writers of emissions wait
    (and running ones are waited for), readers do not, so the tables are rebuilt from one state that no write can
    change under them. The triggers keep the tables exact; a rebuild is for a difference ``check_rollups`` found
    (a restore from a dump without triggers, a manual edit).
    """
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE emissions_emission IN SHARE MODE")
        cursor.execute("SELECT vcci_rollups_rebuild(%s)", [organization_id])
        (groups,) = cursor.fetchone()
    # Summaries and reports cached from the rollups before the repair are stale (effective at commit too).
    organizations = (
        [organization_id] if organization_id is not None else Organization.objects.values_list("pk", flat=True)
    )
    for organization in organizations:
        emissions_changed(organization)
    return int(groups)
