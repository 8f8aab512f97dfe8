"""Biogenic CO2 beside CO2e: a nullable column on factors and on emissions, with their checks.

Both columns are nullable without a default, so adding them rewrites no rows; NULL means the publisher
gives no biogenic figure. One transaction: all of it or none. The summary's covering index is rebuilt
with the new column in 0005, apart, because a concurrent build cannot run in a transaction. The
checks are PostgreSQL's to enforce (``AddConstraintIfPostgres``: SQLite would have to rebuild the
factor table, PostgreSQL-only indexes included).
"""

from django.db import migrations, models

from perf.migration_operations import AddConstraintIfPostgres


class Migration(migrations.Migration):
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
        AddConstraintIfPostgres(
            model_name="emission",
            constraint=models.CheckConstraint(
                condition=models.Q(("biogenic_co2_kg__gte", 0), ("biogenic_co2_kg__isnull", True), _connector="OR"),
                name="emission_biogenic_non_negative",
            ),
        ),
        AddConstraintIfPostgres(
            model_name="emissionfactor",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("biogenic_co2_per_unit__gte", 0), ("biogenic_co2_per_unit__isnull", True), _connector="OR"
                ),
                name="factor_biogenic_non_negative",
            ),
        ),
    ]
