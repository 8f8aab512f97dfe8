"""The summary's covering index rebuilt with ``biogenic_co2_kg`` among its ``INCLUDE`` columns.

The summary sums the new column, so the index must hold it for the summary to stay an index-only
scan. The new index is built concurrently under a temporary name while the old one keeps serving,
then the old one is dropped concurrently and the new one takes its name: writers are never
blocked and the summary never runs without an index. ``atomic = False`` (CONCURRENTLY cannot run in a
transaction), as in 0003: a failed build leaves an INVALID ``emission_org_cat_period_build`` behind,
which ``manage.py check_indexes`` reports; drop it and migrate again (0004 is already recorded).
"""

from django.db import migrations, models

from perf.migration_operations import AddIndexConcurrentlyIfPostgres, RemoveIndexConcurrentlyIfPostgres

INDEX = "emission_org_cat_period_idx"
BUILD = "emission_org_cat_period_build"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("emissions", "0004_biogenic_co2")]

    operations = [
        AddIndexConcurrentlyIfPostgres(
            model_name="emission",
            index=models.Index(
                fields=["organization", "category", "-period_start", "-id"],
                include=("supplier", "method", "period_end", "co2e_kg", "biogenic_co2_kg"),
                name=BUILD,
            ),
        ),
        RemoveIndexConcurrentlyIfPostgres(model_name="emission", name=INDEX),
        migrations.RenameIndex(model_name="emission", new_name=INDEX, old_name=BUILD),
    ]
