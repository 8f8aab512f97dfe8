"""PostgreSQL COPY for activity writes: the fast path of ``activities_create``.

``bulk_create`` inserts with multi-row ``INSERT ... RETURNING id`` statements, each parsed and
planned. On PostgreSQL ``activities_create`` streams the same rows through ``COPY ... FROM
STDIN`` instead (psycopg 3 ``Cursor.copy``), measured faster by ``manage.py bench_db``. COPY
cannot return the ids it assigns, so ids are reserved first from each table's own sequence
(``nextval`` over ``generate_series``) and written explicitly; the emissions reference their
activity's reserved id. The sequences thereby advance past every id used, so a later ordinary
``INSERT`` never collides, and the caller gets back saved objects with their pks, as from
``bulk_create``.

Values are prepared as ``bulk_create`` prepares them (``copy_columns``: the field's
``get_db_prep_save``, skipped where it changes nothing), so both paths store identical values
(JSON columns as ``jsonb``, Decimals exactly, empty nullable columns as NULL).
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connection, connections, models, transaction
from django.utils import timezone
from psycopg import sql

from emissions import audit
from emissions.cache import emissions_added, emissions_changed
from emissions.models import ActivityRecord, Emission, Organization

Prep = Callable[[Any], Any]

# Field classes (exactly these, not subclasses, which may override the preparation) whose
# ``get_db_prep_save`` on PostgreSQL hands the Python value through unchanged (str, int, Decimal,
# date, aware datetime, bool, None): psycopg adapts those values itself, so COPY skips the call.
# Any other field (JSON -> Jsonb, custom fields) is prepared by Django, as bulk_create would.
PASS_THROUGH_ON_POSTGRESQL: frozenset[type[models.Field]] = frozenset(
    {
        models.AutoField,
        models.BigAutoField,
        models.BigIntegerField,
        models.BooleanField,
        models.CharField,
        models.DateField,
        models.DateTimeField,
        models.DecimalField,
        models.ForeignKey,
        models.IntegerField,
        models.PositiveIntegerField,
        models.PositiveSmallIntegerField,
        models.SmallIntegerField,
        models.TextField,
    }
)


def _unchanged(value: Any) -> Any:
    return value


def copy_columns(model: type[models.Model], *, with_pk: bool) -> list[tuple[str, str, Prep]]:
    """(column, attname, prep) for each concrete column COPY writes; the pk only when ``with_pk``.

    ``prep`` turns the attribute's value into what bulk_create would send: the field's
    ``get_db_prep_save``, or the value itself for ``PASS_THROUGH_ON_POSTGRESQL`` fields (preparing
    them changes nothing and was a third of the COPY's time). The bound method is bound to the
    connection object itself, not the ``django.db.connection`` proxy, whose per-attribute lookup
    would otherwise cost more than the COPY.
    """
    db = connections[DEFAULT_DB_ALIAS]
    return [
        (
            cast(str, field.column),
            field.attname,
            _unchanged if type(field) in PASS_THROUGH_ON_POSTGRESQL else partial(field.get_db_prep_save, connection=db),
        )
        for field in model._meta.concrete_fields
        if with_pk or not field.primary_key
    ]


def reserve_ids(model: type[models.Model], count: int) -> list[int]:
    """``count`` fresh primary keys from ``model``'s id sequence, ascending.

    ``nextval`` is never rolled back, so the ids are ours even if another session inserts
    meanwhile (they need not be contiguous), and the sequence ends past all of them.
    """
    table, pk = model._meta.db_table, model._meta.pk
    assert pk is not None  # every concrete model has one
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)", [table, pk.column, count]
        )
        return sorted(row[0] for row in cursor.fetchall())


def copy_statement(model: type[models.Model], columns: Sequence[str], *, table: str | None = None) -> sql.Composed:
    """``COPY <table> (<columns>) FROM STDIN``, identifiers quoted; the table is ``model``'s unless named."""
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table or model._meta.db_table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _copy(
    model: type[models.Model],
    objects: Iterable[Any],
    *,
    with_pk: bool,
    table: str | None = None,
    extra: Sequence[tuple[str, Any]] = (),
    value: Callable[[Any, str], Any] = getattr,
) -> int:
    """Stream ``objects`` into ``model``'s table (or ``table``, with ``model``'s columns and the ``extra`` (column,
    value) pairs, the same for every row) with ``COPY ... FROM STDIN``; return the rows written. ``value(obj,
    attname)`` reads a column's value from one of them (an attribute of a model instance by default)."""
    columns = copy_columns(model, with_pk=with_pk)
    statement = copy_statement(
        model, [column for column, _, _ in columns] + [column for column, _ in extra], table=table
    )
    constants = [value for _, value in extra]
    written = 0
    # Django's cursor wrapper has no copy(); its ``cursor`` attribute is the psycopg 3 cursor. Errors are
    # wrapped as Django's (IntegrityError, DataError...), as they are for the ORM's own statements.
    db = connections[DEFAULT_DB_ALIAS]
    with db.wrap_database_errors, db.cursor() as cursor:
        if db.in_atomic_block:
            # COPY bypasses Django's execute wrappers: the audit context (who, which request or job) is sent
            # here, once per transaction, for the audit triggers to read (emissions.audit).
            audit.apply(db, cursor)
        with cursor.cursor.copy(statement) as copy:
            for obj in objects:
                copy.write_row([prep(value(obj, attname)) for _, attname, prep in columns] + constants)
                written += 1
    return written


def activity_pairs_copy(pairs: Sequence[tuple[ActivityRecord, Emission]]) -> None:
    """Write prepared (activity, emission) pairs with COPY; afterwards both carry their pks, as after bulk_create.

    Precondition: PostgreSQL (``NotSupportedError`` otherwise) and, for all-or-nothing, a
    transaction around the call (``activities_create`` holds one): two COPY statements run.
    """
    if connection.vendor != "postgresql":
        raise NotSupportedError(f"COPY needs PostgreSQL; this database is {connection.vendor}.")
    if not pairs:
        return
    records, emissions = copy_rows(pairs)
    _copy(ActivityRecord, records, with_pk=True)
    _copy(Emission, emissions, with_pk=True)


# Where an import job stages its rows until its finish moves them into the real tables (migration
# 0011_import_staging): the real tables' columns (and check constraints) plus the job's id.
STAGING_TABLES: dict[type[models.Model], str] = {
    ActivityRecord: "emissions_activityrecord_staged",
    Emission: "emissions_emission_staged",
}


def activity_pairs_stage(pairs: Sequence[tuple[ActivityRecord, Emission]], *, job_id: int) -> None:
    """Write prepared pairs with COPY into the staging tables under ``job_id``, with ids reserved from the real tables'
    sequences (``copy_rows``), so that moving them into place later keeps the ids and the emissions' references.

    Precondition: PostgreSQL, inside a transaction (two COPY statements).
    """
    if not pairs:
        return
    records, emissions = copy_rows(pairs)
    job = [("job_id", job_id)]
    _copy(ActivityRecord, records, with_pk=True, table=STAGING_TABLES[ActivityRecord], extra=job)
    _copy(Emission, emissions, with_pk=True, table=STAGING_TABLES[Emission], extra=job)


def copy_rows(pairs: Sequence[tuple[ActivityRecord, Emission]]) -> tuple[list[ActivityRecord], list[Emission]]:
    """Give prepared pairs what the database would have: reserved ids (both tables) and the creation time.

    Precondition: PostgreSQL (ids come from the sequences). ``auto_now_add`` is applied by
    ``Model.save``/``bulk_create``, not by the database, so COPY rows are stamped here.
    """
    now = timezone.now()
    records, emissions = [], []
    activity_ids = reserve_ids(ActivityRecord, len(pairs))
    emission_ids = reserve_ids(Emission, len(pairs))
    for (record, emission), activity_id, emission_id in zip(pairs, activity_ids, emission_ids, strict=True):
        record.pk, record.created_at = activity_id, now
        # Re-assigning the (now saved-to-be) record sets emission.activity_id to the reserved id.
        emission.activity = record
        emission.pk, emission.calculated_at = emission_id, now
        # As after bulk_create: the objects are no longer "adding", so a later save() updates.
        for obj in (record, emission):
            obj._state.adding, obj._state.db = False, DEFAULT_DB_ALIAS
        records.append(record)
        emissions.append(emission)
    return records, emissions


@transaction.atomic
def activities_delete_for_org(*, organization: Organization) -> tuple[int, int]:
    """Delete every activity and emission of ``organization``; return (activities, emissions) deleted.

    Plain ``DELETE ... WHERE organization_id`` statements: the ORM's ``QuerySet.delete()`` would
    load every activity into memory to collect its cascades, which at a million rows is minutes
    and gigabytes. Emissions go first (their one-to-one references the activity); nothing else
    references an activity record and neither model has delete signals.
    """
    counts = []
    with connection.cursor() as cursor:
        for model in (Emission, ActivityRecord):
            opts = model._meta
            column = opts.get_field("organization").column
            quote = connection.ops.quote_name
            cursor.execute(f"DELETE FROM {quote(opts.db_table)} WHERE {quote(column)} = %s", [organization.pk])
            counts.append(cursor.rowcount)
    emissions_changed(organization.pk)
    return counts[1], counts[0]


def rows_copy(model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> int:
    """Stream ``rows`` (each a mapping of every concrete field's attname but the pk to its value) into ``model``'s
    table with COPY, the pks left to its sequence; return the rows written. Values are prepared as for model
    instances (JSON as ``jsonb``). For bulk rows nothing references by id, without building a model instance each.
    Precondition: PostgreSQL."""
    if connection.vendor != "postgresql":
        raise NotSupportedError(f"COPY needs PostgreSQL; this database is {connection.vendor}.")
    return _copy(model, rows, with_pk=False, value=operator.getitem)


def _staged_sql(template: str, model: type[models.Model], columns: Sequence[str] = ()) -> sql.Composed:
    """``template`` with {real} and {staged} as ``model``'s tables and {columns} as the column list, all quoted."""
    return sql.SQL(template).format(
        real=sql.Identifier(model._meta.db_table),
        staged=sql.Identifier(STAGING_TABLES[model]),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
    )


def staged_pairs_totals(*, job_id: int) -> tuple[int, Decimal, list[dt.date]]:
    """(activities, kg CO2e, the first days of the months their periods start in) of what ``job_id`` staged."""
    with connection.cursor() as cursor:
        cursor.execute(
            _staged_sql("SELECT count(*), coalesce(sum(co2e_kg), 0) FROM {staged} WHERE job_id = %s", Emission),
            [job_id],
        )
        rows, co2e_kg = cursor.fetchone()
        cursor.execute(
            _staged_sql(
                "SELECT DISTINCT date_trunc('month', period_start)::date FROM {staged} WHERE job_id = %s ORDER BY 1",
                ActivityRecord,
            ),
            [job_id],
        )
        months = [row[0] for row in cursor.fetchall()]
    return rows, Decimal(co2e_kg), months


@transaction.atomic
def staged_pairs_publish(*, organization_id: int, job_id: int) -> tuple[int, Decimal]:
    """Move what ``job_id`` staged into the real tables, ids kept, and return (activities, kg CO2e) moved.

    One ``INSERT ... SELECT`` per table (activities first: the emissions reference them), in id order, then the
    staging rows go. The caches of the months (and years) the activities start in are invalidated.
    """
    rows, co2e_kg, months = staged_pairs_totals(job_id=job_id)
    with connection.cursor() as cursor:
        for model in (ActivityRecord, Emission):
            columns = [column for column, _, _ in copy_columns(model, with_pk=True)]
            cursor.execute(
                _staged_sql(
                    "INSERT INTO {real} ({columns}) SELECT {columns} FROM {staged} WHERE job_id = %s ORDER BY id",
                    model,
                    columns,
                ),
                [job_id],
            )
    staged_pairs_discard(job_id=job_id)
    emissions_added(organization_id, months)
    return rows, co2e_kg


def staged_pairs_discard(*, job_id: int) -> None:
    """Delete what ``job_id`` staged (emissions first, as they reference the activities)."""
    with connection.cursor() as cursor:
        for model in (Emission, ActivityRecord):
            cursor.execute(_staged_sql("DELETE FROM {staged} WHERE job_id = %s", model), [job_id])
