"""The staging tables of import jobs (``emissions.jobs.imports``): rows a job's chunks wrote, invisible to every reader
until the job's finish moves them into the real tables. Each has the real table's columns, NOT NULL and check
constraints (``LIKE ... INCLUDING DEFAULTS INCLUDING CONSTRAINTS``; no keys, no indexes: the finish checks those when
it inserts) and the job's id. ``tests/emissions/jobs/test_imports.py`` fails when a real table gains a column its
staging table lacks."""

from django.db import migrations

TABLES = (("emissions_activityrecord", "emissions_activityrecord_staged"), ("emissions_emission", "emissions_emission_staged"))


def create(real: str, staged: str) -> str:
    return (
        f"CREATE TABLE {staged} (LIKE {real} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, job_id bigint NOT NULL);"
        f" CREATE INDEX {staged}_job_idx ON {staged} (job_id);"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("emissions", "0009_audit_trail"),
    ]

    operations = [
        migrations.RunSQL(sql=create(real, staged), reverse_sql=f"DROP TABLE {staged};") for real, staged in TABLES
    ]
