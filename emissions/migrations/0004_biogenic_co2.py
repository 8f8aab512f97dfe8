"""Biogenic CO2 beside CO2e: a nullable column on factors and on emissions, and the summary's covering index.

Written by hand from ``makemigrations`` output. Both columns are nullable without a default, so adding
them rewrites no rows; NULL means the publisher gives no biogenic figure. The summary sums the new
column, so ``emission_org_cat_period_idx`` is rebuilt with it among its ``INCLUDE`` columns (the summary
stays an index-only scan); the rebuild is concurrent on PostgreSQL, hence ``atomic = False``, as in 0003.
"""

from django.db import migrations, models

from perf.migration_operations import AddIndexConcurrentlyIfPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("emissions", "0003_hot_query_indexes")]

    operations = [
        migrations.AddField(
            model_name="emission",
            name="biogenic_co2_kg",
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name="emissionfactor",
            name="biogenic_co2_per_unit",
            field=models.DecimalField(
                blank=True,
                decimal_places=15,
                help_text="kg biogenic CO2 per unit, outside the scopes (not in CO2e)",
                max_digits=30,
                null=True,
            ),
        ),
        migrations.AddConstraint(
            model_name="emission",
            constraint=models.CheckConstraint(
                condition=models.Q(("biogenic_co2_kg__gte", 0), ("biogenic_co2_kg__isnull", True), _connector="OR"),
                name="emission_biogenic_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="emissionfactor",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("biogenic_co2_per_unit__gte", 0), ("biogenic_co2_per_unit__isnull", True), _connector="OR"
                ),
                name="factor_biogenic_non_negative",
            ),
        ),
        # The old index is dropped first (a quick DROP INDEX) because the new one keeps its name.
        migrations.RemoveIndex(model_name="emission", name="emission_org_cat_period_idx"),
        AddIndexConcurrentlyIfPostgres(
            model_name="emission",
            index=models.Index(
                fields=["organization", "category", "-period_start", "-id"],
                include=("supplier", "method", "period_end", "co2e_kg", "biogenic_co2_kg"),
                name="emission_org_cat_period_idx",
            ),
        ),
    ]
