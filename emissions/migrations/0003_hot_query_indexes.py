"""Indexes for the registered hot queries (emissions/hot_queries.py), built without locking writers.

Written by hand from ``makemigrations`` output: the autodetector emits ``AddIndex`` (a plain
``CREATE INDEX``, which blocks inserts into the table for the whole build); on tables with
millions of rows ``AddIndexConcurrently`` (``CREATE INDEX CONCURRENTLY``) lets writes go on; the
variant in perf.migration_operations also lets the embedded SQLite default migrate.
CONCURRENTLY cannot run inside a transaction, hence ``atomic = False``: a failed build leaves
an INVALID index behind, which ``manage.py check_indexes`` reports; drop it and migrate again.
The project state these operations produce is the same as AddIndex's, so
``makemigrations --check`` stays clean.
"""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

from perf.migration_operations import AddIndexConcurrentlyIfPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emissions", "0002_supplier_factor_protect_list_indexes"),
    ]

    operations = [
        # gin_trgm_ops for the factor search index; pg_trgm is a trusted extension (no superuser needed).
        TrigramExtension(),
        AddIndexConcurrentlyIfPostgres(
            model_name="activityrecord",
            index=models.Index(
                fields=["organization", "category", "-period_start", "-id"], name="activity_org_cat_period_idx"
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="activityrecord",
            index=models.Index(
                fields=["organization", "supplier", "-period_start", "-id"], name="activity_org_sup_period_idx"
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="activityrecord",
            index=models.Index(
                fields=["organization", "method", "-period_start", "-id"], name="activity_org_meth_period_idx"
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="emission",
            index=models.Index(
                fields=["organization", "category", "-period_start", "-id"],
                include=("supplier", "method", "period_end", "co2e_kg"),
                name="emission_org_cat_period_idx",
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="emission",
            index=models.Index(
                fields=["organization", "supplier", "-period_start", "-id"], name="emission_org_sup_period_idx"
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="emission",
            index=models.Index(
                fields=["organization", "method", "-period_start", "-id"], name="emission_org_meth_period_idx"
            ),
        ),
        AddIndexConcurrentlyIfPostgres(
            model_name="emissionfactor",
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.text.Upper("name"), name="gin_trgm_ops"
                ),
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.text.Upper("activity"), name="gin_trgm_ops"
                ),
                name="factor_search_trgm_idx",
            ),
        ),
    ]
